import Foundation
import Resources

extension NetworkReconciler.Computed: KindComputation {}

/// The network kind: bridges, bonds, VLANs, addresses and routes from the interfaces file, through the kernel.
extension NetworkReconciler: ResourceKind {
    public static let name = "network"
    public static let summary = "bridges, bonds, VLANs, addresses and default routes from the interfaces file"
    public static let appliedAfter: [String] = []
    // A recreated bridge loses its VMs' taps and its firewall ports.
    public static let feeds = ["qemu", "firewall"]
    public static let events: Set<HostEvent> = [.kernelNetwork]

    public static func concern(_ change: TreeChange) -> ChangeConcern { change.isInterfaces ? .kind : .none }

    public func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed {
        var computed = try await compute(state, only: context.scope)
        if let staged = state.stagedInterfacesLeftAlone {
            computed.notes.append("\(staged) is staged and left alone: `pvectl apply` installs it")
        }
        return computed
    }

    /// A staged interfaces.new that was the desired state becomes the interfaces file, as ifreload does after applying it.
    public func finishApply(_ computed: Computed, state: DesiredState) throws -> [String] {
        guard let staged = state.interfacesPath, staged.hasSuffix(".new") else { return [] }
        try driver.installStagedInterfaces(staged)
        return ["Installed \(staged) as \(staged.dropLast(4))."]
    }

    public func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] {
        let pending = Dictionary(plan.resources.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var names = Set(computed.desired.map(\.name)).union(computed.records.interfaces.keys)
        names.formUnion(plan.resources.filter { $0.kind == Self.name }.map(\.name))
        return names.sorted().map { name in
            let record = computed.records.interfaces[name]
            let change = pending["network/" + name]
            let condition: String
            var message = record?.message
            switch (record?.status, change) {
            case (_, let change?) where change.action == .blocked:
                condition = "Blocked"
                message = change.message
            case (.inFlight?, _): condition = "Progressing"
            case (.failed?, _): condition = "Degraded"
            case (_, _?): condition = "Pending"
            case (.applied?, nil), (nil, nil): condition = "Ready"
            }
            return StatusRow(id: "network/\(name)", condition: condition, generation: record?.generation, updatedAt: record?.updatedAt,
                             message: message, pendingChanges: change?.changes.map(\.field) ?? [])
        }
    }
}
