import Foundation
import Resources

/// What the corosync kind observes on this node.
public struct CorosyncObservation: Sendable, Equatable {
    /// The file corosync reads (`/etc/corosync/corosync.conf`), nil when there is none.
    public var installed: String?
    /// The running corosync's `totem.config_version`, nil when corosync does not run (or does not answer).
    public var runningVersion: UInt64?
    /// This node's IP addresses, to refuse a link address it does not have.
    public var localAddresses: Set<String>
    /// A tool the kind needs that is missing (`corosync-cfgtool`), said as such.
    public var missing: String?

    public init(installed: String?, runningVersion: UInt64?, localAddresses: Set<String>, missing: String? = nil) {
        self.installed = installed
        self.runningVersion = runningVersion
        self.localAddresses = localAddresses
        self.missing = missing
    }
}

/// The side effects of the corosync kind.
public protocol CorosyncDriver: Sendable {
    var installedPath: String { get }
    func observe() async -> CorosyncObservation
    /// Replaces the installed file (atomically).
    func install(_ text: String) async throws
    /// Tells every corosync of the cluster to read its file again (`corosync-cfgtool -R`).
    func reload() async throws
}

/// The cluster's corosync.conf as desired state: `/etc/pve/corosync.conf` installed as the file corosync reads, and
/// corosync told to reload it, as pmxcfs and pvecm do; checked first against what would split the cluster.
public struct CorosyncReconciler: Sendable {
    public let driver: any CorosyncDriver

    public init(driver: any CorosyncDriver) {
        self.driver = driver
    }

    public struct Computed: Sendable {
        public var resources: [ResourcePlan] = []
        public var problems: [Diagnostic] = []
        public var notes: [String] = []
        /// The text to install and whether corosync must then reload; nil when nothing is to be done.
        public var install: String?
        public var reload = false
        public var observation: CorosyncObservation?
    }

    /// Keys corosync cannot take by a reload (`corosync-cfgtool -R`): a change needs corosync restarted on every node.
    static let restartKeys: Set<String> = ["totem.cluster_name", "totem.transport", "totem.crypto_cipher", "totem.crypto_hash",
                                           "totem.secauth", "totem.ip_version", "totem.version", "totem.keyfile", "totem.link_mode"]

    /// The config as flat keys: `totem.token`, `totem.interface[0].knet_link_priority`, `nodelist.node[pve1].ring0_addr`.
    public static func flatten(_ config: CorosyncConfig) -> [(key: String, value: String, location: SourceLocation)] {
        var out: [(String, String, SourceLocation)] = []
        func walk(_ section: CorosyncConfig.Section, _ prefix: String) {
            var counts: [String: Int] = [:]
            for item in section.items {
                switch item {
                case .value(let key, let value, let location):
                    out.append((prefix + key, value, location))
                case .section(let child):
                    let index = counts[child.name, default: 0]
                    counts[child.name] = index + 1
                    // Nodes by name and links by number: reordering them changes nothing.
                    let label = child.name == "node" ? (child["name"] ?? child["nodeid"] ?? String(index))
                        : child.name == "interface" ? (child["linknumber"] ?? child["ringnumber"] ?? String(index)) : nil
                    walk(child, prefix + child.name + (label.map { "[\($0)]" } ?? "") + ".")
                }
            }
        }
        walk(config.root, "")
        return out
    }

    static func version(_ config: CorosyncConfig) -> UInt64? { config.totem?["config_version"].flatMap { UInt64($0) } }

    public func compute(_ state: DesiredState) async -> Computed {
        var computed = Computed()
        guard let desired = state.corosync else { return computed }
        let source = desired.totem?.location ?? SourceLocation(file: desired.file, line: 1)
        let observation = await driver.observe()
        computed.observation = observation
        if let missing = observation.missing {
            computed.resources.append(ResourcePlan(kind: Self.name, name: "config", action: .unavailable, source: source, changes: [],
                                                   message: "unavailable: \(missing)"))
            return computed
        }
        // What would split the cluster, at the line that does it.
        var blocking: [Diagnostic] = []
        let me = desired.nodes.first { $0["name"] == state.node }
        if let me {
            for case .value(let key, let address, let location) in me.items where key.hasPrefix("ring") && key.hasSuffix("_addr") {
                if IPAddress.parse(address) != nil, !observation.localAddresses.contains(address) {
                    blocking.append(.error(location, "\(key) \(address) is not an address of this node (\(state.node)): corosync could not "
                                           + "bind that link", code: .reference))
                }
            }
        }
        let installed = observation.installed.map { CorosyncConfig.parse($0, file: driver.installedPath).0 }
        let desiredVersion = Self.version(desired) ?? 0
        if let installed, installed.canonicalText() != desired.canonicalText(), let installedVersion = Self.version(installed),
           desiredVersion <= installedVersion {
            let location = Self.flatten(desired).first { $0.key == "totem.config_version" }?.location ?? source
            blocking.append(.error(location, "config_version \(desiredVersion) is not above the installed \(installedVersion): corosync "
                                   + "would not take the change (bump config_version)", code: .invalidValue))
        }
        let changes = Self.changes(from: installed, to: desired)
        let needsReload = observation.runningVersion.map { $0 < desiredVersion } ?? false
        if !blocking.isEmpty {
            computed.problems = blocking
            computed.resources.append(ResourcePlan(kind: Self.name, name: "config", action: .blocked, source: blocking[0].location,
                                                   changes: changes, message: blocking.map(\.message).joined(separator: "; ")))
            return computed
        }
        if changes.isEmpty && !needsReload { return computed }
        let restart = changes.contains { $0.changeClass == .restart }
        var operations: [String] = []
        if !changes.isEmpty { operations.append("install \(driver.installedPath) (config_version \(desiredVersion))") }
        if observation.runningVersion != nil && !restart { operations.append("corosync-cfgtool -R (every node reloads)") }
        computed.install = changes.isEmpty ? nil : desired.losslessText()
        computed.reload = observation.runningVersion != nil && !restart
        let action: ResourcePlan.Action = restart ? .pending : installed == nil ? .create : .update
        computed.resources.append(ResourcePlan(
            kind: Self.name, name: "config", action: action, source: source, changes: changes, operations: operations,
            message: restart ? "corosync takes this only when restarted: restart corosync on every node (systemctl restart corosync)"
                : observation.runningVersion == nil ? "corosync does not run on this node: it reads the file when it starts" : nil))
        return computed
    }

    /// Key by key, with the class of each change: reload, or restart for what a running corosync cannot take.
    static func changes(from installed: CorosyncConfig?, to desired: CorosyncConfig) -> [PlannedChange] {
        let old = Dictionary(installed.map(flatten)?.map { ($0.key, $0.value) } ?? [], uniquingKeysWith: { _, last in last })
        var changes: [PlannedChange] = []
        var seen: Set<String> = []
        for entry in flatten(desired) where seen.insert(entry.key).inserted {
            guard old[entry.key] != entry.value else { continue }
            changes.append(PlannedChange(field: entry.key, old: old[entry.key], new: entry.value,
                                         changeClass: restartKeys.contains(entry.key) ? .restart : .reload, source: entry.location))
        }
        for (key, value) in old.sorted(by: { $0.key < $1.key }) where !seen.contains(key) {
            changes.append(PlannedChange(field: key, old: value, new: nil, changeClass: restartKeys.contains(key) ? .restart : .reload))
        }
        return changes
    }

    public func apply(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        guard computed.resources.contains(where: { [.create, .update].contains($0.action) }) else { return ApplyOutcome() }
        do {
            if let text = computed.install {
                try await driver.install(text)
                progress("corosync/config: installed \(driver.installedPath)")
            }
            if computed.reload {
                try await driver.reload()
                progress("corosync/config: corosync reloaded its configuration")
            }
            return ApplyOutcome(applied: ["config"])
        } catch {
            return ApplyOutcome(failed: [ApplyOutcome.Failure(name: "config", message: "\(error)")])
        }
    }
}
