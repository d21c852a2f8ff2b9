import Foundation
import Reconciler
import Resources
import Synchronization

// In-memory drivers for every kind, shipped for the engine's tests (and any test of the pure core): one host model
// the four drivers share, so that a tap QEMU attaches is a link the firewall then sees, as on a real node.

/// A desired-state tree held in memory, changeable while tests run (the QEMU driver writes generated values back).
public final class MemoryTree: TreeSource {
    private let files: Mutex<[String: String]>

    public init(_ files: [String: String] = [:]) { self.files = Mutex(files) }

    public func write(_ path: String, _ text: String) { files.withLock { $0[path] = text } }
    public func remove(_ path: String) { _ = files.withLock { $0.removeValue(forKey: path) } }
    public func read(_ path: String) -> String? { files.withLock { $0[path] } }

    public func fileExists(atPath path: String) -> Bool { files.withLock { $0[path] != nil } || isDirectory(path) }
    public func contents(atPath path: String) -> Data? { files.withLock { $0[path] }.map { Data($0.utf8) } }
    public func contentsOfDirectory(atPath path: String) -> [String]? {
        guard isDirectory(path) else { return nil }
        let prefix = path + "/"
        let names = files.withLock { $0.keys.filter { $0.hasPrefix(prefix) } }
        return Array(Set(names.map { String($0.dropFirst(prefix.count).split(separator: "/")[0]) })).sorted()
    }
    public func isSymbolicLink(atPath path: String) -> Bool { false }
    func isDirectory(_ path: String) -> Bool { files.withLock { $0.keys.contains { $0.hasPrefix(path + "/") } } }
}

/// A kernel stand-in for the pure core: applies steps to an observed model.
public final class InMemoryNetworkDriver: NetworkDriver {
    public let state: Mutex<ObservedNetwork>
    public let performed = Mutex<[NetworkStep]>([])
    let nextIndex = Mutex(100)

    /// Staged interfaces files installed, in order; moved in `tree` when there is one.
    public let installed = Mutex<[String]>([])
    public let tree: MemoryTree?

    public init(_ initial: ObservedNetwork = ObservedNetwork(), tree: MemoryTree? = nil) {
        state = Mutex(initial)
        self.tree = tree
    }

    public func installStagedInterfaces(_ staged: String) throws {
        installed.withLock { $0.append(staged) }
        guard let tree, let text = tree.read(staged) else { return }
        tree.write(String(staged.dropLast(4)), text)
        tree.remove(staged)
    }

    /// A link created outside the network kind (a tap, a firewall bridge), enslaved to `master`.
    public func addLink(_ name: String, kind: String? = nil, master: String?) {
        let index = nextIndex.withLock { value -> Int in value += 1; return value }
        state.withLock { $0.links[name] = ObservedLink(name: name, ifindex: index, kind: kind, up: true, master: master) }
    }

    public func removeLink(_ name: String) { _ = state.withLock { $0.links.removeValue(forKey: name) } }

    public func master(of name: String) -> String?? { state.withLock { net in net.links[name].map { $0.master } } }

    public func observe() async throws -> ObservedNetwork { state.withLock { $0 } }

    public func perform(_ steps: [NetworkStep], log: @Sendable (String) -> Void) async throws {
        performed.withLock { $0 += steps }
        for step in steps {
            let index = nextIndex.withLock { value -> Int in value += 1; return value }
            state.withLock { net in
                switch step {
                case .createBridge(let name):
                    net.links[name] = ObservedLink(name: name, ifindex: index, kind: "bridge",
                                                   bridge: .init(stp: false, forwardDelay: 15, vlanFiltering: false))
                case .createBond(let name, let mode):
                    net.links[name] = ObservedLink(name: name, ifindex: index, kind: "bond", bond: .init(mode: mode, miimon: 0))
                case .createVLAN(let name, let raw, let id, let proto):
                    net.links[name] = ObservedLink(name: name, ifindex: index, kind: "vlan", vlan: .init(id: id, rawDevice: raw, proto: proto))
                case .deleteLink(let name):
                    net.links[name] = nil
                    for key in Array(net.links.keys) where net.links[key]?.master == name { net.links[key]?.master = nil }
                case .setMaster(let port, let master):
                    net.links[port]?.master = master
                case .setBondSlave(let port, let bond):
                    net.links[port]?.master = bond
                    net.links[port]?.up = true
                case .clearMaster(let port): net.links[port]?.master = nil
                case .setMTU(let name, let mtu): net.links[name]?.mtu = mtu
                case .setUp(let name): net.links[name]?.up = true
                case .setDown(let name): net.links[name]?.up = false
                case .setBridge(let name, let stp, let fd, let vf):
                    let filtering = vf ?? (net.links[name]?.bridge?.vlanFiltering ?? false)
                    net.links[name]?.bridge = .init(stp: stp, forwardDelay: fd, vlanFiltering: filtering)
                case .setBond(let name, let miimon, let policy, let rate, let minLinks, let primary):
                    let mode = net.links[name]?.bond?.mode ?? "balance-rr"
                    net.links[name]?.bond = .init(mode: mode, miimon: miimon, xmitHashPolicy: policy, lacpRate: rate, minLinks: minLinks,
                                                  primary: primary)
                case .setLearning(let port, let learning): net.links[port]?.learning = learning
                case .setBridgeVLANs(let port, let vids, _): net.vlans[port] = vids
                case .addAddress(let name, let cidr): net.links[name]?.addresses.append(cidr)
                case .deleteAddress(let name, let cidr): net.links[name]?.addresses.removeAll { $0 == cidr }
                case .promoteSecondaries: break
                case .replaceDefaultRoute(let gateway, let device, let family):
                    net.defaultRoutes.removeAll { $0.family == family }
                    net.defaultRoutes.append(ObservedRoute(family: family, gateway: gateway, device: device))
                case .deleteDefaultRoute(let gateway, let device, let family):
                    net.defaultRoutes.removeAll { $0 == ObservedRoute(family: family, gateway: gateway, device: device) }
                case .runHook: break
                }
            }
        }
    }
}


/// Storage on a host made of sets: directories, mounts, images and volume groups. Every storage is available here.
public final class InMemoryStorageDriver: StorageDriver {
    public struct Host: Sendable {
        public var directories: Set<String> = []
        public var mounts: [String: ObservedStorage.Mount] = [:]
        /// Image and logical volume paths with their sizes.
        public var volumes: [String: UInt64] = [:]
        public var volumeGroups: Set<String> = []
        public var capacity = ObservedStorage.Capacity(total: 100 << 30, used: 10 << 30, available: 90 << 30)

        public init(directories: Set<String> = [], volumeGroups: Set<String> = []) {
            self.directories = directories
            self.volumeGroups = volumeGroups
        }
    }

    public let host: Mutex<Host>
    public let performed = Mutex<[StorageStep]>([])
    /// Steps that fail, with the message.
    public let failing = Mutex<[StorageStep: String]>([:])
    let qemu: InMemoryQemuDriver?

    public init(_ host: Host = Host(), qemu: InMemoryQemuDriver? = nil) {
        self.host = Mutex(host)
        self.qemu = qemu
    }

    public struct StepFailed: Error, CustomStringConvertible {
        public var description: String
    }

    public func observe(_ storage: DesiredStorage) async -> ObservedStorage {
        host.withLock { host in
            var observed = ObservedStorage()
            if let path = storage.path {
                observed.pathIsDirectory = host.directories.contains(path)
                observed.mount = host.mounts[path]
                observed.fileSystem = observed.pathIsDirectory ? "ext4" : nil
                if let mountpoint = storage.requiredMountpoint { observed.requiredMountpointMounted = host.mounts[mountpoint] != nil }
                observed.missingSubdirectories = storage.subdirectories.filter { !host.directories.contains($0) }
                if observed.pathIsDirectory { observed.capacity = host.capacity }
            }
            if let vg = storage.properties["vgname"] { observed.volumeGroupExists = host.volumeGroups.contains(vg) }
            return observed
        }
    }

    public func observe(_ volume: DesiredVolume, format: String) async -> ObservedVolume {
        host.withLock { host in
            if let size = host.volumes[volume.hostPath] { return ObservedVolume(exists: true, sizeBytes: size) }
            return ObservedVolume(exists: host.directories.contains(volume.hostPath))
        }
    }

    public func perform(_ step: StorageStep) async throws {
        performed.withLock { $0.append(step) }
        if let message = failing.withLock({ $0[step] }) { throw StepFailed(description: message) }
        host.withLock { host in
            switch step {
            case .makeDirectory(let path), .createDirectoryVolume(let path), .createBtrfsSubvolume(let path):
                var parent = path
                while parent.count > 1 {
                    host.directories.insert(parent)
                    parent = (parent as NSString).deletingLastPathComponent
                }
            case .mount(let fileSystem, let source, let target, _): host.mounts[target] = .init(source: source, fileSystem: fileSystem)
            case .unmount(let target): host.mounts[target] = nil
            case .createImage(let path, _, let bytes, _), .resizeImage(let path, _, let bytes, _): host.volumes[path] = bytes
            case .createLogicalVolume(let vg, let name, let bytes, _, _): host.volumes["/dev/\(vg)/\(name)"] = bytes
            case .resizeLogicalVolume(let path, let bytes, _): host.volumes[path] = bytes
            case .activateVolumeGroup(let vg): host.volumeGroups.insert(vg)
            case .activateLogicalVolume, .resizeRunningDisk: break
            }
        }
    }

    public func isRunning(vmid: Int) async -> Bool { qemu?.isRunning(vmid) ?? false }
}

/// QEMU as a table of VMs: start and stop change it, live steps are recorded, taps become links of the network model,
/// and configs written back land in the tree.
public final class InMemoryQemuDriver: QemuDriver {
    public struct VM: Sendable {
        public var state: QemuRunState
        public var arguments: [String]
        public var steps: [QemuLiveStep] = []
    }

    public let vms = Mutex<[Int: VM]>([:])
    /// VMs whose start fails, with the message.
    public let failingStarts = Mutex<[Int: String]>([:])
    public let written = Mutex<[String]>([])
    let network: InMemoryNetworkDriver?
    let tree: MemoryTree?
    let nextPID = Mutex<Int32>(4000)

    public init(network: InMemoryNetworkDriver? = nil, tree: MemoryTree? = nil) {
        self.network = network
        self.tree = tree
    }

    public struct StartFailed: Error, CustomStringConvertible {
        public var description: String
    }

    public func isRunning(_ vmid: Int) -> Bool {
        vms.withLock { if case .running = $0[vmid]?.state { true } else { false } }
    }

    public func acceleration(setting: String) -> QemuAcceleration { QemuAcceleration(kvm: false, reason: "in-memory node: TCG") }

    public func hostProfile(node: String, acceleration: QemuAcceleration) -> QemuHostProfile {
        var profile = QemuHostProfile.pve11()
        profile.kvmAvailable = acceleration.kvm
        profile.bridgeScripts = false
        return profile
    }

    public func runningVMIDs() -> [Int] {
        vms.withLock { vms in vms.filter { if case .running = $0.value.state { true } else { false } }.keys.sorted() }
    }

    public func observe(vmid: Int, taps: [String]) async -> ObservedVM {
        let state = vms.withLock { $0[vmid]?.state } ?? .stopped
        var masters: [String: String] = [:]
        for tap in taps { if let master = network?.master(of: tap) { masters[tap] = master ?? "" } }
        return ObservedVM(state: state, tapMasters: masters)
    }

    public func start(vmid: Int, arguments: [String]) async throws -> Int32 {
        if let message = failingStarts.withLock({ $0[vmid] }) { throw StartFailed(description: message) }
        let pid = nextPID.withLock { value -> Int32 in value += 1; return value }
        vms.withLock { $0[vmid] = VM(state: .running(pid: pid, status: "running"), arguments: arguments) }
        return pid
    }

    public func stop(vmid: Int, timeout: Double) async throws -> String {
        vms.withLock { $0[vmid]?.state = .stopped }
        for link in network?.state.withLock({ Array($0.links.keys) }) ?? [] where link.hasPrefix("tap\(vmid)i") { network?.removeLink(link) }
        return "shut down"
    }

    public func perform(vmid: Int, _ step: QemuLiveStep) async throws {
        vms.withLock { $0[vmid]?.steps.append(step) }
        if case .attachTap(let tap, let bridge, _) = step { network?.addLink(tap, master: bridge) }
    }

    public func writeConfig(path: String, text: String, expectedDigest: String?) throws {
        written.withLock { $0.append(path) }
        tree?.write(path, text)
    }
}

/// LXC as a table of containers: start and stop change it, limits live in a cgroup model, veths become links of the
/// network model, and configs written back land in the tree.
public final class InMemoryLxcDriver: LxcDriver {
    public struct Container: Sendable {
        public var state: ContainerRunState
        public var spec: ContainerStartSpec
        public var limits: [String: String] = [:]
        public var steps: [LxcLiveStep] = []
    }

    public let containers = Mutex<[Int: Container]>([:])
    /// Rootfs sources that hold an operating system; others are empty.
    public let populated = Mutex<Set<String>>([])
    /// Host files that exist (OS templates).
    public let files = Mutex<Set<String>>([])
    public let written = Mutex<[String]>([])
    public let layout: LxcHostFacts.CgroupLayout
    let network: InMemoryNetworkDriver?
    let tree: MemoryTree?
    let nextPID = Mutex<Int32>(7000)

    public init(network: InMemoryNetworkDriver? = nil, tree: MemoryTree? = nil, layout: LxcHostFacts.CgroupLayout = .v1) {
        self.network = network
        self.tree = tree
        self.layout = layout
    }

    public func hostFacts(bridges: [String], devicePaths: [String]) async throws -> LxcHostFacts {
        let links = network?.state.withLock { $0.links } ?? [:]
        var mtus: [String: Int] = [:]
        for bridge in bridges where network == nil || links[bridge] != nil { mtus[bridge] = 1500 }
        return LxcHostFacts(shippedConfigs: ["common.conf", "debian.common.conf", "userns.conf"], cgroupLayout: layout, bridgeMTUs: mtus,
                            cpus: [0, 1])
    }

    public func runningContainers() async -> [Int] {
        containers.withLock { $0.filter { $0.value.state != .stopped }.keys.sorted() }
    }

    public func observe(vmid: Int, limits: [String], nics: [String]) async -> ObservedContainer {
        guard let container = containers.withLock({ $0[vmid] }), container.state != .stopped else { return ObservedContainer(state: .stopped) }
        var masters: [String: String] = [:]
        for nic in nics { if let master = network?.master(of: nic) { masters[nic] = master ?? "" } }
        return ObservedContainer(state: container.state, limits: container.limits.filter { limits.contains($0.key) }, nicMasters: masters)
    }

    public func holdsData(_ rootfs: ContainerMount) -> Bool? { populated.withLock { $0.contains(rootfs.source) } }
    public func architecture(_ rootfs: ContainerMount) -> String? { nil }
    public func fileExists(_ path: String) -> Bool { files.withLock { $0.contains(path) } }

    public func start(_ spec: ContainerStartSpec) async throws -> Int32 {
        let pid = nextPID.withLock { value -> Int32 in value += 1; return value }
        if spec.template != nil { _ = populated.withLock { $0.insert(spec.mounts[0].source) } }
        var limits: [String: String] = [:]
        for line in spec.config.split(separator: "\n") where line.hasPrefix("lxc.cgroup") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let key = parts[0].split(separator: ".", maxSplits: 2)[2]
            let name = layout == .v1 ? "\(key.prefix { $0 != "." })/\(key)" : String(key)
            limits[name] = parts[1]
        }
        if layout == .v1, limits["cpu/cpu.cfs_quota_us"] == nil { limits["cpu/cpu.cfs_quota_us"] = "-1" }
        if layout == .v1, limits["cpu/cpu.cfs_period_us"] == nil { limits["cpu/cpu.cfs_period_us"] = "100000" }
        containers.withLock { $0[spec.vmid] = Container(state: .running(initPID: pid), spec: spec, limits: limits) }
        for nic in spec.nics { network?.addLink(nic.veth, kind: "veth", master: nic.bridge) }
        return pid
    }

    public func stop(vmid: Int, timeout: Double) async throws -> String {
        containers.withLock { $0[vmid]?.state = .stopped }
        for link in network?.state.withLock({ Array($0.links.keys) }) ?? [] where link.hasPrefix("veth\(vmid)i") { network?.removeLink(link) }
        return "clean shutdown"
    }

    /// The container's init died (kill -9 of init): LXC stops it, its veths go.
    public func crash(_ vmid: Int) {
        containers.withLock { $0[vmid]?.state = .stopped }
        for link in network?.state.withLock({ Array($0.links.keys) }) ?? [] where link.hasPrefix("veth\(vmid)i") { network?.removeLink(link) }
    }

    public func perform(vmid: Int, _ step: LxcLiveStep) async throws {
        containers.withLock { $0[vmid]?.steps.append(step) }
        switch step {
        case .setLimit(let controller, let file, let value):
            containers.withLock { $0[vmid]?.limits[controller.isEmpty ? file : "\(controller)/\(file)"] = value }
        case .attachNIC(let nic), .addNIC(let nic): network?.addLink(nic.veth, kind: "veth", master: nic.bridge)
        case .removeNIC(let veth): network?.removeLink(veth)
        case .setAddresses, .setRate, .addMountPoint: break
        }
    }

    public func writeConfig(path: String, text: String, expectedDigest: String?) throws {
        written.withLock { $0.append(path) }
        tree?.write(path, text)
    }
}

/// nftables as the last script loaded; guest NIC plumbing on the network model's links.
public final class InMemoryFirewallDriver: FirewallDriver {
    public let scripts = Mutex<[String]>([])
    public let bridgeNetfilter = Mutex(false)
    let network: InMemoryNetworkDriver

    public init(network: InMemoryNetworkDriver) { self.network = network }

    public func observe(resolvingNodeName: String?) async throws -> ObservedFirewall {
        let masters = network.state.withLock { net in net.links.mapValues { $0.master } }
        return ObservedFirewall(listing: scripts.withLock { $0.last }, bridgeNetfilter: bridgeNetfilter.withLock { $0 }, masters: masters,
                                hostAddresses: ["192.0.2.10"], resolvedNodeAddress: resolvingNodeName.map { _ in "192.0.2.10" })
    }

    public func load(script: String) async throws -> String? {
        scripts.withLock { $0.append(script) }
        return script
    }

    public func enableBridgeNetfilter() async throws { bridgeNetfilter.withLock { $0 = true } }

    public func plumb(_ port: GuestFirewallPort) async throws {
        network.addLink(port.firewallBridge, kind: "bridge", master: nil)
        network.addLink(port.firewallLink, kind: "veth", master: port.firewallBridge)
        network.addLink(port.bridgePort, kind: "veth", master: port.bridge)
        network.state.withLock { $0.links[port.device]?.master = port.firewallBridge }
    }

    public func unplumb(_ port: GuestFirewallPort) async throws {
        network.state.withLock { $0.links[port.device]?.master = port.bridge }
        for link in [port.firewallBridge, port.firewallLink, port.bridgePort] { network.removeLink(link) }
    }
}

/// One node in memory: the five drivers on one model, and the tree they read and write.
public final class InMemoryHost: Sendable {
    public let tree: MemoryTree
    public let network: InMemoryNetworkDriver
    public let qemu: InMemoryQemuDriver
    public let storage: InMemoryStorageDriver
    public let firewall: InMemoryFirewallDriver
    public let lxc: InMemoryLxcDriver
    public let corosync: InMemoryCorosyncDriver

    public init(tree: MemoryTree, links: ObservedNetwork, corosync: CorosyncObservation? = nil) {
        self.tree = tree
        network = InMemoryNetworkDriver(links, tree: tree)
        qemu = InMemoryQemuDriver(network: network, tree: tree)
        storage = InMemoryStorageDriver(qemu: qemu)
        firewall = InMemoryFirewallDriver(network: network)
        lxc = InMemoryLxcDriver(network: network, tree: tree)
        self.corosync = InMemoryCorosyncDriver(corosync ?? CorosyncObservation(installed: nil, runningVersion: nil, localAddresses: []))
    }
}

/// corosync on a node, in memory: the installed file, the version the running corosync has, the node's addresses; a
/// reload makes the running version the installed file's.
public final class InMemoryCorosyncDriver: CorosyncDriver {
    public let installedPath = "/etc/corosync/corosync.conf"
    public let state: Mutex<CorosyncObservation>
    public let reloads = Mutex(0)

    public init(_ observation: CorosyncObservation) { state = Mutex(observation) }

    public func observe() async -> CorosyncObservation { state.withLock { $0 } }
    public func install(_ text: String) async throws { state.withLock { $0.installed = text } }
    public func reload() async throws {
        reloads.withLock { $0 += 1 }
        state.withLock { observed in
            observed.runningVersion = observed.installed.flatMap { CorosyncConfig.parse($0, file: "x").0.totem?["config_version"] }
                .flatMap { UInt64($0) }
        }
    }
    /// Starting without the cluster's certificates (neither shared nor imported), as the host driver refuses it.
    public struct NoCertificates: Error {}

    public func startQdevice(host: String?) async throws {
        try state.withLock { observed in
            guard observed.qdevice.certificatesShared || observed.qdevice.databaseReady else { throw NoCertificates() }
            observed.qdevice.databaseReady = true
            observed.qdevice.running = true
            observed.qdevice.runningHost = host
        }
    }
    public func stopQdevice() async throws {
        state.withLock { $0.qdevice = QdeviceObservation(certificatesShared: $0.qdevice.certificatesShared) }
    }
}

extension InMemoryHost {
    /// The engine with every kind pvectl registers, each on this host's in-memory driver.
    public func engine(store: StateStore, clock: any ReconcilerClock = TestClock(), restartVMs: Set<Int>? = nil) throws -> ReconcileEngine {
        try ReconcileEngine(kinds: [
            NetworkReconciler(driver: network, store: store, clock: clock),
            StorageReconciler(driver: storage, store: store, clock: clock),
            QemuReconciler(driver: qemu, store: store, restart: restartVMs, clock: clock),
            LxcReconciler(driver: lxc, store: store, restart: restartVMs, clock: clock),
            FirewallReconciler(driver: firewall, store: store, clock: clock),
            CorosyncReconciler(driver: corosync),
        ])
    }
}
