import Foundation
import Subprocess

/// Container state changes from LXC's monitor (`lxc-monitor`, fed by every container's monitor process through
/// lxc-monitord): a container started, stopped, or lost its init.
public final class LxcEventListener: Sendable {
    public struct Event: Sendable, Equatable {
        public var vmid: Int
        /// STARTING, RUNNING, STOPPING, STOPPED, ABORTING, FREEZING, FROZEN, THAWED, or EXITED (init exited).
        public var state: String

        public init(vmid: Int, state: String) {
            self.vmid = vmid
            self.state = state
        }
    }

    private let task: Task<Void, Never>

    /// Follows `lxc-monitor` until `stop()`; `onExit` is told when the monitor ends by itself (with why).
    public init(lxcPath: String = "/var/lib/lxc", onEvent: @escaping @Sendable (Event) -> Void,
                onExit: @escaping @Sendable (String) -> Void = { _ in }) throws {
        guard Command.locate("lxc-monitor") != nil else { throw MissingExecutable(name: "lxc-monitor") }
        task = Task {
            do {
                let result = try await Subprocess.run(.name("lxc-monitor"), arguments: ["-P", lxcPath, "-n", ".*"], input: .none,
                                                      output: .sequence, error: .discarded) { execution in
                    for try await line in execution.standardOutput.strings() {
                        if let event = Self.parse(line) { onEvent(event) }
                    }
                }
                if !Task.isCancelled { onExit("lxc-monitor ended (\(result.terminationStatus))") }
            } catch {
                if !Task.isCancelled { onExit("lxc-monitor: \(error)") }
            }
        }
    }

    deinit { task.cancel() }

    public func stop() { task.cancel() }

    /// `'200' changed state to [STOPPED]` or `'200' exited with status [0]`; nil for other lines and non-numeric names.
    public static func parse(_ line: String) -> Event? {
        let parts = line.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let vmid = Int(parts[1]), let open = parts[2].lastIndex(of: "["),
              let close = parts[2].lastIndex(of: "]"), open < close else { return nil }
        let value = String(parts[2][parts[2].index(after: open)..<close])
        if parts[2].contains("changed state to") { return Event(vmid: vmid, state: value) }
        if parts[2].contains("exited with status") { return Event(vmid: vmid, state: "EXITED") }
        return nil
    }
}
