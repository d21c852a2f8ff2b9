/// The attribute model Proxmox VE builds from `/etc/network/interfaces`, and
/// the writer that turns it back into the file Proxmox writes.
///
/// Proxmox keeps each interface as a flat hash: `bridge_ports`, `bond_mode`,
/// `address`/`address6`, `method`/`method6`, `families`, unknown option lines
/// by family... This type reproduces that model (attribute names included) so
/// `pvectl fmt` gives byte for byte what Proxmox itself would write.
public struct PVENetworkConfig: Hashable, Sendable {
    public struct Interface: Hashable, Sendable {
        /// Scalar attributes, spelled as Proxmox spells them internally.
        public var attributes: [String: String] = [:]
        /// One entry per `iface` stanza; nil for a stanza without a family.
        public var families: [String?] = []
        /// Option lines Proxmox does not interpret, by family (inet, inet6).
        public var options: [String] = []
        public var options6: [String] = []
        public var vxlanRemoteIPs: [String] = []
        public var priority: Int?

        public init() {}

        public subscript(key: String) -> String? {
            get { attributes[key] }
            set { attributes[key] = newValue }
        }

        public var type: String { attributes["type"] ?? "" }

        func isTrue(_ key: String) -> Bool { perlTruthy(attributes[key]) }
    }

    /// A physical or virtual link as `ip -details -json link` reports it.
    public struct IPLink: Hashable, Sendable {
        public var name: String
        public var linkType: String
        public var infoKind: String?
        public var altnames: [String]

        public init(name: String, linkType: String, infoKind: String? = nil, altnames: [String] = []) {
            self.name = name
            self.linkType = linkType
            self.infoKind = infoKind
            self.altnames = altnames
        }

        /// Proxmox counts an ethernet link without a virtual kind as a NIC.
        public var isPhysical: Bool { linkType == "ether" && infoKind == nil }
    }

    public var interfaces: [String: Interface]
    /// Lines kept as they are (`source`, `mapping` ...) with their position in the file.
    public var extraLines: [(priority: Int, line: String)]

    public static func == (lhs: PVENetworkConfig, rhs: PVENetworkConfig) -> Bool {
        lhs.interfaces == rhs.interfaces && lhs.extraLines.map(\.line) == rhs.extraLines.map(\.line)
            && lhs.extraLines.map(\.priority) == rhs.extraLines.map(\.priority)
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(interfaces) }

    static let bondModes: [String: String] = [
        "0": "balance-rr", "1": "active-backup", "2": "balance-xor", "3": "broadcast",
        "4": "802.3ad", "5": "balance-tlb", "6": "balance-alb",
    ]
    static let ovsBondModes: Set<String> = ["active-backup", "balance-slb", "lacp-balance-slb", "lacp-balance-tcp"]

    static let alternativeNames: [String: String] = [
        "ovs_mtu": "mtu", "bond-slaves": "slaves", "bond_slaves": "slaves",
        "bond-xmit-hash-policy": "bond_xmit_hash_policy", "bond-mode": "bond_mode",
        "bond-miimon": "bond_miimon", "bridge-vlan-aware": "bridge_vlan_aware",
        "bridge-fd": "bridge_fd", "bridge-stp": "bridge_stp", "bridge-ports": "bridge_ports",
        "bridge-vids": "bridge_vids",
    ]

    static let simpleOptions: Set<String> = [
        "mtu", "ovs_type", "ovs_options", "ovs_bridge", "ovs_bonds", "ovs_ports", "bridge_fd",
        "bridge_vids", "bridge-access", "bridge-learning", "bridge-arp-nd-suppress",
        "bridge-unicast-flood", "bridge-multicast-flood", "bridge-disable-mac-learning",
        "bond_miimon", "bond_xmit_hash_policy", "bond-primary", "link-type", "uplink-id",
        "vlan-protocol", "vlan-raw-device", "vlan-id", "vxlan-id", "vxlan-svcnodeip",
        "vxlan-physdev", "vxlan-local-tunnelip",
    ]

    /// Names Proxmox treats as physical NICs when no link information is known.
    public static func looksPhysical(_ name: String) -> Bool {
        func digits(_ s: Substring) -> Bool { !s.isEmpty && s.allSatisfy(\.isASCII) && s.allSatisfy(\.isNumber) }
        if name.hasPrefix("eth") { return digits(name.dropFirst(3)) }
        if name.hasPrefix("nic") || name.hasPrefix("if") { return digits(name.dropFirst(name.hasPrefix("nic") ? 3 : 2)) }
        if name.hasPrefix("en") || name.hasPrefix("ib") {
            let rest = name.dropFirst(2)
            return !rest.isEmpty && !rest.contains(":") && !rest.contains(".")
        }
        return false
    }

    /// Reads the file the way Proxmox does. `ipLinks` and `active` describe the
    /// host (NICs that exist, interfaces that are up); pass empty ones to read
    /// the file alone.
    public init(parsing text: String, ipLinks: [String: IPLink] = [:], active: [String] = []) {
        var interfaces: [String: Interface] = [:]
        var extra: [(Int, String)] = []
        var priority = 2
        var lines = splitLines(text)[...]
        if text.unicodeScalars.last == "\n" { lines = lines.dropLast() }

        func words(_ s: Substring) -> [String] { s.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init) }

        var pendingLine: Substring? = nil
        while let raw = pendingLine ?? lines.popFirst() {
            pendingLine = nil
            let line = raw.withoutCarriageReturn
            let stripped = line[line.firstNonBlankIndex...]
            if stripped.first == "#" { continue }
            let tokens = words(stripped)
            if let first = tokens.first, ["allow-auto", "auto", "allow-ovs", "allow-hotplug"].contains(first), tokens.count > 1 {
                for name in tokens.dropFirst() { interfaces[name, default: Interface()]["autostart"] = "1" }
                continue
            }
            if tokens.first == "iface", tokens.count == 2 || (tokens.count == 4 && (tokens[2] == "inet" || tokens[2] == "inet6")) {
                let name = tokens[1]
                let family: String? = tokens.count == 4 ? tokens[2] : nil
                let suffix: String? = family.map { $0 == "inet6" ? "6" : "" }
                var d = interfaces[name] ?? Interface()
                if d.priority == nil || d.priority == 0 { d.priority = priority; priority += 1 }
                d.families.append(family)
                var familyComments: String? = nil
                var familyOptions: [String] = []
                while let next = lines.popFirst() {
                    let body = String(next.withoutCarriageReturn).trimmedTrailing
                    let content = body[body.firstNonBlankIndex...]
                    if content.first == "#" {
                        let comment = String(content.dropFirst()).trimmedTrailing
                        if suffix != nil {
                            familyComments = (familyComments ?? "") + comment + "\n"
                        } else {
                            d["comments"] = (d["comments"] ?? "") + comment + "\n"
                        }
                        continue
                    }
                    if InterfacesFile.isStanzaStart(Substring(body)) {
                        pendingLine = next
                        break
                    }
                    let parts = words(content)
                    guard parts.count >= 2 else {
                        pendingLine = next
                        break
                    }
                    var id = parts[0]
                    let valueStart = content.dropFirst(parts[0].count).firstNonBlankIndex
                    let value = String(content[valueStart...])
                    id = PVENetworkConfig.alternativeNames[id] ?? id
                    switch id {
                    case "address", "netmask", "broadcast", "gateway":
                        if let suffix {
                            d[id + suffix] = value
                        } else if id != "netmask" {
                            d[value.contains(":") ? id + "6" : id] = value
                        } else {
                            d[id] = value
                        }
                    case _ where PVENetworkConfig.simpleOptions.contains(id):
                        d[id] = value
                    case "slaves", "bridge_ports":
                        var devices: Set<String> = []
                        for port in value.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                            if port == "none" {
                                if id == "bridge_ports" { d["is_empty_bridge"] = "1" }
                                continue
                            }
                            devices.insert(String(port))
                        }
                        let joined = devices.sorted().joined(separator: " ")
                        if perlTruthy(d[id]) {
                            if !joined.isEmpty { d[id] = d[id]! + " " + joined }
                        } else {
                            d[id] = joined
                        }
                    case "bridge_stp":
                        let v = value.trimmed.lowercased()
                        d[id] = (v == "on" || v == "yes") ? "on" : "off"
                    case "bridge_vlan_aware":
                        d[id] = "1"
                    case "bond_mode":
                        d[id] = PVENetworkConfig.bondModes[value] ?? value
                    case "vxlan-remoteip":
                        d.vxlanRemoteIPs.append(value)
                    default:
                        if suffix != nil { familyOptions.append(String(content)) } else { d.options.append(String(content)) }
                    }
                }
                if let suffix {
                    d["method" + suffix] = tokens[3]
                    if let familyComments { d["comments" + suffix] = familyComments }
                    if !familyOptions.isEmpty {
                        if suffix == "6" { d.options6 = familyOptions } else { d.options = familyOptions }
                    }
                }
                interfaces[name] = d
                continue
            }
            if line.contains(where: { $0.isLetter || $0.isNumber || $0 == "_" }) {
                extra.append((priority, String(line)))
                priority += 1
            }
        }

        // NICs the host has exist even when the file does not mention them.
        outer: for (name, link) in ipLinks where link.isPhysical {
            for alt in link.altnames where interfaces[alt] != nil {
                interfaces[alt]!["exists"] = "1"
                continue outer
            }
            interfaces[name, default: Interface()]["exists"] = "1"
        }
        for name in active where interfaces[name] != nil { interfaces[name]!["active"] = "1" }
        if interfaces["lo"] == nil {
            var lo = Interface()
            lo.priority = 1
            lo["method"] = "loopback"
            lo["type"] = "loopback"
            lo["autostart"] = "1"
            interfaces["lo"] = lo
        }
        var altnameOwner: [String: String] = [:]
        for (name, link) in ipLinks { for alt in link.altnames { altnameOwner[alt] = name } }

        for name in interfaces.keys.sorted() {
            var d = interfaces[name]!
            d["type"] = "unknown"
            let link = ipLinks[altnameOwner[name] ?? name]
            if d["bridge_ports"] != nil || d["is_empty_bridge"] != nil {
                d["is_empty_bridge"] = nil
                d["type"] = "bridge"
                if d["bridge_stp"] == nil { d["bridge_stp"] = "off" }
                if d["bridge_fd"] == nil && d["bridge_stp"] == "off" { d["bridge_fd"] = "0" }
            } else if d["ovs_type"] == "OVSBridge" {
                d["type"] = "OVSBridge"
            } else if name.hasPrefix("bond"), Int(name.dropFirst(4)) != nil {
                if !d.isTrue("ovs_type") {
                    d["type"] = "bond"
                } else if d["ovs_type"] == "OVSBond" {
                    d["type"] = "OVSBond"
                    var mode = PVENetworkConfig.extractOVSOption(&d, "bond_mode")
                    let lacp = PVENetworkConfig.extractOVSOption(&d, "lacp")
                    if lacp == "active" && mode == "balance-slb" { mode = "lacp-balance-slb" }
                    if mode == "balance-tcp" { mode = "lacp-balance-tcp" }
                    d["bond_mode"] = mode
                    if let tag = PVENetworkConfig.extractOVSOption(&d, "tag") { d["ovs_tag"] = tag }
                }
            } else if let colon = name.lastIndex(of: ":"), Int(name[name.index(after: colon)...]) != nil, colon > name.startIndex {
                d["type"] = "alias"
                let parent = String(name[..<colon])
                if interfaces[parent] != nil {
                    d["exists"] = interfaces[parent]!["exists"]
                } else {
                    interfaces[parent] = Interface()
                    interfaces[parent]!["exists"] = "0"
                    d["exists"] = "0"
                }
            } else if let dot = name.lastIndex(of: "."), dot > name.startIndex,
                      let vid = Int(name[name.index(after: dot)...]), !name[name.index(after: dot)...].contains("+") {
                d["type"] = "vlan"
                let device = String(name[..<dot])
                if !d.isTrue("vlan-raw-device") { d["vlan-raw-device"] = device }
                if vid != 0 { d["vlan-id"] = String(name[name.index(after: dot)...]) }
                PVENetworkConfig.inheritExists(&d, from: d["vlan-raw-device"]!, in: &interfaces)
            } else if d.isTrue("vlan-raw-device") {
                d["type"] = "vlan"
                if name.hasPrefix("vlan"), let vid = Int(name.dropFirst(4)), vid != 0 {
                    d["vlan-id"] = String(name.dropFirst(4))
                }
                PVENetworkConfig.inheritExists(&d, from: d["vlan-raw-device"]!, in: &interfaces)
            } else if link?.isPhysical == true || PVENetworkConfig.looksPhysical(name) {
                if !d.isTrue("ovs_type") {
                    d["type"] = "eth"
                } else if d["ovs_type"] == "OVSPort" {
                    d["type"] = "OVSPort"
                    if let tag = PVENetworkConfig.extractOVSOption(&d, "tag") { d["ovs_tag"] = tag }
                }
            } else if name == "lo" {
                d["type"] = "loopback"
            } else if d.isTrue("vxlan-id") {
                d["type"] = "vxlan"
            } else if let ovsType = d["ovs_type"] {
                if ovsType == "OVSIntPort" {
                    d["type"] = "OVSIntPort"
                    if let tag = PVENetworkConfig.extractOVSOption(&d, "tag") { d["ovs_tag"] = tag }
                }
            } else if d["link-type"] == "dummy" {
                d["type"] = "dummy"
            }

            for suffix in ["", "6"] {
                guard let address = d["address" + suffix], perlTruthy(address) else { continue }
                if let (base, mask) = PVENetworkConfig.splitCIDR(address) {
                    d["cidr" + suffix] = address
                    d["address" + suffix] = base
                    d["netmask" + suffix] = mask
                } else if let cidr = PVENetworkConfig.cidr(address, d["netmask" + suffix]) {
                    d["cidr" + suffix] = cidr
                    if suffix.isEmpty { d["netmask"] = PVENetworkConfig.splitCIDR(cidr)!.mask }
                } else {
                    d["cidr" + suffix] = address + (suffix.isEmpty ? "/32" : "/128")
                }
            }
            if !d.isTrue("method") { d["method"] = "manual" }
            if !d.isTrue("method6") { d["method6"] = "manual" }
            if let comments6 = d.attributes.removeValue(forKey: "comments6") {
                d["comments"] = (d["comments"] ?? "") + comments6
            }
            if d.families.isEmpty { d.families = ["inet"] }
            interfaces[name] = d
        }

        // OVS bridges imply `allow-BRIDGE PORT` lines; drop those for its ports.
        extra = extra.compactMap { entry in
            let (pri, line) = entry
            let tokens = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let first = tokens.first, first.hasPrefix("allow-"), tokens.count > 1 else { return entry }
            if first == "allow-ovs" { return nil }
            let bridge = String(first.dropFirst(6))
            var ports = Array(tokens.dropFirst())
            if let br = interfaces[bridge] {
                let inBridge = Set((br["ovs_ports"] ?? "").split(separator: " ").map(String.init))
                ports.removeAll { inBridge.contains($0) }
            }
            return ports.isEmpty ? nil : (pri, "allow-\(bridge) " + ports.joined(separator: " "))
        }
        self.interfaces = interfaces
        self.extraLines = extra
    }

    static func inheritExists(_ d: inout Interface, from parent: String, in interfaces: inout [String: Interface]) {
        if let p = interfaces[parent] {
            d["exists"] = p["exists"]
        } else {
            interfaces[parent] = Interface()
            interfaces[parent]!["exists"] = "0"
            d["exists"] = "0"
        }
    }

    static func splitCIDR(_ address: String) -> (base: String, mask: String)? {
        guard let slash = address.lastIndex(of: "/") else { return nil }
        let mask = address[address.index(after: slash)...]
        guard !mask.isEmpty, mask.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return (String(address[..<slash]), String(mask))
    }

    static func cidr(_ address: String, _ mask: String?) -> String? {
        if splitCIDR(address) != nil { return address }
        guard let mask, perlTruthy(mask) else { return nil }
        if mask.allSatisfy({ $0.isASCII && $0.isNumber }) { return "\(address)/\(mask)" }
        if let bits = netmaskBits(mask) { return "\(address)/\(bits)" }
        return nil
    }

    /// Prefix length of a dotted IPv4 netmask such as 255.255.255.0.
    public static func netmaskBits(_ mask: String) -> Int? {
        let octets = mask.split(separator: ".").compactMap { UInt8($0) }
        guard octets.count == 4, mask.split(separator: ".").count == 4 else { return nil }
        let value = octets.reduce(UInt32(0)) { ($0 << 8) | UInt32($1) }
        let bits = value.nonzeroBitCount
        guard bits > 0 else { return nil }
        return value == (UInt32.max << (32 - bits)) ? bits : nil
    }

    static func ovsOptions(_ d: Interface) -> [(String, String)] {
        (d["ovs_options"] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { kv in
            guard let eq = kv.firstIndex(of: "="), eq != kv.startIndex else { return nil }
            return (String(kv[..<eq]), String(kv[kv.index(after: eq)...]))
        }
    }

    static func extractOVSOption(_ d: inout Interface, _ name: String) -> String? {
        var options = ovsOptions(d)
        let value = options.last { $0.0 == name }?.1
        options.removeAll { $0.0 == name }
        d["ovs_options"] = options.isEmpty ? nil : options.map { "\($0)=\($1)" }.joined(separator: " ")
        return value
    }

    static func setOVSOption(_ d: inout Interface, _ name: String, _ value: String?) {
        var options = ovsOptions(d)
        options.removeAll { $0.0 == name }
        if let value, perlTruthy(value) { options.append((name, value)) }
        d["ovs_options"] = options.isEmpty ? nil : options.map { "\($0)=\($1)" }.joined(separator: " ")
    }

    public enum WriteError: Error, Equatable, CustomStringConvertible {
        case invalid(String)
        public var description: String { if case .invalid(let m) = self { m } else { "" } }
    }

    static let header = """
    # network interface settings; autogenerated
    # Please do NOT modify this file directly, unless you know what
    # you're doing.
    #
    # If you want to manage parts of the network configuration manually,
    # please utilize the 'source' or 'source-directory' directives to do
    # so.
    # PVE will preserve these directives, but will NOT read its network
    # configuration from sourced files, so do not attempt to move any of
    # the PVE managed interfaces into external files!


    """

    static let typePriority: [String: Int] = [
        "loopback": 100000, "dummy": 100000, "eth": 200000, "OVSPort": 200000, "OVSIntPort": 300000,
        "OVSBond": 400000, "bond": 400000, "bridge": 500000, "OVSBridge": 500000, "vlan": 600000, "vxlan": 600000,
    ]

    /// Writes the file as Proxmox VE does (ifupdown2 mode). Does not modify `self`.
    public func write() throws(WriteError) -> String {
        var ifaces = interfaces
        var usedPorts: [String: String] = [:]
        for name in ifaces.keys.sorted() {
            var d = ifaces[name]!
            let cidr = d.attributes.removeValue(forKey: "cidr")
            let cidr6 = d.attributes.removeValue(forKey: "cidr6")
            if d["address"] == nil { d["address"] = cidr }
            if d["address6"] == nil { d["address6"] = cidr6 }
            ifaces[name] = d
            var ports: [String] = []
            for key in ["bridge_ports", "ovs_ports", "slaves", "ovs_bonds"] where d.isTrue(key) {
                ports += d[key]!.split(whereSeparator: { $0 == " " || $0 == "," || $0 == ";" || $0 == "\t" }).map(String.init)
            }
            for port in ports {
                if let owner = usedPorts[port], owner != name {
                    throw .invalid("port '\(port)' is already used on interface '\(owner)'")
                }
                usedPorts[port] = name
            }
        }
        let ovsPortTypes: Set<String> = ["OVSPort", "OVSIntPort", "OVSBond"]
        for name in ifaces.keys.sorted() where ovsPortTypes.contains(ifaces[name]!.type) {
            guard let bridge = usedPorts[name], let bd = ifaces[bridge] else {
                var eth = Interface()
                eth["type"] = "eth"
                eth["exists"] = "1"
                eth["method"] = "manual"
                eth.families = ["inet"]
                ifaces[name] = eth
                continue
            }
            if bd.type != "OVSBridge" { ifaces[name] = nil }
        }
        for name in ifaces.keys.sorted() where ifaces[name]!.type == "OVSBridge" && ifaces[name]!.isTrue("ovs_ports") {
            for port in ifaces[name]!["ovs_ports"]!.split(separator: " ").map(String.init) {
                guard var n = ifaces[port] else { throw .invalid("OVS bridge '\(name)' - unable to find port '\(port)'") }
                n["autostart"] = "0"
                if n.type == "eth" {
                    n["type"] = "OVSPort"
                    n["ovs_bridge"] = name
                } else if ovsPortTypes.contains(n.type) {
                    n["ovs_bridge"] = name
                } else {
                    throw .invalid("interface '\(port)' is not defined as OVS port/bond")
                }
                ifaces[port] = n
                try checkMTU(ifaces, parent: name, child: port)
            }
        }
        for name in ifaces.keys.sorted() where ifaces[name]!.type == "OVSBond" && ifaces[name]!.isTrue("ovs_bonds") {
            for port in ifaces[name]!["ovs_bonds"]!.split(separator: " ").map(String.init) {
                guard ifaces[port] != nil else { throw .invalid("OVS bond '\(name)' - unable to find slave '\(port)'") }
                ifaces[port]!["autostart"] = "1"
                if ifaces[port]!.type != "eth" {
                    throw .invalid("OVS bond '\(name)' - wrong interface type on slave '\(port)' ('\(ifaces[port]!.type)' != 'eth')")
                }
                try checkMTU(ifaces, parent: name, child: port)
            }
        }
        for name in ifaces.keys.sorted() where ifaces[name]!.type == "bond" && ifaces[name]!.isTrue("slaves") {
            let d = ifaces[name]!
            var primaryIsSlave = false
            for port in d["slaves"]!.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init) {
                guard ifaces[port] != nil else { throw .invalid("bond '\(name)' - unable to find slave '\(port)'") }
                ifaces[port]!["autostart"] = "1"
                let t = ifaces[port]!.type
                if t != "eth" && t != "bond" {
                    throw .invalid("bond '\(name)' - wrong interface type on slave '\(port)' ('\(t)' != 'eth or bond')")
                }
                try checkMTU(ifaces, parent: name, child: port)
                if d["bond-primary"] == port { primaryIsSlave = true }
            }
            if d.isTrue("bond-primary") && !primaryIsSlave {
                throw .invalid("bond '\(name)' - bond-primary interface is not a slave")
            }
        }
        var vxlanIDs: [String: String] = [:]
        for name in ifaces.keys.sorted() {
            let d = ifaces[name]!
            if d.type == "vxlan", d.isTrue("vxlan-id") {
                let id = d["vxlan-id"]!
                if let other = vxlanIDs[id] { throw .invalid("iface \(name) - duplicate vxlan-id \(id) already used in \(other)") }
                vxlanIDs[id] = name
            }
            let ips = [d["vxlan-svcnodeip"] != nil, !d.vxlanRemoteIPs.isEmpty, d["vxlan-local-tunnelip"] != nil].filter { $0 }.count
            if ips > 1 {
                throw .invalid("iface \(name) - vxlan-svcnodeip, vxlan-remoteip and vxlan-localtunnelip are mutually exclusive")
            }
            if (d["vxlan-svcnodeip"] != nil) != (d["vxlan-physdev"] != nil) {
                throw .invalid("iface \(name) - vxlan-svcnodeip and vxlan-physdev must be define together")
            }
        }
        for name in ifaces.keys.sorted() where ifaces[name]!.type == "vlan" {
            var d = ifaces[name]!
            let parent: String
            let vid: Int
            if let dot = name.lastIndex(of: "."), let id = Int(name[name.index(after: dot)...]) {
                parent = String(name[..<dot])
                vid = id
                d["vlan-raw-device"] = nil
                d["vlan-id"] = nil
            } else {
                guard d.isTrue("vlan-raw-device") else { throw .invalid("missing vlan-raw-device option") }
                parent = d["vlan-raw-device"]!
                if name.hasPrefix("vlan"), let id = Int(name.dropFirst(4)) {
                    vid = id
                    d["vlan-id"] = nil
                } else {
                    guard d.isTrue("vlan-id"), let id = Int(d["vlan-id"]!) else { throw .invalid("missing vlan-id option") }
                    vid = id
                }
            }
            ifaces[name] = d
            if vid > 4094 { throw .invalid("vlan '\(name)' - vlan-id \(vid) should be <= 4094") }
            guard let p = ifaces[parent] else { throw .invalid("vlan '\(name)' - unable to find parent '\(parent)'") }
            if !["eth", "bridge", "bond", "vlan"].contains(p.type) {
                throw .invalid("vlan '\(name)' - wrong interface type on parent '\(parent)' ('\(p.type)' != 'eth|bond|bridge|vlan' )")
            }
            try checkMTU(ifaces, parent: parent, child: name)
        }
        var uplinks: [String: String] = [:]
        for name in ifaces.keys.sorted() {
            let d = ifaces[name]!
            guard d.isTrue("uplink-id") else { continue }
            let id = d["uplink-id"]!
            if d.type != "eth" && d.type != "bond" {
                throw .invalid("iface '\(name)' - uplink-id \(id) is only allowed on physical and linux bond interfaces")
            }
            if let other = uplinks[id] { throw .invalid("iface '\(name)' - uplink-id \(id) is already assigned on '\(other)'") }
            uplinks[id] = name
        }
        var bridgePorts: [String: String] = [:]
        var copy = ifaces
        for name in ifaces.keys.sorted() where ifaces[name]!.type == "bridge" {
            for port in (ifaces[name]!["bridge_ports"] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init) {
                if let dot = port.lastIndex(of: "."), Int(port[port.index(after: dot)...]) != nil, copy[port] == nil {
                    var vlan = Interface()
                    vlan["type"] = "vlan"
                    vlan["method"] = "manual"
                    vlan["method6"] = "manual"
                    if let mtu = copy[String(port[..<dot])]?["mtu"] { vlan["mtu"] = mtu }
                    copy[port] = vlan
                }
                guard let n = copy[port] else { throw .invalid("bridge '\(name)' - unable to find bridge port '\(port)'") }
                if (n["method"] == "static" && n["address"] != "0.0.0.0") || (n["method6"] == "static" && n["address6"] != "::") {
                    throw .invalid("iface \(port) - ip address can't be set on interface if bridged in \(name)")
                }
                try checkMTU(copy, parent: port, child: name)
                bridgePorts[port] = name
            }
        }
        for name in ifaces.keys.sorted() {
            let d = ifaces[name]!
            for key in ["bridge-learning", "bridge-arp-nd-suppress", "bridge-unicast-flood", "bridge-multicast-flood", "bridge-access"]
                where d.isTrue(key) && bridgePorts[name] == nil {
                throw .invalid("iface \(name) - \(key): bridge port specific options can be used only on interfaces attached to a bridge")
            }
            if d.isTrue("bridge-access"), !(bridgePorts[name].flatMap { ifaces[$0]?["bridge_vlan_aware"] } != nil) {
                throw .invalid("iface \(name) - bridge-access option can be only used if interface is in a vlan aware bridge")
            }
        }

        func typePriority(_ name: String) -> Int? {
            let root = String(name.split(whereSeparator: { $0 == "." || $0 == ":" }).first ?? Substring(name))
            let level = name.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "." || $0 == ":" }).count - 1
            guard let type = ifaces[root]?["type"], !type.isEmpty, type != "unknown" else { return nil }
            return (PVENetworkConfig.typePriority[type] ?? 0) + level
        }
        let order = ifaces.keys.sorted { a, b in
            var ta = typePriority(a)
            var tb = typePriority(b)
            if ta == nil || tb == nil { ta = 0; tb = 0 }
            let pa = ta! + (ifaces[a]!.priority ?? 50000)
            let pb = tb! + (ifaces[b]!.priority ?? 50000)
            return pa != pb ? pa < pb : a < b
        }

        var out = PVENetworkConfig.header
        var options = extraLines[...]
        for name in order {
            var d = ifaces[name]!
            let pri = d.priority ?? 0
            if let first = options.first, first.priority < pri {
                while let next = options.first, next.priority < pri {
                    out += next.line + "\n"
                    options = options.dropFirst()
                }
                out += "\n"
            }
            if d.isTrue("autostart") { out += "auto \(name)\n" }
            if d.families.count == 1, d.families[0] == "inet6" {
                d["comments6"] = d.attributes.removeValue(forKey: "comments")
            }
            var first = true
            for family in d.families {
                out += try PVENetworkConfig.stanza(name, &d, family: family, firstBlock: first)
                first = false
            }
            ifaces[name] = d
        }
        for entry in options { out += entry.line + "\n" }
        return out
    }

    private func checkMTU(_ ifaces: [String: Interface], parent: String, child: String) throws(WriteError) {
        guard let cmtuText = ifaces[child]?["mtu"], perlTruthy(cmtuText), let cmtu = Int(cmtuText) else { return }
        let p = ifaces[parent]
        var pmtu = Int(p?["mtu"] ?? "") ?? 0
        if p?.type == "bond" && pmtu == 0 { pmtu = cmtu }
        if pmtu == 0 { pmtu = 1500 }
        if pmtu < cmtu {
            throw .invalid("interface '\(parent)' - mtu \(pmtu) is lower than '\(child)' - mtu \(cmtu)")
        }
    }

    private static func stanza(_ name: String, _ d: inout Interface, family: String?, firstBlock: Bool) throws(WriteError) -> String {
        let suffix = family.map { $0 == "inet6" ? "6" : "" }
        if let suffix, !d.isTrue("method" + suffix) { return "" }
        var raw = "iface \(name)"
        if let family, let suffix { raw += " \(family) \(d["method" + suffix]!)" }
        raw += "\n"
        func addAddress(_ sfx: String) {
            if let address = d["address" + sfx], perlTruthy(address) {
                var text = address
                if splitCIDR(address) == nil, let mask = d["netmask" + sfx], perlTruthy(mask) {
                    if mask.allSatisfy({ $0.isASCII && $0.isNumber }) {
                        text += "/" + mask
                    } else if let bits = netmaskBits(mask) {
                        text += "/\(bits)"
                    }
                }
                raw += "\taddress \(text)\n"
            }
            if d.isTrue("gateway" + sfx) { raw += "\tgateway \(d["gateway" + sfx]!)\n" }
        }
        if let suffix { addAddress(suffix) } else { addAddress(""); addAddress("6") }

        var done: Set<String> = [
            "type", "priority", "method", "active", "exists", "comments", "autostart", "options", "address",
            "netmask", "gateway", "broadcast", "method6", "families", "options6", "comments6", "address6",
            "netmask6", "gateway6", "broadcast6", "uplink-id",
        ]
        if firstBlock {
            switch d.type {
            case "bridge":
                let ports = perlTruthy(d["bridge_ports"]) ? d["bridge_ports"]! : "none"
                raw += "\tbridge-ports \(ports.split(whereSeparator: { $0 == ";" || $0 == "," || $0 == " " || $0 == "\t" }).joined(separator: " "))\n"
                let stp = d["bridge_stp"] ?? "off"
                raw += "\tbridge-stp \(stp)\n"
                if let fd = d["bridge_fd"] {
                    let value = Double(fd) ?? 0
                    if stp == "off" || (value >= 2 && value <= 30) { raw += "\tbridge-fd \(fd)\n" }
                } else if stp == "off" {
                    raw += "\tbridge-fd 0\n"
                }
                if d["bridge_vlan_aware"] != nil {
                    raw += "\tbridge-vlan-aware yes\n"
                    raw += "\tbridge-vids \(perlTruthy(d["bridge_vids"]) ? d["bridge_vids"]! : "2-4094")\n"
                }
                if d.isTrue("mtu") { raw += "\tmtu \(d["mtu"]!)\n" }
                done.formUnion(["bridge_ports", "bridge_stp", "bridge_fd", "bridge_vlan_aware", "bridge_vids", "mtu", "bridge-disable-mac-learning"])
            case "bond":
                let slaves = (d["slaves"] ?? "").split(whereSeparator: { $0 == ";" || $0 == "," || $0 == " " || $0 == "\t" }).joined(separator: " ")
                if d["slaves"] != nil { d["slaves"] = slaves }
                raw += "\tbond-slaves \(slaves.isEmpty ? "none" : slaves)\n"
                raw += "\tbond-miimon \(d["bond_miimon"] ?? "100")\n"
                raw += "\tbond-mode \(d["bond_mode"] ?? "balance-rr")\n"
                if let mode = d["bond_mode"], d.isTrue("bond_xmit_hash_policy"), mode == "balance-xor" || mode == "802.3ad" {
                    raw += "\tbond-xmit-hash-policy \(d["bond_xmit_hash_policy"]!)\n"
                }
                if d["bond_mode"] == "active-backup", d.isTrue("bond-primary") {
                    raw += "\tbond-primary \(d["bond-primary"]!)\n"
                }
                if d.isTrue("mtu") { raw += "\tmtu \(d["mtu"]!)\n" }
                done.formUnion(["slaves", "bond_miimon", "bond_mode", "bond_xmit_hash_policy", "bond-primary", "mtu"])
            case "vlan":
                if let proto = d["vlan-protocol"], perlTruthy(proto), proto != "802.1ad", proto != "802.1q" {
                    throw .invalid("\(name): wrong vlan-protocol \(proto)")
                }
            case "vxlan":
                for key in ["vxlan-id", "vxlan-svcnodeip", "vxlan-physdev", "vxlan-local-tunnelip"] {
                    if let v = d[key] { raw += "\t\(key) \(v)\n" }
                    done.insert(key)
                }
                for ip in d.vxlanRemoteIPs { raw += "\tvxlan-remoteip \(ip)\n" }
                if d.isTrue("mtu") { raw += "\tmtu \(d["mtu"]!)\n" }
                done.insert("mtu")
            case "OVSBridge":
                raw += "\tovs_type OVSBridge\n"
                if d.isTrue("ovs_ports") { raw += "\tovs_ports \(d["ovs_ports"]!)\n" }
                if d.isTrue("mtu") { raw += "\tovs_mtu \(d["mtu"]!)\n" }
                done.formUnion(["ovs_type", "ovs_ports", "mtu"])
            case "OVSPort", "OVSIntPort", "OVSBond":
                d["autostart"] = "0"
                if let tag = d["ovs_tag"] { setOVSOption(&d, "tag", tag) }
                done.insert("ovs_tag")
                if d.type == "OVSBond" {
                    if !d.isTrue("bond_mode") { d["bond_mode"] = "active-backup" }
                    let mode = d["bond_mode"]!
                    guard ovsBondModes.contains(mode) else { throw .invalid("OVS does not support bond mode '\(mode)") }
                    switch mode {
                    case "lacp-balance-slb":
                        setOVSOption(&d, "lacp", "active")
                        setOVSOption(&d, "bond_mode", "balance-slb")
                    case "lacp-balance-tcp":
                        setOVSOption(&d, "lacp", "active")
                        setOVSOption(&d, "bond_mode", "balance-tcp")
                    default:
                        setOVSOption(&d, "lacp", nil)
                        setOVSOption(&d, "bond_mode", mode)
                    }
                    done.insert("bond_mode")
                    if d.isTrue("ovs_bonds") { raw += "\tovs_bonds \(d["ovs_bonds"]!)\n" }
                    done.insert("ovs_bonds")
                }
                raw += "\tovs_type \(d.type)\n"
                done.insert("ovs_type")
                if let bridge = d["ovs_bridge"], perlTruthy(bridge) {
                    raw = "auto \(name)\n" + raw
                    raw += "\tovs_bridge \(bridge)\n"
                    done.insert("ovs_bridge")
                }
                if d.isTrue("mtu") { raw += "\tovs_mtu \(d["mtu"]!)\n" }
                done.insert("mtu")
            default:
                break
            }
            for key in d.attributes.keys.sorted() where !done.contains(key) && d.isTrue(key) {
                raw += "\t\(key) \(d[key]!)\n"
            }
        }
        func addOptionsAndComments(_ sfx: String) {
            for option in sfx == "6" ? d.options6 : d.options { raw += "\t\(option)\n" }
            // Like Perl's split: empty trailing fields are dropped.
            var comments = splitLines(d["comments" + sfx] ?? "")
            while comments.last?.isEmpty == true { comments.removeLast() }
            for comment in comments { raw += "#\(comment)\n" }
        }
        if let suffix { addOptionsAndComments(suffix) } else { addOptionsAndComments(""); addOptionsAndComments("6") }
        raw += "\n"
        return raw
    }
}

/// Perl's idea of truth for a scalar: undef, "" and "0" are false.
func perlTruthy(_ value: String?) -> Bool {
    guard let value else { return false }
    return !value.isEmpty && value != "0"
}
