import Drivers
import Foundation
import Reconciler
import Resources
import Testing
import TestSupport

/// The QEMU process driver against this machine's QEMU under TCG: a VM
/// started from its config's command line runs and answers QMP; kill -9 reads
/// as crashed; stop asks ACPI first and forces a guest that does not react.
@Suite("QEMU process driver", .serialized,
       .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64"), "needs root and qemu-system-x86_64"))
struct QemuProcessTests {
    static func command(vmid: Int) throws -> [String] {
        let config = GuestConfig.parse("kvm: 0\nmemory: 128\nname: probe\nsmbios1: uuid=6cf17dc3-8341-4ecc-aebd-7503f2583fb3\n",
                                       file: "qemu-server/\(vmid).conf", kind: .qemu).0
        let host = InstalledQemuHost.profile(nodeName: "localhost")
        return try QemuCommandLine(vmid: vmid, config: config, storage: nil, host: host).arguments()
    }

    @Test("start, observe over QMP, crash detection, forced stop of a guest without an OS")
    func lifecycle() async throws {
        let driver = QemuProcessDriver()
        let vmid = Int.random(in: 900_000...999_999)
        defer {
            if case .running(let pid, _) = driver.state(vmid: vmid) { kill(pid, SIGKILL) }
            for suffix in ["pid", "qmp", "vnc"] { try? FileManager.default.removeItem(atPath: "/var/run/qemu-server/\(vmid).\(suffix)") }
        }
        #expect(driver.state(vmid: vmid) == .stopped)
        let pid = try await driver.start(vmid: vmid, arguments: try Self.command(vmid: vmid))
        guard case .running(let observed, let status) = driver.state(vmid: vmid) else {
            Issue.record("not running after start: \(driver.state(vmid: vmid))")
            return
        }
        #expect(observed == pid)
        #expect(status == "running")

        // kill -9: the pid file stays, the process is gone.
        kill(pid, SIGKILL)
        #expect(waitFor(seconds: 5) { driver.state(vmid: vmid) == .crashed(pid: pid) })
        // A restart clears the stale files.
        let again = try await driver.start(vmid: vmid, arguments: try Self.command(vmid: vmid))
        #expect(again != pid)

        // SeaBIOS with no OS ignores the ACPI power button: the stop is forced after the timeout.
        let outcome = try await driver.stop(vmid: vmid, timeout: 1)
        #expect(outcome == .forced)
        #expect(driver.state(vmid: vmid) == .stopped)
        #expect(!FileManager.default.fileExists(atPath: driver.qmpSocket(vmid)))
        #expect(try await driver.stop(vmid: vmid, timeout: 1) == .alreadyStopped)
    }
}
