import Foundation
import Reconciler
import Resources

/// A push from start to end, shared by `pvectl push` and pull mode: read the source and /etc/pve, merge, validate the
/// merged tree as a whole (errors at the repository's file:line), and, when told to, write it under the push lock.
public struct Pusher: Sendable {
    public var root: String
    public var interfaces: String
    public var node: String
    /// Where remote repositories are mirrored.
    public var mirrors: String
    public var includePrivate: Bool
    public var prune: Bool

    public init(root: String, interfaces: String, node: String, mirrors: String, includePrivate: Bool, prune: Bool) {
        self.root = root
        self.interfaces = interfaces
        self.node = node
        self.mirrors = mirrors
        self.includePrivate = includePrivate
        self.prune = prune
    }

    public struct Preview: Sendable {
        public var plan: PushPlan
        public var source: PushSource
        /// What `pvectl validate` finds in the merged tree (and the merge's own problems), at the repository's lines.
        public var diagnostics: [Diagnostic]
        /// The merged tree, for the plan of this node.
        public var state: DesiredState
        /// The node's interfaces file as the repository has it (staged as interfaces.new on a push).
        public var stagedInterfaces: Data?
        /// The files the push changes on this node (absolute paths; the staged interfaces.new among them): what its plan
        /// is of.
        public var changedPaths: [String]

        public var errors: [Diagnostic] { diagnostics.filter { $0.severity == .error } }
    }

    var target: PushTarget { PushTarget(root: root) }

    /// Everything a push would do, nothing written. `base` reads /etc/pve (plain files, or pmxcfs's IPC service).
    public func preview(_ source: PushSource, base: any TreeSource, now: Date = Date()) throws -> Preview {
        let current = try target.layoutFiles(includePrivate: includePrivate)
        let record = try target.record()
        let input = PushPlanner.Input(source: source.files, current: current, record: record, revision: source.revision, node: node,
                                      prune: prune, now: now)
        let plan = PushPlanner.plan(input, root: root)
        var overlay: [String: Data?] = [:]
        for change in plan.changes { overlay[target.absolute(change.path)] = change.content }
        // The node's own network file is what `apply` would install: planned as the staged interfaces.new.
        let interfacesFile = "nodes/\(node)/network/interfaces"
        let stagedInterfaces = source.files[interfacesFile]
        if let stagedInterfaces, FileManager.default.contents(atPath: interfaces) != stagedInterfaces {
            overlay[interfaces + ".new"] = stagedInterfaces
        }
        let state = DesiredState.load(root: root, interfaces: interfaces, node: node, source: OverlayTreeSource(base: base, files: overlay))
        var diagnostics = TreeValidator.validate(state).map { plan.locate($0, root: root, sourceRoot: source.displayRoot) }
        if stagedInterfaces != nil {
            diagnostics = diagnostics.map { diagnostic in
                guard diagnostic.location.file == interfaces + ".new" else { return diagnostic }
                var located = diagnostic
                located.location.file = source.displayRoot + "/" + interfacesFile
                return located
            }
        }
        diagnostics = (plan.problems + diagnostics).sorted().saidOnce()
        let changedPaths = overlay.keys.sorted()
        return Preview(plan: plan, source: source, diagnostics: diagnostics, state: state, stagedInterfaces: stagedInterfaces,
                       changedPaths: changedPaths)
    }

    public struct Stale: Error, CustomStringConvertible {
        public var path: String
        public var description: String { "\(path) changed since the push was planned" }
    }

    /// The push lock (see `PushTarget.lock`): a push plans and writes under it, so two pushes never interleave.
    public func lock(timeout: Double = 10) throws -> PushLock { try target.lock(timeout: timeout) }

    /// Writes a plan, the push lock held: refused when a file it read changed since (named), then every file in the
    /// plan's order (each atomically, each checked again just before: a guest the system locked or changed meanwhile
    /// stops the push there), the record, and the node's interfaces staged last. A push that stops part-way still
    /// records the files it wrote (ownership and the merge's base), the others as the previous record had them.
    public func write(_ plan: PushPlan, stagedInterfaces: Data?, lock: PushLock? = nil, progress: (String) -> Void) throws {
        let now = try target.layoutDigests(includePrivate: includePrivate)
        if let stale = plan.staleFile(now: now) { throw Stale(path: target.absolute(stale)) }
        target.removeLeftovers(in: plan.changes.map(\.path) + plan.record.files.keys)
        let previous = (try? target.record()) ?? nil
        var done: Set<String> = []
        do {
            for (index, change) in plan.changes.enumerated() {
                let current = FileManager.default.contents(atPath: target.absolute(change.path)).map { PushRecord.digest($0) }
                if current != plan.currentDigests[change.path] { throw Stale(path: target.absolute(change.path)) }
                try target.apply(change)
                done.insert(change.path)
                progress("\(change.action == .delete ? "deleted" : "wrote") \(target.absolute(change.path))")
                // A long push keeps its lock alive (pmxcfs expires one unchanged for 120 s).
                if index % 200 == 199 { lock?.refresh() }
            }
        } catch {
            if !done.isEmpty { try? target.writeRecord(Self.partial(plan.record, done: done, changes: plan.changes, previous: previous)) }
            throw error
        }
        if plan.hasChanges || previous.map({ $0.revision != plan.record.revision || $0.files != plan.record.files }) ?? true {
            try target.writeRecord(plan.record)
        }
        if let stagedInterfaces, let staged = try PushTarget.stageInterfaces(stagedInterfaces, live: interfaces) { progress(staged) }
    }

    /// The record of a push stopped part-way: its revision for what it wrote, the previous record for the rest.
    static func partial(_ record: PushRecord, done: Set<String>, changes: [PushPlan.FileChange], previous: PushRecord?) -> PushRecord {
        var partial = record
        for change in changes where !done.contains(change.path) {
            partial.files[change.path] = previous?.files[change.path]
            partial.repositorySystemValues[change.path] = previous?.repositorySystemValues[change.path]
        }
        // Provenance stays the previous push's: this one did not finish.
        if let previous { partial.revision = previous.revision }
        return partial
    }

    /// The last push's record, or nil when nothing was pushed.
    public func record() throws -> PushRecord? { try target.record() }

    /// The drift of /etc/pve since the last push, or nil when nothing was pushed.
    public func drift() throws -> (record: PushRecord, entries: [PushDrift.Entry])? {
        guard let record = try target.record() else { return nil }
        let current = try target.layoutFiles(includePrivate: includePrivate)
        var modified: [String: Date] = [:]
        for path in current.keys where record.files[path] == nil {
            var info = stat()
            if stat(target.absolute(path), &info) == 0 { modified[path] = Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec)) }
        }
        return (record, PushDrift.entries(record: record, current: current, modified: modified, root: root))
    }
}
