import Foundation
import Resources
import Testing
import TestSupport

/// The macro table the product carries, against the one upstream ships
/// (proxmox-ve-rs `macros.json`, read at test time).
@Suite("Firewall macros match upstream's", .needsConformance)
struct FirewallMacroConformanceTests {
    @Test("every upstream macro exists with the same protocols, ports and ICMP types, in order")
    func macros() throws {
        let data = try Corpus.data("proxmox-ve-rs/proxmox-ve-config/resources/macros.json")
        let upstream = try #require(try JSONSerialization.jsonObject(with: data) as? [String: [String: Any]])
        var passed = 0
        for (name, definition) in upstream.sorted(by: { $0.key < $1.key }) {
            let code = definition["code"] as? [[String: String]] ?? []
            let expected = code.map { "\($0["proto"] ?? "-") d=\($0["dport"] ?? "-") s=\($0["sport"] ?? "-") icmp=\($0["icmp-type"] ?? "-")" }
            let ours = FirewallMacros.all[name]?.entries.map { "\($0.proto) d=\($0.dport ?? "-") s=\($0.sport ?? "-") icmp=\($0.icmpType ?? "-")" }
            if ours == expected { passed += 1 } else { Issue.record("\(name): ours \(ours ?? []), upstream \(expected)") }
        }
        let extra = Set(FirewallMacros.all.keys).subtracting(upstream.keys)
        #expect(extra.isEmpty, "macros upstream does not have: \(extra.sorted())")
        Corpus.report("firewall macros", passed: passed, total: upstream.count)
        #expect(passed == upstream.count)
    }

    @Test("the firewall spec's macro names are the table's: validation and expansion agree")
    func specAgrees() {
        #expect(Set(Specs.firewall.macros) == Set(FirewallMacros.all.keys))
    }
}
