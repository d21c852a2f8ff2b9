import Foundation
import Resources

/// What the last push wrote, kept inside /etc/pve (`pvectl/`) so every node sees it: the revision (provenance), the
/// files it owns (only those are ever pruned) with the digests of what it wrote (drift: by hand or by the system), and
/// the system-owned values the repository set itself (the base of the next three-way merge).
///
/// pmxcfs caps a file at 1 MiB, so the file list is kept in chunks of at most `chunkSize` lines
/// (`files-<generation>-<n>`, "WRITTEN MANAGED PATH" per line), named by the header `push.json`, which is replaced last:
/// a push killed half-way leaves the previous record whole.
public struct PushRecord: Codable, Sendable, Equatable {
    public struct Revision: Codable, Sendable, Equatable {
        /// The git commit, or nil for a plain directory.
        public var commit: String?
        public var subject: String?
        public var author: String?
        public var time: String?
        /// The digest of every pushed file's path and bytes: the same for the same content, git or not.
        public var digest: String
        /// Where it came from (a path or URL) and, for git, the ref asked for.
        public var source: String
        public var ref: String?

        public init(commit: String? = nil, subject: String? = nil, author: String? = nil, time: String? = nil, digest: String,
                    source: String, ref: String? = nil) {
            self.commit = commit
            self.subject = subject
            self.author = author
            self.time = time
            self.digest = digest
            self.source = source
            self.ref = ref
        }

        /// `1a2b3c4d "subject" (author, time)` or `directory sha256:…`.
        public var summary: String {
            guard let commit else { return "\(source) (directory, content sha256:\(digest.prefix(12)))" }
            return "\(source) @ \(commit.prefix(12)) \"\(subject ?? "")\" (\(author ?? "?"), \(time ?? "?"))"
        }
    }

    public struct FileRecord: Codable, Sendable, Equatable {
        /// Digest of the bytes written.
        public var written: String
        /// Digest of the part the repository decides (without system-owned values); equal to `written` for files the
        /// system does not write into.
        public var managed: String

        public init(written: String, managed: String) {
            self.written = written
            self.managed = managed
        }
    }

    public var revision: Revision
    public var pushedAt: Date
    public var node: String
    public var generation: Int
    public var files: [String: FileRecord]
    public var repositorySystemValues: [String: [String: String]]

    public init(revision: Revision, pushedAt: Date, node: String, generation: Int, files: [String: FileRecord],
                repositorySystemValues: [String: [String: String]]) {
        self.revision = revision
        self.pushedAt = pushedAt
        self.node = node
        self.generation = generation
        self.files = files
        self.repositorySystemValues = repositorySystemValues
    }

    public static let headerName = "push.json"
    public static let chunkSize = 5000

    struct Header: Codable {
        var revision: Revision
        var pushedAt: Date
        var node: String
        var generation: Int
        var chunks: [String]
        var repositorySystemValues: [String: [String: String]]
    }

    /// The record as files of `recordDirectory`: chunk names → bytes, and the header (written last).
    public func encoded() throws -> (chunks: [(name: String, data: Data)], header: Data) {
        let lines = files.sorted { $0.key < $1.key }.map { "\($0.value.written) \($0.value.managed) \($0.key)" }
        var chunks: [(String, Data)] = []
        for (index, start) in stride(from: 0, to: lines.count, by: Self.chunkSize).enumerated() {
            let slice = lines[start..<min(lines.count, start + Self.chunkSize)]
            chunks.append(("files-\(generation)-\(index)", Data((slice.joined(separator: "\n") + "\n").utf8)))
        }
        let header = Header(revision: revision, pushedAt: pushedAt, node: node, generation: generation, chunks: chunks.map(\.0),
                            repositorySystemValues: repositorySystemValues)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return (chunks, try encoder.encode(header) + Data("\n".utf8))
    }

    public struct DamagedRecord: Error, CustomStringConvertible {
        public var file: String
        public var reason: String
        public var description: String { "\(file): the push record is damaged (\(reason))" }
    }

    /// Reads a record back; `read` gives a file of the record directory by name (nil when absent).
    public static func decode(header: Data, file: String, read: (String) -> Data?) throws -> PushRecord {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let parsed: Header
        do {
            parsed = try decoder.decode(Header.self, from: header)
        } catch {
            throw DamagedRecord(file: file, reason: "not the JSON a push writes")
        }
        var files: [String: FileRecord] = [:]
        for chunk in parsed.chunks {
            guard let data = read(chunk) else { throw DamagedRecord(file: file, reason: "its part \(chunk) is missing") }
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: " ", maxSplits: 2).map(String.init)
                guard fields.count == 3 else { throw DamagedRecord(file: file, reason: "a line of \(chunk) is not 'WRITTEN MANAGED PATH'") }
                files[fields[2]] = FileRecord(written: fields[0], managed: fields[1])
            }
        }
        return PushRecord(revision: parsed.revision, pushedAt: parsed.pushedAt, node: parsed.node, generation: parsed.generation,
                          files: files, repositorySystemValues: parsed.repositorySystemValues)
    }

    /// Short content digests: 64 bits tell edits apart, and keep a 10,000-guest record within pmxcfs's file limit.
    public static func digest(_ data: Data) -> String { String(Digest.sha256Hex(data).prefix(16)) }
}
