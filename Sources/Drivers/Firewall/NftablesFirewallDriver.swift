import Foundation
import Reconciler

/// The firewall kind against the real kernel: `nft -f` for the ruleset (one
/// transaction), `nft list table` to observe it, `ip` for the guest NICs'
/// firewall bridges, sysctl for bridge netfilter.
///
/// `namespace` runs everything inside a named network namespace; nil is the host's.
public struct NftablesFirewallDriver: FirewallDriver {
    public var namespace: String?

    public init(namespace: String? = nil) { self.namespace = namespace }

    func inNamespace(_ command: [String]) -> [String] {
        (namespace.map { ["ip", "netns", "exec", $0] } ?? []) + command
    }

    func ip(_ arguments: [String]) -> [String] {
        ["ip"] + (namespace.map { ["-n", $0] } ?? []) + arguments
    }

    public struct FirewallError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Both of pvectl's tables as nft prints them, or nil when neither exists.
    func listing() async throws -> String? {
        var text = ""
        var found = false
        for family in ["inet", "bridge"] {
            let result = try await Command.run(inNamespace(["nft", "list", "table", family, CompiledFirewall.table]))
            if result.succeeded {
                found = true
                text += result.output
            } else if !result.error.contains("No such file or directory") {
                throw FirewallError(description: "nft list table \(family) \(CompiledFirewall.table): "
                                    + "\(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
            }
        }
        return found ? text : nil
    }

    public func observe(resolvingNodeName node: String?) async throws -> ObservedFirewall {
        async let listed = listing()
        async let links = Command.check(ip(["-json", "link", "show"]))
        async let addresses = Command.check(ip(["-json", "address", "show"]))
        async let sysctl = Command.run(inNamespace(["sysctl", "-n", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]))
        var masters: [String: String?] = [:]
        if let array = try JSONSerialization.jsonObject(with: Data(try await links.utf8)) as? [[String: Any]] {
            for link in array {
                guard let name = link["ifname"] as? String else { continue }
                masters[name] = .some(link["master"] as? String)
            }
        }
        var hostAddresses: [String] = []
        if let array = try JSONSerialization.jsonObject(with: Data(try await addresses.utf8)) as? [[String: Any]] {
            for link in array {
                for info in link["addr_info"] as? [[String: Any]] ?? [] {
                    guard let local = info["local"] as? String, let prefix = info["prefixlen"] as? Int,
                          (info["scope"] as? String) == "global" else { continue }
                    hostAddresses.append("\(local)/\(prefix)")
                }
            }
        }
        let flags = try await sysctl
        let bridgeNetfilter = flags.succeeded && flags.output.split(separator: "\n").allSatisfy { $0.trimmingCharacters(in: .whitespaces) == "1" }
        return ObservedFirewall(listing: try await listed, bridgeNetfilter: bridgeNetfilter, masters: masters,
                                hostAddresses: hostAddresses, resolvedNodeAddress: node.flatMap(Self.resolve))
    }

    /// The first non-loopback address the node name resolves to (/etc/hosts or DNS).
    public static func resolve(_ node: String) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(node, nil, &hints, &list) == 0, let first = list else { return nil }
        defer { freeaddrinfo(first) }
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let entry = cursor {
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(entry.pointee.ai_addr, entry.pointee.ai_addrlen, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !text.hasPrefix("127.") && text != "::1" { return text }
            }
            cursor = entry.pointee.ai_next
        }
        return nil
    }

    public func load(script: String) async throws -> String? {
        let result = try await Command.run(inNamespace(["nft", "-f", "-"]), input: script)
        guard result.succeeded else {
            throw FirewallError(description: "nft -f refused the ruleset, nothing was changed: "
                                + "\(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return try await listing()
    }

    public func enableBridgeNetfilter() async throws {
        try await Command.check(inNamespace(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"]))
    }

    /// `ip -batch` so a NIC is moved in one process; each line is idempotent
    /// enough to finish a half-done earlier attempt.
    public func plumb(_ port: GuestFirewallPort) async throws {
        let existing = try await Command.check(ip(["-json", "link", "show"]))
        let names = Set((try JSONSerialization.jsonObject(with: Data(existing.utf8)) as? [[String: Any]] ?? [])
            .compactMap { $0["ifname"] as? String })
        var lines: [String] = []
        if !names.contains(port.firewallBridge) {
            lines.append("link add \(port.firewallBridge) type bridge stp_state 0 forward_delay 0")
        }
        if !names.contains(port.bridgePort) {
            lines.append("link add \(port.bridgePort) type veth peer name \(port.firewallLink)")
        }
        lines += [
            "link set \(port.firewallLink) master \(port.firewallBridge) up",
            "link set \(port.bridgePort) master \(port.bridge) up",
            "link set \(port.device) master \(port.firewallBridge)",
            "link set \(port.firewallBridge) up",
        ]
        let result = try await Command.run(ip(["-batch", "-"]), input: lines.joined(separator: "\n") + "\n")
        guard result.succeeded else {
            throw FirewallError(description: "cannot put \(port.device) behind \(port.firewallBridge): "
                                + "\(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        // The firewall bridge and its veth pair must not be IP endpoints of
        // the host: if the host answered ARP or NDP on them, a guest's frames
        // to the host would be delivered there instead of crossing the bridge
        // and its rules (a guest could then pass its IP filter).
        try await Command.check(inNamespace(["sysctl", "-q", "-w",
                                             "net.ipv4.conf.\(port.firewallBridge).arp_ignore=8",
                                             "net.ipv4.conf.\(port.firewallBridge).proxy_arp=0",
                                             "net.ipv6.conf.\(port.firewallBridge).disable_ipv6=1",
                                             "net.ipv6.conf.\(port.firewallLink).disable_ipv6=1",
                                             "net.ipv6.conf.\(port.bridgePort).disable_ipv6=1"]))
    }

    public func unplumb(_ port: GuestFirewallPort) async throws {
        let existing = try await Command.check(ip(["-json", "link", "show"]))
        let names = Set((try JSONSerialization.jsonObject(with: Data(existing.utf8)) as? [[String: Any]] ?? [])
            .compactMap { $0["ifname"] as? String })
        var lines: [String] = []
        if names.contains(port.device) { lines.append("link set \(port.device) master \(port.bridge)") }
        if names.contains(port.bridgePort) { lines.append("link del \(port.bridgePort)") }
        if names.contains(port.firewallBridge) { lines.append("link del \(port.firewallBridge)") }
        guard !lines.isEmpty else { return }
        let result = try await Command.run(ip(["-batch", "-"]), input: lines.joined(separator: "\n") + "\n")
        guard result.succeeded else {
            throw FirewallError(description: "cannot take \(port.device) from \(port.firewallBridge): "
                                + "\(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
