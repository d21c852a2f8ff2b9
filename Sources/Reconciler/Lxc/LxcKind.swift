import Foundation
import Resources

/// Containers, until this version reconciles them: every local container config is planned as unavailable with the
/// reason, so a plan never says "the system matches" about something nothing looked at. Nothing is applied.
public struct LxcKind: ResourceKind {
    public struct Computed: KindComputation {
        public var resources: [ResourcePlan] = []
        public var problems: [Diagnostic] = []
    }

    public static let name = "lxc"
    public static let summary = "containers from lxc/<vmid>.conf (not managed yet: planned as unavailable)"
    public static let appliedAfter = ["network", "storage"]

    public init() {}

    public static func concern(_ change: TreeChange) -> ChangeConcern {
        if let vmid = change.guestConfig(in: ["lxc"]) { return .resource(String(vmid)) }
        return change.isUnderGuestDirectories && change.isDirectory ? .kind : .none
    }

    public func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed {
        let resources = state.localGuests
            .filter { $0.kind == .lxc && ResourceSelector.select(context.scope, kind: Self.name, name: String($0.vmid)) }
            .sorted { $0.vmid < $1.vmid }
            .map { guest in
                ResourcePlan(kind: Self.name, name: String(guest.vmid), action: .unavailable, source: SourceLocation(file: guest.path, line: 1),
                             changes: [], message: "lxc: not managed by this version of pvectl; the container is neither started nor stopped")
            }
        return Computed(resources: resources)
    }

    public func apply(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome { ApplyOutcome() }

    public func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] { [] }
}
