import Resources

/// Kinds the tree can declare but this version does not reconcile. Their
/// resources are planned as unavailable, with the reason, so a plan never
/// says "the system matches" about something nothing looked at.
public enum UnmanagedKinds {
    /// Every local container config the selectors name, planned as not managed.
    public static func plan(_ state: DesiredState, only: [ResourceSelector]) -> [ResourcePlan] {
        guard ResourceSelector.wants(only, kind: "lxc") else { return [] }
        return state.localGuests.filter { $0.kind == .lxc && ResourceSelector.select(only, kind: "lxc", name: String($0.vmid)) }
            .sorted { $0.vmid < $1.vmid }
            .map { guest in
                ResourcePlan(kind: "lxc", name: String(guest.vmid), action: .unavailable, source: SourceLocation(file: guest.path, line: 1),
                             changes: [], message: "lxc: not managed by this version of pvectl; the container is neither started nor stopped")
            }
    }
}
