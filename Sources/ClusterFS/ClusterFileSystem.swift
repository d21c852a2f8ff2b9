import Crypto
import Foundation
import Resources
import Synchronization

public enum EntryType: UInt8, Sendable {
    case directory = 4
    case file = 8
}

/// One file or directory of the tree, as the original keeps it.
final class Entry {
    var inode: UInt64
    var parent: UInt64
    var version: UInt64
    var writer: UInt32
    var mtime: UInt32
    var type: EntryType
    var name: String
    var data: [UInt8]
    /// The id the kernel knows this entry by: inode + 1, until a change from another node renames it (then a fresh
    /// one, so that the kernel's name for the old place is stale, see `ClusterFileSystem.path(ofNode:)`).
    var nodeID: UInt64
    /// By name. The entries themselves, not their inodes: a path is resolved on every change, and an inode per name would
    /// be one more table lookup per name.
    @exclusivity(unchecked) private(set) var children: [EntryName: Entry] = [:]
    /// How many children are directories: a directory's link count, asked on every GETATTR of it (the kernel asks
    /// for the parent's attributes after each change in it), so it is kept instead of counted.
    private(set) var subdirectories = 0
    /// Changed since the kernel was last given its attributes: the kernel holds its size as unknown (a write, a
    /// truncation or a rename through the mount invalidates it; a change from another node is invalidated by notify).
    /// See `ClusterFileSystem.readBypassesPageCache(node:)`.
    var attributesStaleInKernel = false

    init(inode: UInt64, parent: UInt64, version: UInt64, writer: UInt32, mtime: UInt32, type: EntryType, name: String, data: [UInt8] = []) {
        self.inode = inode
        self.parent = parent
        self.version = version
        self.writer = writer
        self.mtime = mtime
        self.type = type
        self.name = name
        self.data = data
        nodeID = inode + 1
    }

    /// The directory this entry is linked into (`parent`'s entry), set by `link`: walking up to the root (the kernel names
    /// entries by id, the path is rebuilt from there) then needs no table lookup per level. Unowned: a directory holds
    /// its children, never the other way round.
    unowned(safe) var parentEntry: Entry?

    func link(_ child: Entry) {
        child.parentEntry = self
        children[EntryName(child.name)] = child
        if child.type == .directory { subdirectories += 1 }
    }

    func unlink(_ child: Entry, name: String) {
        if children.removeValue(forKey: EntryName(name)) != nil && child.type == .directory { subdirectories -= 1 }
    }

    func child(named name: String) -> Entry? { children[EntryName(name)] }

    var row: Database.Row {
        Database.Row(inode: inode, parent: parent, version: version, writer: writer, mtime: mtime, type: type.rawValue, name: name, data: data)
    }
}

/// What the kernel must forget after a change it did not see (cluster mode): the attributes of `attributes` and the
/// cached pages of `contents` (FUSE node ids).
public struct CacheInvalidation: Sendable, Equatable {
    public var attributes: Set<UInt64> = []
    public var contents: Set<UInt64> = []
    public var isEmpty: Bool { attributes.isEmpty && contents.isEmpty }
}

/// The FUSE node ids the kernel holds: its lookup count per node (every LOOKUP, CREATE, MKDIR and MKNOD
/// answer adds one, a FORGET takes its count away). Only these can have names, attributes or pages cached, so a change
/// from another node notifies the kernel about these alone (a notify about any other answers ENOENT, a system call
/// for nothing: most of a receiving node's changes are to files its kernel never looked up). The count is raised
/// before the answer is sent and lowered after the kernel forgot, so it never misses a node the kernel holds.
public final class KernelNodeTable: Sendable {
    private let lookups = Mutex<[NumberKey: UInt64]>([:])

    public init() {}

    /// An answer naming `node` is about to be sent.
    public func learned(_ node: UInt64) {
        lookups.withLock { $0[NumberKey(node), default: 0] += 1 }
    }

    /// The kernel dropped `count` of its references to `node`.
    public func forgot(_ node: UInt64, count: UInt64) {
        lookups.withLock { table in
            guard let held = table[NumberKey(node)] else { return }
            table[NumberKey(node)] = held > count ? held - count : nil
        }
    }

    /// Whether the kernel may hold `node` (the root always).
    public func holds(_ node: UInt64) -> Bool {
        lookups.withLock { Self.holds(node, in: $0) }
    }

    /// What of `stale` the kernel may hold (one lock for the whole set).
    func held(_ stale: CacheInvalidation) -> CacheInvalidation {
        lookups.withLock { table in
            let holds = { (node: UInt64) in Self.holds(node, in: table) }
            // Mostly none is (see above): then no set is built.
            let anyHeld = stale.attributes.contains(where: holds) ? true : stale.contents.contains(where: holds)
            guard anyHeld else { return CacheInvalidation() }
            return CacheInvalidation(attributes: stale.attributes.filter(holds), contents: stale.contents.filter(holds))
        }
    }

    private static func holds(_ node: UInt64, in table: [NumberKey: UInt64]) -> Bool {
        node == ClusterFileSystem.rootNodeID || table[NumberKey(node)] != nil
    }
}

/// What `stat` shows.
public struct Attributes: Equatable, Sendable {
    public enum Kind: Sendable { case file, directory, symlink }
    public var inode: UInt64
    public var kind: Kind
    public var mode: UInt32
    public var size: Int
    public var mtime: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var links: Int
    /// The node id the kernel knows this entry by (low-level FUSE): 1 for
    /// the root, the tree inode + 1 otherwise, fixed ids for virtual entries.
    public var nodeID: UInt64
    /// Whether the kernel may cache the attributes and the name. Status files
    /// and lock directories change without a file system call (generated
    /// content, lock expiry), so they are asked for every time.
    public var cacheable: Bool
}

/// The cluster file system's semantics in local mode: an in-memory tree under
/// one lock, every change persisted in SQLite before it is acknowledged, and
/// the rules of the original pmxcfs (ownership and modes, `priv/`, the 1 MiB
/// limit, locks under `priv/lock`, unique VMIDs, virtual status files and
/// symlinks). Methods return 0 or a negative errno, like FUSE.
public final class ClusterFileSystem: @unchecked Sendable {
    // @unchecked: every access to the mutable state holds `lock` (as the
    // original holds one global mutex). The same lock makes the run-time
    // exclusivity checks on the state every change touches redundant:
    // those properties are @exclusivity(unchecked) (the checks showed in the
    // cost of every change).
    private let lock = NSLock()
    @exclusivity(unchecked) private var entries: [NumberKey: Entry] = [:]
    /// `entries[rootInode]`, where every path starts.
    private var root = Entry(inode: ClusterFileSystem.rootInode, parent: ClusterFileSystem.rootInode, version: 0, writer: 0, mtime: 0,
                             type: .directory, name: "")
    @exclusivity(unchecked) private var version: UInt64 = 1
    private var versionMTime: UInt32 = 0
    private let database: Database
    public let node: String
    public let wwwDataGID: UInt32
    public let startTime: UInt32
    private var debugLevel = 0
    /// The status key/value store (SET_STATUS/GET_STATUS), per node; memory only.
    private var statusStore: [String: [String: [UInt8]]] = [:]
    private var statusVersions: [String: [String: UInt32]] = [:]
    /// The cluster log, oldest first; bounded.
    private var clusterLogEntries: [ClusterLogEntry] = []
    private var nextLogUID: UInt32 = 1
    static let clusterLogCapacity = 4096
    private let clock: @Sendable () -> UInt32
    /// The guest list (`.vmlist`): node, type and a version per VMID, kept
    /// as the original keeps it (a counter bumped on every registration).
    private var vmlist: [Int: GuestInfo] = [:]
    private var vmlistVersion: UInt32 = 0
    private var guestVersionCounter: UInt32 = 0
    /// Change counters of the files `.version` reports (all 1 after startup).
    private var changeCounters: [String: UInt32] = [:]
    /// Node ids given to entries moved by another node's change (or by a sync): node id → inode.
    @exclusivity(unchecked) private var movedNodes: [NumberKey: UInt64] = [:]
    private var nextMovedNode = ClusterFileSystem.movedNodeBase
    /// Cluster mode: what the change being applied made stale in the kernel's caches (collected under `lock`).
    @exclusivity(unchecked) private var pendingInvalidation = CacheInvalidation()
    /// Tells the kernel to forget cached attributes and pages (set by the mount; nil when nothing is mounted).
    public var invalidateKernelCache: (@Sendable (CacheInvalidation) -> Void)? {
        get { modeLock.withLock { invalidator } }
        set { modeLock.withLock { invalidator = newValue } }
    }
    private var invalidator: (@Sendable (CacheInvalidation) -> Void)?
    /// The node ids the kernel holds (kept by the mount): what a change it did not see can have left stale there.
    public let kernelNodes = KernelNodeTable()

    struct GuestInfo {
        var node: String
        var type: String
        var version: UInt32
    }

    /// The files whose changes `.version` counts, in the original's order:
    /// the tools poll it to know when to re-read them.
    static let trackedFiles = [
        "corosync.conf", "corosync.conf.new", "storage.cfg", "user.cfg", "domains.cfg", "notifications.cfg",
        "priv/notifications.cfg", "priv/shadow.cfg", "priv/acme/plugins.cfg", "priv/tfa.cfg", "priv/token.cfg",
        "priv/ipam.db", "priv/macs.db", "datacenter.cfg", "vzdump.cron", "vzdump.conf", "jobs.cfg", "ha/crm_commands",
        "ha/manager_status", "ha/resources.cfg", "ha/groups.cfg", "ha/fence.cfg", "status.cfg", "replication.cfg",
        "ceph.conf", "sdn/vnets.cfg", "sdn/zones.cfg", "sdn/controllers.cfg", "sdn/subnets.cfg", "sdn/ipams.cfg",
        "sdn/mac-cache.json", "sdn/pve-ipam-state.json", "sdn/dns.cfg", "sdn/fabrics/openfabric.cfg",
        "sdn/fabrics/ospf.cfg", "sdn/.running-config", "virtual-guest/cpu-models.conf", "virtual-guest/profiles.cfg",
        "firewall/cluster.fw", "mapping/directory.cfg", "mapping/pci.cfg", "mapping/usb.cfg",
    ]

    public static let maxFileSize = 1 << 20
    /// How long a lock lives unchanged before an unlock request releases it (the original's 120 s).
    public static let lockExpiry: UInt32 = 120
    let lockTimeout: UInt32
    static let rootInode: UInt64 = 0
    static let statusFiles = [".version", ".members", ".vmlist", ".clusterlog", ".debug", ".rrd"]
    static let symlinkNames = ["local", "qemu-server", "lxc", "openvz"]
    public static let rootNodeID: UInt64 = 1
    static let movedNodeBase: UInt64 = 1 << 60
    static let statusNodeBase: UInt64 = 1 << 61
    static let symlinkNodeBase: UInt64 = 1 << 62
    static let guestDirectories = ["qemu-server": "qemu", "lxc": "lxc", "openvz": "openvz"]

    public struct StartupError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Opens the database and loads the tree; a tree with duplicate names or
    /// missing parents is refused, as upstream refuses it.
    /// - Parameter clock: seconds since the epoch; tests pass their own to age locks.
    /// - Parameter cluster: run in cluster mode when the database holds `corosync.conf` (as the original decides);
    ///   then the node's directories are made through the cluster once it synced, not here.
    /// - Parameter importCorosyncConfig: corosync's own file, taken into a database that has none (as the original
    ///   imports /etc/corosync/corosync.conf at startup): a node joining a cluster starts from it in cluster mode.
    public init(databasePath: String, node: String, cluster: Bool = false, lockExpiry: UInt32 = ClusterFileSystem.lockExpiry,
                importCorosyncConfig: [UInt8]? = nil, clock: @escaping @Sendable () -> UInt32 = { UInt32(time(nil)) }) throws {
        database = try Database(path: databasePath)
        self.node = node
        self.clock = clock
        lockTimeout = lockExpiry
        wwwDataGID = UInt32(getgrnam("www-data")?.pointee.gr_gid ?? 33)
        startTime = clock()
        try load(try database.loadAll())
        rememberLocks()
        if cluster, resolve(["corosync.conf"]) == nil, let imported = importCorosyncConfig {
            guard create("/corosync.conf") == 0,
                  imported.withUnsafeBytes({ Int(write("/corosync.conf", bytes: $0, offset: 0)) }) == imported.count
            else { throw StartupError(description: "cannot import corosync.conf") }
        }
        if cluster && resolve(["corosync.conf"]) != nil {
            clusterMode = true
            collecting = true
        }
        // The directories every node has.
        for path in ["nodes", "nodes/\(node)", "nodes/\(node)/qemu-server", "nodes/\(node)/lxc", "nodes/\(node)/openvz",
                     "nodes/\(node)/priv", "priv", "priv/lock"] where !clusterMode && resolve(components(path)) == nil {
            let result = mkdir("/" + path)
            if result != 0 { throw StartupError(description: "cannot create /\(path): errno \(-result)") }
        }
        // As after the original's database load: every counter at 1, the
        // guest list built once (version 1), each guest numbered in turn.
        for file in Self.trackedFiles { changeCounters[file] = 1 }
        vmlistVersion = 1
        for (vmid, guest) in scanGuests().sorted(by: { $0.key < $1.key }) {
            guestVersionCounter += 1
            vmlist[vmid] = GuestInfo(node: guest.node, type: guest.type, version: guestVersionCounter)
        }
        log(priority: 6, ident: "root", tag: "cluster", pid: getpid(), message: "starting cluster log")
    }

    /// The tree from database rows (row 0 is `__version__`); duplicate names and missing parents are refused.
    private func load(_ rows: [Database.Row]) throws {
        let root = Entry(inode: Self.rootInode, parent: Self.rootInode, version: 0, writer: 0, mtime: startTime, type: .directory, name: "")
        var loaded: [NumberKey: Entry] = [NumberKey(Self.rootInode): root]
        var loadedVersion: UInt64 = 1
        for row in rows where row.inode == Self.rootInode {
            loadedVersion = row.version
            root.mtime = row.mtime
        }
        for row in rows where row.inode != Self.rootInode {
            guard let type = EntryType(rawValue: row.type) else { throw StartupError(description: "inode \(row.inode): unknown type \(row.type)") }
            loaded[NumberKey(row.inode)] = Entry(inode: row.inode, parent: row.parent, version: row.version, writer: row.writer,
                                                 mtime: row.mtime, type: type, name: row.name, data: row.data)
        }
        for entry in loaded.values where entry.inode != Self.rootInode {
            guard let parent = loaded[NumberKey(entry.parent)], parent.type == .directory else {
                throw StartupError(description: "inode \(entry.inode) (\(entry.name)): missing parent \(entry.parent)")
            }
            if parent.child(named: entry.name) != nil {
                throw StartupError(description: "duplicate name '\(entry.name)' in directory inode \(entry.parent)")
            }
            parent.link(entry)
        }
        // Parents that name each other (a cycle) are no missing parent, but their entries hang from nothing: a walk up
        // from them would never reach the root.
        var reachable = 0
        var directories = [root]
        while let directory = directories.popLast() {
            reachable += directory.children.count
            directories += directory.children.values.filter { $0.type == .directory }
        }
        guard reachable == loaded.count - 1 else {
            throw StartupError(description: "\(loaded.count - 1 - reachable) entries are not reachable from the root (parents in a cycle)")
        }
        entries = loaded
        self.root = root
        version = loadedVersion
        versionMTime = root.mtime
    }

    // MARK: replicas

    /// The whole tree as rows, with the global version.
    public func snapshot() -> TreeSnapshot {
        lock.withLock {
            TreeSnapshot(version: version, mtime: versionMTime, rows: entries.values.filter { $0.inode != Self.rootInode }
                .sorted { $0.inode < $1.inode }
                .map { TreeSnapshot.Row(inode: $0.inode, parent: $0.parent, version: $0.version, writer: $0.writer, mtime: $0.mtime,
                                        type: $0.type.rawValue, name: $0.name, data: $0.data) })
        }
    }

    /// Takes another node's tree: the database replaced in one transaction, then the memory reloaded from it; the guest
    /// list and the change counters follow. A snapshot that is not a tree is refused and nothing changes.
    public func replace(with snapshot: TreeSnapshot) throws {
        try lock.withLock {
            let rows = snapshot.rows.map { Database.Row(inode: $0.inode, parent: $0.parent, version: $0.version, writer: $0.writer,
                                                        mtime: $0.mtime, type: $0.type, name: $0.name, data: $0.data) }
            let versionRow = Database.Row(inode: Self.rootInode, parent: Self.rootInode, version: snapshot.version, writer: 0,
                                          mtime: snapshot.mtime, type: EntryType.directory.rawValue, name: "__version__", data: [])
            let previous = (entries, root, version, versionMTime)
            do {
                try load(rows + [versionRow])
            } catch {
                (entries, root, version, versionMTime) = previous
                throw error
            }
            do {
                try database.replaceAll(with: rows, version: versionRow)
            } catch {
                (entries, root, version, versionMTime) = previous
                throw error
            }
            // What waited belonged to the tree just replaced.
            unpersisted = [:]
            unpersistedVersion = nil
            treeReplaced(previous: previous.0)
        }
        flushInvalidation()
    }

    /// Under `lock`, after the tree was loaded anew (`previous`: the entries before): locks, `.version`'s counters and
    /// the guest list follow it.
    private func treeReplaced(previous: [NumberKey: Entry]) {
        rememberLocks()
        for file in Self.trackedFiles { changeCounters[file, default: 0] &+= 1 }
        vmlistVersion &+= 1
        vmlist = [:]
        for (vmid, guest) in scanGuests().sorted(by: { $0.key < $1.key }) {
            guestVersionCounter += 1
            vmlist[vmid] = GuestInfo(node: guest.node, type: guest.type, version: guestVersionCounter)
        }
        // Whatever the kernel holds of the old tree is stale: every entry gets a fresh node id (the kernel looks
        // each path up again), and what it cached under the old ones goes.
        if collecting {
            kernelSawChange = false
            for entry in previous.values { stale(entry, contents: entry.type == .file) }
            pagesMayBeCached = []
            movedNodes = [:]
            for entry in entries.values where entry.inode != Self.rootInode { renumber(entry) }
        }
    }

    // MARK: paths

    /// Split on the bytes: splitting the String itself walks grapheme clusters, which cost every operation more than
    /// the tree lookup it serves (a '/' byte is never part of another UTF-8 character).
    func components(_ path: String) -> [String] {
        var parts: [String] = []
        parts.reserveCapacity(6)
        _ = Self.forEachName(in: path) { name in
            parts.append(String(decoding: name, as: UTF8.self))
            return true
        }
        return parts
    }

    /// Calls `body` with the bytes of each name in `path`, in order, while it returns true; returns whether it always
    /// did. In place: every change (and every lookup by path) splits one, and an array per name showed in its cost.
    static func forEachName(in path: String, _ body: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        var path = path
        return path.withUTF8 { bytes in
            var start = 0
            for index in 0...bytes.count where index == bytes.count || bytes[index] == UInt8(ascii: "/") {
                if index > start && !body(UnsafeBufferPointer(rebasing: bytes[start..<index])) { return false }
                start = index + 1
            }
            return true
        }
    }

    /// Whether `path` names `.debug` (its writes set the log level here and are not replicated). Asked on every write:
    /// the names are looked at in place, no array is split for it.
    static func isDebugFile(_ path: String) -> Bool {
        var names = 0
        var debug = false
        _ = forEachName(in: path) { name in
            names += 1
            debug = name.elementsEqual(".debug".utf8)
            return names == 1
        }
        return names == 1 && debug
    }

    /// A name an entry may get: what a kernel could hand the mount (see `TreeOperation.isValidPath`).
    static func isValidName(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { isValidName(utf8: $0) }
    }

    static func isValidName(utf8 name: UnsafeBufferPointer<UInt8>) -> Bool {
        let dot = UInt8(ascii: ".")
        let dots = name.count == 1 ? name[0] == dot : name.count == 2 && name[0] == dot && name[1] == dot
        return !dots && !name.contains(0)
    }

    /// The path of `name` in `directory` (an absolute path, "/" for the root).
    static func childPath(_ directory: String, _ name: String) -> String {
        directory == "/" ? "/" + name : directory + "/" + name
    }

    private func resolve(_ parts: some Sequence<String>) -> Entry? {
        var current = root
        for part in parts {
            guard current.type == .directory, let child = current.child(named: part) else { return nil }
            current = child
        }
        return current
    }

    private func isPrivate(_ parts: [String]) -> Bool {
        parts.first == "priv" || (parts.count >= 3 && parts[0] == "nodes" && parts[2] == "priv")
    }

    private func isLockDirectory(_ parts: some Collection<String>) -> Bool {
        parts.count == 3 && parts.starts(with: Self.lockParent)
    }

    /// priv/lock, as names (a constant: an array literal in a check on every change is built every time).
    private static let lockParent = ["priv", "lock"]

    private func symlinkTarget(_ parts: [String]) -> String? {
        guard parts.count == 1 else { return nil }
        switch parts[0] {
        case "local": return "nodes/\(node)"
        case "qemu-server", "lxc", "openvz": return "nodes/\(node)/\(parts[0])"
        default: return nil
        }
    }

    private func isSpecial(_ parts: [String]) -> Bool {
        parts.count == 1 && (Self.statusFiles.contains(parts[0]) || symlinkTarget(parts) != nil)
    }

    /// VMID and type of a guest config path: nodes/N/qemu-server/100.conf.
    private func guestConfig(_ parts: [String]) -> (node: String, type: String, vmid: Int)? {
        guard parts.count == 4, parts[0] == "nodes", let type = Self.guestDirectories[parts[2]],
              parts[3].hasSuffix(".conf"), let vmid = Int(parts[3].dropLast(5)), String(vmid) + ".conf" == parts[3] else { return nil }
        return (parts[1], type, vmid)
    }

    /// The guest configs in the tree (startup only; afterwards `vmlist` is kept up to date).
    private func scanGuests() -> [Int: (node: String, type: String)] {
        var result: [Int: (String, String)] = [:]
        guard let nodes = resolve(["nodes"]) else { return [:] }
        for nodeEntry in nodes.children.values {
            let nodeName = nodeEntry.name
            for (directory, type) in Self.guestDirectories {
                guard let dir = nodeEntry.child(named: directory) else { continue }
                for entry in dir.children.values {
                    guard let config = guestConfig(["nodes", nodeName, directory, entry.name]), entry.type == .file else { continue }
                    result[config.vmid] = (nodeName, type)
                }
            }
        }
        return result
    }

    /// EEXIST when a guest config would give a VMID a second home.
    private func checkVMID(_ parts: [String], movingFrom source: [String]? = nil) -> Int32 {
        guard let target = guestConfig(parts) else { return 0 }
        guard let existing = vmlist[target.vmid] else { return 0 }
        if existing.node == target.node && existing.type == target.type { return 0 }
        // Migration: the same VMID moved between nodes (same type).
        if let source, let from = guestConfig(source), from.vmid == target.vmid, from.node == existing.node,
           from.type == existing.type, from.type == target.type {
            return 0
        }
        return -EEXIST
    }

    /// A write, truncation or creation of a guest config (re)registers the guest.
    private func registerGuest(_ parts: [String]) {
        guard let config = guestConfig(parts) else { return }
        vmlistVersion &+= 1
        guestVersionCounter &+= 1
        vmlist[config.vmid] = GuestInfo(node: config.node, type: config.type, version: guestVersionCounter)
    }

    private func unregisterGuest(_ parts: [String]) {
        guard let config = guestConfig(parts) else { return }
        vmlistVersion &+= 1
        vmlist[config.vmid] = nil
    }

    private func recordChange(_ parts: [String]) {
        // Most changes are to files `.version` does not count: their names say so without a joined path.
        guard let last = parts.last, Self.isTrackedName(last) else { return }
        let path = parts.joined(separator: "/")
        if let counter = changeCounters[path] { changeCounters[path] = counter &+ 1 }
    }

    /// Whether `name` is the last name of one of `trackedFiles`: looked up by its length, then compared (asked on every
    /// change, where hashing the name cost more than the few comparisons).
    private static func isTrackedName(_ name: String) -> Bool {
        let length = name.utf8.count
        return length < trackedNamesByLength.count && trackedNamesByLength[length].contains(name)
    }

    /// The last names of `trackedFiles`, at the index of their length in bytes.
    private static let trackedNamesByLength: [[String]] = {
        let names = trackedFiles.map { String($0.split(separator: "/").last!) }
        var table = [[String]](repeating: [], count: (names.map(\.utf8.count).max() ?? 0) + 1)
        for name in names { table[name.utf8.count].append(name) }
        return table
    }()

    // MARK: persistence

    private func now() -> UInt32 { clock() }

    /// Persists a change (the global version already bumped); nothing in memory changes unless it committed. Inside
    /// `apply(batch:persistNow:)` the rows are kept for `persistDeferredLocked` instead, and this cannot fail.
    private func persist(replace: [Entry], delete: [UInt64] = [], mtime: UInt32) -> Bool {
        let versionRow = Database.Row(inode: Self.rootInode, parent: Self.rootInode, version: version, writer: 0, mtime: mtime,
                                      type: EntryType.directory.rawValue, name: "__version__", data: [])
        if deferringPersistence {
            for inode in delete { unpersisted[NumberKey(inode)] = .delete }
            for entry in replace { unpersisted[NumberKey(entry.inode)] = .write(entry.row) }
            unpersistedVersion = versionRow
            versionMTime = mtime
            return true
        }
        // What waits is older than this change: the database stays a prefix of the changes applied.
        guard persistDeferredLocked() else { return false }
        do {
            try database.apply(replace: replace.lazy.map { $0.row }, delete: delete, version: versionRow)
            versionMTime = mtime
            return true
        } catch {
            return false
        }
    }

    /// What became of an entry in changes applied but not persisted yet.
    private enum UnpersistedRow {
        case write(Database.Row)
        case delete
    }

    /// Rows of changes applied in memory and not in the database yet (cluster mode, see `apply(batch:persistNow:)`): the
    /// last state of each entry they touched (an inode number is never used twice), and the global version row after
    /// the last of them. Under `lock`.
    private var unpersisted: [NumberKey: UnpersistedRow] = [:]
    private var unpersistedVersion: Database.Row?
    /// Set while `apply(batch:persistNow:)` applies; under `lock`.
    private var deferringPersistence = false

    /// Under `lock`: writes what waits in one transaction. When that fails it is rolled back and everything keeps
    /// waiting (memory holds the tree as the cluster applied it; the database holds a prefix of it).
    private func persistDeferredLocked() -> Bool {
        guard let versionRow = unpersistedVersion else { return true }
        var replaced: [Database.Row] = []
        var deleted: [UInt64] = []
        // In inode order: the rows of one batch of new files land side by side in the table's last pages.
        for (inode, row) in unpersisted.sorted(by: { $0.key.value < $1.key.value }) {
            switch row {
            case .write(let row): replaced.append(row)
            case .delete: deleted.append(inode.value)
            }
        }
        do {
            try database.apply(replace: replaced, delete: deleted, version: versionRow)
        } catch {
            return false
        }
        unpersisted = [:]
        unpersistedVersion = nil
        return true
    }

    /// Writes the changes `apply(batch:persistNow: false)` left in memory only, in one transaction. False when the
    /// database refused them: they keep waiting, and this node's database must be rewritten from the cluster's tree.
    public func persistDeferred() -> Bool {
        lock.withLock { persistDeferredLocked() }
    }

    // MARK: operations (FUSE semantics)

    public func getattr(_ path: String) -> (Int32, Attributes?) {
        let parts = components(path)
        lock.lock()
        defer { lock.unlock() }
        return attributes(parts)
    }

    private func attributes(_ parts: [String]) -> (Int32, Attributes?) {
        if let target = symlinkTarget(parts) {
            let node = Self.symlinkNodeBase + UInt64(Self.symlinkNames.firstIndex(of: parts[0])!)
            return (0, Attributes(inode: node, kind: .symlink, mode: 0o777, size: target.utf8.count, mtime: startTime,
                                  uid: 0, gid: wwwDataGID, links: 1, nodeID: node, cacheable: true))
        }
        if parts.count == 1, let index = Self.statusFiles.firstIndex(of: parts[0]) {
            let node = Self.statusNodeBase + UInt64(index)
            return (0, Attributes(inode: node, kind: .file, mode: parts[0] == ".debug" ? 0o640 : 0o440,
                                  size: statusContent(parts[0]).count, mtime: startTime, uid: 0, gid: wwwDataGID, links: 1,
                                  nodeID: node, cacheable: false))
        }
        guard let entry = resolve(parts) else { return (-ENOENT, nil) }
        return (0, attributes(entry, parts: parts))
    }

    private func attributes(_ entry: Entry, parts: [String]) -> Attributes {
        attributes(entry, privateEntry: isPrivate(parts), cacheable: !(parts.count >= 2 && parts[0] == "priv" && parts[1] == "lock"))
    }

    /// The same for an entry the kernel names by its id: what its path decides (private, cacheable) is read from its
    /// first three names, found by walking up, so that GETATTR and LOOKUP build no path (the kernel asks often).
    private func attributes(_ entry: Entry) -> Attributes? {
        var depth = 0
        // The last three names seen walking up: nearest the root last (the path's first, second and third names).
        var (third, second, first): (String?, String?, String?) = (nil, nil, nil)
        var current = entry
        while current.inode != Self.rootInode {
            (third, second, first) = (second, first, current.name)
            depth += 1
            guard let parent = current.parentEntry else { return nil }
            current = parent
        }
        let privateEntry = first == "priv" || (depth >= 3 && first == "nodes" && third == "priv")
        return attributes(entry, privateEntry: privateEntry, cacheable: !(depth >= 2 && first == "priv" && second == "lock"))
    }

    private func attributes(_ entry: Entry, privateEntry: Bool, cacheable: Bool) -> Attributes {
        var attributes = baseAttributes(entry, privateEntry: privateEntry, cacheable: cacheable)
        // Without quorum the tree is read-only, as the original shows it (tools check the modes).
        if !isWritable { attributes.mode &= ~0o222 }
        return attributes
    }

    private func baseAttributes(_ entry: Entry, privateEntry: Bool, cacheable: Bool) -> Attributes {
        if entry.type == .directory {
            let root = entry.inode == Self.rootInode
            return Attributes(inode: root ? 1 : entry.inode, kind: .directory, mode: privateEntry ? 0o700 : 0o755,
                              size: 0, mtime: root ? versionMTime : entry.mtime, uid: 0, gid: wwwDataGID,
                              links: 2 + entry.subdirectories,
                              nodeID: entry.nodeID, cacheable: cacheable)
        }
        return Attributes(inode: entry.inode, kind: .file, mode: privateEntry ? 0o600 : 0o640, size: entry.data.count,
                          mtime: entry.mtime, uid: 0, gid: wwwDataGID, links: 1, nodeID: entry.nodeID, cacheable: cacheable)
    }

    /// The path of a node id the kernel holds, or nil when it is gone.
    public func path(ofNode node: UInt64) -> String? {
        if node == Self.rootNodeID { return "/" }
        if node >= Self.symlinkNodeBase {
            let index = Int(node - Self.symlinkNodeBase)
            return index < Self.symlinkNames.count ? "/" + Self.symlinkNames[index] : nil
        }
        if node >= Self.statusNodeBase {
            let index = Int(node - Self.statusNodeBase)
            return index < Self.statusFiles.count ? "/" + Self.statusFiles[index] : nil
        }
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entry(ofNode: node), let parts = components(of: entry) else { return nil }
        // Built once at its length: every write through the mount in cluster mode names its file by this path.
        var path = ""
        path.reserveCapacity(parts.reduce(0) { $0 + 1 + $1.utf8.count })
        for part in parts {
            path += "/"
            path += part
        }
        return parts.isEmpty ? "/" : path
    }

    /// Whether a node id is the tree's (an entry's), not a status file's or a symlink's.
    private static func isTreeNode(_ node: UInt64) -> Bool { node < statusNodeBase }

    /// The entry a node id names, nil when no entry has it any more. A node id the entry no longer has (another node
    /// moved it, a sync replaced the tree) is stale: the mount answers ESTALE and the kernel looks the path up again.
    /// Under `lock`; tree entries only (not the status files and symlinks).
    private func entry(ofNode node: UInt64) -> Entry? {
        let inode = node >= Self.movedNodeBase ? movedNodes[NumberKey(node)] : node - 1
        guard let inode, let entry = entries[NumberKey(inode)], entry.nodeID == node else { return nil }
        return entry
    }

    /// An entry's path as components, from the root; under `lock`.
    private func components(of entry: Entry) -> [String]? {
        var names: [String] = []
        names.reserveCapacity(6)
        var current = entry
        while current.inode != Self.rootInode {
            names.append(current.name)
            guard let parent = current.parentEntry else { return nil }
            current = parent
        }
        names.reverse()
        return names
    }

    /// The attributes of what a node id names, resolved by the id alone: the kernel caches what it gets under that id,
    /// so the answer must be that entry's even while another node's change puts a different entry at its path.
    public func getattr(node: UInt64) -> (Int32, Attributes?) {
        guard Self.isTreeNode(node) else {
            guard let path = path(ofNode: node) else { return (-ESTALE, nil) }
            return getattr(path)
        }
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entry(ofNode: node), let attributes = attributes(entry) else { return (-ESTALE, nil) }
        entry.attributesStaleInKernel = false
        return (0, attributes)
    }

    /// LOOKUP: `name` in the directory a node id names, resolved under one lock (no path built or split). For a missing
    /// name, whether the kernel may remember it is missing (see `cachesMissingNames`).
    public func lookup(parent: UInt64, name: String) -> (result: Int32, attributes: Attributes?, cacheMissing: Bool) {
        let virtual = parent == Self.rootNodeID && (Self.statusFiles.contains(name) || Self.symlinkNames.contains(name))
        guard !virtual, Self.isTreeNode(parent) else {
            // The root holds the status files and symlinks; other virtual entries are no directories.
            guard let directory = path(ofNode: parent) else { return (-ESTALE, nil, false) }
            let (result, attributes) = getattr(Self.childPath(directory, name))
            return (result, attributes, cachesMissingNames(in: directory))
        }
        lock.lock()
        defer { lock.unlock() }
        guard let directory = entry(ofNode: parent) else { return (-ESTALE, nil, false) }
        guard directory.type == .directory else { return (-ENOTDIR, nil, false) }
        guard let child = directory.child(named: name) else {
            // priv/lock's missing names are never remembered (a lock may appear from anywhere at any time).
            let inLock = directory.name == "lock" && directory.parentEntry.map { $0.name == "priv" && $0.parent == Self.rootInode } == true
            return (-ENOENT, nil, !collecting && !inLock)
        }
        guard let attributes = attributes(child) else { return (-ESTALE, nil, false) }
        child.attributesStaleInKernel = false
        return (0, attributes, false)
    }

    /// Whether a read through the page cache would cost more than a direct one, nil when the node id names nothing.
    /// After a write through the mount the kernel holds the file's size as unknown and its last page, if partly
    /// written, as not up to date: a cached read of a small file is then a GETATTR and a READ, a direct one (as the
    /// original opens every file) a READ only. Otherwise the cache serves repeated reads without the daemon.
    public func readBypassesPageCache(node: UInt64) -> Bool? {
        guard Self.isTreeNode(node) else { return path(ofNode: node) == nil ? nil : false }
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entry(ofNode: node) else { return nil }
        return entry.attributesStaleInKernel && entry.data.count % Self.pageSize != 0
    }

    private static let pageSize = Int(getpagesize())

    /// READ on a node id: that entry's bytes (see `getattr(node:)`), or a status file's.
    public func read(node: UInt64, size: Int, offset: Int) -> (Int32, [UInt8]) {
        guard Self.isTreeNode(node) else {
            guard let path = path(ofNode: node) else { return (-ESTALE, []) }
            return read(path, size: size, offset: offset)
        }
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entry(ofNode: node) else { return (-ESTALE, []) }
        guard entry.type == .file else { return (-EISDIR, []) }
        guard offset < entry.data.count else { return (0, []) }
        return (0, Array(entry.data[offset..<min(entry.data.count, offset + size)]))
    }

    /// Whether the kernel may remember that a name does not exist in this
    /// directory: not in priv/lock, where locks expire without a call.
    public func cachesMissingNames(in directory: String) -> Bool {
        !isClusterMode && components(directory) != ["priv", "lock"]
    }

    /// A directory's entries with their attributes, for READDIR.
    public func readdirAttributes(_ path: String) -> (Int32, [(name: String, attributes: Attributes)]) {
        let parts = components(path)
        lock.lock()
        defer { lock.unlock() }
        let (result, names) = childNames(parts)
        return (result, names.compactMap { name in attributes(parts + [name]).1.map { (name, $0) } })
    }

    public func readdir(_ path: String) -> (Int32, [String]) {
        let parts = components(path)
        lock.lock()
        defer { lock.unlock() }
        return childNames(parts)
    }

    /// The names in a directory, the virtual ones included at the root; under the lock.
    private func childNames(_ parts: [String]) -> (Int32, [String]) {
        guard let entry = resolve(parts) else { return (-ENOENT, []) }
        guard entry.type == .directory else { return (-ENOTDIR, []) }
        // By bytes: a String order calls a name precomposed and decomposed equal, and their order could then change
        // between two READDIR calls that continue one listing by index.
        var names = entry.children.values.map(\.name).sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        if parts.isEmpty { names += Self.statusFiles + Self.symlinkNames }
        return (0, names)
    }

    public func readlink(_ path: String) -> (Int32, String?) {
        guard let target = symlinkTarget(components(path)) else { return (-EINVAL, nil) }
        return (0, target)
    }

    public func read(_ path: String, size: Int, offset: Int) -> (Int32, [UInt8]) {
        let parts = components(path)
        lock.lock()
        defer { lock.unlock() }
        let data: [UInt8]
        if parts.count == 1, Self.statusFiles.contains(parts[0]) {
            data = statusContent(parts[0])
        } else {
            guard let entry = resolve(parts) else { return (-ENOENT, []) }
            guard entry.type == .file else { return (-EISDIR, []) }
            data = entry.data
        }
        guard offset < data.count else { return (0, []) }
        return (0, Array(data[offset..<min(data.count, offset + size)]))
    }

    /// Creates an empty file (O_CREAT).
    public func create(_ path: String) -> Int32 { perform(.create(path)) }

    public func mkdir(_ path: String) -> Int32 { perform(.mkdir(path)) }

    /// Applies a change made here: as writer 0 at the local clock in local mode; in cluster mode through the replicator
    /// (refused with EACCES until it runs).
    func perform(_ operation: TreeOperation) -> Int32 {
        let (cluster, replicator) = modeLock.withLock { (clusterMode, replication) }
        guard cluster else { return apply(operation, stamp: Stamp(writer: 0, time: now())) }
        guard let replicator else { return -EACCES }
        // mtime 0 on a lock: the original's unlock request. The lowest node judges by when it first saw the lock
        // (its own clock, never the requester's) and sends the unlock, which every node applies in order.
        if case .mtime(let path, 0) = operation, let digest = lockDigest(path) { return replicator.requestUnlock(path, digest: digest) }
        return replicator.submit(operation)
    }

    /// `perform`, answered through `reply`: in cluster mode by the thread that applies the change here (see
    /// `Replicator.submit(_:throughMount:reply:)`), in local mode at once.
    func perform(_ operation: TreeOperation, reply: @escaping Replicator.Reply) {
        let (cluster, replicator) = modeLock.withLock { (clusterMode, replication) }
        guard cluster, let replicator else { return reply(perform(operation)) }
        // mtime 0 may be an unlock request, which `perform` sends without waiting.
        if case .mtime(_, 0) = operation { return reply(perform(operation)) }
        replicator.submit(operation, reply: reply)
    }

    // MARK: calls answered later (FUSE requests in cluster mode)

    /// CREATE, answered through `reply` with the new file's attributes (see `perform(_:reply:)`).
    public func create(parent node: UInt64, name: String, reply: @escaping @Sendable (Int32, Attributes?) -> Void) {
        guard isClusterMode, let directory = path(ofNode: node) else {
            let (result, attributes) = create(parent: node, name: name)
            return reply(result, attributes)
        }
        let path = Self.childPath(directory, name)
        perform(.create(path)) { [self] result in
            let (found, attributes) = createdFile(parent: node, name: name, path: path, result)
            reply(found, attributes)
        }
    }

    /// MKNOD and MKDIR, answered through `reply` with the new entry's attributes.
    public func create(_ path: String, type: EntryType, reply: @escaping @Sendable (Int32, Attributes?) -> Void) {
        perform(type == .directory ? .mkdir(path) : .create(path)) { [self] result in
            let (found, attributes) = result == 0 ? getattr(path) : (result, nil)
            reply(found, attributes)
        }
    }

    /// WRITE, answered through `reply` with the bytes written.
    public func write(node: UInt64, bytes: UnsafeRawBufferPointer, offset: Int, reply: @escaping Replicator.Reply) {
        guard isClusterMode, let path = path(ofNode: node), !Self.isDebugFile(path) else {
            return reply(write(node: node, bytes: bytes, offset: offset))
        }
        perform(.write(path, offset: offset, data: Array(bytes)), reply: reply)
    }

    /// UNLINK and RMDIR, answered through `reply`.
    public func remove(parent node: UInt64, name: String, directory: Bool, reply: @escaping Replicator.Reply) {
        guard isClusterMode, let parentPath = path(ofNode: node) else { return reply(remove(parent: node, name: name, directory: directory)) }
        let path = Self.childPath(parentPath, name)
        perform(directory ? .rmdir(path) : .unlink(path), reply: reply)
    }

    /// RENAME, answered through `reply`.
    public func rename(_ from: String, _ to: String, reply: @escaping Replicator.Reply) { perform(.rename(from, to: to), reply: reply) }

    private let modeLock = NSLock()
    private var clusterMode = false
    private var replication: Replicator?

    /// Cluster mode from now on: changes go through `replicator` once it is attached, the tree is read-only without
    /// quorum, and the kernel caches nothing (a change from another node must be seen at once).
    public func enterClusterMode() {
        modeLock.withLock { clusterMode = true }
        lock.withLock { collecting = true }
    }

    /// Cluster mode: changes applied here collect what the kernel must forget (`pendingInvalidation`).
    @exclusivity(unchecked) private var collecting = false

    /// Marks an entry's cached attributes (and, for a file whose bytes changed, its pages) stale; under `lock`. A change
    /// through this mount leaves only pages to forget: its writes bypass the page cache (direct I/O), so pages read
    /// before are stale, if the file was ever opened for reading here.
    private func stale(_ entry: Entry, contents: Bool = false) {
        guard collecting else { return }
        if !kernelSawChange { pendingInvalidation.attributes.insert(entry.nodeID) }
        if contents && (!kernelSawChange || pagesMayBeCached.contains(NumberKey(entry.nodeID))) { pendingInvalidation.contents.insert(entry.nodeID) }
    }

    /// Whether the change being applied came through this mount (see `apply`); under `lock`.
    @exclusivity(unchecked) private var kernelSawChange = true
    /// Node ids opened for reading through the page cache (cluster mode): only these can hold pages a write of this
    /// node's leaves stale.
    @exclusivity(unchecked) private var pagesMayBeCached: Set<NumberKey> = []

    /// The mount opens `node` for reading with the page cache kept.
    public func notePagesCached(_ node: UInt64) {
        lock.withLock {
            if collecting { pagesMayBeCached.insert(NumberKey(node)) }
        }
    }

    /// Gives an entry a fresh node id (its old one reads as stale); under `lock`.
    private func renumber(_ entry: Entry) {
        if entry.nodeID >= Self.movedNodeBase { movedNodes[NumberKey(entry.nodeID)] = nil }
        entry.nodeID = nextMovedNode
        movedNodes[NumberKey(nextMovedNode)] = entry.inode
        nextMovedNode += 1
    }

    /// Tells the kernel what the last change made stale (cluster mode). Outside `lock`: the kernel waits for page
    /// locks that a read in flight holds while it waits for `lock`.
    private func flushInvalidation() {
        let work: CacheInvalidation? = lock.withLock {
            guard collecting, !pendingInvalidation.isEmpty else { return nil }
            defer { pendingInvalidation = CacheInvalidation() }
            return pendingInvalidation
        }
        // What the kernel holds is asked only now, after the lock: an answer naming an entry (LOOKUP, CREATE) is made
        // under the lock and counted just after it, so asking while the change was applied would miss it.
        guard let work else { return }
        let held = kernelNodes.held(work)
        if !held.isEmpty { invalidateKernelCache?(held) }
    }

    /// Quorum came or went: every mode shown changes (read-only without quorum), so no cached attribute holds.
    public func forgetCachedAttributes() {
        let all: CacheInvalidation = lock.withLock {
            CacheInvalidation(attributes: Set(entries.values.map(\.nodeID)), contents: [])
        }
        invalidateKernelCache?(kernelNodes.held(all))
    }

    public func attach(_ replicator: Replicator) { modeLock.withLock { replication = replicator } }

    public var isClusterMode: Bool { modeLock.withLock { clusterMode } }

    /// Writable: always in local mode, with quorum in cluster mode.
    var isWritable: Bool {
        let (cluster, replicator) = modeLock.withLock { (clusterMode, replication) }
        return !cluster || (replicator?.isQuorate ?? false)
    }

    /// Applies a change with its writer and time as given, so that every replica applying the same operations in the
    /// same order holds the same tree (inode numbers, versions, writers and times included). Returns what the file
    /// system call returns: 0, the bytes written, or -errno.
    /// - Parameter seenByKernel: the change is a call through this mount (local mode, or this node's own in cluster
    ///   mode): the kernel keeps its names and attributes right itself. Otherwise an entry the change moves gets a fresh
    ///   node id, so that the kernel's cached name for its old place is not trusted, and every attribute it changed is
    ///   invalidated.
    public func apply(_ operation: TreeOperation, stamp: Stamp, seenByKernel: Bool = true) -> Int32 {
        let result = lock.withLock { applyLocked(operation, stamp: stamp, seenByKernel: seenByKernel) }
        flushInvalidation()
        return result
    }

    /// A change delivered by the cluster, for `apply(batch:persistNow:)`.
    public struct DeliveredChange: Sendable {
        public var operation: TreeOperation
        public var stamp: Stamp
        public var seenByKernel: Bool

        public init(_ operation: TreeOperation, stamp: Stamp, seenByKernel: Bool) {
            self.operation = operation
            self.stamp = stamp
            self.seenByKernel = seenByKernel
        }
    }

    /// Applies changes delivered together, in order and each as `apply` does, to memory; their rows go to the database
    /// together with whatever waits from earlier batches, in one transaction (group commit: a commit's WAL frames are
    /// most of what a change costs, and an entry changed several times is written once).
    /// - Parameter persistNow: commit before returning (a writer on this node waits for one of these changes and is
    ///   answered only once it is durable). Otherwise the rows wait for `persistDeferred()` or the next batch that
    ///   persists: the database is always a prefix of the changes applied, and each change is in its writer's
    ///   database before the writer is answered.
    /// - Returns: each change's result, and false when `persistNow` asked for a commit that failed: the results are then
    ///   -EIO (not known durable here); memory keeps the changes (the others applied them) and their rows keep waiting.
    public func apply(batch changes: [DeliveredChange], persistNow: Bool) -> (results: [Int32], persisted: Bool) {
        let outcome: ([Int32], Bool) = lock.withLock {
            deferringPersistence = true
            let results = changes.map { applyLocked($0.operation, stamp: $0.stamp, seenByKernel: $0.seenByKernel) }
            deferringPersistence = false
            guard persistNow else { return (results, true) }
            return persistDeferredLocked() ? (results, true) : (changes.map { _ in -EIO }, false)
        }
        flushInvalidation()
        return outcome
    }

    /// Under `lock`.
    private func applyLocked(_ operation: TreeOperation, stamp: Stamp, seenByKernel: Bool) -> Int32 {
        kernelSawChange = seenByKernel
        return switch operation {
        case .create(let path): createEntry(path, type: .file, stamp)
        case .mkdir(let path): createEntry(path, type: .directory, stamp)
        case .write(let path, let offset, let data): writeData(path, data, offset: offset, stamp)
        case .truncate(let path, let size): truncateEntry(path, size: size, stamp)
        case .unlink(let path): remove(path, directory: false, stamp)
        case .rmdir(let path): remove(path, directory: true, stamp)
        case .rename(let from, let to): renameEntry(from, to, stamp, moved: !seenByKernel)
        case .mtime(let path, let mtime): setMTime(path, mtime: mtime, stamp)
        case .unlock(let path, let digest): unlockEntry(path, digest: digest, stamp)
        }
    }

    /// Under `lock` (see `apply`).
    private func createEntry(_ path: String, type: EntryType, _ stamp: Stamp) -> Int32 {
        let parts = components(path)
        guard !parts.isEmpty else { return type == .file ? -EACCES : -EEXIST }
        if isSpecial(parts) { return -EACCES }
        guard let parent = resolve(parts.dropLast()) else { return -ENOENT }
        return createEntry(parts, in: parent, type: type, stamp)
    }

    /// CREATE in local mode, by the parent's node id: no path built and split again (see `write(node:bytes:offset:)`).
    /// Returns the new file's attributes with the result, as the reply needs them.
    public func create(parent node: UInt64, name: String) -> (Int32, Attributes?) {
        guard node != Self.rootNodeID || !isSpecial([name]), !isClusterMode, Self.isTreeNode(node) else {
            guard let directory = path(ofNode: node) else { return (-ESTALE, nil) }
            let path = Self.childPath(directory, name)
            return createdFile(parent: node, name: name, path: path, create(path))
        }
        lock.lock()
        defer { lock.unlock() }
        guard let parent = entry(ofNode: node), let directory = components(of: parent) else { return (-ESTALE, nil) }
        let parts = directory + [name]
        let result = createEntry(parts, in: parent, type: .file, Stamp(writer: 0, time: now()))
        guard result == 0, let child = parent.child(named: name) else { return (result, nil) }
        return (0, attributes(child, parts: parts))
    }

    /// What CREATE answers once `result` came back for the file `name` under `node` (at `path`): its attributes, found
    /// by the parent's id and the name, not by the path split again.
    private func createdFile(parent node: UInt64, name: String, path: String, _ result: Int32) -> (Int32, Attributes?) {
        guard result == 0 else { return (result, nil) }
        let created = lookup(parent: node, name: name)
        return created.result == 0 ? (0, created.attributes) : getattr(path)
    }

    /// Under `lock`: `parts` names the new entry, `parent` is its directory.
    private func createEntry(_ parts: [String], in parent: Entry, type: EntryType, _ stamp: Stamp) -> Int32 {
        let name = parts[parts.count - 1]
        guard Self.isValidName(name) else { return -EINVAL }
        guard parent.type == .directory else { return -ENOTDIR }
        if parent.child(named: name) != nil { return -EEXIST }
        if type == .file {
            // Locks are directories; priv/lock holds nothing else.
            let directory = parts.dropLast()
            if isLockDirectory(directory) || directory.elementsEqual(Self.lockParent) { return -EACCES }
            let vmidCheck = checkVMID(parts)
            if vmidCheck != 0 { return vmidCheck }
        }
        let result = insert(name: name, parent: parent, type: type, stamp)
        if result == 0 && type == .file {
            recordChange(parts)
            registerGuest(parts)
        }
        if result == 0, isLockDirectory(parts), let entry = parent.child(named: name) { sawLock(entry) }
        return result
    }

    private func insert(name: String, parent: Entry, type: EntryType, _ stamp: Stamp) -> Int32 {
        let mtime = stamp.time
        version += 1
        let entry = Entry(inode: version, parent: parent.inode, version: version, writer: stamp.writer, mtime: mtime, type: type, name: name)
        guard persist(replace: [entry], mtime: mtime) else {
            version -= 1
            return -EIO
        }
        entries[NumberKey(entry.inode)] = entry
        parent.link(entry)
        stale(parent)
        return 0
    }

    /// Drops a removed entry; its node id reads as stale from now on. Under `lock`.
    private func forget(_ entry: Entry) {
        stale(entry, contents: entry.type == .file)
        pagesMayBeCached.remove(NumberKey(entry.nodeID))
        entries[NumberKey(entry.inode)] = nil
        if entry.nodeID >= Self.movedNodeBase { movedNodes[NumberKey(entry.nodeID)] = nil }
    }

    public func write(_ path: String, bytes: UnsafeRawBufferPointer, offset: Int) -> Int32 {
        if Self.isDebugFile(path) {
            lock.withLock {
                debugLevel = Int(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? debugLevel
            }
            return Int32(bytes.count)
        }
        return perform(.write(path, offset: offset, data: Array(bytes)))
    }

    /// Under `lock` (see `apply`).
    private func writeData(_ path: String, _ bytes: [UInt8], offset: Int, _ stamp: Stamp) -> Int32 {
        let parts = components(path)
        if isSpecial(parts) { return -EACCES }
        guard let entry = resolve(parts) else { return -ENOENT }
        return bytes.withUnsafeBytes { writeData(entry, parts: parts, $0, offset: offset, stamp) }
    }

    /// WRITE by node id. In local mode the change is applied here at once, on the entry the id names: no path built
    /// and split again (the kernel sends a WRITE for every write, and that work showed in a profile beside the
    /// original's). In cluster mode the change travels by path (see `perform`).
    public func write(node: UInt64, bytes: UnsafeRawBufferPointer, offset: Int) -> Int32 {
        guard !isClusterMode, Self.isTreeNode(node) else {
            guard let path = path(ofNode: node) else { return -ESTALE }
            return write(path, bytes: bytes, offset: offset)
        }
        lock.lock()
        defer { lock.unlock() }
        guard let entry = entry(ofNode: node), let parts = components(of: entry) else { return -ESTALE }
        return writeData(entry, parts: parts, bytes, offset: offset, Stamp(writer: 0, time: now()))
    }

    /// Under `lock`.
    private func writeData(_ entry: Entry, parts: [String], _ bytes: UnsafeRawBufferPointer, offset: Int, _ stamp: Stamp) -> Int32 {
        guard entry.type == .file else { return -EISDIR }
        let end = offset + bytes.count
        if end > Self.maxFileSize { return -EFBIG }
        var data = entry.data
        if data.count < end { data += repeatElement(0, count: end - data.count) }
        data.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[offset..<end]).copyMemory(from: bytes) }
        let result = update(entry, data: data, stamp)
        guard result == 0 else { return result }
        recordChange(parts)
        registerGuest(parts)
        return Int32(bytes.count)
    }

    public func truncate(_ path: String, size: Int) -> Int32 {
        Self.isDebugFile(path) ? 0 : perform(.truncate(path, size: size))
    }

    /// Under `lock` (see `apply`).
    private func truncateEntry(_ path: String, size: Int, _ stamp: Stamp) -> Int32 {
        let parts = components(path)
        if isSpecial(parts) { return -EACCES }
        guard let entry = resolve(parts) else { return -ENOENT }
        guard entry.type == .file else { return -EISDIR }
        if size > Self.maxFileSize { return -EFBIG }
        var data = entry.data
        if size < data.count { data.removeSubrange(size...) } else { data += [UInt8](repeating: 0, count: size - data.count) }
        let result = update(entry, data: data, stamp)
        guard result == 0 else { return result }
        recordChange(parts)
        registerGuest(parts)
        return 0
    }

    private func update(_ entry: Entry, data: [UInt8], _ change: Stamp, mtime: UInt32? = nil) -> Int32 {
        let stamp = mtime ?? change.time
        version += 1
        let previous = (entry.data, entry.version, entry.mtime, entry.writer)
        entry.data = data
        entry.version = version
        entry.mtime = stamp
        entry.writer = change.writer
        guard persist(replace: [entry], mtime: stamp) else {
            (entry.data, entry.version, entry.mtime, entry.writer) = previous
            version -= 1
            return -EIO
        }
        entry.attributesStaleInKernel = true
        stale(entry, contents: entry.type == .file)
        return 0
    }

    public func unlink(_ path: String) -> Int32 { perform(.unlink(path)) }
    public func rmdir(_ path: String) -> Int32 { perform(.rmdir(path)) }

    /// Under `lock` (see `apply`).
    private func remove(_ path: String, directory: Bool, _ stamp: Stamp) -> Int32 {
        let parts = components(path)
        guard !parts.isEmpty else { return -EBUSY }
        if isSpecial(parts) { return -EACCES }
        guard let entry = resolve(parts) else { return -ENOENT }
        return remove(entry, parts: parts, directory: directory, stamp)
    }

    /// UNLINK and RMDIR in local mode, by the parent's node id: no path built and split again (see
    /// `create(parent:name:)`).
    public func remove(parent node: UInt64, name: String, directory: Bool) -> Int32 {
        guard node != Self.rootNodeID || !isSpecial([name]), !isClusterMode, Self.isTreeNode(node) else {
            guard let parentPath = path(ofNode: node) else { return -ESTALE }
            let path = Self.childPath(parentPath, name)
            return directory ? rmdir(path) : unlink(path)
        }
        lock.lock()
        defer { lock.unlock() }
        guard let parent = entry(ofNode: node), let parentParts = components(of: parent) else { return -ESTALE }
        guard parent.type == .directory, let entry = parent.child(named: name) else { return -ENOENT }
        return remove(entry, parts: parentParts + [name], directory: directory, Stamp(writer: 0, time: now()))
    }

    /// Under `lock`: `entry` is at `parts`.
    private func remove(_ entry: Entry, parts: [String], directory: Bool, _ stamp: Stamp) -> Int32 {
        guard let parent = entry.parentEntry else { return -ENOENT }
        if directory && entry.type != .directory { return -ENOTDIR }
        if !directory && entry.type == .directory { return -EISDIR }
        if directory && !entry.children.isEmpty { return -ENOTEMPTY }
        let mtime = stamp.time
        version += 1
        guard persist(replace: [], delete: [entry.inode], mtime: mtime) else {
            version -= 1
            return -EIO
        }
        parent.unlink(entry, name: entry.name)
        forget(entry)
        stale(parent)
        recordChange(parts)
        if entry.type == .file { unregisterGuest(parts) }
        return 0
    }

    public func rename(_ from: String, _ to: String) -> Int32 { perform(.rename(from, to: to)) }

    /// Under `lock` (see `apply`).
    private func renameEntry(_ from: String, _ to: String, _ stamp: Stamp, moved: Bool) -> Int32 {
        let source = components(from)
        let target = components(to)
        guard !source.isEmpty, !target.isEmpty, let targetName = target.last else { return -EACCES }
        guard Self.isValidName(targetName) else { return -EINVAL }
        if isSpecial(source) || isSpecial(target) { return -EACCES }
        if isLockDirectory(source) || isLockDirectory(target) { return -EACCES }
        guard let entry = resolve(source), let oldParent = entry.parentEntry else { return -ENOENT }
        guard let newParent = resolve(target.dropLast()) else { return -ENOENT }
        guard newParent.type == .directory else { return -ENOTDIR }
        if entry.type == .directory && !entry.children.isEmpty { return -EACCES }
        // Into itself: by identity up the new parent's chain (names compare as bytes, paths as Strings would not).
        var ancestor: Entry? = newParent
        while let current = ancestor, current !== root {
            if current === entry { return -EINVAL }
            ancestor = current.parentEntry
        }
        var replaced: Entry?
        if let existing = newParent.child(named: targetName) {
            if existing.inode == entry.inode { return 0 }
            if existing.type == .directory && entry.type != .directory { return -EISDIR }
            if existing.type != .directory && entry.type == .directory { return -ENOTDIR }
            if existing.type == .directory && !existing.children.isEmpty { return -ENOTEMPTY }
            replaced = existing
        }
        let deleted = replaced.map { [$0.inode] } ?? []
        let vmidCheck = checkVMID(target, movingFrom: source)
        if vmidCheck != 0 { return vmidCheck }
        let mtime = stamp.time
        version += 1
        let previous = (entry.parent, entry.name, entry.version, entry.mtime)
        entry.parent = newParent.inode
        entry.name = targetName
        entry.version = version
        entry.mtime = mtime
        guard persist(replace: [entry], delete: deleted, mtime: mtime) else {
            (entry.parent, entry.name, entry.version, entry.mtime) = previous
            version -= 1
            return -EIO
        }
        if let replaced {
            newParent.unlink(replaced, name: targetName)
            forget(replaced)
        }
        oldParent.unlink(entry, name: source.last!)
        newParent.link(entry)
        entry.attributesStaleInKernel = true
        stale(oldParent)
        stale(newParent)
        stale(entry)
        if moved && collecting { renumber(entry) }
        recordChange(source)
        recordChange(target)
        if entry.type == .file {
            unregisterGuest(source)
            registerGuest(target)
        }
        return 0
    }

    /// Only the modification time is kept. On a lock directory, mtime 0 asks
    /// for the lock to go (granted once it is older than 120 s); a newer mtime
    /// refreshes it.
    public func utimens(_ path: String, mtime: UInt32?) -> Int32 { perform(.mtime(path, mtime)) }

    /// Under `lock` (see `apply`).
    private func setMTime(_ path: String, mtime: UInt32?, _ change: Stamp) -> Int32 {
        let parts = components(path)
        if isSpecial(parts) { return -EACCES }
        guard let entry = resolve(parts) else { return -ENOENT }
        let stamp = mtime ?? change.time
        if isLockDirectory(parts) {
            // mtime 0 asks for the lock to go. In local mode this node decides (the lock first seen here more than
            // the expiry ago, unchanged since); in cluster mode the request went to the lowest node instead (see
            // `perform`), and an mtime 0 delivered here changes nothing on any node.
            if stamp == 0 {
                guard !collecting, lockExpired(entry) else { return 0 }
                return removeLock(entry, change)
            }
            // A refresh: newer, and by the node that holds it (the original's rule).
            if stamp < entry.mtime || entry.writer != change.writer { return -EACCES }
        }
        let result = update(entry, data: entry.data, change, mtime: stamp)
        if result == 0 {
            recordChange(parts)
            if isLockDirectory(parts) { sawLock(entry) }
        }
        return result
    }

    /// Releases a lock the lowest node found expired, if it is still that lock (same digest); otherwise nothing.
    /// Under `lock` (see `apply`).
    private func unlockEntry(_ path: String, digest expected: [UInt8], _ change: Stamp) -> Int32 {
        guard let entry = lockEntry(path), digest(of: entry) == expected else { return 0 }
        return removeLock(entry, change)
    }

    /// Under `lock`.
    private func removeLock(_ entry: Entry, _ change: Stamp) -> Int32 {
        guard entry.children.isEmpty, let parent = entry.parentEntry else { return 0 }
        version += 1
        guard persist(replace: [], delete: [entry.inode], mtime: change.time) else {
            version -= 1
            return -EIO
        }
        parent.unlink(entry, name: entry.name)
        forget(entry)
        stale(parent)
        lockSeen[EntryName(entry.name)] = nil
        return 0
    }

    // MARK: lock expiry (the original's memdb_lock_expired)

    /// When this node first saw each lock (by name under priv/lock; its own clock) and the lock's digest then: a lock
    /// is expired once it stayed the same entry for longer than the expiry, as seen here. Any change to the entry
    /// starts it again.
    private var lockSeen: [EntryName: (time: UInt32, digest: [UInt8])] = [:]

    /// The lock directory at `path`, nil when there is none; under `lock`.
    private func lockEntry(_ path: String) -> Entry? {
        let parts = components(path)
        guard isLockDirectory(parts), let entry = resolve(parts), entry.type == .directory else { return nil }
        return entry
    }

    /// A lock made or refreshed: first seen now, as it is; under `lock`.
    private func sawLock(_ entry: Entry) { lockSeen[EntryName(entry.name)] = (now(), digest(of: entry)) }

    /// A lock entry's identity: a refresh (mtime, writer, version) or a new lock of the same name differs.
    private func digest(of entry: Entry) -> [UInt8] {
        var hasher = SHA256()
        for value in [entry.inode, entry.version, UInt64(entry.writer), UInt64(entry.mtime)] {
            withUnsafeBytes(of: value.littleEndian) { hasher.update(bufferPointer: $0) }
        }
        hasher.update(data: Array(entry.name.utf8))
        return Array(hasher.finalize())
    }

    /// Under `lock`; records the lock when first seen (or seen changed).
    private func lockExpired(_ entry: Entry) -> Bool {
        let current = digest(of: entry), time = now(), name = EntryName(entry.name)
        guard let seen = lockSeen[name], seen.digest == current else {
            lockSeen[name] = (time, current)
            return false
        }
        return time > seen.time && time - seen.time > lockTimeout
    }

    /// The digest of the lock directory at `path`, nil when there is none.
    public func lockDigest(_ path: String) -> [UInt8]? {
        lock.withLock { lockEntry(path).map(digest(of:)) }
    }

    /// Whether the lock at `path`, still with `digest`, is older than the expiry as this node has seen it.
    public func lockExpired(_ path: String, digest expected: [UInt8]) -> Bool {
        lock.withLock {
            guard let entry = lockEntry(path), digest(of: entry) == expected else { return false }
            return lockExpired(entry)
        }
    }

    /// Every lock in the tree, first seen now unless it is unchanged since it was seen (startup, a sync).
    private func rememberLocks() {
        guard let directory = resolve(["priv", "lock"]) else {
            lockSeen = [:]
            return
        }
        var seen: [EntryName: (time: UInt32, digest: [UInt8])] = [:]
        for (name, entry) in directory.children where entry.type == .directory {
            let current = digest(of: entry)
            seen[name] = lockSeen[name].flatMap { $0.digest == current ? $0 : nil } ?? (now(), current)
        }
        lockSeen = seen
    }

    /// Only the mode the entry already has is accepted.
    public func chmod(_ path: String, mode: UInt32) -> Int32 {
        let (result, attributes) = getattr(path)
        guard result == 0, let attributes else { return result }
        return (mode & 0o777) == attributes.mode ? 0 : -EPERM
    }

    /// Only root as owner and www-data as group (or unchanged, -1).
    public func chown(_ path: String, uid: UInt32, gid: UInt32) -> Int32 {
        let (result, _) = getattr(path)
        guard result == 0 else { return result }
        let keep = UInt32.max
        return (uid == keep || uid == 0) && (gid == keep || gid == wwwDataGID) ? 0 : -EPERM
    }

    // MARK: status files

    /// The status files, byte for byte in the original's layout (which is
    /// hand-written JSON, not a serializer's).
    func statusContent(_ name: String) -> [UInt8] {
        switch name {
        case ".version":
            // clinfo: the cluster view's version (membership changes seen; 0 in local mode). kvstore: every node's
            // status keys with their versions (this node's alone in local mode).
            let clusterInfo = modeLock.withLock { replication }?.membershipVersion ?? 0
            var text = "{\n\"starttime\": \(startTime),\n\"clinfo\": \(clusterInfo),\n\"vmlist\": \(vmlistVersion),\n"
            for file in Self.trackedFiles { text += "\"\(file)\": \(changeCounters[file] ?? 0),\n" }
            let stores = Set(statusStore.keys).union([node]).sorted().map { owner in
                let keys = (statusStore[owner] ?? [:]).keys.sorted().map { "\"\(jsonEscaped($0))\": \(statusVersions[owner]?[$0] ?? 0)" }
                return "\"\(jsonEscaped(owner))\": {\n" + keys.joined(separator: ",\n") + "}"
            }
            text += "\"kvstore\": {\n" + stores.joined(separator: ",\n") + "\n}\n}\n"
            return Array(text.utf8)
        case ".members":
            return membersText()
        case ".vmlist":
            guard !vmlist.isEmpty else { return Array("{\n\"version\": \(vmlistVersion)\n\n}\n".utf8) }
            let ids = vmlist.keys.sorted().map { vmid -> String in
                let guest = vmlist[vmid]!
                return "\"\(vmid)\": { \"node\": \"\(guest.node)\", \"type\": \"\(guest.type)\", \"version\": \(guest.version) }"
            }
            return Array("{\n\"version\": \(vmlistVersion),\n\"ids\": {\n\(ids.joined(separator: ",\n"))}\n\n}\n".utf8)
        case ".clusterlog":
            return clusterLogText(maximum: 50, user: "")
        case ".debug":
            return Array("\(debugLevel)\n".utf8)
        case ".rrd":
            return [0]
        default:
            return []
        }
    }

    /// `{"data": [...]}`, newest first, at most `maximum` entries, only the
    /// given user's when one is named.
    /// `.members`: this node alone in local mode; in cluster mode the cluster's name and config_version, the nodes of the
    /// tree's corosync.conf with their ids, whether corosync sees them (online) and their ring0 address, and quorum.
    /// (Called with `lock` held.)
    private func membersText() -> [UInt8] {
        let replicator = modeLock.withLock { replication }
        guard let replicator, let entry = resolve(["corosync.conf"]) else {
            return Array("{\n\"nodename\": \"\(node)\",\n\"version\": 0\n}\n".utf8)
        }
        let cluster = membersCluster(entry)
        let online = Set(replicator.onlineNodeIDs)
        let nodes = cluster.nodes
        var text = "{\n\"nodename\": \"\(jsonEscaped(node))\",\n\"version\": \(replicator.membershipVersion),\n"
        text += "\"cluster\": { \"name\": \"\(jsonEscaped(cluster.name))\", "
        text += "\"version\": \(cluster.configVersion), \"nodes\": \(nodes.count), "
        text += "\"quorate\": \(replicator.isQuorate ? 1 : 0) },\n\"nodelist\": {\n"
        text += nodes.map { node in
            "  \"\(jsonEscaped(node.name))\": { \"id\": \(node.id), \"online\": \(online.contains(node.id) ? 1 : 0), "
                + "\"ip\": \"\(jsonEscaped(node.ip))\"}"
        }.joined(separator: ",\n")
        text += "\n  }\n}\n"
        return Array(text.utf8)
    }

    /// What `.members` shows of corosync.conf (`entry`): the cluster's name, config_version and nodes by id. Parsed once
    /// per version of the file: tools poll `.members`, and parsing the file on every read cost more than all the rest
    /// of the read. Under `lock`.
    private func membersCluster(_ entry: Entry) -> MembersCluster {
        if let cached = membersClusterCache, cached.inode == entry.inode, cached.version == entry.version { return cached.cluster }
        let (config, _) = CorosyncConfig.parse(String(decoding: entry.data, as: UTF8.self), file: "corosync.conf")
        let nodes = config.nodes.compactMap { section -> (name: String, id: UInt32, ip: String)? in
            guard let name = section["name"], let id = section["nodeid"].flatMap({ UInt32($0) }) else { return nil }
            return (name, id, section["ring0_addr"] ?? "")
        }.sorted { $0.id < $1.id }
        let cluster = MembersCluster(name: config.totem?["cluster_name"] ?? "",
                                     configVersion: config.totem?["config_version"].flatMap { Int($0) } ?? 0, nodes: nodes)
        membersClusterCache = (entry.inode, entry.version, cluster)
        return cluster
    }

    private struct MembersCluster {
        var name: String
        var configVersion: Int
        var nodes: [(name: String, id: UInt32, ip: String)]
    }

    private var membersClusterCache: (inode: UInt64, version: UInt64, cluster: MembersCluster)?

    private func clusterLogText(maximum: Int, user: String) -> [UInt8] {
        var lines: [String] = []
        for entry in clusterLogEntries.reversed() {
            if lines.count >= maximum { break }
            if !user.isEmpty && entry.user != user { continue }
            lines.append(entry.jsonLine)
        }
        let body = lines.isEmpty ? "" : lines.joined(separator: ",\n") + "\n"
        return Array("{\n\"data\": [\n\(body)]\n}\n".utf8)
    }

    // MARK: the IPC service's data

    /// Whether a path is private (priv/, nodes/*/priv/): not for read-only clients.
    public func isPrivate(path: String) -> Bool { isPrivate(components(path)) }

    /// What a watcher needs to follow the tree from outside (other nodes' changes never reach inotify on FUSE): a first
    /// line `VERSION QUORATE` (the tree's change counter, 1 when writes are taken), then, when the counter is not `since`,
    /// one line `VERSION PATH` per entry (`/`-separated, no leading slash).
    public func treeVersions(since: UInt64) -> [UInt8] {
        let quorate = isWritable
        lock.lock()
        defer { lock.unlock() }
        var out = "\(version) \(quorate ? 1 : 0)\n"
        if version != since {
            for entry in entries.values where entry.inode != Self.rootInode {
                guard let parts = components(of: entry) else { continue }
                out += "\(entry.version) \(parts.joined(separator: "/"))\n"
            }
        }
        return Array(out.utf8)
    }

    public func statusFile(_ name: String) -> [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        return statusContent(name)
    }

    /// SET_STATUS: an empty value removes the key; a new key starts at
    /// version 0 and every later update counts up (reported in `.version`).
    /// SET_STATUS: this node's key, held in memory; in cluster mode sent to every node (the status channel).
    public func setStatus(name: String, value: [UInt8]) {
        if let replicator = modeLock.withLock({ replication }) {
            replicator.publish(.status(node: node, name: name, value: value))
            return
        }
        storeStatus(node: node, name: name, value: value)
    }

    /// A status key of `node` (this node's, or another's as the status channel delivered it); empty removes it.
    public func storeStatus(node: String, name: String, value: [UInt8]) {
        lock.lock()
        defer { lock.unlock() }
        if value.isEmpty {
            statusStore[node]?[name] = nil
            statusVersions[node]?[name] = nil
        } else if statusStore[node]?[name] != nil {
            statusStore[node]![name] = value
            statusVersions[node, default: [:]][name, default: 0] &+= 1
        } else {
            statusStore[node, default: [:]][name] = value
            statusVersions[node, default: [:]][name] = 0
        }
    }

    /// This node's own status keys, sent again after every sync so that a joining node learns them.
    public func ownStatus() -> [(name: String, value: [UInt8])] {
        lock.withLock { (statusStore[node] ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }

    /// This node's own cluster log entries, sent again after every sync (the others keep one copy of each).
    public func ownLogEntries() -> [ClusterLogEntry] {
        lock.withLock { clusterLogEntries.filter { $0.node == node } }
    }

    public func status(name: String, node: String) -> [UInt8]? {
        lock.lock()
        defer { lock.unlock() }
        return statusStore[node]?[name]
    }

    /// LOG_CLUSTER_MSG: an entry of this node's, in cluster mode sent to every node.
    public func log(priority: UInt8, ident: String, tag: String, pid: Int32, message: String) {
        let entry: ClusterLogEntry = lock.withLock {
            defer { nextLogUID += 1 }
            return ClusterLogEntry(uid: nextLogUID, time: now(), priority: priority, tag: tag, pid: pid, node: node, user: ident,
                                   message: message)
        }
        if let replicator = modeLock.withLock({ replication }) {
            replicator.publish(.log(entry))
            return
        }
        appendLog(entry)
    }

    /// Adds an entry (from this node or, through the status channel, another); one already held is not added again.
    public func appendLog(_ entry: ClusterLogEntry) {
        lock.lock()
        defer { lock.unlock() }
        if clusterLogEntries.contains(where: { $0.node == entry.node && $0.uid == entry.uid && $0.time == entry.time }) { return }
        let index = clusterLogEntries.lastIndex { ($0.time, $0.node, $0.uid) <= (entry.time, entry.node, entry.uid) }.map { $0 + 1 } ?? 0
        clusterLogEntries.insert(entry, at: index)
        if clusterLogEntries.count > Self.clusterLogCapacity { clusterLogEntries.removeFirst(clusterLogEntries.count - Self.clusterLogCapacity) }
    }

    /// GET_CLUSTER_LOG: newest first, only `user`'s entries when one is named.
    public func clusterLog(maximum: Int, user: String = "") -> [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        return clusterLogText(maximum: maximum, user: user)
    }

    /// GET_GUEST_CONFIG_PROPERTIES: `{"100":{"lock": "backup"},...}` with the
    /// properties in the order asked. Only the main section counts (it ends
    /// at the first `[` line); a property is `name:` at the start of a line,
    /// its value trimmed, empty values do not count, a later line wins.
    /// Guests with none of the properties are left out. A vmid below 100
    /// asks for every guest; a vmid of 100 or more that is not a guest is ENOENT.
    public func guestConfigProperties(vmid: Int, properties: [String]) -> (Int32, [UInt8]) {
        lock.lock()
        defer { lock.unlock() }
        if vmid >= 100 && vmlist[vmid] == nil { return (-ENOENT, []) }
        let selected = vmid >= 100 ? [vmid] : vmlist.keys.sorted()
        var objects: [String] = []
        for id in selected {
            guard let guest = vmlist[id], let directory = Self.guestDirectories.first(where: { $0.value == guest.type })?.key,
                  let entry = resolve(["nodes", guest.node, directory, "\(id).conf"]), entry.type == .file else { continue }
            var found: [String: String] = [:]
            let lines = entry.data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            for line in lines {
                if line.first == UInt8(ascii: "[") { break }
                for property in properties {
                    let name = Array(property.utf8)
                    guard line.count > name.count + 1, line.starts(with: name),
                          line[line.startIndex + name.count] == UInt8(ascii: ":") else { continue }
                    let value = String(decoding: line[(line.startIndex + name.count + 1)...], as: UTF8.self)
                        .trimmingCharacters(in: .whitespaces)
                    if !value.isEmpty { found[property] = value }
                }
            }
            let pairs = properties.compactMap { property in found[property].map { "\"\(property)\": \"\(Self.quoted($0))\"" } }
            if !pairs.isEmpty { objects.append("\"\(id)\":{" + pairs.joined(separator: ",") + "}") }
        }
        return (0, Array(("{\n" + objects.joined(separator: ",\n") + "\n}\n").utf8))
    }

    /// Backslash before `\\` and `"`, as the original escapes property values.
    static func quoted(_ value: String) -> String {
        var result = ""
        for character in value.unicodeScalars {
            if character == "\\" || character == "\"" { result.unicodeScalars.append("\\") }
            result.unicodeScalars.append(character)
        }
        return result
    }

    /// The global version (root's), which every change increments.
    public var currentVersion: UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return version
    }
}

/// A JSON string body: quotes, backslashes and control characters escaped,
/// anything beyond ASCII as \\uXXXX (the original logs ASCII only).
func jsonEscaped(_ text: String) -> String {
    var result = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case _ where scalar.value < 0x20 || scalar.value > 0x7e:
            for unit in String(scalar).utf16 { result += String(format: "\\u%04x", unit) }
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result
}

/// One cluster log entry, in the JSON shape of `.clusterlog`.
/// One entry of the cluster log.
public struct ClusterLogEntry: Sendable, Hashable {
    public var uid: UInt32
    public var time: UInt32
    public var priority: UInt8
    public var tag: String
    public var pid: Int32
    public var node: String
    public var user: String
    public var message: String

    /// One line of `.clusterlog`, in the original's key order and spacing.
    var jsonLine: String {
        "{\"uid\": \(uid), \"time\": \(time), \"pri\": \(priority), \"tag\": \"\(jsonEscaped(tag))\", \"pid\": \(pid), "
            + "\"node\": \"\(jsonEscaped(node))\", \"user\": \"\(jsonEscaped(user))\", \"msg\": \"\(jsonEscaped(message))\"}"
    }
}
