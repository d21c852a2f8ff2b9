import Foundation
import Resources

/// Turns `cluster.fw`, `host.fw` and `<vmid>.fw` into one nftables ruleset
/// with Proxmox VE's semantics: the host zone (input and output, cluster
/// rules after the host's own, the management and corosync exceptions, the
/// cluster policies), one zone per firewalled guest NIC (conntrack, DHCP,
/// NDP, router advertisements, MAC and IP filters, rules, guest policies),
/// security groups as chains, ipsets and aliases as sets, macros expanded.
/// Pure: everything it needs is in `Input`.
public enum FirewallCompiler {
    public struct Input: Sendable {
        public var node: String
        public var cluster: FirewallConfig?
        public var host: FirewallConfig?
        public var guestFirewalls: [Int: FirewallConfig]
        public var guests: [DesiredState.Guest]
        public var corosync: CorosyncConfig?
        public var interfaces: InterfacesFile?
        /// Addresses the kernel has (`address/prefix`), to find the prefix of the node's address.
        public var hostAddresses: [String]
        /// What the node name resolves to, if anything (not loopback).
        public var resolvedNodeAddress: String?
        /// Service and protocol names rules may use (`-dport ssh`, `-p gre`).
        public var services: NetworkServices

        public init(node: String, cluster: FirewallConfig?, host: FirewallConfig?, guestFirewalls: [Int: FirewallConfig],
                    guests: [DesiredState.Guest], corosync: CorosyncConfig?, interfaces: InterfacesFile?,
                    hostAddresses: [String] = [], resolvedNodeAddress: String? = nil, services: NetworkServices) {
            self.node = node
            self.services = services
            self.cluster = cluster
            self.host = host
            self.guestFirewalls = guestFirewalls
            self.guests = guests
            self.corosync = corosync
            self.interfaces = interfaces
            self.hostAddresses = hostAddresses
            self.resolvedNodeAddress = resolvedNodeAddress
        }

        public init(state: DesiredState, hostAddresses: [String] = [], resolvedNodeAddress: String? = nil) {
            self.init(node: state.node, cluster: state.clusterFirewall, host: state.hostFirewall, guestFirewalls: state.guestFirewalls,
                      guests: state.localGuests, corosync: state.corosync, interfaces: state.interfaces,
                      hostAddresses: hostAddresses, resolvedNodeAddress: resolvedNodeAddress, services: state.networkServices)
        }
    }

    /// Ports the host always keeps open to the management ipset, as upstream:
    /// SSH, the VNC consoles, the SPICE proxy, the API and live migration.
    public static let managementPorts = "22, 3128, 5900-5999, 8006, 60000-60050"
    /// What the host may reach on the local network whatever policy_out says.
    static let localNetworkPorts = "22, 3128, 5900-5999, 8006"
    static let corosyncPorts = "5404-5405"

    public static func compile(_ input: Input) -> CompiledFirewall {
        var compiler = Compilation(input: input)
        compiler.run()
        return compiler.result
    }

    /// Whether local_network may depend on the node name's address. Resolving
    /// it may ask DNS (seconds when nothing answers), so only when the firewall
    /// is on and no [ALIASES] local_network decides.
    public static func needsNodeAddress(_ state: DesiredState) -> Bool {
        guard let cluster = state.clusterFirewall, isOn(cluster.options["enable"], default: false) else { return false }
        return !cluster.aliases.contains { $0.name?.lowercased() == "local_network" }
    }

    /// Whether a firewall option reads as on (`1`, or upstream's timestamp form for `enable`).
    static func isOn(_ value: String?, default fallback: Bool) -> Bool {
        guard let value else { return fallback }
        return (Int(value) ?? 0) >= 1
    }
}

private struct RuleError: Error {
    var message: String
    /// The code of the diagnostic that skips the rule.
    var code: DiagnosticCode
}

/// One compilation: collects chains, sets and skipped rules.
private struct Compilation {
    let input: Input
    typealias Input = FirewallCompiler.Input
    var result = CompiledFirewall()
    var chainIndex: [String: Int] = [:]
    var setNames: Set<String> = []
    var clusterOptions: [String: String] = [:]
    var logRateLimit: String?
    /// Layer-2 filters of guest NICs for the bridge table (cluster option `ebtables`):
    /// the only source MAC allowed, and the ARP sender addresses allowed (ipfilter).
    var layer2Filters: [(device: String, mac: String?, arpSenders: [String]?, origin: String)] = []

    init(input: Input) {
        self.input = input
    }

    // MARK: chains and sets

    mutating func chain(_ name: String, table: String = "inet", hook: String? = nil) {
        guard chainIndex["\(table)/\(name)"] == nil else { return }
        chainIndex["\(table)/\(name)"] = result.chains.count
        result.chains.append(CompiledFirewallChain(table: table, name: name, hook: hook, rules: []))
    }

    mutating func add(_ chain: String, _ text: String, table: String = "inet", source: SourceLocation? = nil, origin: String) {
        guard let index = chainIndex["\(table)/\(chain)"] else { preconditionFailure("chain \(chain) not declared") }
        result.chains[index].rules.append(CompiledFirewallRule(chain: "\(table)/\(chain)", text: text, source: source, origin: origin))
    }

    mutating func addSet(_ name: String, family: FirewallAddress.Family, elements: [String]) {
        guard setNames.insert(name).inserted else { return }
        result.sets.append(CompiledFirewallSet(name: name, type: family.setType, elements: elements))
    }

    // MARK: the whole ruleset

    mutating func run() {
        clusterOptions = input.cluster?.options ?? [:]
        guard let cluster = input.cluster, FirewallCompiler.isOn(clusterOptions["enable"], default: false) else { return }
        result.enabled = true
        logRateLimit = Self.rateLimit(clusterOptions["log_ratelimit"])
        resolveLocalNetwork(cluster)

        chain("do-reject")
        // Broadcast and multicast get no answer; TCP a reset, everything else "administratively prohibited".
        add("do-reject", "meta pkttype broadcast drop", origin: "reject: no answer to broadcasts")
        add("do-reject", "ip saddr 224.0.0.0/4 drop", origin: "reject: no answer to multicast sources")
        add("do-reject", "meta l4proto tcp reject with tcp reset", origin: "reject: TCP reset")
        add("do-reject", "meta l4proto udp reject with icmpx port-unreachable", origin: "reject: UDP port unreachable")
        add("do-reject", "reject with icmpx admin-prohibited", origin: "reject: administratively prohibited")
        let hostOptions = input.host?.options ?? [:]
        chain("smurfs")
        add("smurfs", "ip saddr 0.0.0.0 return", origin: "smurfs: DHCP discovery is not a smurf")
        for (match, why) in [("fib saddr type broadcast", "smurfs: broadcast source"), ("ip saddr 224.0.0.0/4", "smurfs: multicast source")] {
            if let log = logStatement(level: hostOptions["smurf_log_level"], vmid: nil, chain: "smurfs", message: "DROP: ") {
                add("smurfs", "\(match) \(log)", origin: why + " (logged at smurf_log_level)")
            }
            add("smurfs", "\(match) drop", origin: why)
        }
        chain("tcpflags")
        var flagMatches = [("fin|syn|rst|psh|ack|urg", "fin|psh|urg"), ("fin|syn|rst|psh|ack|urg", "0x0"),
                           ("syn|rst", "syn|rst"), ("fin|syn", "fin|syn")]
            .map { ("tcp flags & (\($0.0)) == \($0.1)", "tcpflags: illegal flag combination") }
        flagMatches.append(("tcp sport 0 tcp flags & (fin|syn|rst|ack) == syn", "tcpflags: SYN from port 0"))
        for (match, why) in flagMatches {
            if let log = logStatement(level: hostOptions["tcp_flags_log_level"], vmid: nil, chain: "tcpflags", message: "DROP: ") {
                add("tcpflags", "\(match) \(log)", origin: why + " (logged at tcp_flags_log_level)")
            }
            add("tcpflags", "\(match) drop", origin: why)
        }

        declareClusterSets(cluster)
        // Group chains before the chains that jump to them.
        for name in cluster.groups.keys.sorted() { compileGroup(name.lowercased(), cluster.groups[name]!) }

        if FirewallCompiler.isOn(input.host?.options["enable"], default: true) {
            compileHost(cluster)
        }
        compileGuests()
        compileForward(cluster)
        compileBridgeMarks()
    }

    static func rateLimit(_ value: String?) -> String? {
        let property = PropertyString(parsing: value ?? "")
        let enabled = property["enable"] ?? property.bareValue ?? "1"
        guard enabled == "1" else { return nil }
        var rate = property["rate"] ?? "1/second"
        if !rate.contains("/") { rate += "/second" }
        return "limit rate \(rate) burst \(property["burst"] ?? "5") packets"
    }

    // MARK: local network and management

    mutating func resolveLocalNetwork(_ cluster: FirewallConfig) {
        if let alias = cluster.aliases.first(where: { $0.name?.lowercased() == "local_network" }),
           let address = FirewallAddress.parse(alias.cidr) {
            result.localNetwork = address.text
            result.localNetworkOrigin = "[ALIASES] local_network in \(cluster.file):\(alias.location.line)"
            return
        }
        var candidates: [(String, String)] = []
        if let node = input.corosync?.nodes.first(where: { $0["name"] == input.node }) {
            for key in ["ring0_addr", "ring1_addr"] {
                if let address = node[key], FirewallAddress.bytes(of: address) != nil {
                    candidates.append((address, "corosync \(key) of node \(input.node)"))
                }
            }
        }
        if let address = input.resolvedNodeAddress { candidates.append((address, "the address node name \(input.node) resolves to")) }
        let configured = configuredAddresses()
        for (address, why) in candidates {
            if let network = networkContaining(address, configured) {
                result.localNetwork = network
                result.localNetworkOrigin = why + " (\(address))"
                return
            }
        }
        if let first = configured.first, let network = FirewallAddress.parse(first) {
            result.localNetwork = network.text
            result.localNetworkOrigin = "the first static address in the interfaces file (\(first))"
            return
        }
        if let (address, why) = candidates.first {
            result.localNetwork = address
            result.localNetworkOrigin = why + "; no prefix known, the address alone"
            return
        }
        result.localNetworkOrigin = "none: no [ALIASES] local_network, corosync address, resolvable node name or static address"
    }

    /// `address/prefix` pairs from the interfaces file, then from the kernel.
    func configuredAddresses() -> [String] {
        var result: [String] = []
        for stanza in input.interfaces?.stanzas ?? [] {
            for option in stanza.options where option.key == "address" && option.value.contains("/") {
                result.append(option.value)
            }
        }
        return result + input.hostAddresses
    }

    func networkContaining(_ address: String, _ configured: [String]) -> String? {
        for entry in configured {
            let parts = entry.split(separator: "/")
            guard parts.count == 2,
                  String(parts[0]) == address || FirewallAddress.bytes(of: String(parts[0]))?.1 == FirewallAddress.bytes(of: address)?.1,
                  let prefix = Int(parts[1]) else { continue }
            return FirewallAddress.network(address: address, prefix: prefix)?.text
        }
        return nil
    }

    // MARK: sets

    /// The sets of one firewall file's ipsets, `v4-dc/name` or `v4-guest100/name`,
    /// each with a `-nomatch` companion for `!address` entries.
    mutating func declareSets(_ file: FirewallConfig, scope: String, extra: [String: [String]] = [:]) {
        for (rawName, section) in file.ipsets.sorted(by: { $0.key < $1.key }) {
            let name = rawName.lowercased()
            var entries: [(FirewallAddress, Bool)] = []
            for entry in section.entries {
                let value = entry.cidr
                let resolved: FirewallAddress?
                if let address = FirewallAddress.parse(value) {
                    resolved = address
                } else {
                    resolved = resolveAlias(value, file: file).flatMap(FirewallAddress.parse)
                }
                guard let resolved else {
                    result.skipped.append(.warning(entry.location,
                                                   "ipset \(rawName): '\(value)' is neither an address nor a known alias; entry left out",
                                                   code: .reference))
                    continue
                }
                entries.append((resolved, entry.nomatch))
            }
            for value in extra[name] ?? [] { if let address = FirewallAddress.parse(value) { entries.append((address, false)) } }
            for family in [FirewallAddress.Family.v4, .v6] {
                addSet("v\(family.rawValue)-\(scope)/\(name)", family: family,
                       elements: entries.filter { $0.0.family == family && !$0.1 }.map(\.0.text))
                addSet("v\(family.rawValue)-\(scope)/\(name)-nomatch", family: family,
                       elements: entries.filter { $0.0.family == family && $0.1 }.map(\.0.text))
            }
        }
    }

    mutating func declareClusterSets(_ cluster: FirewallConfig) {
        var extra: [String: [String]] = [:]
        if let local = result.localNetwork { extra["management"] = [local] }
        declareSets(cluster, scope: "dc", extra: extra)
        if cluster.ipsets.keys.contains(where: { $0.lowercased() == "management" }) == false {
            for family in [FirewallAddress.Family.v4, .v6] {
                let elements = result.localNetwork.flatMap(FirewallAddress.parse).map { $0.family == family ? [$0.text] : [] } ?? []
                addSet("v\(family.rawValue)-dc/management", family: family, elements: elements)
                addSet("v\(family.rawValue)-dc/management-nomatch", family: family, elements: [])
            }
        }
    }

    func resolveAlias(_ raw: String, file: FirewallConfig?) -> String? {
        var name = raw.lowercased()
        var scopes: [FirewallConfig?] = [file, input.cluster]
        if name.hasPrefix("dc/") {
            name.removeFirst(3)
            scopes = [input.cluster]
        } else if name.hasPrefix("guest/") {
            name.removeFirst(6)
            scopes = [file]
        }
        if name == "local_network", scopes.contains(where: { $0?.scope == .cluster }), let local = result.localNetwork,
           input.cluster?.aliases.contains(where: { $0.name?.lowercased() == "local_network" }) != true {
            return local
        }
        for scope in scopes {
            if let entry = scope?.aliases.first(where: { $0.name?.lowercased() == name }) { return entry.cidr }
        }
        return nil
    }

    // MARK: rule translation

    /// Where a rule is compiled: which file it came from, which guest (for
    /// guest/ scopes and `-i netN`), and the verdicts its actions become.
    struct Context {
        var file: FirewallConfig?
        var vmid: Int?
        var chain: String
    }

    /// The address match of `-source`/`-dest`, per family it can match.
    func addressMatch(_ raw: String, direction: String, context: Context) throws -> [FirewallAddress.Family: String] {
        if raw.hasPrefix("+") {
            var name = String(raw.dropFirst()).lowercased()
            var scopes: [(String, FirewallConfig?)] = []
            if let vmid = context.vmid { scopes.append(("guest\(vmid)", context.file)) }
            scopes.append(("dc", input.cluster))
            if name.hasPrefix("dc/") {
                name.removeFirst(3)
                scopes = [("dc", input.cluster)]
            } else if name.hasPrefix("guest/") {
                name.removeFirst(6)
                scopes = scopes.filter { $0.0 != "dc" }
            }
            let isManagement = name == "management"
            for (scope, file) in scopes {
                let defined = file?.ipsets.keys.contains { $0.lowercased() == name } ?? false
                guard defined || (scope == "dc" && isManagement) else { continue }
                var matches: [FirewallAddress.Family: String] = [:]
                for family in [FirewallAddress.Family.v4, .v6] {
                    let set = "v\(family.rawValue)-\(scope)/\(name)"
                    var text = "\(family.payload) \(direction) @\(set)"
                    if result.sets.first(where: { $0.name == set + "-nomatch" })?.elements.isEmpty == false {
                        text += " \(family.payload) \(direction) != @\(set)-nomatch"
                    }
                    matches[family] = text
                }
                return matches
            }
            throw RuleError(message: "no such ipset '\(raw.dropFirst())'", code: .reference)
        }
        var byFamily: [FirewallAddress.Family: [String]] = [:]
        for item in raw.split(separator: ",").map(String.init) {
            var address = FirewallAddress.parse(item)
            if address == nil {
                guard let alias = resolveAlias(item, file: context.file) else {
                    throw RuleError(message: "no such alias '\(item)'", code: .reference)
                }
                address = FirewallAddress.parse(alias)
            }
            guard let address else { throw RuleError(message: "'\(item)' is not an address, network, range or alias", code: .invalidValue) }
            byFamily[address.family, default: []].append(address.text)
        }
        guard byFamily.count == 1, let (family, items) = byFamily.first else {
            throw RuleError(message: "'\(raw)' mixes IPv4 and IPv6 addresses", code: .conflict)
        }
        return [family: "\(family.payload) \(direction) " + (items.count == 1 ? items[0] : "{ \(items.joined(separator: ", ")) }")]
    }

    static let portProtocols: Set<String> = ["tcp", "udp", "udplite", "sctp", "dccp"]

    /// `22`, `80,443`, `1000:2000`, `http` → nft's `22`, `{ 80, 443 }`, `1000-2000`, `80`.
    static func ports(_ raw: String, proto: String, services: NetworkServices) throws -> String {
        var items: [String] = []
        for part in raw.split(separator: ",") {
            let bounds = part.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard bounds.count <= 2 else { throw RuleError(message: "bad port range '\(part)'", code: .invalidValue) }
            let numbers = try bounds.map { try port($0, proto: proto, services: services) }
            if numbers.count == 2 {
                guard numbers[0] <= numbers[1] else { throw RuleError(message: "port range '\(part)' runs backwards", code: .invalidValue) }
                items.append("\(numbers[0])-\(numbers[1])")
            } else {
                items.append(String(numbers[0]))
            }
        }
        guard !items.isEmpty else { throw RuleError(message: "empty port list", code: .invalidValue) }
        return items.count == 1 ? items[0] : "{ \(items.joined(separator: ", ")) }"
    }

    static func port(_ text: String, proto: String, services: NetworkServices) throws -> Int {
        if let number = Int(text) {
            guard (0...65535).contains(number) else { throw RuleError(message: "port \(number) is out of range", code: .invalidValue) }
            return number
        }
        // As pve-firewall asks the C library: the rule's protocol (tcp for those /etc/services does not list), then any.
        let listed = Self.portProtocols.contains(proto) && proto != "udplite" && proto != "dccp" ? proto : "tcp"
        guard let port = services.port(named: text, proto: listed) ?? services.port(named: text, proto: nil) else {
            throw RuleError(message: "unknown service name '\(text)'", code: .invalidValue)
        }
        return port
    }

    /// ICMP names as pve-firewall (iptables) spells them → (type, code).
    static let icmpTypes: [String: (Int, Int?)] = [
        "any": (-1, nil), "echo-reply": (0, nil), "pong": (0, nil), "destination-unreachable": (3, nil),
        "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2), "port-unreachable": (3, 3),
        "fragmentation-needed": (3, 4), "source-route-failed": (3, 5), "network-unknown": (3, 6), "host-unknown": (3, 7),
        "network-prohibited": (3, 9), "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11), "TOS-host-unreachable": (3, 12),
        "communication-prohibited": (3, 13), "host-precedence-violation": (3, 14), "precedence-cutoff": (3, 15),
        "source-quench": (4, nil), "redirect": (5, nil), "network-redirect": (5, 0), "host-redirect": (5, 1),
        "TOS-network-redirect": (5, 2), "TOS-host-redirect": (5, 3), "echo-request": (8, nil), "ping": (8, nil),
        "router-advertisement": (9, nil), "router-solicitation": (10, nil), "time-exceeded": (11, nil), "ttl-exceeded": (11, nil),
        "ttl-zero-during-transit": (11, 0), "ttl-zero-during-reassembly": (11, 1), "parameter-problem": (12, nil),
        "ip-header-bad": (12, 0), "required-option-missing": (12, 1), "timestamp-request": (13, nil), "timestamp-reply": (14, nil),
        "address-mask-request": (17, nil), "address-mask-reply": (18, nil),
    ]

    static let icmpv6Types: [String: (Int, Int?)] = [
        "any": (-1, nil), "destination-unreachable": (1, nil), "no-route": (1, 0), "communication-prohibited": (1, 1),
        "beyond-scope": (1, 2), "address-unreachable": (1, 3), "port-unreachable": (1, 4), "failed-policy": (1, 5),
        "reject-route": (1, 6), "packet-too-big": (2, nil), "time-exceeded": (3, nil), "ttl-exceeded": (3, nil),
        "ttl-zero-during-transit": (3, 0), "ttl-zero-during-reassembly": (3, 1), "parameter-problem": (4, nil),
        "bad-header": (4, 0), "unknown-header-type": (4, 1), "unknown-option": (4, 2), "echo-request": (128, nil),
        "ping": (128, nil), "echo-reply": (129, nil), "pong": (129, nil), "router-solicitation": (133, nil),
        "router-advertisement": (134, nil), "neighbour-solicitation": (135, nil), "neighbor-solicitation": (135, nil),
        "neighbour-advertisement": (136, nil), "neighbor-advertisement": (136, nil), "redirect": (137, nil),
    ]

    static func icmpMatch(_ raw: String, v6: Bool) throws -> String {
        let keyword = v6 ? "icmpv6" : "icmp"
        let type: Int
        var code: Int?
        if let number = Int(raw) {
            type = number
        } else if raw.contains("/"), let slash = raw.firstIndex(of: "/"), let number = Int(raw[..<slash]),
                  let codeNumber = Int(raw[raw.index(after: slash)...]) {
            type = number
            code = codeNumber
        } else if let known = (v6 ? icmpv6Types : icmpTypes)[raw] {
            (type, code) = known
        } else {
            throw RuleError(message: "unknown \(keyword) type '\(raw)'", code: .invalidValue)
        }
        guard (-1...255).contains(type), (0...255).contains(code ?? 0) else {
            throw RuleError(message: "\(keyword) type '\(raw)' out of range", code: .invalidValue)
        }
        if type < 0 { return "meta l4proto \(v6 ? "ipv6-icmp" : "icmp")" }
        return "\(keyword) type \(type)" + (code.map { " \(keyword) code \($0)" } ?? "")
    }

    static let nftLogLevels = ["emerg": "emerg", "alert": "alert", "crit": "crit", "err": "err", "warning": "warn",
                               "notice": "notice", "info": "info", "debug": "debug"]
    static let syslogNumbers = ["emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7]

    /// A log statement before a verdict: prefix `:vmid:level:chain: ACTION: ` as pve-firewall's log daemon reads it.
    func logStatement(level: String?, vmid: Int?, chain: String, message: String) -> String? {
        guard let level, let nftLevel = Self.nftLogLevels[level] else { return nil }
        let prefix = ":\(vmid ?? 0):\(Self.syslogNumbers[level]!):\(chain): \(message)"
        return (logRateLimit.map { $0 + " " } ?? "") + "log prefix \"\(prefix)\" level \(nftLevel)"
    }

    /// nft statements for one firewall rule in one chain (`IN`/`OUT`/`FORWARD` already chosen).
    func translate(_ rule: FirewallConfig.Rule, context: Context, interfaceKeyword: String?) throws -> [String] {
        var entries: [FirewallMacros.Entry]
        if let macroName = rule.macro {
            guard let macro = FirewallMacros.all[macroName]
                    ?? FirewallMacros.all.first(where: { $0.key.lowercased() == macroName.lowercased() })?.value else {
                throw RuleError(message: "unknown macro '\(macroName)'", code: .invalidValue)
            }
            entries = macro.entries.map { entry in
                var merged = entry
                if merged.dport == nil && merged.icmpType == nil, let dport = rule["dport"] { merged.dport = dport }
                if merged.sport == nil, let sport = rule["sport"] { merged.sport = sport }
                return merged
            }
        } else if let proto = rule["p"]?.lowercased() {
            var entry = FirewallMacros.Entry(proto, dport: rule["dport"], sport: rule["sport"], icmpType: rule["icmp-type"])
            // pve-firewall's historic spelling: -p icmp -dport <type>.
            if ["icmp", "icmpv6", "ipv6-icmp"].contains(proto), entry.icmpType == nil, let type = entry.dport {
                entry.icmpType = type
                entry.dport = nil
            }
            entries = [entry]
        } else {
            if rule["dport"] != nil { throw RuleError(message: "-dport needs -p (tcp, udp, ...)", code: .conflict) }
            if rule["sport"] != nil { throw RuleError(message: "-sport needs -p (tcp, udp, ...)", code: .conflict) }
            if rule["icmp-type"] != nil { throw RuleError(message: "-icmp-type needs -p icmp or ipv6-icmp", code: .conflict) }
            entries = [FirewallMacros.Entry("")]
        }
        let sources = try rule["source"].map { try addressMatch($0, direction: "saddr", context: context) }
        let dests = try rule["dest"].map { try addressMatch($0, direction: "daddr", context: context) }
        var statements: [String] = []
        for entry in entries {
            let proto = entry.proto.lowercased()
            var families: [FirewallAddress.Family] = [.v4, .v6]
            var l4: [String] = []
            switch proto {
            case "":
                break
            case "icmp", "1":
                families = [.v4]
                l4.append(try entry.icmpType.map { try Self.icmpMatch($0, v6: false) } ?? "meta l4proto icmp")
            case "icmpv6", "ipv6-icmp", "58":
                families = [.v6]
                l4.append(try entry.icmpType.map { try Self.icmpMatch($0, v6: true) } ?? "meta l4proto ipv6-icmp")
            default:
                if entry.icmpType != nil { throw RuleError(message: "-icmp-type needs -p icmp or ipv6-icmp, not '\(proto)'", code: .conflict) }
                let name = ["6": "tcp", "17": "udp", "132": "sctp", "33": "dccp", "136": "udplite"][proto] ?? proto
                if Self.portProtocols.contains(name) {
                    l4.append("meta l4proto \(name)")
                    if let sport = entry.sport { l4.append("\(name) sport \(try Self.ports(sport, proto: name, services: input.services))") }
                    if let dport = entry.dport { l4.append("\(name) dport \(try Self.ports(dport, proto: name, services: input.services))") }
                } else {
                    if entry.dport != nil || entry.sport != nil { throw RuleError(message: "protocol '\(proto)' has no ports", code: .conflict) }
                    guard proto.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }),
                          let first = proto.first, first.isLetter || first.isNumber else {
                        throw RuleError(message: "bad protocol '\(proto)'", code: .invalidValue)
                    }
                    if let number = Int(proto), !(0...255).contains(number) {
                        throw RuleError(message: "protocol number \(number) out of range", code: .invalidValue)
                    }
                    if Int(proto) == nil && input.services.protocolNumber(named: proto) == nil {
                        throw RuleError(message: "unknown protocol '\(proto)'", code: .invalidValue)
                    }
                    l4.append("meta l4proto \(proto)")
                }
            }
            if let sources { families = families.filter { sources[$0] != nil } }
            if let dests { families = families.filter { dests[$0] != nil } }
            if families.isEmpty {
                throw RuleError(message: "source, destination and protocol have no IP version in common", code: .conflict)
            }
            let addressFree = sources == nil && dests == nil
                && proto != "icmp" && proto != "icmpv6" && proto != "ipv6-icmp" && proto != "1" && proto != "58"
            for family in addressFree ? [FirewallAddress.Family.v4] : families {
                var parts: [String] = []
                if let interfaceKeyword, let device = rule["i"] { parts.append("\(interfaceKeyword) \"\(device)\"") }
                if !addressFree && sources == nil && dests == nil && l4.isEmpty { parts.append("meta nfproto ip\(family == .v4 ? "v4" : "v6")") }
                if let match = sources?[family] { parts.append(match) }
                if let match = dests?[family] { parts.append(match) }
                parts += l4
                let match = parts.joined(separator: " ")
                let verdict: String
                switch rule.action {
                case "ACCEPT": verdict = "accept"
                case "DROP": verdict = "drop"
                case "REJECT": verdict = "jump do-reject"
                default: throw RuleError(message: "unknown action '\(rule.action)'", code: .invalidValue)
                }
                if let log = logStatement(level: rule["log"], vmid: context.vmid, chain: context.chain, message: "\(rule.action): ") {
                    statements.append((match.isEmpty ? "" : match + " ") + log)
                }
                statements.append((match.isEmpty ? "" : match + " ") + verdict)
            }
        }
        return statements
    }

    /// Adds a file's rules of one direction (and its GROUP rules) to a chain.
    mutating func addRules(_ rules: [FirewallConfig.Rule], direction: FirewallConfig.Rule.Direction, chain: String,
                           context: Context, interfaceKeyword: String?, netFilter: String? = nil) {
        let groupSuffix = direction == .inbound ? "in" : direction == .outbound ? "out" : nil
        for rule in rules where rule.enabled {
            if let netFilter, let device = rule["i"], device != netFilter { continue }
            let keyword = netFilter == nil ? interfaceKeyword : nil
            if rule.direction == .group {
                guard let groupSuffix else { continue }
                let name = rule.action.lowercased()
                guard input.cluster?.groups.keys.contains(where: { $0.lowercased() == name }) == true else {
                    result.skipped.append(.warning(rule.location, "rule skipped: security group '\(rule.action)' does not exist", code: .reference))
                    continue
                }
                var match = ""
                if let keyword, let device = rule["i"] { match = "\(keyword) \"\(device)\" " }
                add(chain, match + "jump group-\(name)-\(groupSuffix)", source: rule.location, origin: rule.canonicalLine())
                continue
            }
            guard rule.direction == direction else { continue }
            do {
                for statement in try translate(rule, context: context, interfaceKeyword: keyword) {
                    add(chain, statement, source: rule.location, origin: rule.canonicalLine())
                }
            } catch let error as RuleError {
                result.skipped.append(.warning(rule.location, "rule skipped: \(error.message): \(rule.canonicalLine())", code: error.code))
            } catch {
                result.skipped.append(.warning(rule.location, "rule skipped: \(error)", code: .invalidValue))
            }
        }
    }

    mutating func compileGroup(_ name: String, _ section: FirewallConfig.Section) {
        for (suffix, direction) in [("in", FirewallConfig.Rule.Direction.inbound), ("out", .outbound)] {
            let chainName = "group-\(name)-\(suffix)"
            chain(chainName)
            addRules(section.rules, direction: direction, chain: chainName,
                     context: Context(file: input.cluster, vmid: nil, chain: chainName),
                     interfaceKeyword: direction == .inbound ? "iifname" : "oifname")
        }
    }

    /// A policy option's value; anything but ACCEPT, DROP or REJECT is ignored
    /// for the default, as pve-firewall skips an option it cannot parse.
    static func policy(_ value: String?, default fallback: String) -> String {
        guard let value = value?.uppercased(), ["ACCEPT", "DROP", "REJECT"].contains(value) else { return fallback }
        return value
    }

    /// The policy at the end of a zone's chain, logged at the zone's log level.
    mutating func addPolicy(_ chain: String, policy: String, logLevel: String?, vmid: Int?) {
        let verdict = switch policy.uppercased() {
        case "ACCEPT": "accept"
        case "REJECT": "jump do-reject"
        default: "drop"
        }
        if policy.uppercased() != "ACCEPT",
           let log = logStatement(level: logLevel, vmid: vmid, chain: chain, message: "policy \(policy.uppercased()): ") {
            add(chain, log, origin: "policy \(policy.uppercased()) (logged)")
        }
        add(chain, verdict, origin: "policy \(policy.uppercased())")
    }

    // MARK: host zone

    mutating func compileHost(_ cluster: FirewallConfig) {
        let hostOptions = input.host?.options ?? [:]
        let hostRules = input.host?.rules ?? []
        let clusterRules = cluster.rules
        let allowInvalid = FirewallCompiler.isOn(hostOptions["nf_conntrack_allow_invalid"], default: false)

        /// What both host chains start with: loopback, conntrack, neighbour discovery.
        func preamble(_ chain: String, interface: String) {
            self.chain(chain)
            add(chain, "\(interface) \"lo\" accept", origin: "loopback")
            if !allowInvalid { add(chain, "ct state invalid drop", origin: "conntrack: invalid") }
            add(chain, "ct state established,related accept", origin: "conntrack: established, related")
            if FirewallCompiler.isOn(hostOptions["ndp"], default: true) {
                add(chain, "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept", origin: "ndp")
            }
        }

        preamble("host-in", interface: "iifname")
        if cluster.ipsets.keys.contains(where: { $0.lowercased() == "blacklist" }) {
            for family in [FirewallAddress.Family.v4, .v6] {
                var text = "\(family.payload) saddr @v\(family.rawValue)-dc/blacklist"
                if result.sets.first(where: { $0.name == "v\(family.rawValue)-dc/blacklist-nomatch" })?.elements.isEmpty == false {
                    text += " \(family.payload) saddr != @v\(family.rawValue)-dc/blacklist-nomatch"
                }
                add("host-in", text + " drop", origin: "blacklist ipset")
            }
        }
        if FirewallCompiler.isOn(hostOptions["nosmurfs"], default: true) {
            add("host-in", "meta nfproto ipv4 ct state new,invalid jump smurfs", origin: "nosmurfs")
        }
        if FirewallCompiler.isOn(hostOptions["tcpflags"], default: false) {
            add("host-in", "meta l4proto tcp jump tcpflags", origin: "tcpflags")
        }
        add("host-in", "meta l4proto igmp accept", origin: "igmp (multicast membership)")
        let hostContext = Context(file: input.host, vmid: nil, chain: "host-in")
        addRules(hostRules, direction: .inbound, chain: "host-in", context: hostContext, interfaceKeyword: "iifname")
        addRules(clusterRules, direction: .inbound, chain: "host-in",
                 context: Context(file: cluster, vmid: nil, chain: "host-in"), interfaceKeyword: "iifname")
        for family in [FirewallAddress.Family.v4, .v6] {
            var text = "\(family.payload) saddr @v\(family.rawValue)-dc/management"
            if result.sets.first(where: { $0.name == "v\(family.rawValue)-dc/management-nomatch" })?.elements.isEmpty == false {
                text += " \(family.payload) saddr != @v\(family.rawValue)-dc/management-nomatch"
            }
            add("host-in", text + " tcp dport { \(FirewallCompiler.managementPorts) } accept",
                origin: "management ipset: SSH, API, consoles, SPICE proxy, migration")
        }
        let corosync = corosyncRules()
        for (text, why) in corosync.inbound { add("host-in", text, origin: why) }
        addPolicy("host-in", policy: Self.policy(clusterOptions["policy_in"], default: "DROP"), logLevel: hostOptions["log_level_in"], vmid: nil)

        preamble("host-out", interface: "oifname")
        add("host-out", "meta l4proto igmp accept", origin: "igmp (multicast membership)")
        addRules(hostRules, direction: .outbound, chain: "host-out",
                 context: Context(file: input.host, vmid: nil, chain: "host-out"), interfaceKeyword: "oifname")
        addRules(clusterRules, direction: .outbound, chain: "host-out",
                 context: Context(file: cluster, vmid: nil, chain: "host-out"), interfaceKeyword: "oifname")
        if let local = result.localNetwork.flatMap(FirewallAddress.parse) {
            add("host-out", "\(local.family.payload) daddr \(local.text) tcp dport { \(FirewallCompiler.localNetworkPorts) } accept",
                origin: "local_network: SSH, API, consoles, SPICE proxy of the other nodes")
        }
        for (text, why) in corosync.outbound { add("host-out", text, origin: why) }
        addPolicy("host-out", policy: Self.policy(clusterOptions["policy_out"], default: "ACCEPT"), logLevel: hostOptions["log_level_out"], vmid: nil)

        chain("input", hook: "type filter hook input priority filter; policy accept;")
        add("input", "jump host-in", origin: "host zone, inbound")
        chain("output", hook: "type filter hook output priority filter; policy accept;")
        add("output", "jump host-out", origin: "host zone, outbound")
    }

    /// Corosync between this node and the others, ring by ring (only the same
    /// ring's addresses), and multicast when the transport is udp.
    func corosyncRules() -> (inbound: [(String, String)], outbound: [(String, String)]) {
        guard let corosync = input.corosync else { return ([], []) }
        var inbound: [(String, String)] = []
        var outbound: [(String, String)] = []
        if corosync.totem?["transport"] == "udp" {
            inbound.append(("ip daddr 224.0.0.0/4 udp dport \(FirewallCompiler.corosyncPorts) accept", "corosync multicast"))
            inbound.append(("ip6 daddr ff00::/8 udp dport \(FirewallCompiler.corosyncPorts) accept", "corosync multicast"))
            outbound.append(("ip daddr 224.0.0.0/4 udp dport \(FirewallCompiler.corosyncPorts) accept", "corosync multicast"))
            outbound.append(("ip6 daddr ff00::/8 udp dport \(FirewallCompiler.corosyncPorts) accept", "corosync multicast"))
        }
        guard let local = corosync.nodes.first(where: { $0["name"] == input.node }) else { return (inbound, outbound) }
        for node in corosync.nodes where node["name"] != input.node {
            for ring in 0..<8 {
                let key = "ring\(ring)_addr"
                guard let mine = local[key].flatMap(FirewallAddress.parse), let theirs = node[key].flatMap(FirewallAddress.parse),
                      mine.family == theirs.family else { continue }
                let name = node["name"] ?? "?"
                let payload = mine.family.payload
                inbound.append(("\(payload) saddr \(theirs.text) \(payload) daddr \(mine.text) udp dport \(FirewallCompiler.corosyncPorts) accept",
                                "corosync \(key) from node \(name)"))
                outbound.append(("\(payload) saddr \(mine.text) \(payload) daddr \(theirs.text) udp dport \(FirewallCompiler.corosyncPorts) accept",
                                 "corosync \(key) to node \(name)"))
            }
        }
        return (inbound, outbound)
    }

    // MARK: guest zones

    mutating func compileGuests() {
        for guest in input.guests.sorted(by: { $0.vmid < $1.vmid }) {
            let nics = Self.firewalledNICs(guest)
            result.ports += nics
            guard let file = input.guestFirewalls[guest.vmid], FirewallCompiler.isOn(file.options["enable"], default: false) else { continue }
            let options = file.options
            let extra = nics.reduce(into: [String: [String]]()) { sets, nic in
                if FirewallCompiler.isOn(options["ipfilter"], default: false) {
                    sets["ipfilter-\(nic.netName)"] = Self.configuredAddresses(guest, index: nic.index)
                        + (nic.mac.flatMap(FirewallAddress.linkLocal).map { [$0] } ?? [])
                } else if file.ipsets.keys.contains(where: { $0.lowercased() == "ipfilter-\(nic.netName)" }) {
                    sets["ipfilter-\(nic.netName)"] = nic.mac.flatMap(FirewallAddress.linkLocal).map { [$0] } ?? []
                }
            }
            // ipfilter=1 without a user ipset still needs the set: declare it from the config.
            var augmented = file
            for (name, _) in extra where !file.ipsets.keys.contains(where: { $0.lowercased() == name }) {
                augmented.elements.append(.block(FirewallConfig.Section(ipsetNamed: name)))
            }
            declareSets(augmented, scope: "guest\(guest.vmid)", extra: extra)
            for nic in nics {
                compileGuestChain(guest: guest, file: augmented, nic: nic, inbound: true)
                compileGuestChain(guest: guest, file: augmented, nic: nic, inbound: false)
            }
        }
    }

    static let nicModels: Set<String> = ["e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
                                         "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"]

    /// The guest's NICs with `firewall=1` and the device names Proxmox VE gives them.
    static func firewalledNICs(_ guest: DesiredState.Guest) -> [GuestFirewallPort] {
        var ports: [GuestFirewallPort] = []
        for entry in guest.config.main.effectiveEntries where entry.key.hasPrefix("net") {
            guard let index = Int(entry.key.dropFirst(3)), (0..<32).contains(index) else { continue }
            let property = PropertyString(parsing: entry.value)
            guard property["firewall"] == "1", let bridge = property["bridge"] else { continue }
            var mac: String?
            if guest.kind == .lxc {
                mac = property["hwaddr"]
            } else {
                mac = property.entries.first { $0.key.map(nicModels.contains) ?? false }?.value ?? property["macaddr"]
            }
            if let value = mac, value.split(separator: ":").count != 6 { mac = nil }
            ports.append(GuestFirewallPort(vmid: guest.vmid, index: index, kind: guest.kind.rawValue,
                                           device: guest.kind == .lxc ? "veth\(guest.vmid)i\(index)" : "tap\(guest.vmid)i\(index)",
                                           bridge: bridge, mac: mac?.lowercased()))
        }
        return ports.sorted { $0.index < $1.index }
    }

    /// Static addresses the guest's config gives a NIC (a container's ip=/ip6=, a VM's cloud-init ipconfigN).
    static func configuredAddresses(_ guest: DesiredState.Guest, index: Int) -> [String] {
        let value = guest.kind == .lxc ? guest.config.main["net\(index)"] : guest.config.main["ipconfig\(index)"]
        let property = PropertyString(parsing: value ?? "")
        return ["ip", "ip6"].compactMap { key in
            guard let address = property[key], address.contains("/") else { return nil }
            return String(address.split(separator: "/")[0])
        }
    }

    mutating func compileGuestChain(guest: DesiredState.Guest, file: FirewallConfig, nic: GuestFirewallPort, inbound: Bool) {
        let options = file.options
        let name = "guest-\(guest.vmid)-\(nic.netName)-\(inbound ? "in" : "out")"
        chain(name)
        add(name, "ct state invalid drop", origin: "conntrack: invalid")
        add(name, "ct state established,related accept", origin: "conntrack: established, related")
        if FirewallCompiler.isOn(options["dhcp"], default: false) {
            if inbound {
                add(name, "udp sport 67 udp dport 68 accept", origin: "dhcp: server to client")
                add(name, "udp sport 547 udp dport 546 accept", origin: "dhcpv6: server to client")
            } else {
                add(name, "udp sport 68 udp dport 67 accept", origin: "dhcp: client to server")
                add(name, "udp sport 546 udp dport 547 accept", origin: "dhcpv6: client to server")
            }
        }
        if !inbound {
            let macFilter = FirewallCompiler.isOn(options["macfilter"], default: true) ? nic.mac : nil
            let ipfilterSet = result.sets.first { $0.name == "v4-guest\(guest.vmid)/ipfilter-\(nic.netName)" }
            let arpSenders = file.ipsets.keys.contains { $0.lowercased() == "ipfilter-\(nic.netName)" }
                ? ["0.0.0.0"] + (ipfilterSet?.elements ?? []) : nil
            if macFilter != nil || arpSenders != nil {
                layer2Filters.append((nic.device, macFilter, arpSenders,
                                      "guest \(guest.vmid) \(nic.netName): macfilter/ipfilter for every frame, ARP included"))
            }
            if FirewallCompiler.isOn(options["macfilter"], default: true), let mac = nic.mac {
                add(name, "ether saddr != \(mac) drop", origin: "macfilter: only the NIC's own MAC \(mac)")
            }
            if !FirewallCompiler.isOn(options["radv"], default: false) {
                add(name, "icmpv6 type { nd-router-advert, nd-redirect } drop", origin: "radv: guests may not advertise routes")
            }
            let ipfilter = "ipfilter-\(nic.netName)"
            if file.ipsets.keys.contains(where: { $0.lowercased() == ipfilter }) {
                add(name, "meta nfproto ipv4 ip saddr != @v4-guest\(guest.vmid)/\(ipfilter) drop",
                    origin: "ipfilter: only the addresses in \(ipfilter)")
                add(name, "meta nfproto ipv6 ip6 saddr != @v6-guest\(guest.vmid)/\(ipfilter) drop",
                    origin: "ipfilter: only the addresses in \(ipfilter)")
            }
        }
        if FirewallCompiler.isOn(options["ndp"], default: false) {
            let types = inbound ? "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect"
                : "nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert"
            add(name, "icmpv6 type { \(types) } accept", origin: "ndp")
        }
        addRules(file.rules, direction: inbound ? .inbound : .outbound, chain: name,
                 context: Context(file: file, vmid: guest.vmid, chain: name), interfaceKeyword: nil, netFilter: nic.netName)
        addPolicy(name, policy: Self.policy(options[inbound ? "policy_in" : "policy_out"], default: inbound ? "DROP" : "ACCEPT"),
                  logLevel: options[inbound ? "log_level_in" : "log_level_out"], vmid: guest.vmid)
    }

    // MARK: forward hook and the bridge marks

    mutating func compileForward(_ cluster: FirewallConfig) {
        chain("forward", hook: "type filter hook forward priority filter; policy accept;")
        let enabled = Set(input.guests.filter { FirewallCompiler.isOn(input.guestFirewalls[$0.vmid]?.options["enable"], default: false) }.map(\.vmid))
        let guarded = result.ports.filter { enabled.contains($0.vmid) }
        if !guarded.isEmpty {
            let from = guarded.map { "\"\($0.firewallBridge)\" : jump guest-\($0.vmid)-\($0.netName)-out" }.joined(separator: ", ")
            let to = guarded.map { "\"\($0.firewallBridge)\" : jump guest-\($0.vmid)-\($0.netName)-in" }.joined(separator: ", ")
            add("forward", "meta mark & \(hex(CompiledFirewall.fromGuestMark)) == \(hex(CompiledFirewall.fromGuestMark)) iifname vmap { \(from) }",
                origin: "guest zones: traffic leaving a guest NIC")
            add("forward", "meta mark & \(hex(CompiledFirewall.toGuestMark)) == \(hex(CompiledFirewall.toGuestMark)) oifname vmap { \(to) }",
                origin: "guest zones: traffic to a guest NIC")
        }
        add("forward", "meta mark & \(hex(CompiledFirewall.bridgedMark)) == \(hex(CompiledFirewall.bridgedMark)) accept",
            origin: "bridged traffic of unfirewalled ports")
        // Routed traffic: the forward zone (FORWARD rules of host.fw and cluster.fw, policy_forward).
        let forwardRules = (input.host?.rules ?? []) + cluster.rules
        let policy = Self.policy(clusterOptions["policy_forward"], default: "ACCEPT")
        if forwardRules.contains(where: { $0.direction == .forward }) || policy.uppercased() != "ACCEPT" {
            chain("host-forward")
            add("host-forward", "ct state invalid drop", origin: "conntrack: invalid")
            add("host-forward", "ct state established,related accept", origin: "conntrack: established, related")
            addRules(input.host?.rules ?? [], direction: .forward, chain: "host-forward",
                     context: Context(file: input.host, vmid: nil, chain: "host-forward"), interfaceKeyword: "iifname")
            addRules(cluster.rules, direction: .forward, chain: "host-forward",
                     context: Context(file: cluster, vmid: nil, chain: "host-forward"), interfaceKeyword: "iifname")
            addPolicy("host-forward", policy: policy, logLevel: input.host?.options["log_level_forward"], vmid: nil)
            add("forward", "jump host-forward", origin: "routed traffic")
        }
    }

    /// The bridge table marks frames for the inet forward hook (bridged at
    /// all, to a guest port, from a guest port); it filters nothing itself.
    mutating func compileBridgeMarks() {
        let clear = hex(~CompiledFirewall.markMask)
        chain("prerouting", table: "bridge", hook: "type filter hook prerouting priority -300; policy accept;")
        add("prerouting", "meta mark set meta mark & \(clear)", table: "bridge", origin: "reset pvectl's mark bits on every frame")
        chain("forward", table: "bridge", hook: "type filter hook forward priority -1; policy accept;")
        add("forward", "meta mark set meta mark | \(hex(CompiledFirewall.bridgedMark))", table: "bridge", origin: "the frame is bridged")
        // ebtables (on by default): a guest may not send frames, ARP included, as another MAC or IP.
        if FirewallCompiler.isOn(clusterOptions["ebtables"], default: true) {
            for filter in layer2Filters {
                if let mac = filter.mac {
                    add("forward", "iifname \"\(filter.device)\" ether saddr != \(mac) drop", table: "bridge", origin: filter.origin)
                }
                if let senders = filter.arpSenders {
                    add("forward", "iifname \"\(filter.device)\" arp saddr ip != { \(senders.joined(separator: ", ")) } drop",
                        table: "bridge", origin: filter.origin)
                }
            }
        }
        let devices = result.ports.map { "\"\($0.device)\"" }
        if !devices.isEmpty {
            let set = "{ \(devices.joined(separator: ", ")) }"
            add("forward", "iifname \(set) meta mark set meta mark | \(hex(CompiledFirewall.fromGuestMark))", table: "bridge",
                origin: "the frame comes from a firewalled guest NIC")
            add("forward", "oifname \(set) meta mark set meta mark | \(hex(CompiledFirewall.toGuestMark))", table: "bridge",
                origin: "the frame goes to a firewalled guest NIC")
        }
    }
}

/// `0x10000000`: marks as nft prints them.
private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}

extension FirewallConfig.Section {
    /// An empty `[IPSET name]` section, for sets the compiler derives from guest configs.
    init(ipsetNamed name: String) {
        self.init(kind: .ipset(name), comment: nil, location: SourceLocation(file: "", line: 0))
    }
}
