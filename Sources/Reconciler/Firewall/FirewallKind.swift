import Foundation
import Resources

extension FirewallReconciler.Computed: KindComputation {}

/// The firewall kind: cluster, host and guest .fw files compiled to one nftables ruleset, guest NICs behind it.
extension FirewallReconciler: ResourceKind {
    public static let name = "firewall"
    public static let summary = "cluster, host and guest .fw files as one nftables ruleset"
    // It guards the VMs' NICs on the bridges.
    public static let appliedAfter = ["network", "qemu"]
    // A VM started by the same apply has NICs the plan did not see.
    public static let replannedAfter = ["qemu"]
    public static let events: Set<HostEvent> = [.kernelNetwork]

    public static func concern(_ change: TreeChange) -> ChangeConcern {
        // The local_network may come from the interfaces file; the node's address from corosync.conf.
        if change.isInterfaces { return .kind }
        switch change.parts.first {
        case "firewall", "corosync.conf", "datacenter.cfg": return .kind
        default:
            guard change.isUnderGuestDirectories else { return .none }
            let last = change.parts.last ?? ""
            return last == "host.fw" || last.hasSuffix(".conf") || change.isDirectory ? .kind : .none
        }
    }

    public func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed {
        try await compute(state, only: context.scope)
    }

    public func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] {
        guard !plan.resources.contains(where: { $0.id == "firewall/ruleset" }), let digest = computed.records.scriptDigest,
              computed.compiled?.enabled == true else { return [] }
        return [StatusRow(id: "firewall/ruleset", condition: "Ready", generation: String(digest.prefix(12)), updatedAt: computed.records.appliedAt,
                          message: "\(computed.records.rules.count) rules loaded; "
                                       + "\(computed.records.ports.count) guest NIC(s) behind firewall bridges")]
    }
}
