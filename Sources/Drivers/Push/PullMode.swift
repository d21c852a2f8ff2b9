import Foundation
import Reconciler
import Resources

/// Pull mode (`pvectl run --source REPO`), as Flux and Argo CD keep a cluster at a branch's head: every poll reads the
/// ref; a new commit that validates is pushed; one that does not is reported with its file:line and not pushed (the
/// last good one stays); hand edits of /etc/pve are drift, reported, and reverted with self-heal.
public struct PullMode: Sendable {
    public var pusher: Pusher
    public var source: String
    public var ref: String?
    public var selfHeal: Bool
    /// Reads /etc/pve (plain files, or pmxcfs's IPC service).
    public var base: any TreeSource

    public init(pusher: Pusher, source: String, ref: String?, selfHeal: Bool, base: any TreeSource) {
        self.pusher = pusher
        self.source = source
        self.ref = ref
        self.selfHeal = selfHeal
        self.base = base
    }

    /// One poll; `previous` is the last poll's record. Logs through `log` (what a person needs to read), returns the
    /// new record.
    public func poll(previous: PullRecord?, now: Date = Date(), log: (String) -> Void) async -> PullRecord {
        var record = previous ?? PullRecord(source: source, ref: ref)
        record.source = source
        record.ref = ref
        record.lastPoll = now
        do {
            // Fetched and validated first; planned again under the lock, which is held for the writes alone.
            let headSource = try await PushSource.read(source, ref: ref, includePrivate: pusher.includePrivate, mirrors: pusher.mirrors)
            let head = try pusher.preview(headSource, base: base, now: now)
            let commit = head.source.revision.commit ?? head.source.revision.digest
            record.head = commit
            var targetSource = headSource
            if !head.errors.isEmpty {
                if record.failing != commit {
                    log("commit \(commit.prefix(12)) is not pushed: it does not validate; \(record.lastGood.map { "\($0.prefix(12))" } ?? "nothing")"
                        + " stays")
                    for error in head.errors { log(error.description) }
                }
                record.failing = commit
                record.failures = head.errors.map(\.description)
                guard let lastGood = record.lastGood, head.source.revision.commit != nil else { return record }
                // Drift is measured against the last good commit.
                targetSource = try await PushSource.read(source, ref: lastGood, includePrivate: pusher.includePrivate, mirrors: pusher.mirrors)
            } else {
                record.failing = nil
                record.failures = []
            }
            let lock = try pusher.lock(timeout: 30)
            defer { lock.release() }
            let target = try pusher.preview(targetSource, base: base, now: now)
            // The last good commit may not validate on today's /etc/pve (a storage removed by hand): nothing is written.
            guard target.errors.isEmpty else {
                let targetName = (target.source.revision.commit ?? target.source.revision.digest).prefix(12)
                if record.error == nil { for error in target.errors { log("\(targetName): \(error.description)") } }
                record.error = "commit \(targetName) does not validate against \(pusher.root) now: nothing pushed"
                return record
            }
            let targetCommit = target.source.revision.commit ?? target.source.revision.digest
            let pushed = try pusher.record()?.revision
            let alreadyPushed = pushed.map { ($0.commit ?? $0.digest) == targetCommit } ?? false
            let drifted = target.plan.changes.map(\.path)
            if target.plan.hasChanges && (!alreadyPushed || selfHeal) {
                try pusher.write(target.plan, stagedInterfaces: target.stagedInterfaces, lock: lock) { _ in }
                let (writes, deletions) = target.plan.summary
                log(alreadyPushed ? "self-heal: reverted \(drifted.joined(separator: ", ")) to \(targetCommit.prefix(12))"
                    : "pushed \(target.source.revision.summary): \(writes) written, \(deletions) deleted")
                record.lastPushedAt = now
                record.drift = []
            } else if target.plan.hasChanges {
                if record.drift != drifted { log("drift (not reverted without --self-heal): \(drifted.joined(separator: ", "))") }
                record.drift = drifted
            } else {
                // A commit that changes no /etc/pve file is still recorded as the one pushed.
                if !alreadyPushed { try pusher.write(target.plan, stagedInterfaces: target.stagedInterfaces, lock: lock) { _ in } }
                record.drift = []
            }
            record.lastGood = targetCommit
            // Another node may have pushed this commit: the node's own network file is staged all the same.
            if let interfaces = target.stagedInterfaces, let done = try PushTarget.stageInterfaces(interfaces, live: pusher.interfaces) { log(done) }
            record.error = nil
        } catch {
            if record.error != "\(error)" { log("poll failed: \(error)") }
            record.error = "\(error)"
        }
        return record
    }
}

/// Pull mode's state, kept in the state directory (`pull`), shown by `pvectl status`.
public struct PullRecord: Codable, Sendable, Equatable {
    public var source: String
    public var ref: String?
    public var lastPoll: Date?
    /// The ref's commit at the last poll.
    public var head: String?
    /// The newest commit that validated (the one /etc/pve is kept at).
    public var lastGood: String?
    public var lastPushedAt: Date?
    /// A head that does not validate, and why.
    public var failing: String?
    public var failures: [String] = []
    /// Files of /etc/pve that differ from the source and were not reverted.
    public var drift: [String] = []
    /// The last poll's failure (the source unreachable, the lock held too long).
    public var error: String?

    public init(source: String, ref: String?) {
        self.source = source
        self.ref = ref
    }

    public var row: StatusRow {
        let at = ref.map { "\(source) @ \($0)" } ?? source
        if let error { return StatusRow(id: "pull", condition: "Degraded", updatedAt: lastPoll, message: "\(at): \(error)") }
        if let failing {
            return StatusRow(id: "pull", condition: "Blocked", generation: lastGood.map { String($0.prefix(12)) }, updatedAt: lastPoll,
                             message: "\(at): commit \(failing.prefix(12)) does not validate (\(failures.first ?? "")); "
                                + "\(lastGood.map { "\($0.prefix(12))" } ?? "nothing") stays")
        }
        if !drift.isEmpty {
            return StatusRow(id: "pull", condition: "Drifted", generation: lastGood.map { String($0.prefix(12)) }, updatedAt: lastPoll,
                             message: "\(at): changed by hand, not reverted (--self-heal is off): \(drift.joined(separator: ", "))")
        }
        return StatusRow(id: "pull", condition: "Synced", generation: lastGood.map { String($0.prefix(12)) }, updatedAt: lastPoll,
                         message: "\(at): /etc/pve is at \(lastGood.map { "\($0.prefix(12))" } ?? "-")")
    }
}
