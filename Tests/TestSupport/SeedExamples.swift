import Foundation

/// Configuration examples printed in the admin guide (../shared/seeds),
/// found by their shape in the running text.
public enum SeedExamples {
    static let storageTypes = ["dir", "nfs", "cifs", "lvm", "lvmthin", "btrfs", "zfspool", "zfs", "iscsi", "iscsidirect", "rbd", "cephfs", "pbs",
                               "glusterfs", "esxi"]

    static func seedLines() throws -> [[Substring]] {
        let names = try FileManager.default.contentsOfDirectory(atPath: Corpus.seeds.path).filter { $0.hasSuffix(".txt") }.sorted()
        return try names.map {
            try String(contentsOf: Corpus.seeds.appendingPathComponent($0), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        }
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
            return storageTypes.contains(String(line[..<colon])) && rest.hasPrefix(" ") && !rest.dropFirst().contains(" ")
                && !rest.dropFirst().isEmpty
        }
        func flush() {
            while current.last?.allSatisfy(\.isWhitespace) == true { current.removeLast() }
            if current.count > 1 { examples.append(current.joined(separator: "\n") + "\n") }
            current = []
        }
        for (index, line) in lines.enumerated() {
            if isHeader(line) { current.append(line); continue }
            if !current.isEmpty && (line.hasPrefix(" ") || line.hasPrefix("\t"))
                && !line.allSatisfy(\.isWhitespace) { current.append(line); continue }
            if !current.isEmpty && line.isEmpty && index + 1 < lines.count && isHeader(lines[index + 1]) { current.append(line); continue }
            flush()
        }
        flush()
        return examples
    }


    /// Every interfaces example, in guide order (duplicates kept).
    public static func interfaces() throws -> [String] { try seedLines().flatMap(interfacesExamples) }

    /// Every storage.cfg example, in guide order.
    public static func storage() throws -> [String] { try seedLines().flatMap(storageExamples) }
}
