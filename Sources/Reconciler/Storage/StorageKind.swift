import Foundation
import Resources

extension StorageReconciler.Computed: KindComputation {}

/// The storage kind: storages from storage.cfg (mounts, volume groups, directories) and the volumes guest configs use.
extension StorageReconciler: ResourceKind {
    public static let name = "storage"
    public static let summary = "storages from storage.cfg and the guests' volumes"
    // NFS, CIFS and iSCSI storages are reached over the network.
    public static let appliedAfter = ["network"]
    // A storage coming up lets VMs start.
    public static let feeds = ["qemu"]

    public static func concern(_ change: TreeChange) -> ChangeConcern {
        if change.parts == ["storage.cfg"] { return .kind }
        guard change.isUnderGuestDirectories, change.parts.last != "host.fw" else { return .none }
        // A guest config names its volumes; a directory that appeared or went may hold configs.
        return change.parts.last?.hasSuffix(".conf") == true || change.isDirectory ? .kind : .none
    }

    public func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed {
        try await compute(state, only: context.scope)
    }

    /// A row per storage the plan leaves alone (Ready, or Inactive with why); planned ones get the engine's row.
    public func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] {
        let planned = Set(plan.resources.map(\.id))
        let selectors = scope.filter { $0.kind == Self.name }
        return computed.statuses
            .filter { ResourceSelector.select(selectors, kind: Self.name, name: $0.storage.id) && !planned.contains("storage/" + $0.storage.id) }
            .map { StatusRow(id: "storage/" + $0.storage.id, condition: $0.active ? "Ready" : "Inactive", message: $0.reason) }
    }
}

extension StorageReconciler.Computed {
    /// Storages this node cannot serve now, with the reason, for the guest kinds: a guest with a volume there cannot
    /// start. With `fixedFirst` (the storage kind applies in the same run), storages it creates or activates first are
    /// not in the way.
    public func inactiveStorages(fixedFirst: Bool) -> [String: String] {
        let fixed = fixedFirst ? Set(resources.filter { [.create, .update].contains($0.action) && !$0.name.contains(":") }.map(\.name)) : []
        var inactive: [String: String] = [:]
        for status in statuses where !status.active && !fixed.contains(status.storage.id) {
            inactive[status.storage.id] = status.reason ?? "inactive"
        }
        return inactive
    }
}
