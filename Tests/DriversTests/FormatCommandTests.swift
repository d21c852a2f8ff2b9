import Foundation
import Testing
import TestSupport

/// `pvectl fmt` through the binary on upstream's parse-config cases: with
/// --drop-invalid it writes what qemu-server writes after its non-strict parse,
/// byte for byte; without it, the files a strict parse rejects for their
/// sections are refused.
@Suite("pvectl fmt on upstream's parse-config cases", .needsConformance)
struct FormatCommandTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path
    static let inputs = "qemu-server/src/test/parse-config-input"
    static let expected = "qemu-server/src/test/parse-config-expected"

    /// The case copied to a qemu-server folder, so that fmt detects the format from the path.
    static func place(_ name: String, in directory: TemporaryDirectory) throws -> String {
        try directory.write("qemu-server/\(name)", try Corpus.text("\(inputs)/\(name)"))
        return directory.path + "/qemu-server/\(name)"
    }

    @Test("--drop-invalid reproduces upstream's non-strict output on every case, saying what it dropped")
    func dropInvalid() throws {
        let names = Corpus.files(under: Self.inputs) { $0.hasSuffix(".conf") }.map { String($0.split(separator: "/").last!) }
        #expect(names.count == 10)
        let directory = try TemporaryDirectory(prefix: "pvectl-fmt")
        var passed = 0
        for name in names {
            let path = try Self.place(name, in: directory)
            let want = try (try? Corpus.text("\(Self.expected)/\(name)")) ?? Corpus.text("\(Self.inputs)/\(name)")
            let result = NetworkNamespace.capture([Self.binary, "fmt", "--drop-invalid", path])
            #expect(result.status == 0, "\(name): \(result.error)")
            #expect(result.output == want, "\(name)")
            #expect(!result.error.contains("error:"), "\(name): \(result.error)")
            if result.status == 0 && result.output == want { passed += 1 }
        }
        Corpus.report("pvectl fmt --drop-invalid on parse-config", passed: passed, total: names.count)

        let unknown = try Self.place("unknown-sections.conf", in: directory)
        let said = NetworkNamespace.capture([Self.binary, "fmt", "--drop-invalid", unknown]).error
        #expect(said.contains("\(unknown):20:1: warning: unknown section 'special:unknown123' is skipped by Proxmox (dropped)"), "\(said)")
        let duplicate = try Self.place("duplicate-sections.conf", in: directory)
        let kept = NetworkNamespace.capture([Self.binary, "fmt", "--drop-invalid", duplicate]).error
        #expect(kept.contains("warning: duplicate section [PENDING] (the last one is kept)"), "\(kept)")
    }

    @Test("without --drop-invalid, unknown and repeated sections are refused and the file is left as it was")
    func strictRefuses() throws {
        let directory = try TemporaryDirectory(prefix: "pvectl-fmt")
        for name in ["duplicate-sections.conf", "unknown-sections.conf"] {
            let path = try Self.place(name, in: directory)
            let before = try String(contentsOfFile: path, encoding: .utf8)
            let result = NetworkNamespace.capture([Self.binary, "fmt", "--write", path])
            #expect(result.status == 1, "\(name)")
            #expect(result.error.contains("error:"), "\(name): \(result.error)")
            #expect(try String(contentsOfFile: path, encoding: .utf8) == before, "\(name) was rewritten")
            let written = NetworkNamespace.capture([Self.binary, "fmt", "--drop-invalid", "--write", path])
            #expect(written.status == 0, "\(name): \(written.error)")
            #expect(try String(contentsOfFile: path, encoding: .utf8) == (try Corpus.text("\(Self.expected)/\(name)")))
        }
    }
}
