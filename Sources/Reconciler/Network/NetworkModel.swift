import Resources

/// What an interface should be, read from `/etc/network/interfaces` with
/// ifupdown2's semantics (the tool that applies the file on Proxmox VE 8).
public struct DesiredInterface: Hashable, Sendable, Codable {
    public enum Kind: String, Hashable, Sendable, Codable {
        /// A NIC (or any device we do not create: it must exist).
        case physical
        case loopback
        case bridge
        case bond
        case vlan
    }

    public struct Bridge: Hashable, Sendable, Codable {
        public var ports: [String] = []
        public var stp = false
        /// Forward delay in seconds.
        public var forwardDelay: Int = 0
        public var vlanAware = false
        public var vids: String?
        public var disableMACLearning = false
    }

    public struct Bond: Hashable, Sendable, Codable {
        public var slaves: [String] = []
        public var mode = "balance-rr"
        public var miimon: Int = 100
        public var xmitHashPolicy: String?
        public var lacpRate: String?
        public var minLinks: Int?
        public var primary: String?
    }

    public struct VLAN: Hashable, Sendable, Codable {
        public var rawDevice: String
        public var id: Int
        public var proto = "802.1q"
    }

    public var name: String
    public var kind: Kind
    /// `auto`/`allow-hotplug`: brought up.
    public var autostart: Bool
    /// Addresses in CIDR form (192.0.2.1/24, 2001:db8::1/64), in file order.
    public var addresses: [String]
    public var gateway: String?
    public var gateway6: String?
    public var mtu: Int?
    public var bridge: Bridge?
    public var bond: Bond?
    public var vlan: VLAN?
    /// Hook commands by phase (pre-up, up, post-up, down, pre-down, post-down), in file order.
    public var hooks: [String: [String]]
    /// Where the interface is declared, for plan lines and errors.
    public var source: SourceLocation?
    /// Where each attribute is declared (`mtu` → line 14).
    public var sources: [String: SourceLocation]

    public init(name: String, kind: Kind, autostart: Bool = false, addresses: [String] = [], gateway: String? = nil,
                gateway6: String? = nil, mtu: Int? = nil, bridge: Bridge? = nil, bond: Bond? = nil, vlan: VLAN? = nil,
                hooks: [String: [String]] = [:], source: SourceLocation? = nil, sources: [String: SourceLocation] = [:]) {
        self.name = name
        self.kind = kind
        self.autostart = autostart
        self.addresses = addresses
        self.gateway = gateway
        self.gateway6 = gateway6
        self.mtu = mtu
        self.bridge = bridge
        self.bond = bond
        self.vlan = vlan
        self.hooks = hooks
        self.source = source
        self.sources = sources
    }

    /// Interfaces this one needs to exist first (ports, slaves, raw device).
    public var dependencies: [String] {
        (bridge?.ports ?? []) + (bond?.slaves ?? []) + (vlan.map { [$0.rawDevice] } ?? [])
    }

    /// Compares what the kernel will hold, not where it was written.
    public func sameConfiguration(as other: DesiredInterface) -> Bool {
        var a = self
        var b = other
        a.source = nil
        b.source = nil
        a.sources = [:]
        b.sources = [:]
        return a == b
    }
}

/// What the kernel has for one link.
public struct ObservedLink: Hashable, Sendable, Codable {
    public var name: String
    public var ifindex: Int
    /// `bridge`, `bond`, `vlan`, `veth`, `dummy`, `tun` ...; nil for a plain NIC.
    public var kind: String?
    public var up: Bool
    public var mtu: Int
    public var master: String?
    /// Global-scope addresses in CIDR form.
    public var addresses: [String]
    public var bridge: BridgeAttributes?
    public var bond: BondAttributes?
    public var vlan: VLANAttributes?
    /// For bridge ports: whether the port learns MAC addresses.
    public var learning: Bool?

    public struct BridgeAttributes: Hashable, Sendable, Codable {
        public var stp: Bool
        public var forwardDelay: Int
        public var vlanFiltering: Bool

        public init(stp: Bool, forwardDelay: Int, vlanFiltering: Bool) {
            self.stp = stp
            self.forwardDelay = forwardDelay
            self.vlanFiltering = vlanFiltering
        }
    }

    public struct BondAttributes: Hashable, Sendable, Codable {
        public var mode: String
        public var miimon: Int
        public var xmitHashPolicy: String?
        public var lacpRate: String?
        public var minLinks: Int?
        public var primary: String?

        public init(mode: String, miimon: Int, xmitHashPolicy: String? = nil, lacpRate: String? = nil, minLinks: Int? = nil, primary: String? = nil) {
            self.mode = mode
            self.miimon = miimon
            self.xmitHashPolicy = xmitHashPolicy
            self.lacpRate = lacpRate
            self.minLinks = minLinks
            self.primary = primary
        }
    }

    public struct VLANAttributes: Hashable, Sendable, Codable {
        public var id: Int
        public var rawDevice: String?
        public var proto: String

        public init(id: Int, rawDevice: String?, proto: String) {
            self.id = id
            self.rawDevice = rawDevice
            self.proto = proto
        }
    }

    public init(name: String, ifindex: Int, kind: String? = nil, up: Bool = false, mtu: Int = 1500, master: String? = nil,
                addresses: [String] = [], bridge: BridgeAttributes? = nil, bond: BondAttributes? = nil,
                vlan: VLANAttributes? = nil, learning: Bool? = nil) {
        self.name = name
        self.ifindex = ifindex
        self.kind = kind
        self.up = up
        self.mtu = mtu
        self.master = master
        self.addresses = addresses
        self.bridge = bridge
        self.bond = bond
        self.vlan = vlan
        self.learning = learning
    }
}

/// A default route the kernel has.
public struct ObservedRoute: Hashable, Sendable, Codable {
    public var family: Int
    public var gateway: String
    public var device: String

    public init(family: Int, gateway: String, device: String) {
        self.family = family
        self.gateway = gateway
        self.device = device
    }
}

public struct ObservedNetwork: Hashable, Sendable, Codable {
    public var links: [String: ObservedLink]
    public var defaultRoutes: [ObservedRoute]
    /// Bridge VLAN membership per port (`bridge vlan show`), as compressed ranges.
    public var vlans: [String: String]

    public init(links: [String: ObservedLink] = [:], defaultRoutes: [ObservedRoute] = [], vlans: [String: String] = [:]) {
        self.links = links
        self.defaultRoutes = defaultRoutes
        self.vlans = vlans
    }
}

/// One idempotent operation on the kernel's network state.
public enum NetworkStep: Hashable, Sendable, Codable {
    case createBridge(name: String)
    case createBond(name: String, mode: String)
    case createVLAN(name: String, rawDevice: String, id: Int, proto: String)
    case deleteLink(name: String)
    case setMaster(port: String, master: String)
    /// A bond takes a slave only while the slave is down: down, enslave, up.
    case setBondSlave(port: String, bond: String)
    case clearMaster(port: String)
    case setMTU(name: String, mtu: Int)
    case setUp(name: String)
    case setDown(name: String)
    /// `vlanFiltering` nil leaves it alone (kernels without VLAN filtering reject the attribute).
    case setBridge(name: String, stp: Bool, forwardDelay: Int, vlanFiltering: Bool?)
    case setBond(name: String, miimon: Int, xmitHashPolicy: String?, lacpRate: String?, minLinks: Int?, primary: String?)
    case setLearning(port: String, learning: Bool)
    case setBridgeVLANs(port: String, vids: String, isBridge: Bool)
    case addAddress(name: String, cidr: String)
    /// Lets a secondary IPv4 address take over when the primary goes, so an
    /// address can be replaced without dropping the others in its subnet.
    case promoteSecondaries(name: String)
    case deleteAddress(name: String, cidr: String)
    case replaceDefaultRoute(gateway: String, device: String, family: Int)
    case deleteDefaultRoute(gateway: String, device: String, family: Int)
    case runHook(name: String, phase: String, command: String)

    /// Order within one apply: creations, then structure, then addresses,
    /// routes and hooks last; deletions of whole links come first in reverse.
    public var phase: Int {
        switch self {
        case .runHook(_, let phase, _) where phase == "pre-up": 5
        case .deleteDefaultRoute: 0
        case .clearMaster: 2
        case .deleteLink: 3
        case .createBridge, .createBond, .createVLAN: 10
        case .setBond: 11
        case .setMTU: 12
        case .setMaster, .setBondSlave: 13
        case .setBridge, .setLearning: 14
        case .setBridgeVLANs: 15
        case .setUp: 16
        case .setDown: 17
        case .promoteSecondaries: 19
        case .addAddress: 20
        // New addresses first, then the old ones go: the host stays reachable.
        case .deleteAddress: 21
        case .replaceDefaultRoute: 30
        case .runHook: 40
        }
    }

    /// What the step runs, for people: the `ip` command lines, or the hook.
    public var description: String {
        if let lines = ipBatchLines { return lines.map { "ip " + $0 }.joined(separator: "; ") }
        switch self {
        case .setBridgeVLANs(let port, let vids, let isBridge): return "bridge vlan add vid \(vids) dev \(port)\(isBridge ? " self" : "")"
        case .promoteSecondaries(let name): return "sysctl -w net/ipv4/conf/\(name)/promote_secondaries=1"
        case .runHook(let name, let phase, let command): return "\(phase) (\(name)): \(command)"
        default: return ""
        }
    }

    /// The `ip -batch` lines (without "ip") that perform this step; nil for
    /// steps that are not `ip` commands. The plan shows exactly what runs.
    public var ipBatchLines: [String]? {
        switch self {
        case .createBridge(let name): ["link add \(name) type bridge"]
        case .createBond(let name, let mode): ["link add \(name) type bond mode \(mode)"]
        case .createVLAN(let name, let raw, let id, let proto): ["link add link \(raw) name \(name) type vlan id \(id) protocol \(proto)"]
        case .deleteLink(let name): ["link del \(name)"]
        case .setMaster(let port, let master): ["link set \(port) master \(master)"]
        case .setBondSlave(let port, let bond): ["link set \(port) down", "link set \(port) master \(bond)", "link set \(port) up"]
        case .clearMaster(let port): ["link set \(port) nomaster"]
        case .setMTU(let name, let mtu): ["link set \(name) mtu \(mtu)"]
        case .setUp(let name): ["link set \(name) up"]
        case .setDown(let name): ["link set \(name) down"]
        case .setBridge(let name, let stp, let fd, let vlanFiltering):
            ["link set \(name) type bridge stp_state \(stp ? 1 : 0) forward_delay \(fd * 100)"
                + (vlanFiltering.map { " vlan_filtering \($0 ? 1 : 0)" } ?? "")]
        case .setBond(let name, let miimon, let policy, let rate, let minLinks, let primary):
            ["link set \(name) type bond miimon \(miimon)" + (policy.map { " xmit_hash_policy \($0)" } ?? "")
                + (rate.map { " lacp_rate \($0)" } ?? "") + (minLinks.map { " min_links \($0)" } ?? "") + (primary.map { " primary \($0)" } ?? "")]
        case .setLearning(let port, let learning): ["link set \(port) type bridge_slave learning \(learning ? "on" : "off")"]
        case .addAddress(let name, let cidr): ["address add \(cidr) dev \(name)"]
        case .deleteAddress(let name, let cidr): ["address del \(cidr) dev \(name)"]
        // Batch lines take no options; ip infers the family from the gateway.
        // `onlink`, as ifupdown2 does: the route is accepted while the link has no carrier yet.
        case .replaceDefaultRoute(let gateway, let device, _): ["route replace default via \(gateway) dev \(device) onlink"]
        case .deleteDefaultRoute(let gateway, let device, _): ["route del default via \(gateway) dev \(device)"]
        case .setBridgeVLANs, .runHook, .promoteSecondaries: nil
        }
    }
}

/// Where the network kind's side effects happen. The kernel driver lives in
/// Drivers; tests of the core use an in-memory one.
public protocol NetworkDriver: Sendable {
    func observe() async throws -> ObservedNetwork
    /// Performs the steps in the given order; stops at the first failure.
    func perform(_ steps: [NetworkStep], log: @Sendable (String) -> Void) async throws
    /// Moves a staged `interfaces.new` over the interfaces file (one rename), once what it describes runs.
    func installStagedInterfaces(_ staged: String) throws
}
