import Testing
@testable import Resources

/// Inputs the fuzzers found or that sit at the edges: every format must give
/// diagnostics, never trap, and still write the input back unchanged.
@Suite("Malformed input gives errors, never a trap")
struct MalformedInputTests {
    static let inputs = ["", "\n", "\n\n", "x", "[", "]", ":", "role:\n", "acl:1\n", "user:\n", "\t\n", "iface\n",
                         "auto\n", "{\n", "}\n", "a {\n", "[RULES]\nIN\n", "[IPSET]\n", "dir: \n", "\u{0}\n", "\r\n\r",
                         "[PENDING]\n[PENDING]\n", "#%ZZ%4\n", "net0: virtio=,,,\n", "lxc.x =\n", "iface a inet6 static\n\taddress ::/999\n"]

    @Test("every format survives edge inputs", arguments: ConfigFormat.allCases)
    func survives(_ format: ConfigFormat) {
        for input in Self.inputs {
            let result = format.canonicalize(input, file: "edge")
            _ = result.diagnostics
            let lossless = format.losslessRoundTrip(input, file: "edge")
            _ = format.validate(input, file: "edge")
            #expect(lossless == input, "\(format) changed \(input.debugDescription)")
        }
        _ = UserConfigValidator.validate(UserConfig.parse("role:\ngroup:\nuser:\n", file: "edge").0)
    }

    /// What each format says about a broken input: the diagnostic, at its line and column, word for word.
    static let named: [(ConfigFormat, String, String)] = [
        (.firewall, "[RULES]\nIN\n", "edge:2:1: error: rule has no action"),
        (.firewall, "[IPSET]\n",
         "edge:1:1: error: unknown section header '[IPSET]' (expected [OPTIONS], [ALIASES], [RULES], [IPSET name] or [group name])"),
        (.firewall, "[RULES]\nIN ACCEPT -source 010.0.0.1\n",
         "edge:2:1: error: -source: '010.0.0.1' is not an address, network, range, list, alias or +ipset"),
        (.qemu, "[PENDING]\n[PENDING]\n", "edge:2:1: error: duplicate section [PENDING]"),
        (.qemu, "net0: virtio=,,,\n", "edge:1:7: error: net0: invalid MAC address '' for model virtio"),
        (.qemu, "[special:x]\nname: a\n", "edge:1:1: error: unknown section 'special:x' is skipped by Proxmox"),
        (.qemu, "x\n", "edge:1:1: error: unable to parse config line: 'x'"),
        (.interfaces, "iface a inet6 static\n\taddress ::/999\n", "edge:2:10: error: address: '::/999' is not an address or address/prefix"),
        (.interfaces, "iface\n", "edge:1:1: error: expected 'iface NAME [inet|inet6 METHOD]', got 'iface'"),
        (.storage, "dir: \n", "edge:1:1: error: expected a section header 'type: id', got 'dir: '"),
        (.corosync, "{\n", "edge:1:1: error: expected 'name {', got '{'"),
        (.corosync, "totem {\n", "edge:1:1: error: section 'totem' is not closed"),
        (.user, "user:\n", "edge:1:1: error: user id '' has no realm (user@realm)"),
        (.datacenter, "x\n", "edge:1:1: error: expected 'key: value', got 'x'"),
    ]

    @Test("each format names the problem of a broken input at its line and column", arguments: 0..<named.count)
    func namesTheProblem(_ index: Int) {
        let (format, input, expected) = Self.named[index]
        let said = format.validate(input, file: "edge").map(\.description)
        #expect(said.contains(expected), "\(format) \(input.debugDescription): \(said)")
    }

    @Test("a raw lxc key may be empty, as pve-container reads it")
    func emptyRawLXCKey() {
        #expect(ConfigFormat.lxc.validate("lxc.x =\n", file: "edge").isEmpty)
    }
}
