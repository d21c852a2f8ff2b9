import Crypto
import Foundation
import Resources

/// Identifies one reconciled resource: `network/vmbr0`, `qemu/100`, `storage/local`.
public struct ResourceID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var kind: String
    public var name: String

    public init(kind: String, name: String) {
        self.kind = kind
        self.name = name
    }

    public var description: String { "\(kind)/\(name)" }

    public static func < (lhs: ResourceID, rhs: ResourceID) -> Bool { (lhs.kind, lhs.name) < (rhs.kind, rhs.name) }
}

/// Everything an operator declared for one node: the cluster files under the
/// config root (default `/etc/pve`, or any directory such as a git checkout)
/// plus the node's `/etc/network/interfaces`.
///
/// A file that cannot be read or parsed is reported and its resources are
/// *frozen*: they are never treated as absent, so nothing gets deleted
/// because of a typo.
public struct DesiredState: Sendable {
    public struct Guest: Sendable {
        public var vmid: Int
        public var node: String
        public var config: GuestConfig
        public var path: String
        public var kind: GuestConfig.Kind { config.kind }

        public init(vmid: Int, node: String, config: GuestConfig, path: String) {
            self.vmid = vmid
            self.node = node
            self.config = config
            self.path = path
        }
    }

    public var root: String
    public var node: String
    public var storage: SectionConfigFile?
    public var datacenter: DatacenterConfig?
    public var corosync: CorosyncConfig?
    public var users: UserConfig?
    public var sectionConfigs: [String: SectionConfigFile] = [:]
    public var guests: [Guest] = []
    public var clusterFirewall: FirewallConfig?
    public var hostFirewall: FirewallConfig?
    public var guestFirewalls: [Int: FirewallConfig] = [:]
    public var interfaces: InterfacesFile?
    /// The path the interfaces were read from (`interfaces.new` when staged).
    public var interfacesPath: String?
    /// Service and protocol names (`/etc/services`, `/etc/protocols`), read when there is a firewall.
    public var networkServices = NetworkServices(services: nil, protocols: nil)
    /// A staged `interfaces.new` this load did not read (the loop leaves it for `pvectl apply`).
    public var stagedInterfacesLeftAlone: String?
    /// SDN vnets declared in `sdn/vnets.cfg`; guests may attach to them.
    public var sdnVnets: Set<String> = []
    /// Parse problems, in file order.
    public var diagnostics: [Diagnostic] = []
    /// Resources whose file could not be parsed; they must not be changed.
    public var frozen: Set<ResourceID> = []
    /// Path → SHA-256 of every input read, so a saved plan can detect edits.
    public var digests: [String: String] = [:]
    /// `virtual-guest/cpu-models.conf`.
    public var cpuModels: SectionConfigFile?
    /// CIFS storages with a password file (`priv/storage/<id>.pw`).
    public var storageCredentials: Set<String> = []
    /// How many input files were read (with or without digests).
    public var filesRead = 0

    public var localGuests: [Guest] { guests.filter { $0.node == node } }

    /// Files at the root that hold SectionConfig data besides storage.cfg.
    static let sectionConfigFiles = ["ha/resources.cfg", "ha/groups.cfg", "ha/rules.cfg", "domains.cfg",
                                     "sdn/vnets.cfg", "sdn/zones.cfg", "sdn/subnets.cfg", "jobs.cfg", "replication.cfg"]

    /// Loads the tree. Missing files are fine (a network-only root needs
    /// nothing); unreadable ones are reported.
    /// - Parameter source: where files come from: plain files by default, or a
    ///   running pmxcfs's IPC service (pvectl passes one when --root is its mount).
    /// `stagedInterfaces`: read `interfaces.new` instead of the interfaces
    /// file when it exists (what `apply` installs); the continuous loop does
    /// not, as Proxmox applies a staged file only when asked.
    public static func load(root: String, interfaces interfacesPath: String?, node: String,
                            source: any TreeSource = FileTreeSource(), stagedInterfaces: Bool = true,
                            digests computeDigests: Bool = true) -> DesiredState {
        var state = DesiredState(root: root, node: node)
        let fm = source
        func path(_ relative: String) -> String { root.hasSuffix("/") ? root + relative : root + "/" + relative }
        /// `counted`: a desired-state file (`validate` says how many it read), not a host table.
        func read(_ file: String, counted: Bool = true) -> String? {
            guard fm.fileExists(atPath: file) else { return nil }
            guard let data = fm.contents(atPath: file) else {
                state.diagnostics.append(.error(SourceLocation(file: file, line: 1), "cannot read file", code: .unreadableFile))
                return nil
            }
            if counted { state.filesRead += 1 }
            if computeDigests { state.digests[file] = Digest.sha256Hex(data) }
            guard let text = String(data: data, encoding: .utf8) else {
                state.diagnostics.append(.error(SourceLocation(file: file, line: 1), "file is not valid UTF-8", code: .unreadableFile))
                return nil
            }
            return text
        }
        func record(_ diagnostics: [Diagnostic], freezing ids: [ResourceID]) {
            state.diagnostics += diagnostics
            if diagnostics.hasErrors { state.frozen.formUnion(ids) }
        }

        // storage.cfg and the interfaces file are parsed beside the guest files below, on the cores those leave free.
        let storageText = read(path("storage.cfg"))
        if let text = read(path("datacenter.cfg")) {
            let (file, diagnostics) = DatacenterConfig.parse(text, file: path("datacenter.cfg"))
            state.datacenter = file
            record(diagnostics, freezing: [])
        }
        if let text = read(path("corosync.conf")) {
            let (file, diagnostics) = CorosyncConfig.parse(text, file: path("corosync.conf"))
            state.corosync = file
            record(diagnostics, freezing: [])
        }
        if let text = read(path("user.cfg")) {
            let (file, diagnostics) = UserConfig.parse(text, file: path("user.cfg"))
            state.users = file
            record(diagnostics, freezing: [])
        }
        // The cluster's custom CPU models (`cpu: custom-NAME`): read here, with a digest, so a saved plan notices an edit.
        if let text = read(path("virtual-guest/cpu-models.conf")) {
            let (file, diagnostics) = SectionConfigFile.parse(text, file: path("virtual-guest/cpu-models.conf")) { _ in
                SectionTypeLayout(known: ["reported-model", "flags", "hv-vendor-id", "phys-bits", "guest-phys-bits", "hidden"])
            }
            state.cpuModels = file
            record(diagnostics, freezing: [])
        }
        for relative in sectionConfigFiles {
            if let text = read(path(relative)) {
                let (file, diagnostics) = SectionConfigFile.parse(text, file: path(relative))
                state.sectionConfigs[relative] = file
                record(diagnostics, freezing: [])
            }
        }
        state.sdnVnets = Set(state.sectionConfigs["sdn/vnets.cfg"]?.sections.map(\.id) ?? [])

        // Guests: nodes/<node>/{qemu-server,lxc}/<vmid>.conf. The top-level
        // qemu-server/ and lxc/ (links to the local node in pmxcfs) count as
        // the local node's when they are real directories.
        var guestDirectories: [(node: String, kind: GuestConfig.Kind, directory: String)] = []
        let nodesDirectory = path("nodes")
        for nodeName in (fm.contentsOfDirectory(atPath: nodesDirectory) ?? []).sorted() {
            for kind in GuestConfig.Kind.allCases {
                guestDirectories.append((nodeName, kind, nodesDirectory + "/" + nodeName + "/" + (kind == .qemu ? "qemu-server" : "lxc")))
            }
        }
        for kind in GuestConfig.Kind.allCases {
            let directory = path(kind == .qemu ? "qemu-server" : "lxc")
            let isLink = fm.isSymbolicLink(atPath: directory)
            if !isLink { guestDirectories.append((node, kind, directory)) }
        }
        var guestFiles: [(node: String, kind: GuestConfig.Kind, path: String, vmid: Int)] = []
        for (nodeName, kind, directory) in guestDirectories {
            guard let names = fm.contentsOfDirectory(atPath: directory) else { continue }
            for name in names.sorted() where name.hasSuffix(".conf") {
                let file = directory + "/" + name
                guard let vmid = GuestConfig.vmid(forPath: name) else {
                    state.diagnostics.append(.warning(SourceLocation(file: file, line: 1), "ignored: guest config names must be <vmid>.conf",
                                                      code: .fileName))
                    continue
                }
                guestFiles.append((nodeName, kind, file, vmid))
            }
        }
        // Guest files are independent and the bulk of a large tree: read and
        // parse them on all cores, then merge in a stable order.
        struct LoadedGuest {
            var guest: Guest?
            var digest: String?
            var diagnostics: [Diagnostic]
            var read = true
        }
        // A staged interfaces.new is what apply would install: it is the desired state.
        let interfacesSource = interfacesPath.map { path in
            stagedInterfaces && fm.fileExists(atPath: path + ".new") ? path + ".new" : path
        }
        let interfacesText = interfacesSource.flatMap { read($0) }
        if let interfacesPath, !stagedInterfaces, fm.fileExists(atPath: interfacesPath + ".new") {
            state.stagedInterfacesLeftAlone = interfacesPath + ".new"
        }
        let files = guestFiles
        let slots = UnsafeResultSlots<LoadedGuest>(count: files.count)
        let storageSlot = UnsafeResultSlots<(SectionConfigFile, [Diagnostic])>(count: 1)
        let interfacesSlot = UnsafeResultSlots<(InterfacesFile, [Diagnostic])>(count: 1)
        let storageFile = path("storage.cfg")
        // The two single files first, so that they do not end up last on one core.
        DispatchQueue.concurrentPerform(iterations: files.count + 2) { iteration in
            if iteration == 0 {
                if let storageText {
                    let storageSpec = Specs.storage
                    var layouts: [String: SectionTypeLayout?] = [:]
                    storageSlot.set(0, SectionConfigFile.parse(storageText, file: storageFile) { type in
                        if let known = layouts[type] { return known }
                        let layout = storageSpec.sectionLayout(forType: type)
                        layouts[type] = layout
                        return layout
                    })
                }
                return
            }
            if iteration == 1 {
                if let interfacesText, let interfacesSource { interfacesSlot.set(0, InterfacesFile.parse(interfacesText, file: interfacesSource)) }
                return
            }
            let index = iteration - 2
            let entry = files[index]
            guard let data = fm.contents(atPath: entry.path) else {
                slots.set(index, LoadedGuest(diagnostics: [.error(SourceLocation(file: entry.path, line: 1), "cannot read file",
                                                                  code: .unreadableFile)], read: false))
                return
            }
            // Digests serve saved plans (what changed since); `validate` has no use for them.
            let digest = computeDigests ? Digest.sha256Hex(data) : nil
            guard let text = String(data: data, encoding: .utf8) else {
                slots.set(index, LoadedGuest(digest: digest,
                                             diagnostics: [.error(SourceLocation(file: entry.path, line: 1), "file is not valid UTF-8",
                                                                  code: .unreadableFile)]))
                return
            }
            let (parsed, diagnostics) = GuestConfig.parse(text, file: entry.path, kind: entry.kind)
            // Parsed once into the values upstream stores: `onboot: yes` is onboot 1 for every kind that reads it.
            let config = parsed.withCanonicalBooleans(Specs.guest(entry.kind))
            slots.set(index, LoadedGuest(guest: Guest(vmid: entry.vmid, node: entry.node, config: config, path: entry.path),
                                         digest: digest, diagnostics: diagnostics))
        }
        if let (file, diagnostics) = storageSlot[0] {
            state.storage = file
            record(diagnostics, freezing: [ResourceID(kind: "storage", name: "*")])
            // A CIFS storage's password file, as pve-storage keeps it; only whether it exists is read here.
            for section in file.sections where section.type == "cifs" && fm.fileExists(atPath: path("priv/storage/\(section.id).pw")) {
                state.storageCredentials.insert(section.id)
            }
        }
        for (index, loaded) in slots.values.enumerated() {
            let entry = files[index]
            if loaded.read { state.filesRead += 1 }
            if let digest = loaded.digest { state.digests[entry.path] = digest }
            if let guest = loaded.guest { state.guests.append(guest) }
            record(loaded.diagnostics, freezing: [ResourceID(kind: entry.kind.rawValue, name: String(entry.vmid))])
        }

        if let text = read(path("firewall/cluster.fw")) {
            let (file, diagnostics) = FirewallConfig.parse(text, file: path("firewall/cluster.fw"), scope: .cluster)
            state.clusterFirewall = file
            record(diagnostics, freezing: [ResourceID(kind: "firewall", name: "cluster")])
            // Rules may name services and protocols: the host's tables are inputs of the firewall's plan.
            state.networkServices = NetworkServices(services: read(NetworkServices.servicesPath, counted: false),
                                                    protocols: read(NetworkServices.protocolsPath, counted: false))
        }
        if let text = read(path("nodes/\(node)/host.fw")) {
            let (file, diagnostics) = FirewallConfig.parse(text, file: path("nodes/\(node)/host.fw"), scope: .host)
            state.hostFirewall = file
            record(diagnostics, freezing: [ResourceID(kind: "firewall", name: "host")])
        }
        for name in (fm.contentsOfDirectory(atPath: path("firewall")) ?? []).sorted() where name.hasSuffix(".fw") && name != "cluster.fw" {
            let file = path("firewall/" + name)
            guard let vmid = Int(name.dropLast(3)) else {
                state.diagnostics.append(.warning(SourceLocation(file: file, line: 1), "ignored: guest firewall files are named <vmid>.fw",
                                                  code: .fileName))
                continue
            }
            if let text = read(file) {
                let (config, diagnostics) = FirewallConfig.parse(text, file: file, scope: .guest)
                state.guestFirewalls[vmid] = config
                record(diagnostics, freezing: [ResourceID(kind: "firewall", name: String(vmid))])
            }
        }

        if let (file, diagnostics) = interfacesSlot[0] {
            state.interfaces = file
            state.interfacesPath = interfacesSource
            record(diagnostics, freezing: [ResourceID(kind: "network", name: "*")])
        }
        return state
    }
}

/// Where the desired state's files are read from.
public protocol TreeSource: Sendable {
    func fileExists(atPath path: String) -> Bool
    func contents(atPath path: String) -> Data?
    func contentsOfDirectory(atPath path: String) -> [String]?
    func isSymbolicLink(atPath path: String) -> Bool
}

/// Plain files (a directory, a git checkout, or a mounted /etc/pve).
public struct FileTreeSource: TreeSource {
    public init() {}
    public func fileExists(atPath path: String) -> Bool { FileManager.default.fileExists(atPath: path) }
    public func contents(atPath path: String) -> Data? { FileManager.default.contents(atPath: path) }
    public func contentsOfDirectory(atPath path: String) -> [String]? { try? FileManager.default.contentsOfDirectory(atPath: path) }
    public func isSymbolicLink(atPath path: String) -> Bool { (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) != nil }
}

/// Content digests of inputs, so a saved plan can detect edits.
public enum Digest {
    public static func sha256Hex(_ data: Data) -> String {
        SHA256.hash(data: data).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}

extension DesiredState {
    /// HA resources of one type (`vm`, `ct`) from ha/resources.cfg: their VMID and requested state (default started).
    public func haStates(type: String) -> [Int: String] {
        Dictionary((sectionConfigs["ha/resources.cfg"]?.sections ?? []).compactMap { section -> (Int, String)? in
            guard section.type == type, let vmid = Int(section.id) else { return nil }
            return (vmid, section["state"] ?? "started")
        }, uniquingKeysWith: { first, _ in first })
    }
}
