import Resources

/// Which files of a repository are /etc/pve files a push writes, and in what order. A repository mirrors /etc/pve:
/// `storage.cfg`, `nodes/<node>/qemu-server/<vmid>.conf`, `firewall/cluster.fw`, ..., plus one file of this product's
/// own layout, `nodes/<node>/network/interfaces` (the node's /etc/network/interfaces, staged there as
/// `interfaces.new`). Anything else in the repository (a README, CI files) is not pushed.
public enum PushLayout {
    /// The order files are written in: what others refer to first (storages before the guests on them, guests before
    /// the HA resources and jobs naming them). Deletions go last, in the reverse order.
    public enum Stage: Int, Sendable, Comparable, Codable {
        case cluster = 0
        case firewall = 1
        case guests = 2
        case references = 3
        case network = 4

        public static func < (lhs: Stage, rhs: Stage) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// Files of the cluster at the root, and their stage.
    static let rootFiles: [String: Stage] = [
        "storage.cfg": .cluster, "datacenter.cfg": .cluster, "user.cfg": .cluster, "domains.cfg": .cluster,
        "corosync.conf": .cluster, "notifications.cfg": .cluster, "virtual-guest/cpu-models.conf": .cluster,
        "jobs.cfg": .references, "replication.cfg": .references, "vzdump.cron": .references,
    ]
    /// Directories whose `*.cfg` files are pushed, and their stage.
    static let configDirectories: [String: Stage] = ["sdn": .cluster, "mapping": .cluster, "ha": .references]

    /// The stage of a relative path, or nil when a push does not write it. `priv/` only when asked for.
    public static func stage(of path: String, includePrivate: Bool) -> Stage? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." || $0.hasPrefix(".") }),
              !path.contains(where: { $0 == "\t" || $0 == "\n" || $0 == "\r" }) else { return nil }
        if parts.first == "priv" { return includePrivate && parts.count > 1 && parts[1] != "lock" ? .cluster : nil }
        if let stage = rootFiles[path] { return stage }
        if parts.count == 2, let stage = configDirectories[parts[0]], parts[1].hasSuffix(".cfg") { return stage }
        if parts.count == 2, parts[0] == "firewall", parts[1].hasSuffix(".fw") { return .firewall }
        guard parts.count >= 3, parts[0] == "nodes" else { return nil }
        switch Array(parts.dropFirst(2)) {
        case ["host.fw"]: return .firewall
        case ["network", "interfaces"]: return .network
        case let rest where rest.count == 2 && ["qemu-server", "lxc"].contains(rest[0]) && GuestConfig.vmid(forPath: rest[1]) != nil:
            return .guests
        default: return nil
        }
    }

    /// The guest kind of a guest config path.
    public static func guestKind(of path: String) -> GuestConfig.Kind? {
        let parts = path.split(separator: "/").map(String.init)
        guard parts.count == 4, parts[0] == "nodes", GuestConfig.vmid(forPath: parts[3]) != nil else { return nil }
        return parts[2] == "qemu-server" ? .qemu : parts[2] == "lxc" ? .lxc : nil
    }

    /// The node a `nodes/<node>/network/interfaces` file is for.
    public static func interfacesNode(of path: String) -> String? {
        let parts = path.split(separator: "/").map(String.init)
        return parts.count == 4 && parts[0] == "nodes" && parts[2] == "network" && parts[3] == "interfaces" ? parts[1] : nil
    }

    /// Where a push keeps its record inside the tree (every node reads it).
    public static let recordDirectory = "pvectl"
    /// The lock directory a push holds, as pmxcfs locks work (`priv/lock/NAME`, expired after 120 s).
    public static let lockPath = "priv/lock/pvectl-push"
    public static let lockExpiry: Double = 120
}
