import Foundation
@testable import Reconciler
import Resources
import Testing

/// The firewall compiler on its own: what each rule, option and file becomes
/// in nftables, what is left out and why, and where local_network comes from.
/// (The rulesets are loaded and exercised with real packets in DriversTests.)
@Suite("firewall compiler")
struct FirewallCompilerTests {
    /// This machine's service and protocol names, as pvectl reads them for a plan.
    static let hostServices = NetworkServices(services: try? String(contentsOfFile: NetworkServices.servicesPath, encoding: .utf8),
                                              protocols: try? String(contentsOfFile: NetworkServices.protocolsPath, encoding: .utf8))

    static func file(_ text: String, _ path: String) -> FirewallConfig {
        FirewallConfig.parse(text, file: path).0
    }

    static func compile(cluster: String, host: String? = nil, guests: [Int: String] = [:], configs: [Int: (GuestConfig.Kind, String)] = [:],
                        corosync: String? = nil, interfaces: String? = nil, resolved: String? = nil) -> CompiledFirewall {
        let guestConfigs = configs.map { vmid, entry in
            DesiredState.Guest(vmid: vmid, node: "pve1", config: GuestConfig.parse(entry.1, file: "/pve/\(vmid).conf", kind: entry.0).0,
                               path: "/pve/\(vmid).conf")
        }
        return FirewallCompiler.compile(FirewallCompiler.Input(
            node: "pve1", cluster: file(cluster, "/pve/firewall/cluster.fw"), host: host.map { file($0, "/pve/nodes/pve1/host.fw") },
            guestFirewalls: guests.mapValues { file($0, "/pve/firewall/guest.fw") }, guests: guestConfigs,
            corosync: corosync.map { CorosyncConfig.parse($0, file: "/pve/corosync.conf").0 },
            interfaces: interfaces.map { InterfacesFile.parse($0, file: "/etc/network/interfaces").0 }, resolvedNodeAddress: resolved,
            services: hostServices))
    }

    static func rules(_ compiled: CompiledFirewall, _ chain: String) -> [String] {
        compiled.chains.first { "\($0.table)/\($0.name)" == chain }?.rules.map(\.text) ?? []
    }

    @Test("a cluster.fw without enable: 1 compiles to removing pvectl's tables only")
    func disabled() {
        let compiled = Self.compile(cluster: "[OPTIONS]\npolicy_in: DROP\n")
        #expect(!compiled.enabled)
        #expect(compiled.chains.isEmpty)
        #expect(compiled.script().contains("delete table inet pvectl"))
        #expect(!compiled.script().contains("chain"))
    }

    @Test("host rules come before cluster rules, then management, corosync and the policy")
    func hostOrder() {
        let compiled = Self.compile(cluster: "[OPTIONS]\nenable: 1\npolicy_in: REJECT\npolicy_out: DROP\n\n[RULES]\nIN SSH(DROP)\n",
                                    host: "[RULES]\nIN ACCEPT -p tcp -dport 22 -source 192.0.2.7\nOUT ACCEPT -p udp -dport 123\n",
                                    corosync: "totem {\n cluster_name: c\n config_version: 1\n}\nnodelist {\n node {\n  name: pve1\n  ring0_addr: 192.0.2.1\n }\n node {\n  name: pve2\n  ring0_addr: 192.0.2.2\n }\n}\n",
                                    interfaces: "iface vmbr0 inet static\n\taddress 192.0.2.1/24\n")
        let input = Self.rules(compiled, "inet/host-in")
        let own = input.firstIndex(of: "ip saddr 192.0.2.7 meta l4proto tcp tcp dport 22 accept")
        let cluster = input.firstIndex(of: "meta l4proto tcp tcp dport 22 drop")
        let management = input.firstIndex { $0.hasPrefix("ip saddr @v4-dc/management") }
        #expect(own != nil && cluster != nil && management != nil)
        #expect(own! < cluster! && cluster! < management!)
        #expect(input.contains("ip saddr 192.0.2.2 ip daddr 192.0.2.1 udp dport 5404-5405 accept"))
        #expect(input.last == "jump do-reject")
        let output = Self.rules(compiled, "inet/host-out")
        #expect(output.contains("meta l4proto udp udp dport 123 accept"))
        #expect(output.contains("ip daddr 192.0.2.0/24 tcp dport { 22, 3128, 5900-5999, 8006 } accept"))
        #expect(output.last == "drop")
        #expect(compiled.sets.first { $0.name == "v4-dc/management" }?.elements == ["192.0.2.0/24"])
    }

    @Test("a policy value that is not ACCEPT, DROP or REJECT is ignored for the default, as pve-firewall skips it (found by fuzzing)")
    func invalidPolicy() {
        let compiled = Self.compile(cluster: "[OPTIONS]\nenable: 1\npolicy_out: @DROP\npolicy_in: accept\n")
        #expect(Self.rules(compiled, "inet/host-out").last == "accept", "policy_out falls back to ACCEPT")
        #expect(Self.rules(compiled, "inet/host-in").last == "accept", "lower case is accepted")
        #expect(!compiled.script().contains("@DROP"))
    }

    @Test("local_network: the alias, else the corosync address, else the resolved name, else the first static address")
    func localNetwork() {
        let interfaces = "iface eno1 inet static\n\taddress 198.51.100.10/24\niface vmbr0 inet static\n\taddress 192.0.2.1/25\n"
        let corosync = "nodelist {\n node {\n  name: pve1\n  ring0_addr: 192.0.2.1\n }\n}\n"
        let alias = Self.compile(cluster: "[OPTIONS]\nenable: 1\n[ALIASES]\nlocal_network 203.0.113.0/24\n", corosync: corosync,
                                 interfaces: interfaces)
        #expect(alias.localNetwork == "203.0.113.0/24")
        #expect(alias.localNetworkOrigin.hasPrefix("[ALIASES] local_network"))
        let ring = Self.compile(cluster: "[OPTIONS]\nenable: 1\n", corosync: corosync, interfaces: interfaces)
        #expect(ring.localNetwork == "192.0.2.0/25")
        #expect(ring.localNetworkOrigin.contains("corosync ring0_addr"))
        let resolved = Self.compile(cluster: "[OPTIONS]\nenable: 1\n", interfaces: interfaces, resolved: "198.51.100.10")
        #expect(resolved.localNetwork == "198.51.100.0/24")
        #expect(resolved.localNetworkOrigin.contains("resolves to"))
        let first = Self.compile(cluster: "[OPTIONS]\nenable: 1\n", interfaces: interfaces)
        #expect(first.localNetwork == "198.51.100.0/24")
        #expect(first.localNetworkOrigin.contains("first static address"))
    }

    @Test("the node name is resolved (maybe over DNS) only when the firewall is on and no alias sets local_network")
    func nodeNameResolvedOnlyWhenNeeded() throws {
        func needs(_ cluster: String?) throws -> Bool {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("pvectl-fw-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: root) }
            try FileManager.default.createDirectory(at: root.appendingPathComponent("firewall"), withIntermediateDirectories: true)
            if let cluster { try Data(cluster.utf8).write(to: root.appendingPathComponent("firewall/cluster.fw")) }
            return FirewallCompiler.needsNodeAddress(DesiredState.load(root: root.path, interfaces: nil, node: "pve1"))
        }
        #expect(try needs(nil) == false)
        #expect(try needs("[OPTIONS]\npolicy_in: DROP\n") == false)
        #expect(try needs("[OPTIONS]\nenable: 1\n[ALIASES]\nlocal_network 203.0.113.0/24\n") == false)
        #expect(try needs("[OPTIONS]\nenable: 1\n") == true)
    }

    @Test("addresses: lists, ranges, networks with host bits, aliases with scopes, ipsets with nomatch, IPv6")
    func addresses() {
        let cluster = """
        [OPTIONS]
        enable: 1
        [ALIASES]
        gw 192.0.2.254
        v6net 2001:db8:9::/48
        [IPSET admins]
        192.0.2.0/24
        !192.0.2.9
        v6net
        [RULES]
        IN ACCEPT -source 192.0.2.1,192.0.2.5-192.0.2.9 -p tcp -dport 22
        IN ACCEPT -source 192.0.2.77/24 -p tcp -dport 23
        IN ACCEPT -source dc/gw -p tcp -dport 24
        IN ACCEPT -source +admins -p tcp -dport 25
        IN ACCEPT -source v6net -dest 2001:db8::1 -p udp -dport 26
        IN ACCEPT -source 192.0.2.1,2001:db8::1 -p tcp -dport 27
        IN ACCEPT -source nosuchalias -p tcp -dport 28
        IN ACCEPT -source +nosuchset -p tcp -dport 29
        """
        let compiled = Self.compile(cluster: cluster)
        let input = Self.rules(compiled, "inet/host-in")
        #expect(input.contains("ip saddr { 192.0.2.1, 192.0.2.5-192.0.2.9 } meta l4proto tcp tcp dport 22 accept"))
        #expect(input.contains("ip saddr 192.0.2.0/24 meta l4proto tcp tcp dport 23 accept"))
        #expect(input.contains("ip saddr 192.0.2.254 meta l4proto tcp tcp dport 24 accept"))
        #expect(input.contains("ip saddr @v4-dc/admins ip saddr != @v4-dc/admins-nomatch meta l4proto tcp tcp dport 25 accept"))
        #expect(input.contains("ip6 saddr @v6-dc/admins meta l4proto tcp tcp dport 25 accept"))
        #expect(input.contains("ip6 saddr 2001:db8:9::/48 ip6 daddr 2001:db8::1 meta l4proto udp udp dport 26 accept"))
        #expect(compiled.sets.first { $0.name == "v6-dc/admins" }?.elements == ["2001:db8:9::/48"])
        #expect(compiled.sets.first { $0.name == "v4-dc/admins-nomatch" }?.elements == ["192.0.2.9"])
        let skipped = compiled.skipped.map(\.description)
        #expect(skipped.contains { $0.contains("cluster.fw:16:") && $0.contains("mixes IPv4 and IPv6") })
        #expect(skipped.contains { $0.contains("cluster.fw:17:") && $0.contains("no such alias 'nosuchalias'") })
        #expect(skipped.contains { $0.contains("cluster.fw:18:") && $0.contains("no such ipset 'nosuchset'") })
    }

    @Test("protocols and ports: lists, ranges, service names, ICMP names and codes, macros, disabled rules, logging")
    func protocols() {
        let cluster = """
        [OPTIONS]
        enable: 1
        log_ratelimit: enable=1,rate=10/minute,burst=3
        [RULES]
        IN ACCEPT -p tcp -dport 80,443,8000:8100 -sport 1024:65535
        IN ACCEPT -p udp -dport domain
        IN ACCEPT -p icmp -icmp-type host-unreachable
        IN ACCEPT -p icmp -dport echo-request
        IN ACCEPT -p ipv6-icmp -icmp-type 128
        IN ACCEPT -p gre
        IN Web(ACCEPT) -log info
        |IN ACCEPT -p tcp -dport 9999
        IN ACCEPT -dport 80
        IN ACCEPT -p gre -dport 5
        IN ACCEPT -p tcp -dport 70000
        IN ACCEPT -p tcp -dport nosuchservice
        """
        let compiled = Self.compile(cluster: cluster)
        let input = Self.rules(compiled, "inet/host-in")
        #expect(input.contains("meta l4proto tcp tcp sport 1024-65535 tcp dport { 80, 443, 8000-8100 } accept"))
        #expect(input.contains("meta l4proto udp udp dport 53 accept"))
        #expect(input.contains("icmp type 3 icmp code 1 accept"))
        #expect(input.contains("icmp type 8 accept"))
        #expect(input.contains("icmpv6 type 128 accept"))
        #expect(input.contains("meta l4proto gre accept"))
        #expect(input.contains("meta l4proto tcp tcp dport 80 limit rate 10/minute burst 3 packets log prefix \":0:6:host-in: ACCEPT: \" level info"))
        #expect(input.contains("meta l4proto tcp tcp dport 443 accept"))
        #expect(!input.contains { $0.contains("9999") })
        let skipped = compiled.skipped.map(\.description)
        #expect(skipped.contains { $0.contains("cluster.fw:13:") && $0.contains("-dport needs -p") })
        #expect(skipped.contains { $0.contains("cluster.fw:14:") && $0.contains("has no ports") })
        #expect(skipped.contains { $0.contains("cluster.fw:15:") && $0.contains("out of range") })
        #expect(skipped.contains { $0.contains("cluster.fw:16:") && $0.contains("unknown service name") })
    }

    @Test("guest zones: firewalled NICs only, MAC and IP filters, DHCP, NDP, RA, -i netN, groups, policies")
    func guests() {
        let cluster = "[OPTIONS]\nenable: 1\n\n[group web]\nIN ACCEPT -p tcp -dport 80\nOUT DROP -p tcp -dport 25\n"
        let guest = "[OPTIONS]\nenable: 1\ndhcp: 1\nipfilter: 1\npolicy_in: REJECT\npolicy_out: DROP\n\n[RULES]\nIN ACCEPT -i net1 -p tcp -dport 22\nGROUP web -i net0\n"
        let compiled = Self.compile(cluster: cluster, guests: [100: guest, 200: "[OPTIONS]\nenable: 0\n"],
                                    configs: [100: (.lxc, "net0: name=eth0,hwaddr=02:00:00:00:00:aa,bridge=vmbr0,firewall=1,ip=192.0.2.10/24\nnet1: name=eth1,hwaddr=02:00:00:00:00:bb,bridge=vmbr1,firewall=1\nnet2: name=eth2,hwaddr=02:00:00:00:00:cc,bridge=vmbr0\n"),
                                              200: (.qemu, "net0: virtio=02:00:00:00:02:00,bridge=vmbr0,firewall=1\n")])
        #expect(compiled.ports.map(\.device) == ["veth100i0", "veth100i1", "tap200i0"])
        #expect(compiled.ports.first?.firewallBridge == "fwbr100i0")
        let out0 = Self.rules(compiled, "inet/guest-100-net0-out")
        #expect(out0.contains("udp sport 68 udp dport 67 accept"))
        #expect(out0.contains("ether saddr != 02:00:00:00:00:aa drop"))
        #expect(out0.contains("icmpv6 type { nd-router-advert, nd-redirect } drop"))
        #expect(out0.contains("meta nfproto ipv4 ip saddr != @v4-guest100/ipfilter-net0 drop"))
        #expect(out0.contains("jump group-web-out"))
        #expect(out0.last == "drop")
        #expect(compiled.sets.first { $0.name == "v4-guest100/ipfilter-net0" }?.elements == ["192.0.2.10"])
        #expect(compiled.sets.first { $0.name == "v6-guest100/ipfilter-net0" }?.elements == ["fe80::ff:fe00:aa"])
        let in0 = Self.rules(compiled, "inet/guest-100-net0-in")
        #expect(!in0.contains { $0.contains("dport 22") }, "-i net1 rules stay on net1")
        #expect(in0.contains("jump group-web-in"))
        #expect(in0.last == "jump do-reject")
        #expect(Self.rules(compiled, "inet/guest-100-net1-in").contains("meta l4proto tcp tcp dport 22 accept"))
        #expect(Self.rules(compiled, "inet/group-web-out").contains("meta l4proto tcp tcp dport 25 drop"))
        // Guest 200's firewall is off: its NIC is plumbed but no chain filters it.
        #expect(!compiled.chains.contains { $0.name.hasPrefix("guest-200") })
        let forward = Self.rules(compiled, "inet/forward").joined(separator: "\n")
        #expect(forward.contains("\"fwbr100i0\" : jump guest-100-net0-out"))
        #expect(!forward.contains("fwbr200i0"))
        let marks = Self.rules(compiled, "bridge/forward").joined(separator: "\n")
        #expect(marks.contains("\"tap200i0\""))
    }

    @Test("rule-level plan: added, removed and moved rules with their lines")
    func ruleChanges() {
        func rule(_ text: String, _ line: Int) -> CompiledFirewallRule {
            CompiledFirewallRule(chain: "inet/host-in", text: text, source: SourceLocation(file: "host.fw", line: line), origin: text)
        }
        let old = [rule("a", 1), rule("b", 2), rule("c", 3), rule("d", 4)]
        let new = [rule("a", 1), rule("c", 2), rule("b", 3), rule("e", 5)]
        let changes = FirewallReconciler.ruleChanges(from: old, to: new)
        #expect(changes.contains { $0.old == nil && $0.new?.hasPrefix("e") == true && $0.source?.line == 5 })
        #expect(changes.contains { $0.new == nil && $0.old?.hasPrefix("d") == true && $0.source?.line == 4 })
        #expect(changes.contains { $0.old?.hasPrefix("#") == true && $0.new?.hasPrefix("#") == true })
        #expect(changes.count == 3)
        #expect(FirewallReconciler.ruleChanges(from: old, to: old).isEmpty)
    }

    @Test("a rule line the parser rejects is skipped; a broken file structure freezes the firewall")
    func parseErrors() {
        let (_, diagnostics) = FirewallConfig.parse("[RULES]\nIN BOGUS -p tcp\n[NOPE]\n", file: "host.fw")
        let rule = diagnostics.first { $0.location.line == 2 }
        let header = diagnostics.first { $0.location.line == 3 }
        #expect(rule.map(FirewallReconciler.isRuleLineError) == true)
        #expect(header.map(FirewallReconciler.isRuleLineError) == false)
    }
}
