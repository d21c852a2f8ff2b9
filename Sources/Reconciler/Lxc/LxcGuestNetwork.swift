import Foundation
import Resources

/// `/etc/network/interfaces` inside Debian, Devuan and Alpine containers: the stanzas of the config's NICs are
/// rewritten in place (their other options kept, a gateway outside the subnet as a marked route block), the file's
/// other stanzas and comments kept, new NICs appended, and a loopback added when the file has no `auto lo`.
struct DebianInterfaces {
    struct Managed {
        var address: String?
        var netmask: String?
        var cidr: String?
        var gateway: String?
        var needsRoute = false
        var address6: String?
        var prefix6: String?
        var cidr6: String?
        var gateway6: String?
        var needsRoute6 = false

        var isEmpty: Bool { address == nil && gateway == nil && address6 == nil && gateway6 == nil }

        /// One address family's side: what a stanza of that family prints.
        struct FamilyView {
            var keyword: String
            /// Methods that stand alone (`iface eth0 inet dhcp`).
            var methods: Set<String>
            var address, mask, cidr, gateway: String?
            var needsRoute: Bool
        }

        func view(_ family: Family) -> FamilyView {
            switch family {
            case .v4: FamilyView(keyword: "inet", methods: ["dhcp", "manual"], address: address, mask: netmask, cidr: cidr, gateway: gateway,
                                 needsRoute: needsRoute)
            case .v6: FamilyView(keyword: "inet6", methods: ["auto", "dhcp", "manual"], address: address6, mask: prefix6, cidr: cidr6,
                                 gateway: gateway6, needsRoute: needsRoute6)
            }
        }
    }

    enum Family { case v4, v6 }

    struct Section {
        var family: Family
        var name: String
        var attributes: [String] = []
    }

    let setup: LxcGuestSetup
    var ipv6AutoIsManual = false

    var files: any ContainerFiles { setup.files }

    /// The single-line `address <cidr>` form: Debian 10 and later, Alpine 3.13 and later.
    var modernSyntax: Bool {
        switch setup.distribution {
        case .debian(let version): return version >= 10
        case .alpine(let version):
            let parts = version.split(separator: ".").compactMap { Int($0) }
            return parts.count >= 2 && (parts[0], parts[1]) >= (3, 13)
        default: return false
        }
    }

    func managed() throws -> [String: Managed] {
        var result: [String: Managed] = [:]
        for nic in setup.nics {
            var config = Managed()
            if let ip = nic.ip {
                if ip == "dhcp" || ip == "manual" {
                    config.address = ip
                } else {
                    guard let (address, netmask) = LxcGuestSetup.ipv4CIDR(ip) else {
                        throw LxcGuestSetup.SetupError("\(nic.name): unable to parse ipv4 address/mask '\(ip)'")
                    }
                    (config.address, config.netmask, config.cidr) = (address, netmask, ip)
                }
            }
            if let gw = nic.gw {
                config.gateway = gw
                if let cidr = config.cidr { config.needsRoute = !LxcGuestSetup.inNetwork(gw, cidr) }
            }
            if var ip6 = nic.ip6 {
                if ipv6AutoIsManual && (ip6 == "auto" || ip6 == "dhcp") { ip6 = "manual" }
                if ["auto", "dhcp", "manual"].contains(ip6) {
                    config.address6 = ip6
                } else {
                    let parts = ip6.split(separator: "/", omittingEmptySubsequences: false)
                    guard parts.count == 2, IPAddress.isIPv6(String(parts[0])), !parts[1].isEmpty, parts[1].allSatisfy(\.isNumber) else {
                        throw LxcGuestSetup.SetupError("\(nic.name): unable to parse ipv6 address/prefix '\(ip6)'")
                    }
                    (config.address6, config.prefix6, config.cidr6) = (String(parts[0]), String(parts[1]), ip6)
                }
            }
            if let gw6 = nic.gw6 {
                config.gateway6 = gw6
                if let cidr6 = config.cidr6 {
                    config.needsRoute6 = !LxcGuestSetup.inNetwork(gw6, cidr6) && !LxcGuestSetup.isLinkLocal(gw6)
                }
            }
            if !config.isEmpty { result[nic.name] = config }
        }
        return result
    }

    static let legacyRoute: [[String]] = [
        ["post-up", "ip", "route", "add", "X", "dev", "D"],
        ["post-up", "ip", "route", "add", "default", "via", "X", "dev", "D"],
        ["pre-down", "ip", "route", "del", "default", "via", "X", "dev", "D"],
        ["pre-down", "ip", "route", "del", "X", "dev", "D"],
    ]

    /// A static stanza's options without an earlier gateway block: the marked one, or the four unmarked lines older
    /// versions wrote.
    static func withoutOldRoutes(_ attributes: [String]) -> [String] {
        let head = String(LxcGuestSetup.blockHead.dropLast()), tail = String(LxcGuestSetup.blockTail.dropLast())
        if attributes.contains(head) || attributes.contains(tail) {
            var kept: [String] = []
            var inside = false
            for attribute in attributes {
                if attribute == head { inside = true } else if attribute == tail { inside = false } else if !inside { kept.append(attribute) }
            }
            return kept
        }
        var kept: [String] = []
        var index = 0
        while index < attributes.count {
            if index + 4 <= attributes.count, isLegacyRun(Array(attributes[index..<index + 4])) {
                index += 4
                continue
            }
            kept.append(attributes[index])
            index += 1
        }
        return kept
    }

    static func isLegacyRun(_ lines: [String]) -> Bool {
        var gateway: String?, device: String?
        for (line, pattern) in zip(lines, legacyRoute) {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard words.count == pattern.count else { return false }
            for (word, expected) in zip(words, pattern) {
                switch expected {
                case "X":
                    if gateway == nil { gateway = word }
                    if gateway != word { return false }
                case "D":
                    if device == nil { device = word }
                    if device != word { return false }
                default:
                    if word != expected { return false }
                }
            }
        }
        return true
    }

    static func routeBlock(_ gateway: String, _ name: String) -> String {
        LxcGuestSetup.blockHead
            + "\tpost-up ip route add \(gateway) dev \(name)\n"
            + "\tpost-up ip route add default via \(gateway) dev \(name)\n"
            + "\tpre-down ip route del default via \(gateway) dev \(name)\n"
            + "\tpre-down ip route del \(gateway) dev \(name)\n"
            + LxcGuestSetup.blockTail
    }

    func write() throws {
        let managed = try managed()
        guard !managed.isEmpty else { return }
        let modern = modernSyntax
        var output = ""
        var doneAuto = Set<String>(), doneV4 = Set<String>(), doneV6 = Set<String>()

        func print(_ section: Section) {
            guard let config = managed[section.name] else { return }
            let name = section.name
            if doneAuto.insert(name).inserted { output += "auto \(name)\n" }
            if section.family == .v4 { doneV4.insert(name) } else { doneV6.insert(name) }
            let family = config.view(section.family)
            guard let address = family.address else { return }
            if family.methods.contains(address) {
                output += "iface \(name) \(family.keyword) \(address)\n\n"
                return
            }
            output += "iface \(name) \(family.keyword) static\n"
            output += modern ? "\taddress \(family.cidr ?? address)\n" : "\taddress \(address)\n\tnetmask \(family.mask ?? "")\n"
            if let gateway = family.gateway {
                output += family.needsRoute ? Self.routeBlock(gateway, name) : "\tgateway \(gateway)\n"
            }
            for attribute in Self.withoutOldRoutes(section.attributes) { output += "\t\(attribute)\n" }
            output += "\n"
        }

        var open: Section?
        func closeOpen() {
            if let section = open { print(section) }
            open = nil
        }
        if let text = files.contents("/etc/network/interfaces") {
            var lines = text.components(separatedBy: "\n")
            if text.hasSuffix("\n") { lines.removeLast() }
            if text.isEmpty { lines = [] }
            for line in lines {
                if line.hasPrefix("# --- BEGIN PVE ---") || line.hasPrefix("# --- END PVE ---") {
                    open?.attributes.append(line)
                    continue
                }
                if line.hasPrefix("#") {
                    output += line + "\n"
                    continue
                }
                if line.allSatisfy(\.isWhitespace) {
                    if open != nil { closeOpen() } else { output += line + "\n" }
                    continue
                }
                if let groups = LxcGuestSetup.match(line, #"^\s*iface\s+(\S+)\s+inet\s+(\S+)\s*$"#), let name = groups[1] {
                    closeOpen()
                    if managed[name] != nil { open = Section(family: .v4, name: name) } else { output += line + "\n" }
                    continue
                }
                if let groups = LxcGuestSetup.match(line, #"^\s*iface\s+(\S+)\s+inet6\s+(\S+)\s*$"#), let name = groups[1] {
                    closeOpen()
                    if managed[name] != nil { open = Section(family: .v6, name: name) } else { output += line + "\n" }
                    continue
                }
                if let groups = LxcGuestSetup.match(line, #"^\s*auto\s*(.*)$"#) {
                    for name in (groups[1] ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" }) { doneAuto.insert(String(name)) }
                    closeOpen()
                    output += line + "\n"
                    continue
                }
                let trimmed = line.drop { $0 == " " || $0 == "\t" }
                if trimmed.hasPrefix("mapping ") || trimmed.hasPrefix("allow-") || trimmed.hasPrefix("source ")
                    || trimmed.hasPrefix("source-directory ") {
                    closeOpen()
                    output += line + "\n"
                    continue
                }
                if open != nil, LxcGuestSetup.matches(line, #"^\s*(\S+)\s(.*)$"#) {
                    let attribute = String(trimmed)
                    let word = attribute.prefix { !$0.isWhitespace }
                    if !["address", "netmask", "gateway", "broadcast"].contains(String(word)) { open?.attributes.append(attribute) }
                    continue
                }
                output += line + "\n"
            }
            closeOpen()
        }

        var needSeparator = !output.isEmpty && !output.hasSuffix("\n\n")
        for name in managed.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            for family in [Family.v4, .v6] where !(family == .v4 ? doneV4 : doneV6).contains(name)
                && managed[name]!.view(family).address != nil {
                if needSeparator {
                    output += "\n"
                    needSeparator = false
                }
                print(Section(family: family, name: name))
            }
        }
        if !doneAuto.contains("lo") { output = "auto lo\niface lo inet loopback\niface lo inet6 loopback\n\n" + output }
        try files.makeDirectory("/etc/network", mode: 0o755)
        try setup.write("/etc/network/interfaces", output)
    }
}

extension LxcGuestSetup {
    /// CentOS 6 (upstart): ttys without hangup, and no udev in the container.
    func centosUpstartFixup() throws {
        try files.makeDirectory("/etc/init", mode: 0o755)
        if let text = files.contents("/etc/init/tty.conf") {
            let fixed = text.components(separatedBy: "\n").map { line in
                line.hasPrefix("exec /sbin/mingetty") && !line.contains("--nohangup")
                    ? "exec /sbin/mingetty --nohangup" + line.dropFirst("exec /sbin/mingetty".count) : line
            }.joined(separator: "\n")
            if fixed != text { try write("/etc/init/tty.conf", fixed) }
        }
        guard let sysinit = files.contents("/etc/rc.d/rc.sysinit") else {
            throw SetupError("/etc/rc.d/rc.sysinit is missing: not a CentOS 6 root file system")
        }
        let commented = sysinit.components(separatedBy: "\n").map { $0.hasPrefix("/sbin/start_udev") ? "#" + $0 : $0 }.joined(separator: "\n")
        if commented != sysinit { try write("/etc/rc.d/rc.sysinit", commented) }
    }

    /// RHEL-family network files: network-scripts before 10, NetworkManager keyfiles from 10 on.
    func setupRedHatNetwork(_ environment: Environment) throws {
        let version = Self.centosVersion(files.contents("/etc/redhat-release")) ?? 0
        if version >= 10 {
            try writeNetworkManagerFiles(environment)
            return
        }
        let directory = "/etc/sysconfig/network-scripts"
        try files.makeDirectory(directory, mode: 0o755)
        var hasIPv4 = false, hasIPv6 = false
        let servers = nameservers(environment), domains = searchDomains(environment)
        for nic in nics {
            let name = nic.name
            hasIPv4 = hasIPv4 || nic.ip != nil
            hasIPv6 = hasIPv6 || nic.ip6 != nil
            var bootproto = ""
            var data = "", routes = "", routes6 = ""
            if let ip = nic.ip {
                if ip == "dhcp" {
                    bootproto = "dhcp"
                } else if ip != "manual" {
                    bootproto = "none"
                    guard let (address, netmask) = Self.ipv4CIDR(ip) else { throw SetupError("\(name): unable to parse ipv4 address/mask '\(ip)'") }
                    data += "IPADDR=\(address)\nNETMASK=\(netmask)\n"
                    if let gw = nic.gw {
                        data += "GATEWAY=\(gw)\n"
                        if !Self.inNetwork(gw, ip) { routes += "\(gw) dev \(name)\ndefault via \(gw) dev \(name)\n" }
                    }
                }
            }
            if let ip6 = nic.ip6, ip6 != "manual" {
                if bootproto.isEmpty { bootproto = "none" }
                data += "IPV6INIT=yes\n"
                switch ip6 {
                case "auto": data += "IPV6_AUTOCONF=yes\n"
                case "dhcp": data += "DHCPV6C=yes\n"
                default:
                    data += "IPV6ADDR=\(ip6)\nIPV6_AUTOCONF=no\n"
                    if let gw6 = nic.gw6 {
                        if !Self.inNetwork(gw6, ip6) && !Self.isLinkLocal(gw6) {
                            routes6 += "\(gw6) dev \(name)\ndefault via \(gw6) dev \(name)\n"
                        } else {
                            data += "IPV6_DEFAULTGW=\(gw6)\n"
                        }
                    }
                }
            }
            for (index, server) in servers.enumerated() { data += "DNS\(index + 1)=\(server)\n" }
            if !domains.isEmpty { data += "DOMAIN=\(domains.joined(separator: " "))\n" }
            guard !(data.isEmpty && bootproto.isEmpty) else { continue }
            try write("\(directory)/ifcfg-\(name)",
                      "DEVICE=\(name)\nONBOOT=yes\nUUID=\(environment.makeUUID())\nBOOTPROTO=\(bootproto)\n" + data)
            try modifySection("\(directory)/route-\(name)", routes, placement: .prepend, deleteWhenEmpty: true)
            try modifySection("\(directory)/route6-\(name)", routes6, placement: .prepend, deleteWhenEmpty: true)
        }
        guard files.isRegularFile("/etc/sysconfig/network"), var network = files.contents("/etc/sysconfig/network") else { return }
        if hasIPv4 { network = Self.setting("NETWORKING", to: "yes", in: network, pattern: #"^NETWORKING=\S+$"#) }
        if hasIPv6 { network = Self.setting("NETWORKING_IPV6", to: "yes", in: network, pattern: #"^NETWORKING_IPV6=\S+$"#) }
        try write("/etc/sysconfig/network", network)
    }

    func writeNetworkManagerFiles(_ environment: Environment) throws {
        let directory = "/etc/NetworkManager/system-connections"
        try files.makeDirectory(directory, mode: 0o755)
        let servers = nameservers(environment), domains = searchDomains(environment)
        let servers4 = servers.filter(IPAddress.isIPv4), servers6 = servers.filter(IPAddress.isIPv6)
        func dns(_ servers: [String]) -> String {
            guard !servers.isEmpty else { return "" }
            return "dns=\(servers.joined(separator: ";"))\n" + (domains.isEmpty ? "" : "dns-search=\(domains.joined(separator: ";"))\n")
        }
        for nic in nics {
            let name = nic.name
            var text = "[connection]\nid=\(name)\nuuid=\(environment.makeUUID())\ntype=ethernet\ninterface-name=\(name)\n[ipv4]\n"
            switch nic.ip {
            case nil, "manual": text += "method=disabled\n"
            case "dhcp": text += "method=auto\n" + dns(servers4)
            case let ip?:
                text += "method=manual\naddresses=\(ip)\n"
                if let gw = nic.gw {
                    text += "gateway=\(gw)\n"
                    if !Self.inNetwork(gw, ip) { text += "routes=\(gw)\n" }
                }
                text += dns(servers4)
            }
            text += "[ipv6]\n"
            switch nic.ip6 {
            case nil, "manual": text += "method=disabled\n"
            case "auto", "dhcp": text += "method=auto\n" + dns(servers6)
            case let ip6?:
                text += "method=manual\naddress=\(ip6)\n"
                if let gw6 = nic.gw6 {
                    text += !Self.inNetwork(gw6, ip6) && !Self.isLinkLocal(gw6) ? "routes=\(gw6)\n" : "gateway=\(gw6)\n"
                }
                text += dns(servers6)
            }
            try write("\(directory)/\(name).nmconnection", text, mode: 0o600)
        }
    }

    /// systemd-networkd `.network` files (Fedora 25 and later).
    func writeNetworkdFiles() throws {
        try files.makeDirectory("/etc/systemd/network", mode: 0o755)
        for nic in nics {
            let name = nic.name
            var text = "[Match]\nName = \(name)\n\n[Network]\nDescription = Interface \(name) autoconfigured by PVE\n"
            var dhcp4 = false, dhcp6 = false, acceptRA = false
            var routes: [String] = []
            var hasIPv4 = false, hasIPv6 = false
            if let ip = nic.ip {
                if ip == "dhcp" { dhcp4 = true } else if ip != "manual" {
                    text += "Address = \(ip)\n"
                    hasIPv4 = true
                }
            }
            if let gw = nic.gw {
                text += "Gateway = \(gw)\n"
                if hasIPv4, let ip = nic.ip, !Self.inNetwork(gw, ip) { routes.append("\n[Route]\nDestination = \(gw)/32\nScope = link\n") }
            }
            if let ip6 = nic.ip6 {
                switch ip6 {
                case "dhcp":
                    dhcp6 = true
                    acceptRA = true
                case "auto": acceptRA = true
                case "manual": break
                default:
                    text += "Address = \(ip6)\n"
                    hasIPv6 = true
                }
            }
            if let gw6 = nic.gw6 {
                acceptRA = false
                text += "Gateway = \(gw6)\n"
                if hasIPv6, let ip6 = nic.ip6, !Self.inNetwork(gw6, ip6), !Self.isLinkLocal(gw6) {
                    routes.append("\n[Route]\nDestination = \(gw6)/128\nScope = link\n")
                }
            }
            text += "DHCP = \(dhcp4 && dhcp6 ? "yes" : dhcp4 ? "ipv4" : dhcp6 ? "ipv6" : "no")\n"
            text += "IPv6AcceptRA = \(acceptRA)\n"
            text += routes.joined()
            try write("/etc/systemd/network/\(name).network", text)
        }
    }

    /// openSUSE and SLES: `ifcfg-<name>` and `ifroute-<name>` under /etc/sysconfig/network.
    func setupSUSENetwork() throws {
        let directory = "/etc/sysconfig/network"
        try files.makeDirectory(directory, mode: 0o755)
        for nic in nics {
            let name = nic.name
            let configured = (nic.ip != nil && nic.ip != "manual") || (nic.ip6 != nil && nic.ip6 != "manual")
            var dhcp4 = false, dhcp6 = false
            var addresses: [String] = []
            var routes = ""
            if let ip = nic.ip {
                if ip == "dhcp" { dhcp4 = true } else if ip != "manual" {
                    addresses.append(ip)
                    if let gw = nic.gw {
                        if !Self.inNetwork(gw, ip) { routes += "\(gw) 0.0.0.0 255.255.255.255 \(name)\n" }
                        routes += "default \(gw) 0.0.0.0 \(name)\n"
                    }
                }
            }
            if let ip6 = nic.ip6 {
                if ip6 == "dhcp" { dhcp6 = true } else if ip6 != "manual" && ip6 != "auto" {
                    addresses.append(ip6)
                    if let gw6 = nic.gw6 {
                        if !Self.inNetwork(gw6, ip6) && !Self.isLinkLocal(gw6) { routes += "\(gw6)/128 - - \(name)\n" }
                        routes += "default \(gw6) - \(name)\n"
                    }
                }
            }
            var text = "STARTMODE=\(configured ? "onboot" : "manual")\n"
            text += "BOOTPROTO=\(dhcp4 && dhcp6 ? "dhcp" : dhcp4 ? "dhcp4" : dhcp6 ? "dhcp6" : "static")\n"
            if addresses.count >= 2 {
                for (index, address) in addresses.enumerated() { text += "IPADDR_\(index + 1)=\(address)\n" }
            } else if let address = addresses.first {
                text += "IPADDR=\(address)\n"
            } else if configured && !dhcp4 && !dhcp6 {
                continue
            }
            try write("\(directory)/ifcfg-\(name)", text)
            try modifySection("\(directory)/ifroute-\(name)", routes, placement: .prepend, deleteWhenEmpty: true)
        }
    }
}
