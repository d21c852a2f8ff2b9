import Foundation
import Resources

/// A container as LXC reports it.
public enum ContainerRunState: Sendable, Equatable, CustomStringConvertible {
    case stopped
    case running(initPID: Int32)
    case frozen(initPID: Int32)

    public var description: String {
        switch self {
        case .stopped: "stopped"
        case .running(let pid): "running (init pid \(pid))"
        case .frozen(let pid): "frozen (init pid \(pid))"
        }
    }

    public var initPID: Int32? {
        switch self {
        case .stopped: nil
        case .running(let pid), .frozen(let pid): pid
        }
    }
}

public struct ObservedContainer: Sendable {
    public var state: ContainerRunState
    /// Values in the container's limit cgroup (`memory/memory.limit_in_bytes`), for the files asked.
    public var limits: [String: String]
    /// Host ends of the container's NICs that exist, and the bridge each is on ("" for none).
    public var nicMasters: [String: String]

    public init(state: ContainerRunState, limits: [String: String] = [:], nicMasters: [String: String] = [:]) {
        self.state = state
        self.limits = limits
        self.nicMasters = nicMasters
    }
}

/// One `netN` of a container: the veth pair LXC (or a hot-plug) makes, and what the guest side gets.
public struct ContainerNIC: Codable, Sendable, Hashable {
    public var index: Int
    /// The host end, `veth<vmid>i<index>`.
    public var veth: String
    public var bridge: String
    public var tag: Int?
    /// The guest side's name (`eth0`).
    public var name: String
    public var hwaddr: String?
    public var mtu: Int?
    /// Addresses set from the host when hot-plugged (`ip`/`ip6` with a prefix; `dhcp`, `auto` and `manual` are the guest's).
    public var ip: String?
    public var gw: String?
    public var ip6: String?
    public var gw6: String?
    /// `rate=`: MB/s each way (traffic to the container always; from it where the kernel can police ingress).
    public var rate: Double?

    public init(vmid: Int, index: Int, value: String) {
        let options = PropertyString(parsing: value)
        self.index = index
        veth = "veth\(vmid)i\(index)"
        bridge = options["bridge"] ?? ""
        tag = options["tag"].flatMap { Int($0) }
        name = options["name"] ?? "eth\(index)"
        hwaddr = options["hwaddr"]
        mtu = options["mtu"].flatMap { Int($0) }
        ip = options["ip"]
        gw = options["gw"]
        ip6 = options["ip6"]
        gw6 = options["gw6"]
        rate = options["rate"].flatMap { Double($0) }.flatMap { $0 > 0 ? $0 : nil }
    }

    /// The addresses and routes a hot-plugged NIC gets inside the container (static ones only).
    public var staticAddresses: [String] {
        [ip, ip6].compactMap { $0 }.filter { $0.contains("/") }
    }
}

/// A file system the container gets: its rootfs (`path` is `/`) or a mount point.
public struct ContainerMount: Codable, Sendable, Hashable {
    public enum SourceType: String, Codable, Sendable {
        /// A directory (a `subvol-…` volume): bind-mounted.
        case directory
        /// A raw image holding a file system: loop-mounted.
        case image
        /// A block device (LVM): mounted.
        case block
        /// A host path (`mp0: /srv/data,mp=/data`): bind-mounted.
        case bind
    }

    /// `rootfs`, `mp0`, ...
    public var key: String
    /// The volume's or host path on this node.
    public var source: String
    public var type: SourceType
    /// Inside the container.
    public var path: String
    public var readOnly: Bool

    public init(key: String, source: String, type: SourceType, path: String, readOnly: Bool) {
        self.key = key
        self.source = source
        self.type = type
        self.path = path
        self.readOnly = readOnly
    }
}

/// Everything a start needs, written beside the LXC config so the start hooks (run by LXC, in its monitor) find it.
public struct ContainerStartSpec: Codable, Sendable, Hashable {
    public var vmid: Int
    /// The generated LXC config; the driver adds its hooks.
    public var config: String
    public var seccompRules: String?
    /// The rootfs first, then mount points in the order of their paths.
    public var mounts: [ContainerMount]
    public var nics: [ContainerNIC]
    /// The container's config (main section), from which the hook runs the guest setup.
    public var guestConfig: String
    /// The OS template an empty rootfs is populated from (a host path), with its volume id for messages.
    public var template: String?
    public var templateVolume: String?
    public var unprivileged: Bool

    public init(vmid: Int, config: String, seccompRules: String?, mounts: [ContainerMount], nics: [ContainerNIC], guestConfig: String,
                template: String?, templateVolume: String?, unprivileged: Bool) {
        self.vmid = vmid
        self.config = config
        self.seccompRules = seccompRules
        self.mounts = mounts
        self.nics = nics
        self.guestConfig = guestConfig
        self.template = template
        self.templateVolume = templateVolume
        self.unprivileged = unprivileged
    }
}

/// A change made to a running container.
public enum LxcLiveStep: Sendable, Hashable, CustomStringConvertible {
    /// A file of the container's limit cgroup (`lxc/<vmid>`, not the inner `ns` one), e.g. `memory`, `memory.limit_in_bytes`.
    case setLimit(controller: String, file: String, value: String)
    /// Puts the host end onto its bridge (and VLAN).
    case attachNIC(ContainerNIC)
    /// A new veth pair: the host end on the bridge, the peer moved into the container, named, addressed.
    case addNIC(ContainerNIC)
    case removeNIC(veth: String)
    /// Replaces the addresses of a NIC inside the container.
    case setAddresses(ContainerNIC)
    /// Sets (or removes) the NIC's rate limit on its host end.
    case setRate(ContainerNIC)
    /// Mounts a new mount point into the running container (its directories owned by the container's root).
    case addMountPoint(ContainerMount, unprivileged: Bool)

    public var description: String {
        switch self {
        case .setLimit(_, let file, let value): "set \(file) to \(value) in the limit cgroup"
        case .attachNIC(let nic): "put \(nic.veth) on \(nic.bridge)" + (nic.tag.map { " (VLAN \($0))" } ?? "")
        case .addNIC(let nic): "hot-plug \(nic.name) (\(nic.veth) on \(nic.bridge)\(nic.hwaddr.map { ", \($0)" } ?? ""))"
        case .removeNIC(let veth): "remove \(veth)"
        case .addMountPoint(let mount, _):
            "mount \(mount.source) on \(mount.path) in the running container" + (mount.readOnly ? " (read-only)" : "")
        case .setRate(let nic):
            nic.rate.map { "limit \(nic.veth) to \($0) MB/s" } ?? "remove the rate limit of \(nic.veth)"
        case .setAddresses(let nic):
            "set \(nic.name)'s addresses to \(nic.staticAddresses.isEmpty ? "none" : nic.staticAddresses.joined(separator: " "))"
        }
    }
}

/// How the LXC kind changes the host: LXC's containers, their cgroups and NICs.
public protocol LxcDriver: Sendable {
    /// What config generation needs from this host; LXC's absence is a `MissingExecutable`-like error naming it.
    func hostFacts(bridges: [String], devicePaths: [String]) async throws -> LxcHostFacts
    /// Containers LXC runs on this node (with a config in its path).
    func runningContainers() async -> [Int]
    /// `limits` are `controller/file` names of the limit cgroup to read; `nics` the host ends to look for.
    func observe(vmid: Int, limits: [String], nics: [String]) async -> ObservedContainer
    /// Whether a rootfs holds an operating system already: nil when that is only known once it is mounted (an image).
    func holdsData(_ rootfs: ContainerMount) -> Bool?
    /// The architecture of the rootfs's /bin/sh when it can be read without mounting.
    func architecture(_ rootfs: ContainerMount) -> String?
    func fileExists(_ path: String) -> Bool
    /// Writes the LXC config and the start spec, then starts; returns the init pid.
    func start(_ spec: ContainerStartSpec) async throws -> Int32
    /// Clean shutdown, hard stop after `timeout` seconds; returns how it ended.
    func stop(vmid: Int, timeout: Double) async throws -> String
    func perform(vmid: Int, _ step: LxcLiveStep) async throws
    /// Writes generated values back into a container config, refused when the file no longer has `expectedDigest`.
    func writeConfig(path: String, text: String, expectedDigest: String?) throws
}
