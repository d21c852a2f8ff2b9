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
}
