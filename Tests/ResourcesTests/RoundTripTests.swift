import Foundation
import Testing
import TestSupport
@testable import Resources

/// Parse then write of an unedited file must give back the same bytes.
@Suite("Lossless round trip over the upstream conformance data")
struct RoundTripTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let format: String
        let files: [String]
        var testDescription: String { format }
    }

    static func isGuestConfig(_ path: String, dir: String) -> Bool {
        path.hasSuffix(".conf") && path.contains("/\(dir)/")
    }

    static let cases: [Case] = {
        guard Corpus.isAvailable else { return [] }
        return [
            Case(format: "qemu", files: Corpus.files(under: "qemu-server/src/test") {
                $0.hasSuffix(".conf") && !$0.contains("/restore-config")
            }),
            Case(format: "lxc", files: Corpus.files(under: "pve-container/src/test") {
                ($0.hasSuffix(".conf") && $0.contains("/lxc/")) || $0.hasSuffix("/config")
            }),
            Case(format: "storage", files: Corpus.files(under: ".") { $0.hasSuffix("storage.cfg") }),
            Case(format: "sectionconfig", files: Corpus.files(under: ".") {
                $0.hasSuffix("fabrics.cfg") || ($0.contains("rules_cfgs/") && $0.hasSuffix(".cfg"))
                    || ($0.hasSuffix("/groups") && $0.contains("pve-ha-manager"))
            }),
            Case(format: "interfaces", files: Corpus.files(under: ".") {
                ($0.hasSuffix("/interfaces") && !$0.contains("/etc/network/"))
                    || $0.contains("etc_network_interfaces/") && !$0.contains("_derived") && !$0.hasSuffix("ip_link_details")
                        && !$0.hasSuffix("active_interfaces")
            }),
            Case(format: "firewall", files: Corpus.files(under: ".") { $0.hasSuffix(".fw") }),
            Case(format: "corosync", files: Corpus.files(under: ".") { $0.contains("corosync") && $0.hasSuffix(".conf") }),
            Case(format: "user", files: Corpus.files(under: "pve-access-control/src/test") { $0.hasSuffix(".cfg") }),
        ]
    }()

    static func losslessText(_ format: String, _ text: String, file: String) -> String {
        ConfigFormat(rawValue: format)!.losslessRoundTrip(text, file: file)
    }

    @Test("unedited files are written back byte-identical", .needsConformance, arguments: cases)
    func roundTrip(_ corpus: Case) throws {
        #expect(!corpus.files.isEmpty, "no \(corpus.format) files found in \(Corpus.conformance.path)")
        var passed = 0
        for file in corpus.files {
            let text = try Corpus.text(file)
            let written = Self.losslessText(corpus.format, text, file: file)
            #expect(written == text, "\(file) changed on round trip")
            if written == text { passed += 1 }
        }
        Corpus.report("\(corpus.format) round-trip", passed: passed, total: corpus.files.count)
    }

    @Test("an edit rewrites only the lines it touches")
    func editTouchesOnlyItsSection() throws {
        let text = """
        # storage managed by hand
        dir: local
        \tpath /var/lib/vz
        \tcontent iso,vztmpl,backup

        lvmthin:   local-lvm
        \tthinpool data
        \tvgname pve
        \tcontent rootdir,images

        """
        var (file, diagnostics) = SectionConfigFile.parse(text, file: "storage.cfg") { Specs.storage.sectionLayout(forType: $0) }
        #expect(diagnostics.isEmpty)
        var section = try #require(file["local"])
        section["content"] = "iso,backup"
        file.upsert(section)
        let written = file.losslessText()
        #expect(written == """
        # storage managed by hand
        dir: local
        \tpath /var/lib/vz
        \tcontent iso,backup

        lvmthin:   local-lvm
        \tthinpool data
        \tvgname pve
        \tcontent rootdir,images

        """)
    }

    @Test("Windows line endings are lines too, and survive the round trip")
    func carriageReturns() throws {
        let text = "dir: local\r\n\tpath /var/lib/vz\r\n\tcontent iso\r\n\r\nnfs: nas\r\n\tserver 192.0.2.5\r\n"
        let (file, diagnostics) = SectionConfigFile.parse(text, file: "storage.cfg")
        #expect(diagnostics.isEmpty)
        #expect(file.sections.map(\.id) == ["local", "nas"])
        #expect(file["local"]?["content"] == "iso")
        #expect(file.losslessText() == text)
        let guest = "cores: 2\r\nmemory: 512\r\n"
        let (config, guestDiagnostics) = GuestConfig.parse(guest, file: "qemu-server/100.conf", kind: .qemu)
        #expect(guestDiagnostics.isEmpty)
        #expect(config.main["memory"] == "512")
        #expect(config.losslessText() == guest)
    }
}
