import Drivers
import Foundation
import Testing
import TestSupport

/// `pvectl run` as an operator starts it, in a fresh network namespace: it
/// converges, repairs what is changed behind its back (netlink), follows file
/// edits (inotify), freezes on a broken file, leaves interfaces.new staged,
/// and ends cleanly on SIGTERM.
@Suite("pvectl run: the continuous loop",
       .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct RunLoopTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    /// The end-to-end tests' file, with an MTU on vmbr0 (line 13) when given.
    static func interfaces(mtu: Int? = nil) -> String {
        CommandLineTests.interfaces.replacingOccurrences(of: "\tbridge-fd 0\n", with: "\tbridge-fd 0\n" + (mtu.map { "\tmtu \($0)\n" } ?? ""))
    }

    /// The loop in its namespace, killed and reaped when the test ends (also on failure).
    final class Loop {
        let namespace: NetworkNamespace
        let directory: TemporaryDirectory
        private(set) var pid: pid_t = 0
        private var reaped = false

        init(_ extra: [String] = []) throws {
            namespace = try NetworkNamespace()
            directory = try TemporaryDirectory(prefix: "pvectl-run")
            try namespace.addNIC("eno1")
            try directory.write("net/interfaces", RunLoopTests.interfaces())
            try FileManager.default.createDirectory(atPath: directory.path + "/root", withIntermediateDirectories: true)
            // A resync far away: whatever is repaired in these tests was repaired by an event.
            pid = try DetachedProcess.spawn(["/usr/sbin/ip", "netns", "exec", namespace.name, RunLoopTests.binary, "run",
                                             "--root", directory.path + "/root", "--interfaces", directory.path + "/net/interfaces",
                                             "--state-dir", directory.path + "/state", "--node", "pve1", "--only", "network",
                                             "--resync", "3600"] + extra, log: directory.path + "/run.log")
        }

        deinit {
            if !reaped {
                kill(pid, SIGKILL)
                _ = reap(pid)
            }
        }

        var log: String { directory.read("run.log") ?? "" }

        /// Replaces the file the way editors and Proxmox do: a temporary file renamed into place.
        func write(_ relative: String, _ text: String) throws {
            try directory.write(relative + ".tmp", text)
            #expect(rename(directory.path + "/" + relative + ".tmp", directory.path + "/" + relative) == 0)
        }

        func link(_ name: String) -> [String: Any]? { try? namespace.link(name) }

        /// When the loop last recorded a pass (it does after every one).
        var recordModified: Date? {
            (try? FileManager.default.attributesOfItem(atPath: directory.path + "/state/loop.json"))?[.modificationDate] as? Date
        }

        /// `pvectl status --json`'s row for the loop's network kind.
        func loopStatus() -> [String: Any]? {
            let status = try? namespace.exec([RunLoopTests.binary, "status", "--json", "--only", "network", "--root", directory.path + "/root",
                                              "--interfaces", directory.path + "/net/interfaces", "--state-dir", directory.path + "/state",
                                              "--node", "pve1"])
            let rows = (try? JSONSerialization.jsonObject(with: Data((status?.output ?? "").utf8))) as? [[String: Any]]
            return rows?.first { $0["id"] as? String == "loop/network" }
        }

        /// SIGTERM, then the exit status within `seconds` (nil if it did not end).
        func terminate(within seconds: Double) -> Int32? {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            let ended = waitFor(seconds: seconds) { waitpid(pid, &status, WNOHANG) == pid }
            guard ended else { return nil }
            reaped = true
            return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        }
    }

    @Test("converges, repairs a deleted bridge from a netlink event, follows edits, freezes on errors, leaves interfaces.new, stops on SIGTERM")
    func loop() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "build pvectl first (swift build)")
        let loop = try Loop()
        #expect(waitFor(seconds: 30) { loop.link("vmbr0") != nil }, "the first pass creates the bridge: \(loop.log)")
        #expect(waitFor(seconds: 10) { loop.log.contains("converged: ") }, "\(loop.log)")

        try loop.namespace.run(["ip", "-n", loop.namespace.name, "link", "del", "vmbr0"])
        #expect(waitFor(seconds: 30) { loop.link("vmbr0") != nil }, "recreated after the netlink event: \(loop.log)")

        // A burst of 1,400 link events (it may overrun the netlink socket's buffer) does not end the watch.
        let burst = (0..<700).map { "link add bx\($0) type veth peer name by\($0)" }.joined(separator: "\n") + "\n"
        try loop.directory.write("burst", burst)
        try loop.namespace.run(["ip", "-n", loop.namespace.name, "-batch", loop.directory.path + "/burst"])
        try loop.namespace.run(["ip", "-n", loop.namespace.name, "link", "del", "vmbr0"])
        #expect(waitFor(seconds: 30) { loop.link("vmbr0") != nil }, "recreated after a netlink overrun: \(loop.log)")

        try loop.write("net/interfaces", Self.interfaces(mtu: 1400))
        #expect(waitFor(seconds: 30) { loop.link("vmbr0")?["mtu"] as? Int == 1400 }, "the edit is applied: \(loop.log)")

        try loop.write("net/interfaces.new", Self.interfaces(mtu: 1300))
        #expect(waitFor(seconds: 30) { loop.log.contains("interfaces.new is staged and left alone") }, "\(loop.log)")
        #expect(loop.link("vmbr0")?["mtu"] as? Int == 1400, "a staged file waits for pvectl apply")
        #expect(unlink(loop.directory.path + "/net/interfaces.new") == 0)

        try loop.write("net/interfaces", Self.interfaces(mtu: 1400).replacingOccurrences(of: "mtu 1400", with: "mtu big"))
        #expect(waitFor(seconds: 30) { loop.log.contains("net/interfaces:13:6: error: mtu") }, "\(loop.log)")
        #expect(waitFor(seconds: 30) { loop.log.contains("network/* blocked") }, "\(loop.log)")
        #expect(loop.link("vmbr0")?["mtu"] as? Int == 1400, "a broken file is never read as absent")
        let watching = loop.loopStatus()
        // Blocked until the file changes: not retried, and status says so.
        #expect(watching?["condition"] as? String == "Blocked", "\(String(describing: watching))")
        #expect(watching?["message"] as? String == "blocked: network/*", "\(String(describing: watching))")

        // Another event, another pass: the same errors are not logged again.
        let recorded = loop.recordModified
        try loop.namespace.addNIC("eno2")
        #expect(waitFor(seconds: 30) { loop.recordModified != recorded }, "a pass after the netlink event: \(loop.log)")
        #expect(loop.log.components(separatedBy: "error: mtu: type check").count == 2, "logged once: \(loop.log)")
        try loop.write("net/interfaces", Self.interfaces(mtu: 1450))
        #expect(waitFor(seconds: 30) { loop.link("vmbr0")?["mtu"] as? Int == 1450 }, "\(loop.log)")
        #expect(loop.log.contains("the errors are fixed"), "\(loop.log)")

        #expect(loop.terminate(within: 30) == 0, "\(loop.log)")
        #expect(loop.log.contains("stopped"))
        #expect(loop.loopStatus()?["condition"] as? String == "Stopped")
    }

    @Test("--report-only logs the drift and changes nothing")
    func reportOnly() throws {
        let loop = try Loop(["--report-only", "network"])
        #expect(waitFor(seconds: 30) { loop.log.contains("drift (report only): create network/vmbr0") }, "\(loop.log)")
        #expect(loop.link("vmbr0") == nil)
        #expect(loop.terminate(within: 30) == 0, "\(loop.log)")
    }
}
