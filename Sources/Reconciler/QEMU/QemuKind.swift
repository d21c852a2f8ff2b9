import Foundation
import Resources

extension QemuReconciler.Computed: KindComputation {}

/// The QEMU kind: VMs from their configs, run by QEMU and changed live over QMP.
extension QemuReconciler: GuestKind {
    public static let name = "qemu"
    public static let summary = "VMs from qemu-server/<vmid>.conf: started, stopped, changed live over QMP"
    public static let appliedAfter = ["network", "storage"]
    // A VM cannot start with a disk on a storage this node does not serve.
    public static let reads = ["storage"]
    // A VM start adds NICs the firewall guards.
    public static let feeds = ["firewall"]
    public static let events: Set<HostEvent> = [.kernelNetwork, .qemuEvents]

    public static func concern(_ change: TreeChange) -> ChangeConcern {
        switch change.parts.first {
        case "storage.cfg", "datacenter.cfg", "ha", "virtual-guest": return .kind
        default:
            guard change.isUnderGuestDirectories, change.parts.last != "host.fw" else { return .none }
            // A VM's own config concerns that VM alone.
            if let vmid = change.guestConfig(in: ["qemu-server"]) { return .resource(String(vmid)) }
            return change.parts.last?.hasSuffix(".conf") == true || change.isDirectory ? .kind : .none
        }
    }

    public func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed {
        let inactive = context.input(StorageReconciler.self)?.inactiveStorages(fixedFirst: context.planned.contains(StorageReconciler.name))
            ?? [:]
        let named = Set(context.named.filter { $0.kind == Self.name }.compactMap { $0.name.flatMap { Int($0) } })
        return try await compute(state, only: context.scope, cpuModels: state.cpuModels, inactiveStorages: inactive, named: named)
    }

    public func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] {
        guard let acceleration = computed.acceleration else { return [] }
        let pending = Dictionary(plan.resources.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var rows = [StatusRow(id: "qemu/accelerator", condition: acceleration.kvm ? "KVM" : "TCG", message: acceleration.reason)]
        for status in computed.statuses {
            let id = "qemu/\(status.vmid)"
            let change = pending[id]
            let record = computed.records.vms[String(status.vmid)]
            var condition: String
            switch status.state {
            case .running(_, "shutdown"): condition = "Stopped"
            case .running: condition = "Running"
            case .stopped: condition = "Stopped"
            case .crashed: condition = "Crashed"
            }
            switch change?.action {
            case .blocked?: condition = "Blocked"
            case .pending?: condition += ", restart pending"
            case nil: break
            default: condition += ", changes pending"
            }
            var message = "\(status.name.map { $0 + ": " } ?? "")\(status.state); should be \(status.intent)"
            if let record { message += "; \(record.accelerator.uppercased())" }
            rows.append(StatusRow(id: id, condition: condition, updatedAt: record?.startedAt, message: message,
                                  pendingChanges: change?.changes.map(\.field) ?? []))
        }
        return rows
    }
}
