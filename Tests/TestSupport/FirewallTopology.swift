import Foundation

/// A Proxmox VE host and its neighbours as network namespaces, for firewall
/// tests with real packets: the host namespace holds the bridges (vmbr0..2)
/// and one veth per endpoint named as Proxmox VE names guest devices
/// (`tap100i0`, `veth200i0`), the physical uplink (`eth0`) and an unfirewalled
/// VM (`tapXYZ`); each endpoint's other end is `eth0` in its own namespace.
/// Addresses and routes are added per packet and removed after it.
public final class FirewallTopology: @unchecked Sendable {
    // @unchecked: built in init, then only read; teardown in deinit.
    public struct Endpoint: Sendable {
        public var zone: String
        public var namespace: String
        /// The device on the host's side, and the bridge it hangs on.
        public var device: String
        public var bridge: String
        public var mac: String
    }

    public let prefix: String
    public let host: String
    public private(set) var endpoints: [String: Endpoint] = [:]
    /// The host's MAC on each bridge.
    public private(set) var bridgeMACs: [String: String] = [:]
    public static let hostAddress = "172.16.1.2"
    private var namespaces: [String] = []

    /// - Parameter guests: zone name (`vm100i0`, `ct200`) → (bridge, MAC).
    public init(guests: [String: (bridge: String, mac: String)], bridges: [String] = ["vmbr0", "vmbr1", "vmbr2"]) throws {
        prefix = "pf" + String(UUID().uuidString.prefix(6).lowercased())
        host = "\(prefix)-h"
        do {
            try add(namespace: host)
            var batch = ["link set lo up"]
            for (number, bridge) in bridges.enumerated() {
                // A fixed MAC: a bridge would otherwise take its lowest port's, changing as ports come.
                bridgeMACs[bridge] = "02:00:00:00:ff:\(String(format: "%02x", number))"
                batch.append("link add \(bridge) address \(bridgeMACs[bridge]!) type bridge stp_state 0 forward_delay 0 mcast_snooping 0")
                batch.append("link set \(bridge) up")
            }
            batch.append("address add \(Self.hostAddress)/24 dev vmbr0")
            try ip(host, batch)
            // Proxy ARP on the bridges only: the host answers for addresses it routes to another bridge.
            try sysctl(host, ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                              "net.ipv6.conf.all.forwarding=1"] + bridges.map { "net.ipv4.conf.\($0).proxy_arp=1" })
            var all: [(String, String, String, String)] = [("outside", "eth0", "vmbr0", "02:00:00:00:00:01"),
                                                           ("nfvm", "tapXYZ", "vmbr0", "02:00:00:00:00:02")]
            for (zone, nic) in guests.sorted(by: { $0.key < $1.key }) {
                let device: String
                if zone.hasPrefix("ct") {
                    device = "veth\(zone.dropFirst(2))i0"
                } else {
                    device = "tap" + zone.dropFirst(2)
                }
                all.append((zone, device, nic.bridge, nic.mac))
            }
            for (number, (zone, device, bridge, mac)) in all.enumerated() {
                let namespace = "\(prefix)-\(zone)"
                try add(namespace: namespace)
                try ip(host, ["link add \(device) type veth peer name eth0 netns \(namespace)", "link set \(device) master \(bridge) up"])
                try ip(namespace, ["link set lo up", "link set eth0 address \(mac)", "link set eth0 up",
                                   // A permanent address: the kernel drops a device's routes with its last IPv4 address.
                                   "address add 169.254.0.\(number + 1)/32 dev eth0", "route add default dev eth0",
                                   "route add ::/0 dev eth0"])
                try sysctl(namespace, ["net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0",
                                       "net.ipv6.conf.eth0.accept_dad=0"])
                endpoints[zone] = Endpoint(zone: zone, namespace: namespace, device: device, bridge: bridge, mac: mac)
            }
        } catch {
            teardown()
            throw error
        }
    }

    deinit { teardown() }

    /// Removes the namespaces now (deinit does it too, if this was not called).
    public func close() { teardown() }

    func teardown() {
        for namespace in namespaces.reversed() { _ = NetworkNamespace.run(["ip", "netns", "del", namespace]) }
        namespaces = []
    }

    func add(namespace: String) throws {
        guard NetworkNamespace.run(["ip", "netns", "add", namespace]) == 0 else {
            throw NetworkNamespace.NamespaceError(message: "cannot create network namespace \(namespace)")
        }
        namespaces.append(namespace)
    }

    /// Runs `ip -batch` lines in a namespace.
    public func ip(_ namespace: String, _ lines: [String], ignoreErrors: Bool = false) throws {
        let input = lines.joined(separator: "\n") + "\n"
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString).batch")
        try Data(input.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = NetworkNamespace.capture(["ip", "-n", namespace, "-force", "-batch", file.path])
        if result.status != 0 && !ignoreErrors {
            throw NetworkNamespace.NamespaceError(message: "ip -n \(namespace) -batch failed: \(result.error)\n\(input)")
        }
    }

    public func sysctl(_ namespace: String, _ settings: [String]) throws {
        let result = NetworkNamespace.capture(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w"] + settings)
        guard result.status == 0 else {
            throw NetworkNamespace.NamespaceError(message: "sysctl in \(namespace) failed: \(result.error)")
        }
    }

    /// The namespace and uplink device of a zone (`host`, `outside`, `vm100`, `vm100i1`, `ct200`, `vmbr0/eth0`).
    public func resolve(_ zone: String) -> (namespace: String, device: String, bridge: String?)? {
        if zone == "host" { return (host, "vmbr0", nil) }
        var key = zone
        if zone == "vmbr0/eth0" { key = "outside" }
        if zone == "vmbr0/tapXYZ" { key = "nfvm" }
        if key.hasPrefix("vm"), !key.dropFirst(2).contains("i") { key += "i0" }
        guard let endpoint = endpoints[key] else { return nil }
        return (endpoint.namespace, "eth0", endpoint.bridge)
    }

    /// Gives the source and destination their addresses and the host its
    /// routes for one packet; returns what undoes it.
    public func prepare(from: String, sourceIP: String, to: String, destinationIP: String) throws -> () -> Void {
        guard let source = resolve(from), let destination = resolve(to) else {
            throw NetworkNamespace.NamespaceError(message: "unknown zone \(from) or \(to)")
        }
        // ip -batch lines take no options: the address itself sets the family.
        let family = ""
        let bits = sourceIP.contains(":") ? 128 : 32
        var setup: [(String, String)] = []
        var undo: [(String, String)] = []
        func own(_ namespace: String, _ address: String, onHost: Bool) {
            if onHost && address == Self.hostAddress { return }
            let device = onHost ? "lo" : "eth0"
            setup.append((namespace, "\(family)address add \(address)/\(bits) dev \(device)" + (address.contains(":") ? " nodad" : "")))
            undo.append((namespace, "\(family)address del \(address)/\(bits) dev \(device)"))
        }
        func route(_ address: String, via bridge: String?) {
            guard let bridge, !Self.isMulticast(address) else { return }
            setup.append((host, "\(family)route replace \(address)/\(bits) dev \(bridge)"))
            undo.append((host, "\(family)route del \(address)/\(bits) dev \(bridge)"))
        }
        own(source.namespace, sourceIP, onHost: source.bridge == nil)
        if !Self.isMulticast(destinationIP) { own(destination.namespace, destinationIP, onHost: destination.bridge == nil) }
        // The destination answers without asking ARP: the case is about the
        // packet it describes, and a guest's own ipfilter would otherwise stop
        // its ARP for an address the case gives it.
        if let bridge = destination.bridge, !Self.isMulticast(destinationIP) {
            let sameBridge = source.bridge == bridge
            let sourceMAC = endpoints.values.first { $0.namespace == source.namespace }?.mac
            if let mac = sameBridge ? sourceMAC : bridgeMACs[bridge] {
                setup.append((destination.namespace, "neigh replace \(sourceIP) lladdr \(mac) dev eth0 nud permanent"))
                undo.append((destination.namespace, "neigh del \(sourceIP) dev eth0"))
            }
            // Whoever hands the packet to the destination knows its MAC as well.
            if let destinationMAC = endpoints.values.first(where: { $0.namespace == destination.namespace })?.mac {
                let (namespace, device) = sameBridge ? (source.namespace, "eth0") : (host, bridge)
                setup.append((namespace, "neigh replace \(destinationIP) lladdr \(destinationMAC) dev \(device) nud permanent"))
                undo.append((namespace, "neigh del \(destinationIP) dev \(device)"))
            }
        }
        route(sourceIP, via: source.bridge)
        route(destinationIP, via: destination.bridge)
        for namespace in Set(setup.map(\.0)) { try ip(namespace, setup.filter { $0.0 == namespace }.map(\.1)) }
        let all = [host] + endpoints.values.map(\.namespace)
        return { [self] in
            for namespace in Set(undo.map(\.0)) { try? ip(namespace, undo.filter { $0.0 == namespace }.map(\.1), ignoreErrors: true) }
            // Another zone may own these addresses next: forget every neighbour.
            for namespace in all { try? ip(namespace, ["neigh flush all"], ignoreErrors: true) }
        }
    }

    public static func isMulticast(_ address: String) -> Bool {
        if address.contains(":") { return address.lowercased().hasPrefix("ff") }
        return (Int(address.split(separator: ".").first ?? "") ?? 0) >= 224 && (Int(address.split(separator: ".").first ?? "") ?? 0) <= 239
    }
}
