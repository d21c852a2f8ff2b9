import Foundation
import Testing
import TestSupport
@testable import Resources

/// Guest configs upstream accepts must validate against our specs: this is
/// how the specs are kept complete and no stricter than Proxmox.
@Suite("Specs accept what upstream accepts", .needsConformance)
struct SpecCoverageTests {
    /// The cfg2cmd inputs upstream expects to fail, read from their description.
    static func expectsError(_ text: String) -> Bool { text.contains("EXPECT_ERROR") }

    @Test("qemu-server cfg2cmd configs")
    func qemuConfigs() throws {
        let files = Corpus.files(under: "qemu-server/src/test/cfg2cmd") { $0.hasSuffix(".conf") }
        var passed = 0
        var total = 0
        for file in files {
            let text = try Corpus.text(file)
            if Self.expectsError(text) { continue }
            total += 1
            let (config, diagnostics) = GuestConfig.parse(text, file: file, kind: .qemu)
            let problems = (diagnostics + GuestValidator.validate(config, spec: Specs.qemu)).filter { $0.severity == .error }
            #expect(problems.isEmpty, "\(problems.map(\.description).joined(separator: "\n"))")
            if problems.isEmpty { passed += 1 }
        }
        Corpus.report("qemu cfg2cmd configs valid", passed: passed, total: total)
    }

    /// The distro-setup configs. The snapshot state-machine fixtures are left
    /// out: they use `ostype: redhat`, which pve-container itself rejects
    /// (its parser warns and drops it); they round-trip in RoundTripTests.
    @Test("pve-container distro setup configs")
    func lxcConfigs() throws {
        let files = Corpus.files(under: "pve-container/src/test") { $0.hasSuffix("/config") }
        var passed = 0
        for file in files {
            let text = try Corpus.text(file)
            let (config, diagnostics) = GuestConfig.parse(text, file: file, kind: .lxc)
            let problems = (diagnostics + GuestValidator.validate(config, spec: Specs.lxc)).filter { $0.severity == .error }
            #expect(problems.isEmpty, "\(problems.map(\.description).joined(separator: "\n"))")
            if problems.isEmpty { passed += 1 }
        }
        Corpus.report("lxc configs valid", passed: passed, total: files.count)
    }

    @Test("firewall example and test configs")
    func firewallConfigs() throws {
        let files = Corpus.files(under: ".") { $0.hasSuffix(".fw") && !$0.contains("test-errors") }
        var passed = 0
        for file in files {
            let text = try Corpus.text(file)
            let (config, diagnostics) = FirewallConfig.parse(text, file: file)
            let groups = Set(((try? Corpus.text(file.split(separator: "/").dropLast().joined(separator: "/") + "/cluster.fw")).map {
                FirewallConfig.parse($0, file: "cluster.fw", scope: .cluster).0.groups.keys.map { $0 } }) ?? [])
            let problems = (diagnostics + FirewallValidator.validate(config, groups: config.scope == .cluster ? nil : groups))
                .filter { $0.severity == .error }
            #expect(problems.isEmpty, "\(problems.map(\.description).joined(separator: "\n"))")
            if problems.isEmpty { passed += 1 }
        }
        Corpus.report("firewall configs valid", passed: passed, total: files.count)
    }
}
