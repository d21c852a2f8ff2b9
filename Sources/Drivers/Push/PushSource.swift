import Foundation
import Reconciler

/// The files of a push's source: a plain directory, or a git repository read through git itself (a ref's tree, never
/// the work tree, so what is pushed is what was committed).
public struct PushSource: Sendable {
    /// Relative path → bytes, for the files a push writes (PushLayout); `priv/` only when asked for.
    public var files: [String: Data]
    public var revision: PushRecord.Revision
    /// The directory (or repository) paths are named in when a problem is reported.
    public var displayRoot: String
    /// Files of the source that are not /etc/pve files (a README, CI files): not pushed.
    public var ignored: [String]
    /// Files a git work tree holds changed but not committed: not pushed (a push takes the commit).
    public var uncommitted: [String]

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Whether SOURCE names a remote repository rather than a path.
    public static func isURL(_ source: String) -> Bool {
        source.contains("://") || (source.contains("@") && source.contains(":") && !source.hasPrefix("/"))
    }

    /// Reads SOURCE: a URL (mirrored into `mirrors`), a git repository's top level or a bare repository (its `ref`,
    /// HEAD by default), a directory inside a work tree when a `ref` is given (that subtree of the ref), else the
    /// plain directory.
    public static func read(_ source: String, ref: String?, includePrivate: Bool, mirrors: String) async throws -> PushSource {
        if isURL(source) {
            let mirror = try await Self.mirror(source, into: mirrors)
            return try await readGit(repository: mirror, prefix: "", ref: ref, includePrivate: includePrivate, display: source,
                                     checkWorkTree: false)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw Failure(description: "\(source) is not a directory or a git repository")
        }
        let path = URL(fileURLWithPath: source).standardizedFileURL.resolvingSymlinksInPath().path
        if Command.locate("git") != nil {
            let bare = try await Command.run(["git", "-C", path, "rev-parse", "--is-bare-repository"])
            if bare.succeeded && bare.output.hasPrefix("true") {
                return try await readGit(repository: path, prefix: "", ref: ref, includePrivate: includePrivate, display: path,
                                         checkWorkTree: false)
            }
            let top = try await Command.run(["git", "-C", path, "rev-parse", "--show-toplevel", "--show-prefix"])
            if top.succeeded {
                let lines = top.output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                let topLevel = lines.first ?? ""
                let prefix = lines.count > 1 ? lines[1] : ""
                if prefix.isEmpty || ref != nil {
                    return try await readGit(repository: topLevel, prefix: prefix, ref: ref, includePrivate: includePrivate, display: path,
                                             checkWorkTree: ref == nil)
                }
            }
        } else if ref != nil {
            throw MissingExecutable(name: "git")
        }
        return try readDirectory(path, includePrivate: includePrivate, display: path)
    }

    static func readDirectory(_ root: String, includePrivate: Bool, display: String) throws -> PushSource {
        var files: [String: Data] = [:]
        var ignored: [String] = []
        func walk(_ relative: String) throws {
            let directory = relative.isEmpty ? root : root + "/" + relative
            for name in try FileManager.default.contentsOfDirectory(atPath: directory).sorted() {
                let path = relative.isEmpty ? name : relative + "/" + name
                if name.hasPrefix(".") { continue }
                var info = stat()
                guard lstat(root + "/" + path, &info) == 0 else { continue }
                if info.st_mode & S_IFMT == S_IFDIR {
                    try walk(path)
                } else if info.st_mode & S_IFMT == S_IFREG, PushLayout.stage(of: path, includePrivate: includePrivate) != nil {
                    guard let data = FileManager.default.contents(atPath: root + "/" + path) else {
                        throw Failure(description: "\(display)/\(path): cannot read file")
                    }
                    files[path] = data
                } else if !(path.hasPrefix("priv/") && !includePrivate) {
                    ignored.append(path)
                }
            }
        }
        try walk("")
        let revision = PushRecord.Revision(digest: PushPlanner.contentDigest(files), source: display)
        return PushSource(files: files, revision: revision, displayRoot: display, ignored: ignored, uncommitted: [])
    }

    static func readGit(repository: String, prefix: String, ref: String?, includePrivate: Bool, display: String,
                        checkWorkTree: Bool) async throws -> PushSource {
        let git = ["git", "-C", repository]
        let wanted = ref ?? "HEAD"
        let resolved = try await Command.run(git + ["rev-parse", "--verify", "--quiet", wanted + "^{commit}"])
        guard resolved.succeeded else { throw Failure(description: "\(display): no commit named \(wanted)") }
        let commit = resolved.output.trimmingCharacters(in: .whitespacesAndNewlines)
        let info = try await Command.check(git + ["log", "-1", "--format=%s%x00%an <%ae>%x00%cI", commit])
            .trimmingCharacters(in: .newlines).components(separatedBy: "\0")
        let listing = try await Command.bytes(git + ["ls-tree", "-r", "-z", "--full-tree", commit] + (prefix.isEmpty ? [] : ["--", prefix]))
        var blobs: [(path: String, id: String)] = []
        var ignored: [String] = []
        for record in listing.split(separator: 0) {
            // "MODE TYPE ID\tPATH"
            guard let tab = record.firstIndex(of: UInt8(ascii: "\t")) else { continue }
            let fields = String(decoding: record[record.startIndex..<tab], as: UTF8.self).split(separator: " ")
            let fullPath = String(decoding: record[(tab + 1)...], as: UTF8.self)
            guard fields.count == 3, fullPath.hasPrefix(prefix) else { continue }
            let path = String(fullPath.dropFirst(prefix.count))
            if fields[0] == "100644" || fields[0] == "100755", PushLayout.stage(of: path, includePrivate: includePrivate) != nil {
                blobs.append((path, String(fields[2])))
            } else if !(path.hasPrefix("priv/") && !includePrivate) && !path.split(separator: "/").contains(where: { $0.hasPrefix(".") }) {
                ignored.append(path)
            }
        }
        var files: [String: Data] = [:]
        if !blobs.isEmpty {
            let output = try await Command.bytes(git + ["cat-file", "--batch"], input: blobs.map { $0.id + "\n" }.joined())
            // "<id> blob <size>\n<bytes>\n" per object, in the order asked.
            var offset = 0
            for blob in blobs {
                guard let newline = output[offset...].firstIndex(of: UInt8(ascii: "\n")) else {
                    throw Failure(description: "git cat-file ended early at \(blob.path)")
                }
                let header = String(decoding: output[offset..<newline], as: UTF8.self).split(separator: " ")
                guard header.count == 3, header[1] == "blob", let size = Int(header[2]), newline + 1 + size <= output.count else {
                    throw Failure(description: "git cat-file: unexpected answer for \(blob.path)")
                }
                files[blob.path] = Data(output[(newline + 1)..<(newline + 1 + size)])
                offset = newline + 1 + size + 1
            }
        }
        var uncommitted: [String] = []
        if checkWorkTree {
            let status = try await Command.bytes(git + ["status", "--porcelain", "-z", "--untracked-files=all"])
            for entry in status.split(separator: 0) where entry.count > 3 {
                let path = String(decoding: entry.dropFirst(3), as: UTF8.self)
                if PushLayout.stage(of: path, includePrivate: includePrivate) != nil { uncommitted.append(path) }
            }
        }
        let revision = PushRecord.Revision(commit: commit, subject: info.first, author: info.count > 1 ? info[1] : nil,
                                           time: info.count > 2 ? info[2] : nil, digest: PushPlanner.contentDigest(files),
                                           source: display, ref: ref)
        return PushSource(files: files, revision: revision, displayRoot: (repository + "/" + prefix).trimmingSuffix("/"),
                          ignored: ignored.sorted(), uncommitted: uncommitted.sorted())
    }

    /// A remote repository, mirrored under `directory` and fetched again on every read.
    static func mirror(_ url: String, into directory: String) async throws -> String {
        let name = String(Digest.sha256Hex(Data(url.utf8)).prefix(16))
        let path = directory + "/" + name + ".git"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: path) {
            try await Command.check(["git", "-C", path, "remote", "update", "--prune"])
        } else {
            try await Command.check(["git", "clone", "--mirror", "--quiet", url, path])
        }
        return path
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
