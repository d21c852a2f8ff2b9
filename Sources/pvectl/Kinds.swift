import Drivers
import Reconciler

/// The kinds this build of pvectl reconciles, each with its driver: the one place a kind is registered. Plan, apply,
/// status, `pvectl run`, `--only`, `--report-only` and their help texts all come from this list.
struct KindSettings {
    var store: StateStore
    var qemuAcceleration: String
    /// Guests (VMs and containers) `apply --restart` restarts for pending changes; nil without --restart.
    var restartGuests: Set<Int>?
    /// The cluster file system's root: the corosync kind finds the cluster's QDevice certificates under it.
    var root = "/etc/pve"
}

enum Kinds {
    /// Name and summary of every registered kind, for help texts (built before any option is parsed; making the
    /// kinds does no I/O).
    static let catalog: [(name: String, summary: String)] = registered(KindSettings(store: StateStore(directory: "/nonexistent"),
                                                                                     qemuAcceleration: "auto"))
        .map { (type(of: $0).name, type(of: $0).summary) }

    static func registered(_ settings: KindSettings) -> [any ResourceKind] {
        [
            NetworkReconciler(driver: KernelNetworkDriver(), store: settings.store),
            StorageReconciler(driver: HostStorageDriver(), store: settings.store),
            QemuReconciler(driver: QemuProcessDriver(), store: settings.store, accelerationSetting: settings.qemuAcceleration,
                           restart: settings.restartGuests),
            LxcReconciler(driver: LxcToolDriver(), store: settings.store, restart: settings.restartGuests),
            FirewallReconciler(driver: NftablesFirewallDriver(), store: settings.store),
            CorosyncReconciler(driver: HostCorosyncDriver(root: settings.root)),
        ]
    }

    static var names: String { catalog.map(\.name).joined(separator: ", ") }
}
