import Drivers
import Foundation
import Testing
import TestSupport

/// The QMP client against the real qemu-system-x86_64 (paused, TCG, no disks).
@Suite("QMP client against a real QEMU",
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64"), "needs qemu-system-x86_64"))
struct QMPClientTests {
    @Test("greeting and capabilities, commands, QEMU's errors, asynchronous events")
    func protocolBasics() throws {
        let directory = try TemporaryDirectory(prefix: "pvectl-qmp")
        let socket = directory.path + "/qmp.sock"
        let pid = try spawn("/usr/bin/qemu-system-x86_64", [
            "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
            "-qmp", "unix:\(socket),server=on,wait=off",
        ])
        defer {
            kill(pid, SIGKILL)
            _ = reap(pid)
        }
        var ready = false
        for _ in 0..<200 where !ready {
            ready = FileManager.default.fileExists(atPath: socket)
            if !ready { usleep(25_000) }
        }
        try #require(ready, "QEMU did not create its QMP socket within 5 s")

        let client = try QMPClient(path: socket)
        #expect(client.version.split(separator: ".").count == 3, "version from the greeting: \(client.version)")
        let status = try #require(try client.execute("query-status") as? [String: Any])
        #expect(status["status"] as? String == "prelaunch")
        #expect(status["running"] as? Bool == false)

        #expect(throws: QMPClient.Failure.self) { try client.execute("no-such-command") }
        do {
            try client.execute("no-such-command")
        } catch {
            #expect("\(error)".contains("no-such-command"), "QEMU's description comes through: \(error)")
        }

        // cont then stop: QEMU reports RESUME and STOP as events between replies.
        try client.execute("cont")
        try client.execute("stop")
        _ = try client.execute("query-status")
        let names = client.events.compactMap { $0["event"] as? String }
        #expect(names.contains("RESUME") && names.contains("STOP"), "events seen: \(names)")
        let paused = try #require(try client.execute("query-status") as? [String: Any])
        #expect(paused["status"] as? String == "paused")
    }

    @Test("a socket nobody serves is a clear error, not a hang")
    func nothingListening() throws {
        let directory = try TemporaryDirectory(prefix: "pvectl-qmp")
        #expect(throws: QMPClient.Failure.self) { try QMPClient(path: directory.path + "/absent.qmp", timeout: 1) }
    }
}
