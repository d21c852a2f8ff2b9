import Foundation
import Resources

/// The LXC kind: containers from their configs, run by LXC and changed live in their cgroups and NICs.
extension LxcReconciler: GuestKind {
    public static let name = "lxc"
    public static let summary = "containers from lxc/<vmid>.conf: started, stopped, limits and NICs changed live"
    public static let appliedAfter = ["network", "storage"]
    // A container cannot start with a volume on a storage this node does not serve.
    public static let reads = ["storage"]
    // The host facts (a bridge's MTU) are read again once the network kind created what it plans.
    public static let replannedAfter = ["network"]
    // A start adds NICs the firewall guards.
    public static let feeds = ["firewall"]
    public static let events: Set<HostEvent> = [.kernelNetwork, .containerEvents]

    public static func concern(_ change: TreeChange) -> ChangeConcern {
        switch change.parts.first {
        case "storage.cfg", "datacenter.cfg", "ha": return .kind
        default:
            guard change.isUnderGuestDirectories, change.parts.last != "host.fw" else { return .none }
            if let vmid = change.guestConfig(in: ["lxc"]) { return .resource(String(vmid)) }
            return change.isDirectory ? .kind : .none
        }
    }

    public func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] {
        let pending = Dictionary(plan.resources.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        return computed.statuses.map { status in
            let id = "\(Self.name)/\(status.vmid)"
            let change = pending[id]
            let record = computed.records.containers[String(status.vmid)]
            var condition: String
            switch status.state {
            case .running: condition = "Running"
            case .frozen: condition = "Frozen"
            case .stopped: condition = "Stopped"
            }
            switch change?.action {
            case .blocked?: condition = "Blocked"
            case .pending?: condition += ", restart pending"
            case nil: break
            default: condition += ", changes pending"
            }
            return StatusRow(id: id, condition: condition, updatedAt: record?.startedAt,
                             message: "\(status.hostname.map { $0 + ": " } ?? "")\(status.state); should be \(status.intent)",
                             pendingChanges: change?.changes.map(\.field) ?? [])
        }
    }
}
