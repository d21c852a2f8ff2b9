import Foundation
import Testing
@testable import Resources

@Suite("specs/ is the single source of truth and ships inside the binary")
struct SpecsTests {
    static let specsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("specs")

    @Test("the embedded copy equals specs/ (run scripts/embed-specs after editing a spec)")
    func embeddedMatchesFiles() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.specsDirectory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names == EmbeddedSpecs.files.keys.sorted())
        for name in names {
            let onDisk = try String(contentsOf: Self.specsDirectory.appendingPathComponent(name), encoding: .utf8)
            #expect(EmbeddedSpecs.files[name].map { $0 + "\n" } == onDisk, "\(name) differs from its embedded copy")
        }
    }

    @Test("every spec decodes, every option has a change class and a description")
    func specsAreComplete() throws {
        for kind in ["qemu", "lxc", "storage", "network", "firewall", "datacenter"] {
            let spec = try #require(Specs.spec(kind), "\(kind) spec missing")
            let options = spec.options.merging(spec.scopes.values.reduce([:]) { $0.merging($1) { a, _ in a } }) { a, _ in a }
            #expect(!options.isEmpty)
            for (name, option) in options {
                #expect(option.description?.isEmpty == false, "\(kind).\(name) has no description")
                if let format = option.format { #expect(spec.formats[format] != nil, "\(kind).\(name) names unknown format \(format)") }
            }
        }
        // every storage type's properties are declared
        let storage = Specs.storage
        for (type, typeSpec) in storage.types {
            for key in typeSpec.required + typeSpec.optional {
                #expect(storage.options[key] != nil, "storage type \(type) uses undeclared property \(key)")
            }
        }
    }

    @Test("indexed options resolve only inside their range")
    func indexedOptions() {
        #expect(Specs.qemu.option("net31") != nil)
        #expect(Specs.qemu.option("net32") == nil)
        #expect(Specs.qemu.option("net01") == nil)
        #expect(Specs.qemu.option("scsi30") != nil)
        #expect(Specs.qemu.option("scsi31") == nil)
        #expect(Specs.lxc.option("mp255") != nil)
        #expect(Specs.qemu.option("cores")?.changeClass == .restart)
        #expect(Specs.qemu.option("net0")?.changeClass == .live)
    }

    @Test("values are checked with the allowed values in the message", arguments: [
        ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=10", nil),
        ("net0", "virtio=BC:24:11:00:00:0Z,bridge=vmbr0", "invalid MAC address 'BC:24:11:00:00:0Z' for model virtio"),
        ("net0", "virtio,bridge=vmbr0,tag=5000", "tag: value '5000' must be at most 4094"),
        ("scsi0", "local-lvm:vm-100-disk-0,size=32G,cache=writeback", nil),
        ("scsi0", "local-lvm:vm-100-disk-0,size=lots", "size: value 'lots' is not a size (a number with an optional K, M, G or T suffix)"),
        ("numa", "verify meee~ :)", "type check ('boolean') failed - got 'verify meee~ :)'"),
        ("memory", "4096", nil),
        ("cpu", "host,flags=+pcid;-spec-ctrl", nil),
        ("ostype", "win12", "value 'win12' is not one of: other, wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris"),
    ] as [(String, String, String?)])
    func qemuValues(key: String, value: String, expected: String?) {
        #expect(Specs.qemu.check(key: key, value: value) == expected)
    }

    @Test("IP address syntax")
    func addresses() {
        #expect(IPAddress.isIPv4("192.0.2.1"))
        #expect(!IPAddress.isIPv4("192.0.2.256"))
        #expect(!IPAddress.isIPv4("192.0.2"))
        #expect(IPAddress.isIPv6("2001:db8::1"))
        #expect(IPAddress.isIPv6("::"))
        #expect(IPAddress.isIPv6("::ffff:192.0.2.1"))
        #expect(IPAddress.isIPv6("2001:db8:0:85a3:0:0:ac1f:8001"))
        #expect(!IPAddress.isIPv6("2001:db8:::1"))
        #expect(!IPAddress.isIPv6("2001:db8::g"))
        #expect(IPAddress.isCIDR("2001:db8::/32"))
        #expect(!IPAddress.isCIDR("192.0.2.0/33"))
        // One reading for validation and the firewall compiler: no leading zeros (pve-common's IPV4RE, inet_pton).
        #expect(!IPAddress.isIPv4("01.2.3.4"))
        #expect(!IPAddress.isCIDR("192.0.2.010/24"))
        #expect(IPAddress.parse("192.0.2.1")?.bytes == [192, 0, 2, 1])
        #expect(IPAddress.parse("::1")?.family == .v6)
    }

    @Test("a firewall address the compiler cannot read fails validation: both use IPAddress")
    func firewallAddressAgreement() {
        let text = "[RULES]\nIN ACCEPT -source 010.0.0.1 -p tcp -dport 22\n"
        let diagnostics = ConfigFormat.firewall.validate(text, file: "firewall/cluster.fw")
        #expect(diagnostics.contains { $0.severity == .error && $0.location.line == 2 }, "\(diagnostics)")
    }
}
