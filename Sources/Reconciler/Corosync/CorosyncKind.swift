import Foundation
import Resources

extension CorosyncReconciler.Computed: KindComputation {}

/// The corosync kind: the cluster's corosync.conf (`/etc/pve/corosync.conf`) installed where corosync reads it and
/// reloaded, on every node.
extension CorosyncReconciler: ResourceKind {
    public static let name = "corosync"
    public static let summary = "the cluster's corosync.conf, installed and reloaded on every node"
    // Its links run over the node's network.
    public static let appliedAfter = ["network"]
    // A link address must be one of the node's: the kernel's addresses concern it.
    public static let events: Set<HostEvent> = [.kernelNetwork]

    public static func concern(_ change: TreeChange) -> ChangeConcern {
        change.parts == ["corosync.conf"] ? .kind : .none
    }

    public func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed {
        await compute(state)
    }

    public func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] {
        guard let observation = computed.observation else { return [] }
        var rows: [StatusRow] = []
        if !plan.resources.contains(where: { $0.kind == Self.name && $0.name == "config" }) {
            let running = observation.runningVersion.map { "corosync runs config_version \($0)" } ?? "corosync does not run"
            rows.append(StatusRow(id: "corosync/config", condition: "Ready", message: "installed at \(driver.installedPath); \(running)"))
        }
        if observation.qdevice.running, !plan.resources.contains(where: { $0.kind == Self.name && $0.name == "qdevice" }) {
            rows.append(StatusRow(id: "corosync/qdevice", condition: "Ready",
                                  message: "corosync-qdevice runs (QNetd \(observation.qdevice.runningHost ?? "-"))"))
        }
        return rows
    }
}
