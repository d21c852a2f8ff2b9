import Drivers
import Foundation
import Synchronization
import Testing
import TestSupport

/// The watcher `pvectl run` follows a pmxcfs tree with (its IPC service), against a real pmxcfs.
@Suite("following a pmxcfs tree over its IPC service",
       .enabled(if: PMXCFSProcess.unavailableReason == nil, Comment(rawValue: PMXCFSProcess.unavailableReason ?? "")))
struct ClusterTreeWatcherTests {
    @Test("every change after the watcher was made is reported, one made before its thread first asked included")
    func changesSinceInit() throws {
        let daemon = try PMXCFSProcess()
        try daemon.start()
        defer { daemon.stop() }
        try Data("dir: local\n".utf8).write(to: URL(fileURLWithPath: daemon.path("storage.cfg")))
        let watcher = try #require(ClusterTreeWatcher(root: daemon.mountPoint, service: daemon.ipcName, interval: 0.05))
        defer { watcher.stop() }
        // Between the watcher's first answer and its thread: `pvectl run` says it follows the tree from here on.
        try Data("dir: local\n\tpath /srv\n".utf8).write(to: URL(fileURLWithPath: daemon.path("storage.cfg")))
        let changed = Mutex<[String]>([])
        watcher.start(onChange: { path in changed.withLock { $0.append(path) } }, onQuorum: { _ in })
        #expect(waitFor(seconds: 5) { changed.withLock { $0.contains(daemon.path("storage.cfg")) } }, "\(changed.withLock { $0 })")
        try Data("cores: 1\n".utf8).write(to: URL(fileURLWithPath: daemon.path("nodes/pve1/qemu-server/100.conf")))
        try FileManager.default.removeItem(atPath: daemon.path("storage.cfg"))
        #expect(waitFor(seconds: 5) { changed.withLock { $0.filter { $0 == daemon.path("storage.cfg") }.count == 2 } },
                "the removal too: \(changed.withLock { $0 })")
        #expect(changed.withLock { $0.contains(daemon.path("nodes/pve1/qemu-server/100.conf")) })
    }
}
