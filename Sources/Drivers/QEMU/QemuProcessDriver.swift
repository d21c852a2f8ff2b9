import Foundation
import Reconciler

/// A VM's QEMU process where qemu-server keeps it: started from a command
/// line (daemonized, pid file and QMP socket in `/run/qemu-server`), observed
/// through the pid file and QMP, stopped with an ACPI power-down first and by
/// force when the guest does not react in time. The building block the QEMU
/// kind's lifecycle uses.
public struct QemuProcessDriver: Sendable {
    public var runDirectory: String

    public init(runDirectory: String = "/var/run/qemu-server") {
        self.runDirectory = runDirectory
    }

    public enum RunState: Sendable, Equatable {
        case stopped
        /// Running, with QEMU's run state (`running`, `paused`, `prelaunch`, ...).
        case running(pid: Int32, status: String)
        /// A pid file without a live QEMU: the process died (a crash or kill -9).
        case crashed(pid: Int32)
    }

    public enum StopOutcome: Sendable, Equatable {
        case alreadyStopped
        /// The guest powered off after the ACPI request.
        case acpi
        /// It did not within the timeout: QEMU was told to quit, or killed.
        case forced
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public func pidFile(_ vmid: Int) -> String { "\(runDirectory)/\(vmid).pid" }
    public func qmpSocket(_ vmid: Int) -> String { "\(runDirectory)/\(vmid).qmp" }

    func pid(_ vmid: Int) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile(vmid), encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Whether `pid` is a live QEMU (not a zombie, not a recycled pid of another program).
    static func isQemu(_ pid: Int32) -> Bool {
        guard let stat = readProcFile("/proc/\(pid)/stat") else { return false }
        // Field 3, after the parenthesised command name, is the state; Z is a zombie.
        if let close = stat.lastIndex(of: ")"), stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z") {
            return false
        }
        let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let program = commandLine.split(separator: "\0").first.map { String($0) } ?? ""
        return program.hasSuffix("/kvm") || program.contains("qemu-system")
    }

    public func state(vmid: Int) -> RunState {
        guard let pid = pid(vmid) else { return .stopped }
        guard Self.isQemu(pid) else { return .crashed(pid: pid) }
        let status = (try? QMPClient(path: qmpSocket(vmid), timeout: 3))
            .flatMap { try? $0.execute("query-status") as? [String: Any] }
            .flatMap { $0["status"] as? String } ?? "unknown"
        return .running(pid: pid, status: status)
    }

    /// Starts a daemonizing QEMU command line (`-daemonize`, `-pidfile`) and
    /// waits until its QMP socket answers.
    public func start(vmid: Int, arguments: [String], timeout: Double = 30) async throws -> Int32 {
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        if case .crashed = state(vmid: vmid) { cleanUp(vmid) }
        let result = try await Command.run(arguments)
        guard result.succeeded else {
            throw Failure(description: "start failed: QEMU exited with status \(result.status): \(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let pid = pid(vmid), Self.isQemu(pid), (try? QMPClient(path: qmpSocket(vmid), timeout: 2)) != nil { return pid }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw Failure(description: "QEMU for VM \(vmid) did not answer on \(qmpSocket(vmid)) within \(Int(timeout)) s")
    }

    /// ACPI power-down, then `quit` over QMP, then SIGKILL; the pid file and sockets are removed.
    public func stop(vmid: Int, timeout: Double) async throws -> StopOutcome {
        guard let pid = pid(vmid), Self.isQemu(pid) else {
            cleanUp(vmid)
            return .alreadyStopped
        }
        _ = try? QMPClient(path: qmpSocket(vmid), timeout: 3).execute("system_powerdown")
        if await waitForExit(pid, seconds: timeout) {
            cleanUp(vmid)
            return .acpi
        }
        _ = try? QMPClient(path: qmpSocket(vmid), timeout: 3).execute("quit")
        if !(await waitForExit(pid, seconds: 5)) {
            kill(pid, SIGKILL)
            guard await waitForExit(pid, seconds: 5) else { throw Failure(description: "QEMU \(pid) of VM \(vmid) survives SIGKILL") }
        }
        cleanUp(vmid)
        return .forced
    }

    func waitForExit(_ pid: Int32, seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if !Self.isQemu(pid) { return true }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return !Self.isQemu(pid)
    }

    func cleanUp(_ vmid: Int) {
        for suffix in ["pid", "qmp", "qga", "vnc"] { try? FileManager.default.removeItem(atPath: "\(runDirectory)/\(vmid).\(suffix)") }
    }
}
