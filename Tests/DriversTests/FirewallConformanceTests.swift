import Drivers
import Foundation
import Reconciler
import Resources
import Testing
import TestSupport

/// pve-firewall's own test cases replayed with real packets: each test
/// directory's cluster.fw, host.fw and <vmid>.fw are applied by the firewall
/// kind to a host namespace with Proxmox VE's device names, and every
/// assertion becomes a TCP connection, UDP datagram or raw packet between
/// the zones' namespaces. The verdict is what the kernel did with it.
@Suite("Firewall conformance (pve-firewall test cases, real packets)", .serialized,
       .needsConformance, .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct FirewallConformanceTests {
    static let directory = "pve-firewall/test"

    static var cases: [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: Corpus.conformance.appendingPathComponent(directory).path))?
            .filter { $0.hasPrefix("test-") }.sorted() ?? []
    }

    struct Assertion {
        var line: Int
        var from: String
        var to: String
        var action: String
        var proto: String
        var source: String?
        var dest: String?
        var dport: String?
        var sport: String?
        var dsttype: String?
    }

    static func assertions(_ name: String) throws -> [Assertion] {
        let json = try JSONSerialization.jsonObject(with: try Corpus.data("pve-firewall/_derived/tests.json")) as? [String: Any]
        let zones = ["host", "outside", "nfvm", "vm100", "ct200"]
        var result: [Assertion] = []
        for entry in json?[name] as? [[String: Any]] ?? [] {
            func text(_ key: String) -> String? { entry[key].map { "\($0)" } }
            let from = text("from"), to = text("to")
            let pairs: [(String, String)]
            switch (from, to) {
            case let (from?, to?): pairs = [(from, to)]
            case let (from?, nil): pairs = zones.filter { $0 != from }.map { (from, $0) }
            case let (nil, to?): pairs = zones.filter { $0 != to }.map { ($0, to) }
            default: pairs = []
            }
            for (from, to) in pairs {
                result.append(Assertion(line: entry["_line"] as? Int ?? 0, from: from, to: to, action: text("action") ?? "QUERY",
                                        proto: text("proto") ?? "tcp", source: text("source"), dest: text("dest"),
                                        dport: text("dport"), sport: text("sport"), dsttype: text("dsttype")))
            }
        }
        return result
    }

    /// Guests of the fixed test environment (fwtester-env.json), as configs and zones.
    static func environment() throws -> (configs: [String: String], zones: [String: (bridge: String, mac: String)]) {
        let env = try JSONSerialization.jsonObject(with: try Corpus.data("pve-firewall/_derived/fwtester-env.json")) as? [String: Any]
        let vmdata = env?["vmdata"] as? [String: [String: [String: String]]] ?? [:]
        var configs: [String: String] = [:]
        var zones: [String: (bridge: String, mac: String)] = [:]
        for (kind, guests) in vmdata {
            for (vmid, nets) in guests {
                let directory = kind == "lxc" ? "lxc" : "qemu-server"
                configs["nodes/proxself/\(directory)/\(vmid).conf"] = nets.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)\n" }.joined()
                for (key, value) in nets {
                    let property = PropertyString(parsing: value)
                    let bridge = property["bridge"] ?? "vmbr0"
                    let mac = kind == "lxc" ? property["hwaddr"] ?? "" : property.entries.first { $0.key == "e1000" }?.value ?? ""
                    let index = key.dropFirst(3)
                    zones[kind == "lxc" ? "ct\(vmid)" : "vm\(vmid)i\(index)"] = (bridge, mac.lowercased())
                }
            }
        }
        return (configs, zones)
    }

    /// Why a case cannot be played with real packets, or nil.
    static func notReproducible(_ assertion: Assertion) -> String? {
        if let dest = assertion.dest, FirewallTopology.isMulticast(dest), assertion.dsttype != "MULTICAST" {
            return "a packet to a multicast address is multicast; the simulator's UNICAST flag has no real counterpart"
        }
        if let source = assertion.source, source.hasPrefix("127.") {
            return "the kernel never puts a loopback source address (\(source)) on the wire"
        }
        if assertion.proto == "icmp", let type = assertion.dport, !["8", "echo-request", "ping"].contains(type) {
            return "a stray ICMP \(type) (no matching request or connection) is INVALID to conntrack and dropped before any rule"
        }
        return nil
    }

    @Test("the corpus holds pve-firewall's test cases")
    func casesFound() {
        #expect(Self.cases.count >= 10, "found \(Self.cases.count) test directories under \(Self.directory)")
    }

    @Test("pve-firewall case", arguments: cases)
    func replay(_ name: String) async throws {
        let assertions = try Self.assertions(name)
        let (configs, zones) = try Self.environment()
        // One case at a time, its blocking setup off the cooperative pool: thirteen
        // topologies of ten namespaces at once starve every other test on two cores.
        let topology = try await offPool { try FirewallTopology(guests: zones) }
        let root = try TemporaryDirectory(prefix: "fwconf")
        let caseDirectory = Corpus.conformance.appendingPathComponent("\(Self.directory)/\(name)")
        for file in try FileManager.default.contentsOfDirectory(atPath: caseDirectory.path) where file.hasSuffix(".fw") {
            let text = try String(contentsOf: caseDirectory.appendingPathComponent(file), encoding: .utf8)
            try root.write(file == "host.fw" ? "nodes/proxself/host.fw" : "firewall/\(file)", text)
        }
        try root.write("corosync.conf", try Corpus.text("\(Self.directory)/corosync.conf"))
        for (path, text) in configs { try root.write(path, text) }
        try root.write("interfaces", "auto vmbr0\niface vmbr0 inet static\n\taddress \(FirewallTopology.hostAddress)/24\n\tbridge-ports eth0\n")

        let state = DesiredState.load(root: root.path, interfaces: root.path + "/interfaces", node: "proxself")
        let reconciler = FirewallReconciler(driver: NftablesFirewallDriver(namespace: topology.host),
                                            store: StateStore(directory: root.path + "/state"))
        let computed = try await reconciler.compute(state, only: [ResourceSelector("firewall")!])
        #expect(computed.problems.isEmpty, "\(computed.problems)")
        let outcome = try await reconciler.apply(computed) { _ in }
        #expect(outcome.failed.isEmpty, "\(outcome.failed)")
        let again = try await reconciler.compute(state, only: [ResourceSelector("firewall")!])
        #expect(again.resources.isEmpty, "a second plan must be empty: \(again.resources.map(\.id))")

        // Blocking socket work runs on its own thread, not the cooperative pool.
        let results = try await offPool { try Self.play(assertions, on: topology) }.map { ($0.0, $0.1, $0.2) }
        try await offPool { topology.close() }
        var matched = 0, played = 0
        var skipped: [String] = []
        for (assertion, verdict, reason) in results {
            guard let verdict else {
                skipped.append("line \(assertion.line) \(assertion.from)→\(assertion.to): \(reason ?? "")")
                continue
            }
            played += 1
            if verdict.rawValue == assertion.action { matched += 1 }
            #expect(verdict.rawValue == assertion.action,
                    Comment(rawValue: "\(name) line \(assertion.line): \(assertion.from) → \(assertion.to) \(assertion.proto) "
                                          + "\(assertion.source ?? "-")→\(assertion.dest ?? "-") dport \(assertion.dport ?? "-"): "
                                          + "expected \(assertion.action), got \(verdict)"))
        }
        print("conformance pve-firewall \(name): \(matched)/\(played) verdicts match with real packets; \(skipped.count) not reproducible")
        for reason in skipped { print("  not reproducible: \(reason)") }
    }

    static func play(_ assertions: [Assertion], on topology: FirewallTopology) throws -> [(Assertion, PacketProbe.Verdict?, String?)] {
        var results: [(Assertion, PacketProbe.Verdict?, String?)] = []
        for assertion in assertions {
            if let reason = notReproducible(assertion) {
                results.append((assertion, nil, reason))
                continue
            }
            guard let source = topology.resolve(assertion.from), let destination = topology.resolve(assertion.to) else {
                results.append((assertion, nil, "zone \(assertion.from) or \(assertion.to) is not in the test environment"))
                continue
            }
            let sourceIP = assertion.source ?? (assertion.from == "host" ? FirewallTopology.hostAddress : "100.100.1.2")
            let destinationIP = assertion.dest ?? (assertion.to == "host" ? FirewallTopology.hostAddress : "100.200.3.4")
            let cleanup = try topology.prepare(from: assertion.from, sourceIP: sourceIP, to: assertion.to, destinationIP: destinationIP)
            defer { cleanup() }
            // A drop is silence: wait long enough for an accept or reject to show, briefly when silence is expected.
            let wait: TimeInterval = assertion.action == "DROP" ? 0.6 : 3
            let port = Int(assertion.dport ?? "") ?? 9
            let verdict: PacketProbe.Verdict
            switch assertion.proto {
            case "udp":
                let multicast = FirewallTopology.isMulticast(destinationIP) ? (sender: source.device, receiver: destination.device) : nil
                verdict = try PacketProbe.udp(from: source.namespace, sourceIP: sourceIP, sourcePort: Int(assertion.sport ?? "") ?? 0,
                                              to: destination.namespace, destinationIP: destinationIP, port: port, wait: wait,
                                              multicastInterface: multicast)
            case "icmp":
                verdict = try PacketProbe.raw(from: source.namespace, sourceIP: sourceIP, to: destination.namespace, destinationIP: destinationIP,
                                              proto: Int32(IPPROTO_ICMP), wait: wait)
            case "icmpv6" where !destinationIP.contains(":"):
                // ICMPv6 inside IPv4, as the case asks: protocol 58 in an IPv4 packet.
                verdict = try PacketProbe.raw(from: source.namespace, sourceIP: sourceIP, to: destination.namespace, destinationIP: destinationIP,
                                              proto: 58, icmpType: UInt8(Int(assertion.dport ?? "") ?? 128), wait: wait)
            default:
                verdict = try PacketProbe.tcp(from: source.namespace, sourceIP: sourceIP, sourcePort: Int(assertion.sport ?? "") ?? 0,
                                              to: destination.namespace, destinationIP: destinationIP, port: port, wait: wait)
            }
            results.append((assertion, verdict, nil))
        }
        return results
    }
}
