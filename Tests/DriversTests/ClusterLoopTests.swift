import Drivers
import Foundation
import Testing
import TestSupport

/// `pvectl run` on one node of a three-node pmxcfs cluster (each pmxcfs on its corosync node in a namespace): another
/// node's write reaches it within a second (inotify never sees it on FUSE), and without quorum it applies nothing.
@Suite("pvectl run in a cluster: other nodes' changes followed, nothing applied without quorum", .serialized,
       .enabled(if: CorosyncCluster.unavailableReason == nil && PMXCFSProcess.unavailableReason == nil,
                Comment(rawValue: CorosyncCluster.unavailableReason ?? PMXCFSProcess.unavailableReason ?? "")))
struct ClusterLoopTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    @Test("node 1's write seen by node 2's loop within a second and applied there, shown by status --cluster; cut, it holds; healed, it applies")
    func followAndHold() throws {
        let cluster = try CorosyncCluster()
        #expect(waitFor(seconds: 60) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "a quorate corosync cluster")
        let nodes = try (1...3).map { try cluster.pmxcfs($0) }
        defer { nodes.forEach { $0.stop() } }
        #expect(waitFor(seconds: 60) { nodes.allSatisfy { FileManager.default.fileExists(atPath: $0.path("nodes/node3/qemu-server")) } },
                "synced")
        let scratch = try TemporaryDirectory(prefix: "pvectl-cluster-loop")
        try scratch.write("interfaces", "auto lo\niface lo inet loopback\n")
        let store = scratch.path + "/store"
        let log = scratch.path + "/run.log"
        let second = nodes[1]
        // The storage kind also activates the implicit 'local' (/var/lib/vz): a scratch directory is bound there, in a
        // mount namespace of the loop's own (the pmxcfs mounts stay visible in it), so nothing lands on the host.
        let local = scratch.path + "/local"
        try FileManager.default.createDirectory(atPath: local, withIntermediateDirectories: true)
        let pid = try DetachedProcess.spawn(["/usr/bin/env"] + NetworkNamespace.isolated(in: cluster.namespace(2), [
            Self.binary, "run", "--root", second.mountPoint, "--node", "node2", "--ipc-service", second.ipcName, "--only", "storage",
            "--resync", "2", "--verbose", "--state-dir", scratch.path + "/state", "--interfaces", scratch.path + "/interfaces",
        ], binding: ["/var/lib/vz": local]), log: log)
        defer {
            kill(pid, SIGKILL)
            _ = reap(pid)
        }
        func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        #expect(waitFor(seconds: 30) { logText().contains("following the cluster file system through pmxcfs's IPC service") }, "\(logText())")

        let config = "dir: scratch\n\tpath \(store)\n\tcontent images\n"
        let descriptor = open(nodes[0].path("storage.cfg"), O_CREAT | O_WRONLY | O_TRUNC, 0o640)
        #expect(descriptor >= 0)
        _ = Array(config.utf8).withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
        let written = Date()
        #expect(waitFor(seconds: 5) { logText().contains("changed: \(second.mountPoint)/storage.cfg") }, "\(logText())")
        #expect(Date().timeIntervalSince(written) < 1.0, "seen by node 2 within a second: \(Date().timeIntervalSince(written)) s")
        #expect(waitFor(seconds: 30) { FileManager.default.fileExists(atPath: store) }, "applied on node 2: \(logText())")
        #expect(waitFor(seconds: 10) { FileManager.default.fileExists(atPath: local + "/template/cache") }, "'local' in the loop's own /var/lib/vz")

        // Node 2's network file, written on node 1 (as a push from node 1 writes it): staged on node 2 only.
        let bridge = "auto lo\niface lo inet loopback\n\nauto vmbr9\niface vmbr9 inet manual\n\tbridge-ports none\n"
        try FileManager.default.createDirectory(atPath: nodes[0].path("nodes/node2/network"), withIntermediateDirectories: true)
        try Data(bridge.utf8).write(to: URL(fileURLWithPath: nodes[0].path("nodes/node2/network/interfaces")))
        #expect(waitFor(seconds: 10) { scratch.read("interfaces.new") == bridge }, "staged on node 2: \(logText())")

        // Node 2's loop is seen from node 1 through the status channel.
        func clusterStatus(_ index: Int) -> [[String: Any]] {
            let daemon = nodes[index - 1]
            let result = NetworkNamespace.capture(["ip", "netns", "exec", cluster.namespace(index), Self.binary, "status", "--cluster", "--json",
                                                   "--root", daemon.mountPoint, "--ipc-service", daemon.ipcName])
            let object = (try? JSONSerialization.jsonObject(with: Data(result.output.utf8))) as? [String: Any]
            return object?["nodes"] as? [[String: Any]] ?? []
        }
        #expect(waitFor(seconds: 10) {
            clusterStatus(1).contains { $0["node"] as? String == "node2" && $0["loop"] as? String == "Watching" && $0["converged"] as? Bool == true }
        }, "\(clusterStatus(1))")
        #expect(clusterStatus(1).first { $0["node"] as? String == "node3" }?["detail"] as? String == "no pvectl run publishes here")

        // Cut: no quorum; the loop plans, says what it would do, and applies nothing.
        try cluster.cut(2)
        #expect(waitFor(seconds: 60) { logText().contains("quorum lost") }, "\(logText())")
        try FileManager.default.removeItem(atPath: store)
        #expect(waitFor(seconds: 30) { logText().contains("held (no quorum): not applying create storage/scratch") }, "\(logText())")
        #expect(!FileManager.default.fileExists(atPath: store), "nothing applied without quorum")
        #expect(clusterStatus(2).first { $0["node"] as? String == "node2" }?["loop"] as? String == "Held", "\(clusterStatus(2))")
        let status = NetworkNamespace.capture(["ip", "netns", "exec", cluster.namespace(2), Self.binary, "status", "--json",
                                               "--root", second.mountPoint, "--node", "node2", "--ipc-service", second.ipcName,
                                               "--state-dir", scratch.path + "/state", "--interfaces", scratch.path + "/interfaces"])
        #expect(status.output.contains("\"condition\" : \"Held\""), "\(status)")
        #expect(status.output.contains("no quorum: keeping everything as it is"), "\(status)")

        try cluster.heal(2)
        #expect(waitFor(seconds: 90) { logText().contains("quorum regained") }, "\(logText())")
        #expect(waitFor(seconds: 30) { FileManager.default.fileExists(atPath: store) }, "applied again with quorum: \(logText())")
    }
}
