import Foundation
import Testing
import TestSupport
@testable import Resources

/// The configuration examples printed in the admin guide (../shared/seeds)
/// parse without errors and round-trip byte for byte; they also validate,
/// except where the guide itself is defective (addresses redacted to
/// `192.X.Y.57`, a fingerprint shortened with `..snip..`, server lines
/// stripped from one copy of the guide, the typo `maunal`).
@Suite("Examples from the admin guide", .needsSeeds)
struct SeedExampleTests {
    static let knownGuideDefects = ["X.Y", "..snip..", "missing required property 'server'",
                                    "missing required property 'portal'", "'maunal'", "'255.255.250.0' is not a netmask"]

    static func isGuideDefect(_ diagnostic: Diagnostic) -> Bool {
        knownGuideDefects.contains { diagnostic.message.contains($0) }
    }

    @Test("interfaces examples")
    func interfaces() throws {
        let examples = try SeedExamples.interfaces()
        #expect(examples.count >= 10)
        var passed = 0
        for example in examples {
            let (file, diagnostics) = InterfacesFile.parse(example, file: "seed")
            let problems = (diagnostics + InterfacesValidator.validate(file)).filter { !Self.isGuideDefect($0) }
            #expect(file.losslessText() == example)
            #expect(diagnostics.isEmpty, "\(diagnostics)\n\(example)")
            #expect(!problems.hasErrors, "\(problems)\n\(example)")
            if file.losslessText() == example && !problems.hasErrors { passed += 1 }
        }
        Corpus.report("seeds interfaces examples", passed: passed, total: examples.count)
    }

    @Test("storage.cfg examples")
    func storage() throws {
        let examples = try SeedExamples.storage()
        #expect(examples.count >= 10)
        var passed = 0
        for example in examples {
            let (file, diagnostics) = SectionConfigFile.parse(example, file: "seed") { Specs.storage.sectionLayout(forType: $0) }
            let problems = (diagnostics + StorageValidator.validate(file)).filter { !Self.isGuideDefect($0) }
            #expect(file.losslessText() == example)
            #expect(diagnostics.isEmpty, "\(diagnostics)\n\(example)")
            #expect(!problems.hasErrors, "\(problems)\n\(example)")
            if file.losslessText() == example && !problems.hasErrors { passed += 1 }
        }
        Corpus.report("seeds storage.cfg examples", passed: passed, total: examples.count)
    }
}
