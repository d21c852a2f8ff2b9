import Drivers
import Foundation
import Testing
import TestSupport

/// The firewall kind end to end through the pvectl binary, inside a host
/// namespace with real bridges and guest devices: plan with rule-level
/// changes, one atomic apply, nothing to do the second time, drift repaired,
/// other tables untouched, and real IPv4 and IPv6 traffic proving policies,
/// macros, ipsets, groups, the blacklist and the management exception.
@Suite("firewall kind: apply and real traffic", .serialized,
       .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct FirewallApplyTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    static let cluster = """
    [OPTIONS]
    enable: 1
    policy_in: REJECT

    [ALIASES]
    local_network 192.0.2.0/24
    office6 2001:db8:beef::/48

    [IPSET admins]
    203.0.113.0/28
    !203.0.113.9
    dc/office6

    [IPSET blacklist]
    198.51.100.66

    [IPSET management]
    2001:db8:1::/64

    [RULES]
    IN DNS(ACCEPT)

    [group webservers]
    IN ACCEPT -p tcp -dport 8080
    IN ACCEPT -p tcp -dport http-alt -source 2001:db8:1::/64

    """

    static let host = """
    [OPTIONS]
    tcpflags: 1

    [RULES]
    IN HTTP(ACCEPT) -source +admins
    IN Ping(ACCEPT)
    |IN ACCEPT -p tcp -dport 23
    IN ACCEPT -p tcp -dport 80 -source 198.51.100.66

    """

    /// host.fw with a rule pve-firewall flags and skips on line 8 (a port without a protocol).
    static let hostWithBadRule = host.replacingOccurrences(of: "IN ACCEPT -p tcp -dport 80", with: "IN ACCEPT -dport 81\nIN ACCEPT -p tcp -dport 80")

    static let guest = """
    [OPTIONS]
    enable: 1
    ndp: 1
    policy_in: DROP

    [RULES]
    IN ACCEPT -p tcp -dport 443 -log info
    GROUP webservers -i net0

    """

    struct Setup: @unchecked Sendable {
        // @unchecked: the topology and directory are only read after creation.
        let topology: FirewallTopology
        let directory: TemporaryDirectory
        var root: String { directory.path + "/root" }

        init() throws {
            topology = try FirewallTopology(guests: ["vm100i0": ("vmbr0", "02:00:00:00:01:00")], bridges: ["vmbr0"])
            directory = try TemporaryDirectory(prefix: "pvectl-fw")
            try topology.ip(topology.host, ["address add 192.0.2.1/24 dev vmbr0", "address add 2001:db8:1::1/64 dev vmbr0 nodad"])
            try directory.write("root/firewall/cluster.fw", FirewallApplyTests.cluster)
            try directory.write("root/nodes/pve1/host.fw", FirewallApplyTests.host)
            try directory.write("root/firewall/100.fw", FirewallApplyTests.guest)
            try directory.write("root/nodes/pve1/qemu-server/100.conf", "name: web\nnet0: virtio=02:00:00:00:01:00,bridge=vmbr0,firewall=1\n")
            try directory.write("interfaces", "auto vmbr0\niface vmbr0 inet static\n\taddress 192.0.2.1/24\n\tbridge-ports eth0\n")
        }

        func pvectl(_ command: String, _ arguments: [String] = []) -> (status: Int32, output: String, error: String) {
            NetworkNamespace.capture(["ip", "netns", "exec", topology.host, FirewallApplyTests.binary, command, "--root", root, "--node", "pve1",
                                      "--interfaces", directory.path + "/interfaces", "--state-dir", directory.path + "/state",
                                      "--only", "firewall"] + arguments, environment: ["NO_COLOR": "1"])
        }

        func nft(_ arguments: [String]) -> (status: Int32, output: String, error: String) {
            NetworkNamespace.capture(["ip", "netns", "exec", topology.host, "nft"] + arguments)
        }

        func master(_ device: String) -> String? {
            let result = NetworkNamespace.capture(["ip", "-n", topology.host, "-json", "link", "show", device])
            return ((try? JSONSerialization.jsonObject(with: Data(result.output.utf8))) as? [[String: Any]])?.first?["master"] as? String
        }

        /// One probe on its own thread (the sockets block).
        func probe(from: String, source: String, to: String, destination: String, proto: String = "tcp", port: Int,
                   expect: PacketProbe.Verdict) async throws -> PacketProbe.Verdict {
            let topology = self.topology
            return try await withCheckedThrowingContinuation { continuation in
                Thread {
                    do {
                        let cleanup = try topology.prepare(from: from, sourceIP: source, to: to, destinationIP: destination)
                        // Undo before resuming: the next probe may reuse these addresses.
                        let result = Result { () throws -> PacketProbe.Verdict in
                            let (s, d) = (topology.resolve(from)!, topology.resolve(to)!)
                            let wait: TimeInterval = expect == .drop ? 0.6 : 3
                            return switch proto {
                            case "udp": try PacketProbe.udp(from: s.namespace, sourceIP: source, to: d.namespace, destinationIP: destination,
                                                            port: port, wait: wait)
                            case "icmp": try PacketProbe.raw(from: s.namespace, sourceIP: source, to: d.namespace, destinationIP: destination,
                                                             proto: Int32(IPPROTO_ICMP), wait: wait)
                            default: try PacketProbe.tcp(from: s.namespace, sourceIP: source, to: d.namespace, destinationIP: destination,
                                                         port: port, wait: wait)
                            }
                        }
                        cleanup()
                        continuation.resume(with: result)
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }.start()
            }
        }
    }

    @Test("plan shows rule-level changes, apply converges, a second plan is empty, other tables stay")
    func applyAndConverge() async throws {
        let setup = try await offPool { try Setup() }
        #expect(setup.nft(["add", "table", "inet", "operators-own"]).status == 0)
        #expect(setup.nft(["add", "chain", "inet", "operators-own", "keep"]).status == 0)

        // A rule with an error: plan shows it with its line, says it would be left out, and fails as validate does;
        // apply refuses. Fixed, the plan goes ahead.
        try setup.directory.write("root/nodes/pve1/host.fw", Self.hostWithBadRule)
        let refused = setup.pvectl("plan", ["--detailed-exitcode"])
        #expect(refused.status == 1, "\(refused.error)")
        #expect(refused.error.contains("host.fw:8:1: error: -dport requires -p"), "\(refused.error)")
        #expect(refused.output.contains("host.fw:8:1: warning: rule skipped: -dport needs -p"), "\(refused.output)")
        let notApplied = setup.pvectl("apply", ["--auto-approve"])
        #expect(notApplied.status == 1 && notApplied.error.contains("nothing applied"), "\(notApplied.error)")
        #expect(setup.nft(["list", "table", "inet", "pvectl"]).status != 0, "a refused apply loaded a ruleset")
        try setup.directory.write("root/nodes/pve1/host.fw", Self.host)

        let plan = setup.pvectl("plan", ["--detailed-exitcode"])
        #expect(plan.status == 2, "\(plan.error)")
        #expect(plan.output.contains("local_network = 192.0.2.0/24 from [ALIASES] local_network"), "\(plan.output)")
        #expect(plan.output.contains("+ firewall/ruleset (create)"), "\(plan.output)")
        #expect(plan.output.contains("+ firewall/port/tap100i0 (create)"), "\(plan.output)")
        // Each rule with its origin and file line: host.fw's HTTP macro on line 5.
        #expect(plan.output.contains("+ inet/host-in: ip saddr @v4-dc/admins ip saddr != @v4-dc/admins-nomatch meta l4proto tcp tcp dport 80 accept  ← IN HTTP(ACCEPT) -source +admins"), "\(plan.output)")
        #expect(plan.output.contains("line 5"), "\(plan.output)")
        #expect(!plan.output.contains("dport 23"), "a disabled rule must not be compiled")

        let apply = setup.pvectl("apply", ["--auto-approve"])
        #expect(apply.status == 0, "\(apply.output)\n\(apply.error)")
        #expect(setup.master("tap100i0") == "fwbr100i0")
        #expect(setup.master("fwpr100p0") == "vmbr0")
        #expect(setup.nft(["list", "table", "inet", "operators-own"]).status == 0, "another table must be left alone")

        let again = setup.pvectl("plan", ["--detailed-exitcode"])
        #expect(again.status == 0, "\(again.output)")
        #expect(again.output.contains("No changes."), "\(again.output)")
        let status = setup.pvectl("status")
        #expect(status.output.contains("firewall/ruleset") && status.output.contains("Ready")
                && status.output.contains("1 guest NIC(s) behind firewall bridges"),
                "\(status.output)")

        // Drift: someone flushes a chain; the plan says so and apply repairs it.
        #expect(setup.nft(["flush", "chain", "inet", "pvectl", "host-in"]).status == 0)
        let drifted = setup.pvectl("plan", ["--detailed-exitcode"])
        #expect(drifted.status == 2)
        #expect(drifted.output.contains("live ruleset: changed outside pvectl → reloaded from the firewall files"), "\(drifted.output)")
        #expect(setup.pvectl("apply", ["--auto-approve"]).status == 0)
        #expect(setup.pvectl("plan", ["--detailed-exitcode"]).status == 0)

        // An edit is one added rule with its line; a swap is a move.
        try setup.directory.write("root/nodes/pve1/host.fw", Self.host + "IN ACCEPT -p udp -dport 5000\n")
        let edited = setup.pvectl("plan")
        #expect(edited.output.contains("+ inet/host-in: meta l4proto udp udp dport 5000 accept  ← IN ACCEPT -p udp -dport 5000  [live]  line 9"),
                "\(edited.output)")
        #expect(!edited.output.contains("- inet/"), "\(edited.output)")
        let swapped = Self.host.replacingOccurrences(of: "IN HTTP(ACCEPT) -source +admins\nIN Ping(ACCEPT)",
                                                     with: "IN Ping(ACCEPT)\nIN HTTP(ACCEPT) -source +admins")
        try setup.directory.write("root/nodes/pve1/host.fw", swapped)
        let moved = setup.pvectl("plan")
        #expect(moved.output.contains("~ inet/host-in: #"), "\(moved.output)")

        // Disabled cluster-wide: pvectl's tables go, the NIC goes back on its bridge.
        try setup.directory.write("root/firewall/cluster.fw", Self.cluster.replacingOccurrences(of: "enable: 1", with: "enable: 0"))
        let off = setup.pvectl("apply", ["--auto-approve"])
        #expect(off.status == 0, "\(off.output)\n\(off.error)")
        #expect(setup.nft(["list", "table", "inet", "pvectl"]).status != 0)
        #expect(setup.nft(["list", "table", "bridge", "pvectl"]).status != 0)
        #expect(setup.master("tap100i0") == "vmbr0")
        #expect(setup.nft(["list", "table", "inet", "operators-own"]).status == 0)
        #expect(setup.pvectl("plan", ["--detailed-exitcode"]).status == 0)
    }

    @Test("real IPv4 and IPv6 traffic: policies, macros, ipsets, groups, blacklist, management")
    func traffic() async throws {
        let setup = try await offPool { try Setup() }
        let apply = setup.pvectl("apply", ["--auto-approve"])
        try #require(apply.status == 0, "\(apply.output)\n\(apply.error)")
        let host = "192.0.2.1", host6 = "2001:db8:1::1"
        let cases: [(String, String, String, String, String, Int, PacketProbe.Verdict, String)] = [
            // from, source, to, destination, proto, port, expected, why
            ("outside", "192.0.2.50", "host", host, "tcp", 22, .accept, "SSH from local_network (management) despite policy_in REJECT"),
            ("outside", "192.0.2.50", "host", host, "tcp", 8006, .accept, "API from local_network"),
            ("outside", "203.0.113.20", "host", host, "tcp", 22, .reject, "SSH from outside the management ipset meets the policy"),
            ("outside", "2001:db8:1::50", "host", host6, "tcp", 22, .accept, "IPv6 management entry"),
            ("outside", "2001:db8:2::50", "host", host6, "tcp", 22, .reject, "IPv6 outside management"),
            ("outside", "203.0.113.5", "host", host, "tcp", 80, .accept, "HTTP macro from +admins"),
            ("outside", "203.0.113.9", "host", host, "tcp", 80, .reject, "a nomatch entry of +admins"),
            ("outside", "203.0.113.100", "host", host, "tcp", 80, .reject, "not in +admins"),
            ("outside", "2001:db8:beef::5", "host", host6, "tcp", 80, .accept, "+admins holds an IPv6 alias"),
            ("outside", "198.51.100.66", "host", host, "tcp", 80, .drop, "the blacklist drops before any rule"),
            ("outside", "203.0.113.5", "host", host, "udp", 53, .accept, "DNS macro of cluster.fw"),
            ("outside", "203.0.113.5", "host", host, "udp", 54, .reject, "UDP meets policy REJECT"),
            ("outside", "203.0.113.5", "host", host, "icmp", 0, .accept, "Ping macro"),
            ("outside", "203.0.113.5", "vm100", "192.0.2.100", "tcp", 443, .accept, "guest rule"),
            ("outside", "203.0.113.5", "vm100", "192.0.2.100", "tcp", 8080, .accept, "security group on net0"),
            ("outside", "203.0.113.5", "vm100", "192.0.2.100", "tcp", 22, .drop, "guest policy_in DROP"),
            ("outside", "2001:db8:1::50", "vm100", "2001:db8:1::100", "tcp", 443, .accept, "IPv6 to the guest (NDP allowed)"),
            ("outside", "2001:db8:1::50", "vm100", "2001:db8:1::100", "tcp", 8080, .accept, "group rule without address, IPv6"),
            ("outside", "2001:db8:1::50", "vm100", "2001:db8:1::100", "tcp", 22, .drop, "guest policy, IPv6"),
            ("vm100", "192.0.2.100", "outside", "203.0.113.5", "tcp", 25, .accept, "guest policy_out ACCEPT"),
            ("host", host, "vm100", "192.0.2.100", "tcp", 22, .drop, "the host is outside the guest's zone too"),
        ]
        for (from, source, to, destination, proto, port, expected, why) in cases {
            let verdict = try await setup.probe(from: from, source: source, to: to, destination: destination, proto: proto, port: port,
                                                expect: expected)
            #expect(verdict == expected, "\(from) \(source) → \(to) \(destination) \(proto)/\(port): expected \(expected), got \(verdict) (\(why))")
        }
    }
}
