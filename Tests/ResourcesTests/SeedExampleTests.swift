import Foundation
import Testing
@testable import Resources

/// The configuration examples printed in the admin guide (../shared/seeds)
/// parse without errors and round-trip byte for byte; they also validate,
/// except where the guide itself is defective (addresses redacted to
/// `192.X.Y.57`, a fingerprint shortened with `..snip..`, server lines
/// stripped from one copy of the guide, the typo `maunal`).
@Suite("Examples from the admin guide")
struct SeedExampleTests {
    static let knownGuideDefects = ["X.Y", "..snip..", "missing required property 'server'",
                                    "missing required property 'portal'", "'maunal'", "'255.255.250.0' is not a netmask"]

    static func isGuideDefect(_ diagnostic: Diagnostic) -> Bool {
        knownGuideDefects.contains { diagnostic.message.contains($0) }
    }

    static let storageTypes = ["dir", "nfs", "cifs", "lvm", "lvmthin", "btrfs", "zfspool", "zfs", "iscsi", "iscsidirect", "rbd", "cephfs", "pbs", "glusterfs", "esxi"]

    static func seedLines() throws -> [[Substring]] {
        let names = try FileManager.default.contentsOfDirectory(atPath: Corpus.seeds.path).filter { $0.hasSuffix(".txt") }.sorted()
        return try names.map { try String(contentsOf: Corpus.seeds.appendingPathComponent($0), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) }
    }

    /// Runs of lines that look like an interfaces file: stanzas, indented
    /// options, comments and blank lines, containing at least one iface.
    static func interfacesExamples(_ lines: [Substring]) -> [String] {
        var examples: [String] = []
        var current: [Substring] = []
        func flush() {
            while current.last?.allSatisfy(\.isWhitespace) == true { current.removeLast() }
            if current.contains(where: { $0.hasPrefix("iface ") }) { examples.append(current.joined(separator: "\n") + "\n") }
            current = []
        }
        for line in lines {
            let isStanza = line.hasPrefix("auto ") || line.hasPrefix("iface ") || line.hasPrefix("allow-") || line.hasPrefix("source")
            let isOption = (line.hasPrefix(" ") || line.hasPrefix("\t")) && !current.isEmpty
            let isBlank = line.allSatisfy(\.isWhitespace) && !current.isEmpty
            let isComment = line.hasPrefix("#") && !current.isEmpty && !line.hasPrefix("# ")
            if isStanza || isOption || isBlank || isComment { current.append(line) } else { flush() }
        }
        flush()
        return examples
    }

    /// Runs starting at a storage section header with their indented properties.
    static func storageExamples(_ lines: [Substring]) -> [String] {
        var examples: [String] = []
        var current: [Substring] = []
        func isHeader(_ line: Substring) -> Bool {
            guard let colon = line.firstIndex(of: ":") else { return false }
            let rest = line[line.index(after: colon)...]
            return storageTypes.contains(String(line[..<colon])) && rest.hasPrefix(" ") && !rest.dropFirst().contains(" ") && !rest.dropFirst().isEmpty
        }
        func flush() {
            while current.last?.allSatisfy(\.isWhitespace) == true { current.removeLast() }
            if current.count > 1 { examples.append(current.joined(separator: "\n") + "\n") }
            current = []
        }
        for (index, line) in lines.enumerated() {
            if isHeader(line) { current.append(line); continue }
            if !current.isEmpty && (line.hasPrefix(" ") || line.hasPrefix("\t")) && !line.allSatisfy(\.isWhitespace) { current.append(line); continue }
            if !current.isEmpty && line.isEmpty && index + 1 < lines.count && isHeader(lines[index + 1]) { current.append(line); continue }
            flush()
        }
        flush()
        return examples
    }

    @Test("interfaces examples")
    func interfaces() throws {
        try #require(FileManager.default.fileExists(atPath: Corpus.seeds.path))
        let examples = try Self.seedLines().flatMap(Self.interfacesExamples)
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
        try #require(FileManager.default.fileExists(atPath: Corpus.seeds.path))
        let examples = try Self.seedLines().flatMap(Self.storageExamples)
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
