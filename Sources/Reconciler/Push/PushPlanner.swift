import Foundation
import Resources

/// What a push would write into /etc/pve: per file the merged content, in the order files are written, with what it
/// leaves alone and why. Pure: the files come in as bytes (the driver reads the repository and /etc/pve).
public struct PushPlan: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable {
        case create, update, delete
    }

    public struct FileChange: Codable, Sendable, Equatable {
        public var path: String
        public var action: Action
        public var stage: PushLayout.Stage
        /// The bytes to write (nil for a deletion).
        public var content: Data?
        /// What /etc/pve holds now (nil for a new file).
        public var current: Data?
        /// What the merge kept from /etc/pve (`net0 macaddr`, `snapshot before-upgrade`).
        public var kept: [String]
    }

    public struct LockedGuest: Codable, Sendable, Equatable {
        public var path: String
        public var lock: String
    }

    public var revision: PushRecord.Revision
    public var node: String
    /// Writes by stage, then deletions in the reverse stage order.
    public var changes: [FileChange]
    /// Guests whose config holds `lock:` (a backup, migration, snapshot ...): not touched.
    public var locked: [LockedGuest]
    /// With --prune: files the repository does not hold that no push wrote, so they stay.
    public var keptUnowned: [String]
    /// Files the repository holds that already read as merged.
    public var unchanged: Int
    /// Problems found while merging (a config in /etc/pve that cannot be parsed), at their file:line.
    public var problems: [Diagnostic]
    /// Per merged guest config, merged line → the repository's line, to report problems at the repository's lines.
    public var sourceLines: [String: [Int?]]
    /// The record to keep after the push.
    public var record: PushRecord
    /// Digest of every /etc/pve file the plan read: a saved plan is refused when one of them changed.
    public var currentDigests: [String: String]

    public var hasChanges: Bool { !changes.isEmpty }
}

public enum PushPlanner {
    public struct Input: Sendable {
        /// Relative path → bytes, for the repository's files a push writes (PushLayout).
        public var source: [String: Data]
        /// Relative path → bytes, for /etc/pve's files of the same layout.
        public var current: [String: Data]
        public var record: PushRecord?
        public var revision: PushRecord.Revision
        public var node: String
        public var prune: Bool
        public var now: Date

        public init(source: [String: Data], current: [String: Data], record: PushRecord?, revision: PushRecord.Revision, node: String,
                    prune: Bool, now: Date) {
            self.source = source
            self.current = current
            self.record = record
            self.revision = revision
            self.node = node
            self.prune = prune
            self.now = now
        }
    }

    /// The digest of a whole source (paths and bytes), the provenance of a plain directory.
    public static func contentDigest(_ files: [String: Data]) -> String {
        var all = Data()
        for (path, data) in files.sorted(by: { $0.key < $1.key }) {
            all += Data("\(path)\0\(data.count)\0".utf8) + data
        }
        return Digest.sha256Hex(all)
    }

    /// What merging one repository file gave.
    struct FileOutcome {
        var change: PushPlan.FileChange?
        var unchanged = false
        var locked: PushPlan.LockedGuest?
        var problems: [Diagnostic] = []
        var sourceLines: [Int?]?
        /// The file's record line and the system values the repository set (nil when the file is left alone).
        var record: PushRecord.FileRecord?
        var systemValues: [String: String]?
    }

    public static func plan(_ input: Input, root: String) -> PushPlan {
        var changes: [PushPlan.FileChange] = []
        var locked: [PushPlan.LockedGuest] = []
        var problems: [Diagnostic] = []
        var sourceLines: [String: [Int?]] = [:]
        var unchanged = 0
        var files = input.record?.files ?? [:]
        var systemValues = input.record?.repositorySystemValues ?? [:]
        @Sendable func absolute(_ path: String) -> String { root.hasSuffix("/") ? root + path : root + "/" + path }
        let currentDigests = digests(input.current)

        // Files are independent and a repository may hold thousands of guests: merged on all cores.
        let sources = input.source.sorted { $0.key < $1.key }
        let outcomes = UnsafeResultSlots<FileOutcome>(count: sources.count)
        DispatchQueue.concurrentPerform(iterations: sources.count) { index in
            let (path, data) = sources[index]
            outcomes.set(index, outcome(path: path, data: data, input: input, currentDigest: currentDigests[path], file: absolute(path),
                                        root: root))
        }
        for (index, outcome) in outcomes.values.enumerated() {
            let path = sources[index].key
            problems += outcome.problems
            if let guest = outcome.locked { locked.append(guest) }
            guard let record = outcome.record else { continue }
            files[path] = record
            systemValues[path] = outcome.systemValues.flatMap { $0.isEmpty ? nil : $0 }
            if let lines = outcome.sourceLines { sourceLines[path] = lines }
            if outcome.unchanged { unchanged += 1 }
            if let change = outcome.change { changes.append(change) }
        }

        var keptUnowned: [String] = []
        var deletions: [PushPlan.FileChange] = []
        if input.prune {
            for (path, data) in input.current.sorted(by: { $0.key < $1.key }) where input.source[path] == nil {
                guard let stage = PushLayout.stage(of: path, includePrivate: true) else { continue }
                guard input.record?.files[path] != nil else {
                    keptUnowned.append(path)
                    continue
                }
                if let kind = PushLayout.guestKind(of: path) {
                    // A config that cannot be read as one is not deleted either: a person looks at it first.
                    guard let text = String(data: data, encoding: .utf8) else { continue }
                    let (config, diagnostics) = GuestConfig.parse(text, file: absolute(path), kind: kind)
                    if diagnostics.contains(where: { $0.severity == .error && $0.code == .syntax }) { continue }
                    if let lock = config.main["lock"] {
                        locked.append(PushPlan.LockedGuest(path: path, lock: lock))
                        continue
                    }
                }
                deletions.append(PushPlan.FileChange(path: path, action: .delete, stage: stage, content: nil, current: data, kept: []))
                files[path] = nil
                systemValues[path] = nil
            }
        }
        // Files the record owns that are gone from /etc/pve (removed by hand) are no longer owned.
        for path in files.keys where input.current[path] == nil && input.source[path] == nil { files[path] = nil }

        changes.sort { ($0.stage, $0.path) < ($1.stage, $1.path) }
        deletions.sort { ($0.stage, $0.path) > ($1.stage, $1.path) }
        let record = PushRecord(revision: input.revision, pushedAt: input.now, node: input.node, generation: (input.record?.generation ?? 0) + 1,
                                files: files, repositorySystemValues: systemValues)
        return PushPlan(revision: input.revision, node: input.node, changes: changes + deletions, locked: locked.sorted { $0.path < $1.path },
                        keptUnowned: keptUnowned, unchanged: unchanged, problems: problems, sourceLines: sourceLines, record: record,
                        currentDigests: currentDigests)
    }
}

extension PushPlanner {
    /// SHA-256 of every file, on all cores.
    static func digests(_ files: [String: Data]) -> [String: String] {
        let entries = Array(files)
        let slots = UnsafeResultSlots<String>(count: entries.count)
        DispatchQueue.concurrentPerform(iterations: entries.count) { slots.set($0, PushRecord.digest(entries[$0].value)) }
        return Dictionary(uniqueKeysWithValues: zip(entries.map(\.key), slots.values))
    }

    static func outcome(path: String, data: Data, input: Input, currentDigest: String?, file: String, root: String) -> FileOutcome {
        guard let stage = PushLayout.stage(of: path, includePrivate: true) else { return FileOutcome() }
        let current = input.current[path]
        let sourceDigest = PushRecord.digest(data)
        // The repository's file and /etc/pve's are the bytes the last push read and wrote: the merge would give /etc/pve's
        // bytes again (a merge of its own result is that result), so it is not run.
        if let previous = input.record?.files[path], previous.source == sourceDigest, let currentDigest, currentDigest == previous.written {
            return FileOutcome(unchanged: true, record: previous, systemValues: input.record?.repositorySystemValues[path])
        }
        var outcome = FileOutcome()
        var content = data
        var kept: [String] = []
        if let kind = PushLayout.guestKind(of: path), let text = String(data: data, encoding: .utf8) {
            var currentConfig: GuestConfig?
            if let current {
                guard let currentText = String(data: current, encoding: .utf8) else {
                    outcome.problems.append(.error(SourceLocation(file: file, line: 1),
                                                   "not valid UTF-8: a push cannot merge into it; fix or remove it first", code: .unreadableFile))
                    return outcome
                }
                let (config, diagnostics) = GuestConfig.parse(currentText, file: file, kind: kind)
                if let syntax = diagnostics.first(where: { $0.severity == .error && $0.code == .syntax }) {
                    outcome.problems.append(.error(syntax.location, syntax.message
                                                   + " (a push cannot merge into this file; fix it in /etc/pve first)", code: .syntax))
                    return outcome
                }
                if let lock = config.main["lock"] {
                    outcome.locked = PushPlan.LockedGuest(path: path, lock: lock)
                    return outcome
                }
                currentConfig = config
            }
            let result = GuestConfigMerge(kind: kind).merge(repository: text, file: file, current: currentConfig,
                                                            lastPushed: input.record?.repositorySystemValues[path] ?? [:])
            content = Data(result.text.utf8)
            kept = result.kept
            outcome.sourceLines = result.sourceLines
            outcome.systemValues = result.repositorySystemValues
        }
        outcome.record = PushRecord.FileRecord(written: PushRecord.digest(content),
                                               managed: PushDrift.managedDigest(path: path, data: content, root: root), source: sourceDigest)
        if current == content {
            outcome.unchanged = true
        } else {
            outcome.change = PushPlan.FileChange(path: path, action: current == nil ? .create : .update, stage: stage, content: content,
                                                 current: current, kept: kept)
        }
        return outcome
    }
}

extension PushPlan {
    /// A problem found in the merged tree, at the repository's file and line when the line came from it.
    public func locate(_ diagnostic: Diagnostic, root: String, sourceRoot: String) -> Diagnostic {
        let prefix = root.hasSuffix("/") ? root : root + "/"
        let file = diagnostic.location.file
        guard file.hasPrefix(prefix) else { return diagnostic }
        let path = String(file.dropFirst(prefix.count))
        guard changes.contains(where: { $0.path == path && $0.action != .delete }) || sourceLines[path] != nil else { return diagnostic }
        var location = diagnostic.location
        let line = location.line
        if let map = sourceLines[path], line >= 1, line <= map.count {
            // A line kept from /etc/pve stays there; the repository's lines are named in the repository.
            guard let sourceLine = map[line - 1] else { return diagnostic }
            location.line = sourceLine
        }
        location.file = (sourceRoot.hasSuffix("/") ? sourceRoot : sourceRoot + "/") + path
        var located = diagnostic
        located.location = location
        return located
    }

    /// The first file the plan read that reads differently now, or nil when /etc/pve is as it was.
    public func staleFile(now current: [String: String]) -> String? {
        let paths = Set(currentDigests.keys).union(current.keys).sorted()
        return paths.first { currentDigests[$0] != current[$0] }
    }

    public var summary: (writes: Int, deletions: Int) {
        (changes.filter { $0.action != .delete }.count, changes.filter { $0.action == .delete }.count)
    }
}
