import Foundation
import Testing
import TestSupport
@testable import Drivers
@testable import Reconciler
@testable import Resources

/// Rewrites the guide's example addresses into the documentation ranges
/// (and fills the ones the guide redacted), so nothing here looks routable.
func documentationAddresses(_ text: String) -> String {
    var result = text
    let rules: [(String, String)] = [
        (#"192\.168\.\d+\.(\d+)"#, "192.0.2.$1"),
        (#"\b10\.\d+\.\d+\.(\d+)"#, "203.0.113.$1"),
        (#"192\.X\.Y\.(\d+)"#, "198.51.100.$1"),
        (#"255\.255\.250\.0"#, "255.255.255.0"),
        (#"-s ''"#, "-s '203.0.113.0/24'"),
    ]
    for (pattern, template) in rules {
        let regex = try! NSRegularExpression(pattern: pattern)
        result = regex.stringByReplacingMatches(in: result, range: NSRange(result.startIndex..., in: result), withTemplate: template)
    }
    return result
}

/// Examples that need bonds, VLANs or VLAN-aware bridges, which this host's
/// kernel lacks (they run in the QEMU harness).
func needsGuestKernel(_ text: String) -> Bool {
    let regex = try! NSRegularExpression(pattern: #"bond|slaves|vlan-aware yes|iface \S+\.\d+|bridge[-_]ports \S*\.\d+"#)
    return regex.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
}

/// NIC names an example refers to (stand-ins are created as veth pairs).
func nicNames(_ text: String) -> [String] {
    let regex = try! NSRegularExpression(pattern: #"\b(eno\d+|ens\d+|eth\d+)\b"#)
    let names = regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).map { String(text[Range($0.range, in: text)!]) }
    return Array(Set(names)).sorted()
}

func desired(_ text: String) -> DesiredState {
    let (file, _) = InterfacesFile.parse(text, file: "interfaces")
    var state = DesiredState(root: "/nonexistent", node: "pve1")
    state.interfaces = file
    state.interfacesPath = "interfaces"
    return state
}

let hostExamples: [String] = {
    guard let all = try? SeedExamples.interfaces() else { return [] }
    var unique: [String] = []
    for example in all.map(documentationAddresses) where !needsGuestKernel(example) && !unique.contains(example) {
        unique.append(example)
    }
    return unique
}()

@Suite("Network kind against the real kernel, in fresh namespaces",
       .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct KernelNetworkTests {
    func reconciler(_ namespace: NetworkNamespace, _ state: TemporaryDirectory) -> NetworkReconciler {
        NetworkReconciler(driver: KernelNetworkDriver(namespace: namespace.name), store: StateStore(directory: state.path))
    }

    @Test("every admin-guide example this kernel supports converges: apply, then plan shows nothing", .needsSeeds)
    func guideExamplesConverge() async throws {
        #expect(hostExamples.count >= 10, "found \(hostExamples.count) host-kernel examples in the guide")
        var converged = 0
        for example in hostExamples {
            let namespace = try NetworkNamespace()
            let stateDirectory = try TemporaryDirectory()
            for nic in nicNames(example) { try namespace.addNIC(nic) }
            let reconciler = reconciler(namespace, stateDirectory)
            let computed = try await reconciler.compute(desired(example), only: [])
            #expect(computed.problems.isEmpty, "\(computed.problems)\n\(example)")
            let outcome = try await reconciler.apply(computed) { _ in }
            #expect(outcome.failed.isEmpty, "\(outcome.failed)\n\(example)")
            let again = try await reconciler.compute(desired(example), only: [])
            #expect(again.resources.isEmpty,
                    "not converged:\n\(Plan(node: "pve1", inputs: [:], resources: again.resources).render(colors: false))\n\(example)")
            if outcome.failed.isEmpty && again.resources.isEmpty { converged += 1 }
        }
        Corpus.report("seeds network examples converge on the host kernel", passed: converged, total: hostExamples.count)
    }

    static let base = """
    auto lo
    iface lo inet loopback

    iface eno1 inet manual

    auto vmbr0
    iface vmbr0 inet static
    \taddress 192.0.2.10/24
    \tgateway 192.0.2.1
    \tbridge-ports eno1
    \tbridge-stp off
    \tbridge-fd 0

    auto vmbr1
    iface vmbr1 inet static
    \taddress 198.51.100.1/24
    \tbridge-ports none
    \tbridge-stp on
    \tbridge-fd 4
    \tpost-up echo "$IFACE is up" > /tmp/pvectl-hook-$IFACE-NAMESPACE
    \tpost-down echo "$IFACE is gone" > /tmp/pvectl-hook-$IFACE-NAMESPACE

    iface vmbr1 inet6 static
    \taddress 2001:db8:0:0::1/64
    \tgateway 2001:db8::fffe

    """

    @Test("one attribute changes only that: same ifindex, guest ports stay, MTU is live, hooks run")
    func liveChanges() async throws {
        let namespace = try NetworkNamespace()
        let stateDirectory = try TemporaryDirectory()
        try namespace.addNIC("eno1")
        let text = Self.base.replacingOccurrences(of: "NAMESPACE", with: namespace.name)
        defer { try? FileManager.default.removeItem(atPath: "/tmp/pvectl-hook-vmbr1-\(namespace.name)") }
        let reconciler = reconciler(namespace, stateDirectory)
        let logged = LogLines()
        _ = try await reconciler.apply(try await reconciler.compute(desired(text), only: [])) { logged.append($0) }
        #expect(try await reconciler.compute(desired(text), only: []).resources.isEmpty)
        #expect(FileManager.default.contents(atPath: "/tmp/pvectl-hook-vmbr1-\(namespace.name)").map { String(decoding: $0, as: UTF8.self) }
                == "vmbr1 is up\n")
        #expect(logged.lines.contains { $0.hasPrefix("post-up vmbr1: echo") })

        let bridge = try #require(try namespace.link("vmbr0"))
        let ifindex = bridge["ifindex"] as? Int
        // A guest tap (a veth here) joins the bridge outside our control.
        try namespace.run(["ip", "-n", namespace.name, "link", "add", "tap100i0", "type", "veth", "peer", "name", "tap100p"])
        try namespace.run(["ip", "-n", namespace.name, "link", "set", "tap100i0", "master", "vmbr0"])

        let edited = text.replacingOccurrences(of: "192.0.2.10/24", with: "192.0.2.20/24")
            .replacingOccurrences(of: "\tbridge-fd 0\n", with: "\tbridge-fd 0\n\tmtu 1400\n")
        let computed = try await reconciler.compute(desired(edited), only: [])
        #expect(computed.resources.map(\.id) == ["network/vmbr0"])
        #expect(Set(computed.resources.first?.changes.map(\.field) ?? []) == ["address", "mtu"])
        #expect(computed.resources.first?.changes.allSatisfy { $0.changeClass == .live } == true)
        _ = try await reconciler.apply(computed) { _ in }
        let after = try #require(try namespace.link("vmbr0"))
        #expect(after["ifindex"] as? Int == ifindex, "vmbr0 was recreated")
        #expect(after["mtu"] as? Int == 1400)
        #expect(try namespace.link("tap100i0")?["master"] as? String == "vmbr0")
        let routes = try namespace.exec(["ip", "-json", "route", "show", "default"]).output
        #expect(routes.contains("\"gateway\":\"192.0.2.1\""))
        #expect(try await reconciler.compute(desired(edited), only: []).resources.isEmpty)
    }

    @Test("only what the reconciler created is removed; unmanaged devices stay")
    func ownership() async throws {
        let namespace = try NetworkNamespace()
        let stateDirectory = try TemporaryDirectory()
        try namespace.addNIC("eno1")
        try namespace.run(["ip", "-n", namespace.name, "link", "add", "docker0", "type", "bridge"])
        try namespace.run(["ip", "-n", namespace.name, "address", "add", "203.0.113.1/24", "dev", "docker0"])
        try namespace.run(["ip", "-n", namespace.name, "link", "add", "veth0stray", "type", "veth", "peer", "name", "veth1stray"])
        let reconciler = reconciler(namespace, stateDirectory)
        let text = Self.base.replacingOccurrences(of: "NAMESPACE", with: namespace.name)
        _ = try await reconciler.apply(try await reconciler.compute(desired(text), only: [])) { _ in }
        let withoutVmbr1 = String(text[..<text.range(of: "auto vmbr1")!.lowerBound])
        let computed = try await reconciler.compute(desired(withoutVmbr1), only: [])
        #expect(computed.resources.map(\.id) == ["network/vmbr1"])
        #expect(computed.resources.first?.action == .delete)
        _ = try await reconciler.apply(computed) { _ in }
        #expect(try namespace.link("vmbr1") == nil)
        let hookFile = "/tmp/pvectl-hook-vmbr1-\(namespace.name)"
        defer { try? FileManager.default.removeItem(atPath: hookFile) }
        #expect(FileManager.default.contents(atPath: hookFile).map { String(decoding: $0, as: UTF8.self) } == "vmbr1 is gone\n",
                "post-down did not run")
        #expect(try namespace.link("docker0") != nil)
        #expect(try namespace.link("veth0stray") != nil)
        #expect(try namespace.exec(["ip", "-br", "address", "show", "docker0"]).output.contains("203.0.113.1/24"))
        #expect(try await reconciler.compute(desired(withoutVmbr1), only: []).resources.isEmpty)
    }
}

final class LogLines: @unchecked Sendable {
    // @unchecked: guarded by the lock.
    private let lock = NSLock()
    private var storage: [String] = []
    func append(_ line: String) { lock.withLock { storage.append(line) } }
    var lines: [String] { lock.withLock { storage } }
}
