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
    /// This node's QDevice client.
    public var qdevice: QdeviceObservation

    public init(installed: String?, runningVersion: UInt64?, localAddresses: Set<String>, missing: String? = nil,
                qdevice: QdeviceObservation = QdeviceObservation()) {
        self.installed = installed
        self.runningVersion = runningVersion
        self.localAddresses = localAddresses
        self.missing = missing
        self.qdevice = qdevice
    }
}

/// This node's QDevice client (`corosync-qdevice`) and what it needs.
public struct QdeviceObservation: Sendable, Equatable {
    /// corosync-qdevice (or its certificate tool) is not installed: said as such.
    public var missing: String?
    /// The cluster's QNetd CA and client certificate are in the shared tree (`priv/qdevice`), where setup put them.
    public var certificatesShared: Bool
    /// This node's certificate database holds the cluster's client certificate.
    public var databaseReady: Bool
    /// corosync-qdevice runs, and the QNetd host it talks to.
    public var running: Bool
    public var runningHost: String?

    public init(missing: String? = nil, certificatesShared: Bool = false, databaseReady: Bool = false, running: Bool = false,
                runningHost: String? = nil) {
        self.missing = missing
        self.certificatesShared = certificatesShared
        self.databaseReady = databaseReady
        self.running = running
        self.runningHost = runningHost
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
    /// Imports the cluster's QDevice certificates into this node's database when they are not there, then (re)starts
    /// corosync-qdevice once corosync knows the device.
    func startQdevice(host: String?) async throws
    /// Stops corosync-qdevice and removes this node's QDevice certificate database.
    func stopQdevice() async throws
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
        /// What this node's QDevice client needs: started (or restarted), stopped, or nothing.
        public var qdevice: QdeviceStep?
    }

    public enum QdeviceStep: Sendable, Equatable {
        /// Started for this QNetd host, or restarted when it talks to another.
        case start(host: String?)
        case stop
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
        // A node without a cluster has nothing of corosync's to look at.
        guard let desired = state.corosync else { return Computed() }
        let observation = await driver.observe()
        var computed = computeConfig(desired, node: state.node, observation)
        if observation.missing == nil, let plan = Self.qdevicePlan(desired, observation.qdevice) {
            computed.resources.append(plan.resource)
            computed.qdevice = plan.step
        }
        return computed
    }

    /// The QDevice client the config asks for, against what runs: set up and started, restarted for another QNetd host,
    /// stopped when the device is gone from the config.
    static func qdevicePlan(_ desired: CorosyncConfig, _ observed: QdeviceObservation) -> (resource: ResourcePlan, step: QdeviceStep?)? {
        guard let device = ClusterMembership.QuorumDevice(desired) else {
            // A running client is stopped (corosync-qdevice mostly exits by itself when the device leaves corosync's
            // configuration); its database goes once the shared certificates went too (a remove, not a setup under way).
            guard observed.running || (observed.databaseReady && !observed.certificatesShared) else { return nil }
            return (ResourcePlan(kind: name, name: "qdevice", action: .delete, source: SourceLocation(file: desired.file, line: 1), changes: [],
                                 operations: ["stop corosync-qdevice", "remove this node's QDevice certificate database"],
                                 message: "the quorum device is gone from corosync.conf"), .stop)
        }
        let change = PlannedChange(field: "quorum.device.net.host", old: observed.runningHost, new: device.host, changeClass: .restart,
                                   source: device.location)
        guard device.model == "net" else {
            return (ResourcePlan(kind: name, name: "qdevice", action: .blocked, source: device.location, changes: [],
                                 message: "quorum device model '\(device.model)': only model net (corosync-qnetd) is supported"), nil)
        }
        if let missing = observed.missing {
            return (ResourcePlan(kind: name, name: "qdevice", action: .unavailable, source: device.location, changes: [],
                                 message: "unavailable: \(missing)"), nil)
        }
        if !observed.databaseReady && !observed.certificatesShared {
            return (ResourcePlan(kind: name, name: "qdevice", action: .blocked, source: device.location, changes: [],
                                 message: "the cluster's QDevice certificates are not in priv/qdevice: set the device up with "
                                    + "pvectl cluster qdevice setup ADDRESS"), nil)
        }
        var operations: [String] = []
        if !observed.databaseReady { operations.append("import the cluster's QDevice certificate into /etc/corosync/qdevice/net/nssdb") }
        if observed.running && !observed.databaseReady {
            operations.append("restart corosync-qdevice (with the certificates of the latest setup)")
        } else if !observed.running {
            operations.append("start corosync-qdevice (QNetd \(device.host ?? "-"))")
        } else if observed.runningHost != nil, observed.runningHost != device.host {
            operations.append("restart corosync-qdevice (QNetd \(observed.runningHost ?? "-") → \(device.host ?? "-"))")
        }
        guard !operations.isEmpty else { return nil }
        return (ResourcePlan(kind: name, name: "qdevice", action: observed.running ? .update : .create, source: device.location,
                             changes: observed.running ? [change] : [], operations: operations), .start(host: device.host))
    }

    func computeConfig(_ desired: CorosyncConfig, node: String, _ observation: CorosyncObservation) -> Computed {
        var computed = Computed()
        let source = desired.totem?.location ?? SourceLocation(file: desired.file, line: 1)
        computed.observation = observation
        if let missing = observation.missing {
            computed.resources.append(ResourcePlan(kind: Self.name, name: "config", action: .unavailable, source: source, changes: [],
                                                   message: "unavailable: \(missing)"))
            return computed
        }
        // What would split the cluster, at the line that does it.
        var blocking: [Diagnostic] = []
        let me = desired.nodes.first { $0["name"] == node }
        if let me {
            for case .value(let key, let address, let location) in me.items where key.hasPrefix("ring") && key.hasSuffix("_addr") {
                if IPAddress.parse(address) != nil, !observation.localAddresses.contains(address) {
                    blocking.append(.error(location, "\(key) \(address) is not an address of this node (\(node)): corosync could not "
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
        var outcome = try await applyConfig(computed, progress: progress)
        guard let step = computed.qdevice, !outcome.failed.contains(where: { $0.name == "config" }) else { return outcome }
        do {
            switch step {
            case .start(let host):
                try await driver.startQdevice(host: host)
                progress("corosync/qdevice: corosync-qdevice runs")
            case .stop:
                try await driver.stopQdevice()
                progress("corosync/qdevice: corosync-qdevice stopped, its certificate database removed")
            }
            outcome.applied.append("qdevice")
        } catch {
            outcome.failed.append(ApplyOutcome.Failure(name: "qdevice", message: "\(error)"))
        }
        return outcome
    }

    func applyConfig(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        guard computed.resources.contains(where: { $0.name == "config" && [.create, .update].contains($0.action) }) else {
            return ApplyOutcome()
        }
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
