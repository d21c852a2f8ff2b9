import Foundation
import Testing
import TestSupport
@testable import Resources

/// The canonical writers reproduce what Proxmox itself writes, checked against
/// upstream's expected outputs.
@Suite("Canonical writers match upstream's expected outputs", .needsConformance)
struct CanonicalWriterTests {
    @Test("qemu-server parse-config: write_vm_config after a non-strict parse")
    func qemuParseConfig() throws {
        let inputs = Corpus.files(under: "qemu-server/src/test/parse-config-input") { $0.hasSuffix(".conf") }
        #expect(inputs.count == 10)
        var passed = 0
        for input in inputs {
            let name = input.split(separator: "/").last!
            let expectedPath = "qemu-server/src/test/parse-config-expected/\(name)"
            let text = try Corpus.text(input)
            let expected = (try? Corpus.text(expectedPath)) ?? text
            let (config, _) = GuestConfig.parse(text, file: "qemu-server/8006.conf", kind: .qemu)
            let written = config.canonicalText(spec: Specs.qemu)
            #expect(written == expected, "\(name)")
            if written == expected { passed += 1 }
        }
        Corpus.report("qemu parse-config-expected", passed: passed, total: inputs.count)
    }

    @Test("qemu-server parse-config: strict mode rejects what upstream rejects")
    func qemuStrictErrors() throws {
        let errors = Corpus.files(under: "qemu-server/src/test/parse-config-expected") { $0.hasSuffix(".strict.error") }
        #expect(!errors.isEmpty)
        for errorFile in errors {
            let name = String(errorFile.split(separator: "/").last!.dropLast(".strict.error".count))
            let text = try Corpus.text("qemu-server/src/test/parse-config-input/\(name)")
            let (config, diagnostics) = GuestConfig.parse(text, file: name, kind: .qemu)
            let problems = diagnostics + GuestValidator.validate(config, spec: Specs.qemu)
            let upstreamError = try Corpus.text(errorFile)
            #expect(problems.hasErrors, "\(name) should be rejected in strict mode: \(upstreamError)")
        }
    }

    @Test("corosync.conf: parse, write, parse is stable and the text matches without blank lines")
    func corosyncRoundTrip() throws {
        let files = Corpus.files(under: "pve-cluster/src/test/corosync_configs") { $0.hasSuffix(".conf") }
        #expect(files.count == 3)
        var passed = 0
        for file in files {
            let text = try Corpus.text(file)
            let (config, diagnostics) = CorosyncConfig.parse(text, file: file)
            #expect(diagnostics.isEmpty, "\(diagnostics)")
            let written = config.canonicalText()
            let reparsed = CorosyncConfig.parse(written, file: file).0
            let stable = reparsed.canonicalText() == written
            func nonBlank(_ s: String) -> [String] { s.split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }.map(String.init) }
            let sameText = nonBlank(written) == nonBlank(text)
            #expect(stable, "\(file) not stable")
            #expect(sameText, "\(file) differs from upstream's layout")
            if stable && sameText { passed += 1 }
        }
        Corpus.report("corosync configs", passed: passed, total: files.count)
    }

    @Test("SectionConfig: upstream's parse/write vectors")
    func sectionConfigVectors() throws {
        let json = try JSONSerialization.jsonObject(with: Corpus.data("pve-common/_derived/section_config_cases.json")) as! [String: Any]
        let cases = json["cases"] as! [[String: Any]]
        var passed = 0
        for vector in cases {
            let raw = vector["raw"] as! String
            let allowUnknown = (vector["allow_unknown"] as? Int ?? 0) == 1
            let known: Set<String> = ["one", "two"]
            let layout: (String) -> SectionTypeLayout? = { type in
                type == "two" ? SectionTypeLayout(required: ["another", "field2"], known: ["another", "arrayfield", "common", "field2"],
                                                  arrays: ["arrayfield"])
                    : type == "one" ? SectionTypeLayout(required: ["field1"], known: ["another", "common", "field1"]) : nil
            }
            let (file, diagnostics) = SectionConfigFile.parse(raw, file: "test.cfg", layout: layout)
            #expect(diagnostics.isEmpty)
            let unknownTypes = file.sections.filter { !known.contains($0.type) }
            let succeeded = allowUnknown || unknownTypes.isEmpty
            var ok = succeeded == ((vector["expect"] as! String) == "success")
            if succeeded, let expected = vector["expected"] as? [String: Any] {
                let ids = expected["ids"] as! [String: [String: Any]]
                let order = expected["order"] as! [String: Int]
                for section in file.sections {
                    guard let want = ids[section.id] else { ok = false; continue }
                    if order[section.id] != file.sections.firstIndex(where: { $0.id == section.id })! + 1 { ok = false }
                    for (key, value) in want where key != "type" {
                        let got: Any = (value is [Any]) ? section.values(key) : (section[key] ?? "")
                        if "\(got)" != "\(value is [Any] ? (value as! [Any]).map { "\($0)" } : value)" { ok = false }
                    }
                }
                // write + re-parse gives the same configuration
                let rewritten = SectionConfigFile.parse(file.canonicalText(), file: "test.cfg", layout: layout).0
                if rewritten.sections.map({ $0.canonicalLines() }) != file.sections.map({ $0.canonicalLines() }) { ok = false }
            }
            #expect(ok, "\(vector["name"] ?? "")")
            if ok { passed += 1 }
        }
        Corpus.report("section config vectors", passed: passed, total: cases.count)
    }
}
