import Testing
@testable import Resources

/// Every diagnostic carries a code, so programs (and people filtering output) decide on the kind of a problem, never
/// on its wording. Each input here has exactly one problem.
@Suite("Diagnostics carry a code")
struct DiagnosticCodeTests {
    static let cases: [(ConfigFormat, String, DiagnosticCode)] = [
        (.qemu, "cores: 2\nbogus: 1\n", .unknownKey),
        (.qemu, "cores: many\n", .invalidValue),
        (.qemu, "x\n", .syntax),
        (.qemu, "[PENDING]\n[PENDING]\n", .duplicate),
        (.qemu, "delete: cores\n", .misplaced),
        (.storage, "dir: store\n\tcontent images\n", .missingValue),
        (.storage, "dir: \n", .syntax),
        (.firewall, "[RULES]\nIN\n", .firewallRuleLine),
        (.firewall, "[RULES]\nIN BOGUS\n", .firewallRuleLine),
        (.firewall, "[RULES]\nIN ACCEPT -dport 22\n", .conflict),
        (.firewall, "[RULES]\nGROUP nosuchgroup\n", .reference),
        (.corosync, "totem {\n\tcluster_name: c\n", .syntax),
    ]

    @Test("a representative problem of each kind has its code", arguments: 0..<cases.count)
    func codeOfOneProblem(_ index: Int) {
        let (format, input, code) = Self.cases[index]
        let said = format.validate(input, file: "edge")
        #expect(said.map(\.code) == [code], "\(format) \(input.debugDescription): \(said)")
    }

    @Test("the code is not printed")
    func codeIsNotPrinted() {
        let diagnostic = Diagnostic.error(SourceLocation(file: "f", line: 2, column: 3), "bad", code: .invalidValue)
        #expect(diagnostic.description == "f:2:3: error: bad")
        #expect(diagnostic.coded(.syntax).code == .syntax)
    }

    @Test("a section error a non-strict parse only warns about keeps its code")
    func recoveredKeepsCode() {
        let result = ConfigFormat.qemu.canonicalize("[PENDING]\n[PENDING]\n", file: "edge", dropInvalid: true)
        #expect(result.diagnostics.map(\.severity) == [.warning])
        #expect(result.diagnostics.map(\.code) == [.duplicate])
    }
}
