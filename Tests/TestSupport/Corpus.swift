import Foundation
import Testing

/// Locates the read-only shared folder (`../shared` beside the checkout, or
/// `$PVECTL_SHARED`) whose conformance data is read at test time, never copied.
public enum Corpus {
    public static let shared: URL = {
        if let env = ProcessInfo.processInfo.environment["PVECTL_SHARED"] {
            return URL(fileURLWithPath: env)
        }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }()

    /// The checkout this test code belongs to.
    public static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static var conformance: URL { shared.appendingPathComponent("conformance") }
    public static var seeds: URL { shared.appendingPathComponent("seeds") }
    public static var isAvailable: Bool { FileManager.default.fileExists(atPath: conformance.path) }
    public static var seedsAvailable: Bool { FileManager.default.fileExists(atPath: seeds.path) }

    /// Why a suite that reads the shared folder is skipped: what is missing and where it is looked for.
    public static func missing(_ folder: URL, _ what: String) -> String {
        "needs \(what), not found at \(folder.path) (the read-only shared/ folder beside the checkout, or $PVECTL_SHARED)"
    }

    /// Every regular file below `directory`, as paths relative to the conformance root.
    public static func files(under directory: String, where include: (String) -> Bool) -> [String] {
        let root = conformance.appendingPathComponent(directory)
        guard let enumerator = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var result: [String] = []
        for case let url as URL in enumerator {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true else { continue }
            let relative = directory + "/" + url.path.dropFirst(root.path.count + 1)
            if include(relative) { result.append(relative) }
        }
        return result.sorted()
    }

    public static func text(_ relative: String) throws -> String {
        try String(contentsOf: conformance.appendingPathComponent(relative), encoding: .utf8)
    }

    public static func data(_ relative: String) throws -> Data {
        try Data(contentsOf: conformance.appendingPathComponent(relative))
    }

    /// One line per corpus in the test log, e.g. "conformance qemu round-trip: 312/312".
    public static func report(_ corpus: String, passed: Int, total: Int) {
        print("conformance \(corpus): \(passed)/\(total)")
    }
}

extension Trait where Self == ConditionTrait {
    /// For suites and tests that read upstream's conformance data (../shared/conformance).
    public static var needsConformance: Self {
        .enabled(if: Corpus.isAvailable, Comment(rawValue: Corpus.missing(Corpus.conformance, "the conformance corpus")))
    }

    /// For suites and tests that read the admin guide's chapters (../shared/seeds).
    public static var needsSeeds: Self {
        .enabled(if: Corpus.seedsAvailable, Comment(rawValue: Corpus.missing(Corpus.seeds, "the admin guide chapters")))
    }
}
