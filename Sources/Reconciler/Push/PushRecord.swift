import Foundation
import Resources

/// What the last push wrote, kept inside /etc/pve (`pvectl/`) so every node sees it: the revision (provenance), the
/// files it owns (only those are ever pruned) with the digests of what it wrote (drift: by hand or by the system), and
/// the system-owned values the repository set itself (the base of the next three-way merge).
///
/// pmxcfs caps a file at 1 MiB, so the file list is kept in parts of at most `chunkBytes` (`files-<generation>-<n>`),
/// named by the header `push.json`, which is replaced last: a push killed half-way leaves the previous record whole.
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
        /// Digest of the repository's bytes it was merged from: the same repository file onto the same bytes needs no merge.
        public var source: String

        public init(written: String, managed: String, source: String) {
            self.written = written
            self.managed = managed
            self.source = source
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
    /// A part stays well below pmxcfs's 1 MiB per file.
    public static let chunkBytes = 768 << 10

    struct Header: Codable {
        var revision: Revision
        var pushedAt: Date
        var node: String
        var generation: Int
        var chunks: [String]
    }

    /// The record as files of `recordDirectory`: part names → bytes, and the header (written last). A part's line is
    /// "WRITTEN MANAGED SOURCE PATH", then a tab and the system values the repository set in that file (JSON) when it set any.
    public func encoded() throws -> (chunks: [(name: String, data: Data)], header: Data) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var chunks: [(String, Data)] = []
        var current = Data()
        for (path, file) in files.sorted(by: { $0.key < $1.key }) {
            var line = "\(file.written) \(file.managed) \(file.source) \(path)"
            if let values = repositorySystemValues[path], !values.isEmpty {
                line += "\t" + String(decoding: try encoder.encode(values), as: UTF8.self)
            }
            let bytes = Data((line + "\n").utf8)
            if !current.isEmpty && current.count + bytes.count > Self.chunkBytes {
                chunks.append(("files-\(generation)-\(chunks.count)", current))
                current = Data()
            }
            current += bytes
        }
        if !current.isEmpty { chunks.append(("files-\(generation)-\(chunks.count)", current)) }
        let header = Header(revision: revision, pushedAt: pushedAt, node: node, generation: generation, chunks: chunks.map(\.0))
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
        var systemValues: [String: [String: String]] = [:]
        for chunk in parsed.chunks {
            guard let data = read(chunk) else { throw DamagedRecord(file: file, reason: "its part \(chunk) is missing") }
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                let columns = line.split(separator: "\t", maxSplits: 1)
                let fields = columns[0].split(separator: " ", maxSplits: 3).map(String.init)
                guard fields.count == 4 else {
                    throw DamagedRecord(file: file, reason: "a line of \(chunk) is not 'WRITTEN MANAGED SOURCE PATH'")
                }
                files[fields[3]] = FileRecord(written: fields[0], managed: fields[1], source: fields[2])
                if columns.count == 2 {
                    guard let values = try? decoder.decode([String: String].self, from: Data(columns[1].utf8)) else {
                        throw DamagedRecord(file: file, reason: "the system values of \(fields[3]) in \(chunk) are not JSON")
                    }
                    systemValues[fields[3]] = values
                }
            }
        }
        return PushRecord(revision: parsed.revision, pushedAt: parsed.pushedAt, node: parsed.node, generation: parsed.generation,
                          files: files, repositorySystemValues: systemValues)
    }

    /// Short content digests: 64 bits tell edits apart, and keep a 10,000-guest record within pmxcfs's file limit.
    public static func digest(_ data: Data) -> String { String(Digest.sha256Hex(data).prefix(16)) }
}
