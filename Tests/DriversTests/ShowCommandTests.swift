import Drivers
import Foundation
import Reconciler
import Testing
import TestSupport

/// `pvectl showcmd` through the binary: upstream's expected command line for
/// a corpus config, byte for byte; and with the `installed` profile, the
/// command this machine's QEMU really starts and answers QMP on.
@Suite("pvectl showcmd", .needsConformance)
struct ShowCommandTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    static func root(config: String) throws -> TemporaryDirectory {
        let directory = try TemporaryDirectory(prefix: "pvectl-showcmd")
        try directory.write("storage.cfg", try Corpus.text("qemu-server/_derived/storage.cfg"))
        try directory.write("virtual-guest/cpu-models.conf", try Corpus.text("qemu-server/_derived/cpu-models.conf"))
        try directory.write("nodes/localhost/qemu-server/8006.conf", config)
        return directory
    }

    @Test("the pve-11 profile prints upstream's expected command line byte for byte")
    func upstreamBytes() throws {
        let directory = try Self.root(config: try Corpus.text("qemu-server/src/test/cfg2cmd/simple1.conf"))
        let result = NetworkNamespace.capture([Self.binary, "showcmd", "8006", "--root", directory.path, "--node", "localhost", "--pretty"])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.output == (try Corpus.text("qemu-server/src/test/cfg2cmd/simple1.conf.cmd")))
        let old = NetworkNamespace.capture([Self.binary, "showcmd", "8006", "--root", directory.path, "--node", "localhost",
                                            "--qemu-version", "5.0.1"])
        #expect(old.status == 1)
        #expect(old.error.contains("Detected old QEMU binary ('5.0.1', at least 6.0 is required)"))
        let missing = NetworkNamespace.capture([Self.binary, "showcmd", "4711", "--root", directory.path, "--node", "localhost"])
        #expect(missing.status == 2)
    }

    @Test("the installed profile's command starts this machine's QEMU, which answers QMP",
          .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64"),
                   "needs root and qemu-system-x86_64"))
    func installedStarts() async throws {
        let vmid = Int.random(in: 900_000...999_999)
        let directory = try TemporaryDirectory(prefix: "pvectl-showcmd")
        try directory.write("nodes/localhost/qemu-server/\(vmid).conf", "kvm: 0\nmemory: 128\nsmbios1: uuid=6cf17dc3-8341-4ecc-aebd-7503f2583fb3\n")
        let shown = NetworkNamespace.capture([Self.binary, "showcmd", String(vmid), "--root", directory.path, "--node", "localhost",
                                              "--profile", "installed"])
        try #require(shown.status == 0, "\(shown.error)")
        try FileManager.default.createDirectory(atPath: "/var/run/qemu-server", withIntermediateDirectories: true)
        let pidFile = "/var/run/qemu-server/\(vmid).pid"
        let socket = "/var/run/qemu-server/\(vmid).qmp"
        defer {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                kill(pid, SIGKILL)
            }
            for suffix in ["pid", "qmp", "vnc"] { try? FileManager.default.removeItem(atPath: "/var/run/qemu-server/\(vmid).\(suffix)") }
        }
        // The printed line is a shell command (single-quoted arguments). QEMU
        // daemonizes: it must not inherit any descriptor of this test process
        // (another test's pipe would then never reach end of file).
        let log = directory.path + "/qemu.log"
        let script = "for fd in $(ls /proc/$$/fd); do [ \"$fd\" -gt 2 ] && eval \"exec $fd>&-\"; done; exec "
            + shown.output.trimmingCharacters(in: .whitespacesAndNewlines) + " </dev/null >\(log) 2>&1"
        let status0 = reap(try spawn("/bin/bash", ["-c", script]))
        #expect(status0 == 0, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        #expect(waitFor(seconds: 10) { FileManager.default.fileExists(atPath: socket) })
        let status = try await offPool {
            let client = try QMPClient(path: socket, timeout: 5)
            return "\(try client.execute("query-status"))"
        }
        #expect(status.contains("running"), "\(status)")
    }
}
