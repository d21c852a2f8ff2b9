import Foundation
import Resources

/// Reads the desired interfaces out of an interfaces file, the way ifupdown2
/// interprets it: both option spellings, several stanzas (inet, inet6) per
/// interface merged, netmasks folded into prefixes.
public enum NetworkDesiredState {
    public static let hookPhases = ["pre-up", "up", "post-up", "pre-down", "down", "post-down"]

    public static func interfaces(from file: InterfacesFile) -> (interfaces: [DesiredInterface], diagnostics: [Diagnostic]) {
        var diagnostics: [Diagnostic] = []
        let autostart = file.autostart
        var order: [String] = []
        var byName: [String: [InterfacesFile.Stanza]] = [:]
        for stanza in file.stanzas {
            guard case .iface(let name, _, _) = stanza.kind else { continue }
            if byName[name] == nil { order.append(name) }
            byName[name, default: []].append(stanza)
        }
        var result: [DesiredInterface] = []
        for name in order {
            let stanzas = byName[name]!
            var options: [(stanza: InterfacesFile.Stanza, option: InterfacesFile.Option)] = []
            for stanza in stanzas { for option in stanza.options { options.append((stanza, option)) } }
            func all(_ key: String) -> [(stanza: InterfacesFile.Stanza, option: InterfacesFile.Option)] {
                let spellings = InterfacesFile.spellings(of: key)
                return options.filter { spellings.contains($0.option.key) }
            }
            func last(_ key: String) -> InterfacesFile.Option? { all(key).last?.option }
            var sources: [String: SourceLocation] = [:]
            for (_, option) in options { sources[InterfacesFile.canonicalKey(option.key)] = option.location }

            let methods = stanzas.compactMap { stanza -> String? in
                if case .iface(_, _, let method) = stanza.kind { return method }
                return nil
            }
            let kind: DesiredInterface.Kind
            var vlan: DesiredInterface.VLAN?
            if name == "lo" || methods.contains("loopback") {
                kind = .loopback
            } else if last("bridge-ports") != nil {
                kind = .bridge
            } else if last("bond-slaves") != nil || last("slaves") != nil || last("bond-mode") != nil {
                kind = .bond
            } else if let raw = last("vlan-raw-device")?.value {
                kind = .vlan
                let id = last("vlan-id").flatMap { Int($0.value) } ?? (name.hasPrefix("vlan") ? Int(name.dropFirst(4)) : nil)
                    ?? name.split(separator: ".").last.flatMap { Int($0) }
                if let id {
                    vlan = DesiredInterface.VLAN(rawDevice: raw, id: id, proto: last("vlan-protocol")?.value ?? "802.1q")
                } else {
                    diagnostics.append(.error(stanzas[0].location, "VLAN '\(name)' has no vlan-id", code: .missingValue))
                }
            } else if let dot = name.lastIndex(of: "."), let id = Int(name[name.index(after: dot)...]), dot > name.startIndex {
                kind = .vlan
                vlan = DesiredInterface.VLAN(rawDevice: String(name[..<dot]), id: id, proto: last("vlan-protocol")?.value ?? "802.1q")
            } else {
                kind = .physical
            }
            for method in methods where !["static", "manual", "loopback"].contains(method) {
                diagnostics.append(.warning(stanzas[0].location,
                                            "'\(name)': method '\(method)' is not managed yet; the link is brought up without addresses",
                                            code: .unsupported))
            }

            var addresses: [String] = []
            var gateway: String?
            var gateway6: String?
            for stanza in stanzas {
                guard case .iface(_, let family, _) = stanza.kind else { continue }
                let netmask = stanza.option("netmask")?.value
                for option in stanza.options where option.key == "address" {
                    for word in option.value.split(separator: " ").map(String.init) {
                        if let cidr = cidr(word, netmask: netmask) {
                            addresses.append(cidr)
                        } else {
                            diagnostics.append(.error(option.valueLocation, "address: '\(word)' is not an address", code: .invalidValue))
                        }
                    }
                }
                if let gw = stanza.option("gateway")?.value {
                    if gw.contains(":") || family == "inet6" { gateway6 = gw } else { gateway = gw }
                }
            }
            var mtu: Int?
            if let option = last("mtu") ?? last("ovs_mtu") {
                mtu = Int(option.value)
                if mtu == nil { diagnostics.append(.error(option.valueLocation, "mtu: '\(option.value)' is not a number", code: .invalidValue)) }
            }
            var bridge: DesiredInterface.Bridge?
            if kind == .bridge {
                var b = DesiredInterface.Bridge()
                b.ports = words(last("bridge-ports")?.value).filter { $0 != "none" }
                b.stp = BooleanValue.parse(last("bridge-stp")?.value ?? "off") ?? false
                // ifupdown2's default forward delay is the kernel's (15 s).
                b.forwardDelay = last("bridge-fd").flatMap { Double($0.value) }.map { Int($0) } ?? 15
                b.vlanAware = BooleanValue.parse(last("bridge-vlan-aware")?.value ?? "no") ?? false
                b.vids = last("bridge-vids")?.value
                b.disableMACLearning = BooleanValue.parse(last("bridge-disable-mac-learning")?.value ?? "no") ?? false
                bridge = b
            }
            var bond: DesiredInterface.Bond?
            if kind == .bond {
                var b = DesiredInterface.Bond()
                b.slaves = words((last("bond-slaves") ?? last("slaves"))?.value).filter { $0 != "none" }
                let modes = ["0": "balance-rr", "1": "active-backup", "2": "balance-xor", "3": "broadcast",
                             "4": "802.3ad", "5": "balance-tlb", "6": "balance-alb"]
                let mode = last("bond-mode")?.value ?? "balance-rr"
                b.mode = modes[mode] ?? mode
                b.miimon = last("bond-miimon").flatMap { Int($0.value) } ?? 0
                b.xmitHashPolicy = last("bond-xmit-hash-policy")?.value
                b.lacpRate = last("bond-lacp-rate")?.value
                b.minLinks = last("bond-min-links").flatMap { Int($0.value) }
                b.primary = last("bond-primary")?.value
                bond = b
            }
            var hooks: [String: [String]] = [:]
            for phase in hookPhases {
                let commands = options.filter { $0.option.key == phase }.map(\.option.value)
                if !commands.isEmpty { hooks[phase] = commands }
            }
            result.append(DesiredInterface(
                name: name, kind: kind, autostart: autostart.contains(name) || kind == .loopback,
                addresses: addresses, gateway: gateway, gateway6: gateway6, mtu: mtu,
                bridge: bridge, bond: bond, vlan: vlan, hooks: hooks,
                source: stanzas[0].location, sources: sources))
        }
        // ifupdown2 creates a VLAN named as a bridge port (eno1.5) even when
        // the file has no stanza for it.
        let declared = Set(result.map(\.name))
        for interface in result {
            for port in interface.bridge?.ports ?? [] where !declared.contains(port) {
                guard let dot = port.lastIndex(of: "."), dot > port.startIndex, let id = Int(port[port.index(after: dot)...]) else { continue }
                result.append(DesiredInterface(name: port, kind: .vlan, autostart: true,
                                               vlan: DesiredInterface.VLAN(rawDevice: String(port[..<dot]), id: id),
                                               source: interface.sources["bridge-ports"] ?? interface.source))
            }
        }
        return (result, diagnostics)
    }

    static func words(_ text: String?) -> [String] {
        (text ?? "").split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," }).map(String.init)
    }

    /// `192.0.2.1/24`, or `192.0.2.1` with `netmask 255.255.255.0` or `24`;
    /// a bare address is a host address. IPv6 is written in its canonical form.
    static func cidr(_ address: String, netmask: String?) -> String? {
        var base = address
        var prefix: String?
        if let slash = address.lastIndex(of: "/") {
            base = String(address[..<slash])
            prefix = String(address[address.index(after: slash)...])
        } else if let netmask {
            prefix = Int(netmask).map(String.init) ?? PVENetworkConfig.netmaskBits(netmask).map(String.init)
        }
        if IPAddress.isIPv4(base) {
            guard let bits = Int(prefix ?? "32"), (0...32).contains(bits) else { return nil }
            return "\(base)/\(bits)"
        }
        if IPAddress.isIPv6(base), let canonical = canonicalIPv6(base) {
            guard let bits = Int(prefix ?? "128"), (0...128).contains(bits) else { return nil }
            return "\(canonical)/\(bits)"
        }
        return nil
    }

    /// The kernel's spelling of an IPv6 address (RFC 5952), via inet_pton/inet_ntop.
    public static func canonicalIPv6(_ address: String) -> String? {
        var storage = in6_addr()
        guard inet_pton(AF_INET6, address, &storage) == 1 else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &storage, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
