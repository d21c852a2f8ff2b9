import Foundation
import Synchronization
import Resources

/// Cluster mode: every change to the tree is multicast through a corosync process group and applied by every member
/// in the one order the group delivers, stamped with the sender's node id and the sender's time; the writing call
/// returns after its own message came back, with the result of applying it here. A write needs quorum when it is sent
/// and again when it is delivered (a node without quorum refuses it and catches up at the next sync).
///
/// On every membership change the members resync before anything else is applied: each sends its state (version,
/// newest change time, tree digest); all pick the same leader (highest version, then newest time, then lowest
/// node id and pid); a member whose digest differs from the leader's takes the leader's tree, which the leader sends
/// row by row, in one transaction. Changes delivered meanwhile wait, in order, and writers block until the sync ends.
public final class Replicator: @unchecked Sendable {
    // @unchecked: all mutable state is guarded by `condition`; the group's callbacks run on its dispatch thread.
    // That lock also makes run-time exclusivity checks redundant on the state every change touches (marked
    // @exclusivity(unchecked): the checks showed in the cost of every change).
    enum Kind: UInt8 {
        case change = 1, state, row, complete, status, log, unlockRequest, verifyRequest, verifyDigest
    }

    /// What the status channel carries: a node's status key, or a cluster log entry. Applied on delivery whatever the
    /// sync state (it is not part of the tree), and sent again by each node after every sync.
    public enum StatusItem: Sendable {
        case status(node: String, name: String, value: [UInt8])
        case log(ClusterLogEntry)
    }

    struct PeerState: Equatable {
        var version: UInt64
        var mtime: UInt32
        var digest: [UInt8]
    }

    struct Change {
        var from: GroupMember
        var time: UInt32
        var counter: UInt64
        var operation: TreeOperation
    }

    public static let groupName = "pvectl_dcdb_v1"

    let fileSystem: ClusterFileSystem
    private let condition = NSCondition()
    private var group: ProcessGroup?
    private var quorum: QuorumTracker?
    @exclusivity(unchecked) private var me = GroupMember(nodeID: 0, pid: UInt32(getpid()))
    @exclusivity(unchecked) private var counter: UInt64 = 0
    /// This node's changes sent and not yet answered, by id: the result once applied (`Int32.min` until then), and
    /// whether the change came through this node's mount (one table, one lookup per delivery).
    @exclusivity(unchecked) private var pending: [NumberKey: PendingChange] = [:]

    private struct PendingChange {
        var result = Int32.min
        var seenByKernel: Bool
        /// A writer that does not wait (see `submit(_:throughMount:reply:)`): whoever takes the entry out of `pending`
        /// calls it once with the result, outside `condition`.
        var reply: Reply?
        var isWaiting: Bool { result == Int32.min }
    }

    /// A writer's answer, given on the thread that learned the result.
    public typealias Reply = @Sendable (Int32) -> Void
    /// Membership changes seen (for the log); a sync round is the view it follows, which every member delivers at the
    /// same point of the message stream (CPG's virtual synchrony), so messages need no round number.
    private var round: UInt32 = 0
    private var members: [GroupMember] = []
    @exclusivity(unchecked) private var synced = false
    private var states: [GroupMember: PeerState] = [:]
    private var leader: (member: GroupMember, state: PeerState)?
    private var collected: [TreeSnapshot.Row] = []
    @exclusivity(unchecked) private var queued: [Change] = []
    private var syncCount = 0
    private var stopped = false
    /// Under `connection`: a reconnection is under way (its thread has not installed the new group yet), so another
    /// request to reconnect (the persister and the dispatch thread can both fail on a full disk) joins it.
    private var reconnecting = false
    /// Guards `group` and `quorum` alone, never held while another lock is taken (the file system asks for quorum while
    /// holding its own lock; the sync holds `condition` while it reads the tree).
    private let connection = NSLock()
    private let clock: @Sendable () -> UInt32
    private let log: @Sendable (String) -> Void

    /// Where corosync reads its configuration: the tree's corosync.conf is copied there when its config_version is not
    /// lower than the file's.
    let corosyncConfigPath: String?

    /// Joins the group on this node's corosync (the caller must be in the node's network namespace).
    /// - Parameter verifyInterval: how often the lowest member asks every member to compare its tree's digest (the
    ///   original: hourly).
    /// - Parameter writeTimeout: how long a writer waits before EBUSY (see `defaultWriteTimeout`).
    /// - Parameter persistDelay: how long other nodes' changes may wait in memory (see `applyDelivered`).
    public init(fileSystem: ClusterFileSystem, corosyncConfig: String? = "/etc/corosync/corosync.conf", verifyInterval: TimeInterval = 3600,
                writeTimeout: TimeInterval = defaultWriteTimeout, persistDelay: TimeInterval = defaultPersistDelay,
                clock: @escaping @Sendable () -> UInt32 = { UInt32(time(nil)) }, log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.fileSystem = fileSystem
        self.verifyInterval = verifyInterval
        self.writeTimeout = writeTimeout
        self.persistDelay = persistDelay
        corosyncConfigPath = corosyncConfig
        self.clock = clock
        self.log = log
        try connect()
        startVerificationTimer()
        startPersister()
    }

    // MARK: verification (the original's hourly dcdb verify)

    let verifyInterval: TimeInterval
    /// Verification rounds of the current view: this node's digest at the request's place in the stream, and every
    /// member's.
    private var verifications: [UInt64: (mine: [UInt8]?, members: [GroupMember: [UInt8]])] = [:]
    private var verificationCounter: UInt32 = 0
    /// This node's tree differed from the cluster's at a verification: until the resync it rejoined for, it never leads.
    private var diverged = false

    private func startVerificationTimer() {
        Thread.detachNewThread { [weak self] in
            var waited: TimeInterval = 0
            while let self, !self.condition.withLock({ self.stopped }) {
                sleep(1)
                self.expireReplies()
                waited += 1
                guard waited >= self.verifyInterval else { continue }
                waited = 0
                let lowest = self.condition.withLock { self.isSyncedLowestMember }
                if lowest { self.requestVerification() }
            }
        }
    }

    /// Asks every member to send its tree's digest as of this request's place in the delivery order; a member whose
    /// digest differs from the majority's (the lowest member's on a tie) leaves and rejoins, and takes the leader's
    /// tree in the sync that follows.
    public func requestVerification() {
        let nonce: UInt64? = condition.withLock {
            guard synced else { return nil }
            verificationCounter &+= 1
            return UInt64(me.nodeID) << 32 | UInt64(verificationCounter)
        }
        guard let nonce else { return }
        send(Self.encode(kind: .verifyRequest) { $0.u64(nonce) })
    }

    private func receiveVerifyRequest(_ nonce: UInt64) {
        // Everything delivered before this request is applied (in order, on this thread): the digest is of that tree.
        guard condition.withLock({ synced }) else { return }
        let digest = fileSystem.snapshot().digestBytes
        condition.withLock { verifications[nonce, default: (nil, [:])].mine = digest }
        send(Self.encode(kind: .verifyDigest) { writer in
            writer.u64(nonce)
            writer.bytes(digest)
        })
    }

    private func receiveVerifyDigest(from: GroupMember, nonce: UInt64, digest: [UInt8]) {
        let differs: Bool = condition.withLock {
            guard synced, members.contains(from) else { return false }
            verifications[nonce, default: (nil, [:])].members[from] = digest
            guard let round = verifications[nonce], let mine = round.mine, round.members.count == members.count else { return false }
            verifications[nonce] = nil
            let counts = Dictionary(round.members.values.map { ($0, 1) }, uniquingKeysWith: +)
            let most = counts.values.max() ?? 0
            let lowest = round.members.keys.min().flatMap { round.members[$0] }
            let winners = counts.filter { $0.value == most }.map(\.key)
            let reference = winners.count == 1 ? winners[0] : lowest
            guard let reference, reference != mine else { return false }
            diverged = true
            return true
        }
        if differs {
            log("verification: this node's tree differs from the cluster's; leaving \(Self.groupName) to resync")
            reconnect(corosyncGone: false, then: "joined \(Self.groupName) again")
        }
    }

    /// Connects to corosync: quorum, then the process group (whose first membership change starts a sync).
    private func connect() throws {
        let tracker = try QuorumTracker { [weak self] quorate, _ in
            self?.log("quorum: \(quorate ? "quorate" : "not quorate")")
            self?.quorumChanged(quorate)
        }
        let joined: ProcessGroup
        do {
            joined = try ProcessGroup(name: Self.groupName, dispatching: false, onEvent: { [weak self] event in self?.handle(event) },
                                      onLost: { [weak self] in self?.lost() })
        } catch {
            tracker.stop()
            throw error
        }
        connection.withLock {
            quorum = tracker
            group = joined
            reconnecting = false
        }
        condition.withLock { me = GroupMember(nodeID: joined.localNodeID, pid: UInt32(getpid())) }
        quorumChanged(tracker.isQuorate)
        // Only now: the first membership change starts a sync, which must know who this node is.
        joined.startDispatching()
    }

    /// Quorum as this node acts on it (writes, modes), the changes of it seen, and how many of them the kernel's cached
    /// attributes reflect: one lock, so that nobody sees the new quorum before it counts as a change.
    private let quorumView = Mutex<(quorate: Bool, seen: UInt64, forgotten: UInt64)>((false, 0, 0))

    /// The modes shown follow quorum (read-only without it): the kernel must ask for every attribute again.
    private func quorumChanged(_ quorate: Bool) {
        quorumView.withLock {
            $0.quorate = quorate
            $0.seen += 1
        }
        // Writers waiting for a sync are refused now (see `send`).
        if !quorate { condition.withLock { condition.broadcast() } }
        settleQuorumView()
        if quorate { rejoinIfPending() }
    }

    /// Makes sure the kernel holds no attribute from before the last quorum change: also called before a write is
    /// refused for want of quorum, so that whoever sees the refusal then sees the read-only modes too.
    private func settleQuorumView() {
        let seen: UInt64? = quorumView.withLock { $0.forgotten < $0.seen ? $0.seen : nil }
        guard let seen else { return }
        fileSystem.forgetCachedAttributes()
        quorumView.withLock { $0.forgotten = max($0.forgotten, seen) }
    }

    /// corosync went away (killed, restarted): out of sync, no quorum, and a reconnection every second, as the
    /// original re-initialises its services on a timer.
    private func lost() {
        log("corosync is gone: the tree is read-only until it is back")
        reconnect(corosyncGone: true, then: "corosync is back: joined \(Self.groupName) again")
    }

    /// Leaves the group and joins it again: a membership change for every member, so a sync. After this node refused a
    /// delivered change for want of quorum its tree lacks what the others applied; the sync gives it the leader's.
    private func rejoin() {
        log("refused a delivered change without quorum: leaving \(Self.groupName) to resync")
        reconnect(corosyncGone: false, then: "joined \(Self.groupName) again")
    }

    /// Drops the group (out of sync; without quorum too when corosync is gone) and connects again on a thread of its
    /// own, every second until corosync answers.
    /// - Parameter corosyncGone: corosync went away (no quorum until it is back, the first try after a second); otherwise
    ///   this node leaves and joins again by itself, quorum unchanged, and writers wait for the sync that follows.
    private func reconnect(corosyncGone: Bool, then message: String) {
        let (oldGroup, oldQuorum, underWay): (ProcessGroup?, QuorumTracker?, Bool) = connection.withLock {
            defer {
                group = nil
                quorum = nil
                reconnecting = true
            }
            return (group, quorum, reconnecting)
        }
        condition.withLock { synced = false }
        if corosyncGone { quorumChanged(false) }
        guard !underWay else { return }
        Thread.detachNewThread { [self] in
            oldGroup?.stop()
            oldQuorum?.stop()
            var first = true
            while !condition.withLock({ stopped }) {
                if corosyncGone || !first { sleep(1) }
                first = false
                do {
                    try connect()
                    log(message)
                    return
                } catch {
                    continue
                }
            }
        }
    }

    /// This node refused a delivered change (no quorum at delivery): it rejoins once it has quorum again, and is out of
    /// sync until the sync that follows.
    private var rejoinPending = false
    private var refusedSinceSync = false

    private func rejoinIfPending() {
        let pending: Bool = condition.withLock {
            defer { rejoinPending = false }
            return rejoinPending
        }
        if pending { rejoin() }
    }

    public func stop() {
        condition.withLock { stopped = true }
        let (oldGroup, oldQuorum): (ProcessGroup?, QuorumTracker?) = connection.withLock { (group, quorum) }
        oldGroup?.stop()
        oldQuorum?.stop()
        persistSignal.withLock {
            persisterStopped = true
            persistSignal.signal()
        }
        let replies: [Reply] = condition.withLock {
            synced = true
            let replies = pending.keys.compactMap { settle($0, -EBUSY) }
            condition.broadcast()
            return replies
        }
        for reply in replies { reply(-EBUSY) }
    }

    public var isQuorate: Bool { quorumView.withLock { $0.quorate } }
    /// Node ids in corosync's current view (online), from the quorum service.
    public var onlineNodeIDs: [UInt32] { connection.withLock { quorum }?.members ?? [] }
    /// Membership changes seen: the version `.members` reports (an atomic: the file system asks while holding its lock,
    /// which the sync holds this object's lock around).
    public var membershipVersion: UInt32 { rounds.load(ordering: .relaxed) }
    private let rounds = Atomic<UInt32>(0)
    public var nodeID: UInt32 { condition.withLock { me.nodeID } }
    public var isSynced: Bool { condition.withLock { synced } }
    /// Syncs completed since start (the first makes the tree usable).
    public var completedSyncs: Int { condition.withLock { syncCount } }

    // MARK: writing

    /// How long a writer waits for a sync to end, or for its change to come back, before it gets EBUSY (the change may
    /// still be applied later: its outcome is then unknown to the caller, as with any timeout).
    public static let defaultWriteTimeout: TimeInterval = 60
    let writeTimeout: TimeInterval

    /// Sends a change and waits until it was applied here; -EACCES without quorum, -EBUSY when it cannot be sent.
    /// - Parameter throughMount: the change is a file system call through this node's mount (the kernel saw it happen and
    ///   keeps its own caches right); false for changes the daemon makes itself.
    public func submit(_ operation: TreeOperation, throughMount: Bool = true) -> Int32 {
        let deadline = Date().addingTimeInterval(writeTimeout)
        let key: NumberKey
        switch send(operation, throughMount: throughMount, until: deadline, reply: nil) {
        case .refused(let result): return result
        case .sent(let sent): key = sent
        }
        condition.lock()
        defer { condition.unlock() }
        while pending[key]?.isWaiting == true {
            guard condition.wait(until: deadline) || pending[key]?.isWaiting != true else {
                // Still delivered later, it then counts as a change the kernel did not see (caches invalidated).
                pending[key] = nil
                return -EBUSY
            }
        }
        return pending.removeValue(forKey: key)?.result ?? -EBUSY
    }

    /// `submit`, answered through `reply` instead of waiting: the calling thread goes back to its work (a FUSE worker, to
    /// the next request) and the dispatch thread that applies the change answers at once, one thread wake-up less per
    /// change. While a sync runs the caller waits for it as `submit` does; no answer within `writeTimeout` is EBUSY.
    public func submit(_ operation: TreeOperation, throughMount: Bool = true, reply: @escaping Reply) {
        if case .refused(let result) = send(operation, throughMount: throughMount, until: Date().addingTimeInterval(writeTimeout),
                                            reply: reply) {
            reply(result)
        }
    }

    private enum Sending {
        case refused(Int32)
        /// In `pending` under this key (or already answered there, by `stop`).
        case sent(NumberKey)
    }

    /// Multicasts a change once this node is in sync and quorate, its writer entered in `pending` first.
    private func send(_ operation: TreeOperation, throughMount: Bool, until deadline: Date, reply: Reply?) -> Sending {
        // One timeout for the wait for a sync and for the answer, as for a writer that waits.
        let replyDeadline = ContinuousClock.now + .seconds(writeTimeout)
        condition.lock()
        // Without quorum the tree is read-only, in sync or not: refused at once, never after waiting for a sync that
        // cannot come before quorum does.
        while !synced && isQuorate {
            guard condition.wait(until: deadline) || synced else {
                condition.unlock()
                return .refused(-EBUSY)
            }
        }
        guard isQuorate else {
            condition.unlock()
            settleQuorumView()
            return .refused(-EACCES)
        }
        counter += 1
        let key = NumberKey(counter)
        pending[key] = PendingChange(seenByKernel: throughMount, reply: reply)
        if reply != nil { replyDeadlines.append((key, replyDeadline)) }
        let message = changeMessage(id: counter, operation)
        condition.unlock()
        do {
            try connection.withLock({ group })?.multicast(message)
        } catch {
            log("cannot send a change: \(error)")
            // Never sent, so never answered by a delivery.
            if condition.withLock({ pending.removeValue(forKey: key) }) != nil { return .refused(-EBUSY) }
        }
        return .sent(key)
    }

    /// Writers that do not wait, and when they get EBUSY (a monotonic clock: a step of the wall clock must not expire
    /// them all); checked every second.
    @exclusivity(unchecked) private var replyDeadlines: [(key: NumberKey, deadline: ContinuousClock.Instant)] = []

    /// Answers EBUSY to the writers that do not wait whose change did not come back in time (the change may still be
    /// applied later: it then counts as one the kernel did not see, as for a waiting writer that gave up).
    private func expireReplies() {
        let now = ContinuousClock.now
        let expired: [Reply] = condition.withLock {
            var expired: [Reply] = []
            // Answered ones leave the list too.
            replyDeadlines.removeAll { key, deadline in
                guard pending[key] != nil else { return true }
                guard deadline <= now else { return false }
                if let reply = settle(key, -EBUSY) { expired.append(reply) }
                return true
            }
            return expired
        }
        for reply in expired { reply(-EBUSY) }
    }

    /// Hands `result` to the writer of `key` if it still waits; under `condition`. A writer that does not wait leaves
    /// `pending` and its reply is returned, for the caller to call once `condition` is released.
    private func settle(_ key: NumberKey, _ result: Int32) -> Reply? {
        guard pending[key]?.isWaiting == true else { return nil }
        if let reply = pending[key]?.reply {
            pending[key] = nil
            return reply
        }
        pending[key]?.result = result
        return nil
    }

    /// Asks the lowest node to release the lock at `path` if it is expired (not waiting: a caller polls for the lock to
    /// go, as the tools do).
    public func requestUnlock(_ path: String, digest: [UInt8]) -> Int32 {
        guard isQuorate else {
            settleQuorumView()
            return -EACCES
        }
        send(Self.encode(kind: .unlockRequest) { writer in
            writer.text(path)
            writer.blob(digest)
        })
        return 0
    }

    /// Sends a status key or log entry to every node (not waiting for it); kept here alone when it cannot be sent.
    public func publish(_ item: StatusItem) {
        let message = Self.encode(kind: { if case .status = item { .status } else { .log } }()) { writer in
            switch item {
            case .status(let node, let name, let value):
                writer.text(node)
                writer.text(name)
                writer.blob(value)
            case .log(let entry):
                // In the order of ClusterLogEntry's fields, which the reader fills left to right.
                writer.u32(entry.uid)
                writer.u32(entry.time)
                writer.u8(entry.priority)
                writer.text(entry.tag)
                writer.u32(UInt32(bitPattern: entry.pid))
                writer.text(entry.node)
                writer.text(entry.user)
                writer.text(entry.message)
            }
        }
        do {
            try connection.withLock({ group })?.multicast(message)
        } catch {
            log("status channel: cannot send (\(error)); kept on this node")
            deliver(item)
        }
    }

    private func deliver(_ item: StatusItem) {
        switch item {
        case .status(let node, let name, let value): fileSystem.storeStatus(node: node, name: name, value: value)
        case .log(let entry): fileSystem.appendLog(entry)
        }
    }

    // MARK: delivery (the group's dispatch thread)

    private func handle(_ event: ProcessGroup.Event) {
        switch event {
        case .membership(let list, let joined, let left):
            // A batch this node could not commit makes it leave the group: this view is then no longer its own.
            guard applyDelivered() else { return }
            log("membership: \(list.map(\.description).joined(separator: " ")) (joined \(joined.count), left \(left.count))")
            startSync(members: list.sorted())
        case .message(let from, let data):
            do {
                try receive(from: from, data)
            } catch {
                log("ignored a message from \(from): \(error)")
            }
        case .dispatched:
            _ = applyDelivered()
        }
    }

    private func startSync(members list: [GroupMember]) {
        let snapshot = fileSystem.snapshot()
        var droppedReplies: [Reply] = []
        let message: [UInt8] = condition.withLock {
            round &+= 1
            rounds.store(round, ordering: .relaxed)
            members = list
            synced = false
            refusedSinceSync = false
            states = [:]
            leader = nil
            collected = []
            // Changes queued in an earlier view are either in the next leader's tree (a member that was in sync applied
            // them) or applied nowhere: applying them after taking the leader's tree would apply them twice. Their
            // writers learn nothing certain (EBUSY, as a timeout).
            for change in queued {
                if let key = waitingWriter(of: change) {
                    if let reply = settle(key, -EBUSY) { droppedReplies.append(reply) } else { pending[key]?.seenByKernel = false }
                }
            }
            queued = []
            condition.broadcast()
            verifications = [:]
            // A diverged node (a failed verification, changes it could not commit) must not lead: its version and time
            // count as none. Nor may its digest match: its memory equals the cluster's while its database lags (the
            // commit failed), and only the leader's rows rewrite both.
            let diverged = diverged
            return Self.encode(kind: .state) { writer in
                writer.u64(diverged ? 0 : snapshot.version)
                writer.u32(diverged ? 0 : snapshot.mtime)
                writer.bytes(diverged ? [UInt8](repeating: 0, count: 32) : snapshot.digestBytes)
                writer.blob(Self.viewTag(list))
            }
        }
        for reply in droppedReplies { reply(-EBUSY) }
        send(message)
    }

    private func receive(from: GroupMember, _ bytes: [UInt8]) throws {
        var reader = WireReader(bytes)
        guard let kind = Kind(rawValue: try reader.u8()) else { throw WireReader.Failure(description: "unknown message kind") }
        // Everything else sees the tree with every change delivered before it applied.
        if kind != .change { _ = applyDelivered() }
        switch kind {
        case .change:
            let id = try reader.u64()
            let time = try reader.u32()
            let change = Change(from: from, time: time, counter: id, operation: try TreeOperation(reading: &reader))
            condition.withLock {
                if synced { delivered.append(change) } else { queued.append(change) }
            }
        case .state:
            let state = PeerState(version: try reader.u64(), mtime: try reader.u32(), digest: try reader.take(32))
            // A state sent for an earlier view can arrive after the next view began: it counts only for its own view.
            let view = try reader.blob()
            guard view == condition.withLock({ Self.viewTag(members) }) else { return }
            receiveState(from: from, state)
        case .row:
            let row = TreeSnapshot.Row(inode: try reader.u64(), parent: try reader.u64(), version: try reader.u64(), writer: try reader.u32(),
                                       mtime: try reader.u32(), type: try reader.u8(), name: try reader.text(), data: try reader.blob())
            condition.withLock {
                if !synced, leader?.member == from { collected.append(row) }
            }
        case .complete:
            let state = PeerState(version: try reader.u64(), mtime: try reader.u32(), digest: try reader.take(32))
            complete(from: from, state)
        case .verifyRequest:
            receiveVerifyRequest(try reader.u64())
        case .verifyDigest:
            receiveVerifyDigest(from: from, nonce: try reader.u64(), digest: try reader.take(32))
        case .unlockRequest:
            let path = try reader.text(), digest = try reader.blob()
            let lowest = condition.withLock { isSyncedLowestMember }
            guard lowest, fileSystem.lockExpired(path, digest: digest) else { return }
            // A change nobody waits for (id 0): applied everywhere in order, only if the lock is still that one.
            send(changeMessage(id: 0, .unlock(path, digest: digest)))
        case .status:
            deliver(.status(node: try reader.text(), name: try reader.text(), value: try reader.blob()))
        case .log:
            deliver(.log(ClusterLogEntry(uid: try reader.u32(), time: try reader.u32(), priority: try reader.u8(), tag: try reader.text(),
                                         pid: Int32(bitPattern: try reader.u32()), node: try reader.text(), user: try reader.text(),
                                         message: try reader.text())))
        }
    }

    private func receiveState(from: GroupMember, _ state: PeerState) {
        var rowsToSend: [[UInt8]] = []
        var finished = false
        condition.withLock {
            guard !synced, members.contains(from) else { return }
            states[from] = state
            guard states.count == members.count else { return }
            // Everyone has the same states: the same leader everywhere.
            let best = states.max { lhs, rhs in
                (lhs.value.version, lhs.value.mtime) != (rhs.value.version, rhs.value.mtime)
                    ? (lhs.value.version, lhs.value.mtime) < (rhs.value.version, rhs.value.mtime)
                    : lhs.key > rhs.key
            }!
            leader = (best.key, best.value)
            let mine = states[me]
            if best.key == me && states.values.contains(where: { $0.digest != best.value.digest }) {
                // The leader's tree as it is now: changes delivered since the sync began are still queued.
                let snapshot = fileSystem.snapshot()
                rowsToSend = snapshot.rows.map { row in
                    Self.encode(kind: .row) { writer in
                        writer.u64(row.inode)
                        writer.u64(row.parent)
                        writer.u64(row.version)
                        writer.u32(row.writer)
                        writer.u32(row.mtime)
                        writer.u8(row.type)
                        writer.text(row.name)
                        writer.blob(row.data)
                    }
                }
                // The rows' own version and digest: what the others must hold once they took them.
                rowsToSend.append(Self.encode(kind: .complete) { writer in
                    writer.u64(snapshot.version)
                    writer.u32(snapshot.mtime)
                    writer.bytes(snapshot.digestBytes)
                })
            }
            finished = mine?.digest == best.value.digest
        }
        for message in rowsToSend { send(message) }
        if finished { finishSync(took: nil) }
    }

    private func complete(from: GroupMember, _ state: PeerState) {
        let rows: [TreeSnapshot.Row]? = condition.withLock {
            guard !synced, leader?.member == from else { return nil }
            return collected
        }
        guard let rows else { return }
        let snapshot = TreeSnapshot(version: state.version, mtime: state.mtime, rows: rows)
        do {
            guard snapshot.digestBytes == state.digest else {
                throw WireReader.Failure(description: "the leader's rows do not give the leader's digest")
            }
            try fileSystem.replace(with: snapshot)
            finishSync(took: rows.count)
        } catch {
            // Nothing applied: stay out of sync until the next membership change (the original's error state).
            log("sync failed, the tree is left as it was: \(error)")
        }
    }

    /// Applies what waited for the sync, in order, then lets writers go.
    private func finishSync(took rows: Int?) {
        let waiting: [Change] = condition.withLock {
            defer { queued = [] }
            return queued
        }
        for index in waiting.indices where !condition.withLock({ refusedSinceSync }) {
            guard applyAlone(waiting, at: index) else { return }
        }
        // What waits to be written (a commit that failed before this sync and was not rewritten by it) is tried again.
        persistSoon()
        let finishedRound: UInt32 = condition.withLock {
            // A change refused meanwhile (no quorum) leaves this node out of sync until it rejoined.
            synced = !refusedSinceSync
            diverged = false
            syncCount += 1
            condition.broadcast()
            return round
        }
        log("synced (round \(finishedRound))" + (rows.map { ": took the leader's tree, \($0) entries" } ?? ""))
        installCorosyncConfig()
        // The directories every node has, made now that the tree is the cluster's (never before a sync: a local change
        // would make this node the leader of a stale tree), again after every sync (the leader's tree may lack them).
        let node = fileSystem.node
        Thread.detachNewThread { [self] in
            // The status channel is memory only: what this node holds of its own goes to the nodes that just joined.
            for (name, value) in fileSystem.ownStatus() { publish(.status(node: node, name: name, value: value)) }
            for entry in fileSystem.ownLogEntries() { publish(.log(entry)) }
            for path in ["nodes", "nodes/\(node)", "nodes/\(node)/qemu-server", "nodes/\(node)/lxc", "nodes/\(node)/openvz",
                         "nodes/\(node)/priv", "priv", "priv/lock"] where isQuorate && fileSystem.getattr("/" + path).0 == -ENOENT {
                _ = submit(.mkdir("/" + path), throughMount: false)
            }
        }
    }

    /// Changes delivered in this dispatch and not applied yet. Under `condition`: after a reconnect, the old group's
    /// dispatch thread may still be delivering while the new one starts.
    @exclusivity(unchecked) private var delivered: [Change] = []

    /// Applies the changes delivered together (at the end of a dispatch, and before any other message or a membership
    /// change, so that the order of the stream holds). Their rows reach the database at once when a writer on this
    /// node waits for one of them (it is answered once its change is durable here), else within `persistDelay`,
    /// together with whatever comes meanwhile: a change another node wrote is durable on that node already, and a
    /// node that loses what it had not written takes it from the cluster when it rejoins. Returns false when this node
    /// could not commit and left the group to resync.
    private func applyDelivered() -> Bool {
        let changes: [Change] = condition.withLock {
            defer { delivered.removeAll(keepingCapacity: true) }
            return delivered
        }
        guard !changes.isEmpty else { return true }
        guard isQuorate else {
            // Without quorum the first is refused, which takes this node out of sync, and the others wait for the
            // resync, as if delivered after it.
            for (index, change) in changes.enumerated() {
                let now: Bool = condition.withLock {
                    if !synced { queued.append(change) }
                    return synced
                }
                guard now else { continue }
                guard applyAlone(changes, at: index) else { return false }
            }
            return true
        }
        return applyQuorate(changes)
    }

    /// Applies `changes[index]` alone, or refuses it when quorum is gone at its turn. False when its commit failed and
    /// this node leaves: the rest of `changes` is queued then, for the next view's sync to answer at once (EBUSY)
    /// rather than after the writers' timeout (that sync drops the whole queue, so its order does not matter).
    private func applyAlone(_ changes: [Change], at index: Int) -> Bool {
        guard isQuorate else {
            refuse(changes[index])
            return true
        }
        guard applyQuorate([changes[index]]) else {
            condition.withLock { queued.append(contentsOf: changes[(index + 1)...]) }
            return false
        }
        return true
    }

    private func applyQuorate(_ changes: [Change]) -> Bool {
        let (batch, answering): ([ClusterFileSystem.DeliveredChange], Bool) = condition.withLock {
            (changes.map { .init($0.operation, stamp: Stamp(writer: $0.from.nodeID, time: $0.time), seenByKernel: cameThroughMount($0)) },
             changes.contains { waitingWriter(of: $0) != nil })
        }
        let (results, persisted) = fileSystem.apply(batch: batch, persistNow: answering)
        if zip(changes, results).contains(where: { $1 >= 0 && $0.operation.touches("/corosync.conf") }) { installCorosyncConfig() }
        answer(zip(changes, results))
        guard persisted else {
            leaveToResync("could not write \(changes.count) delivered changes to the database")
            return false
        }
        if !answering { persistSoon() }
        return true
    }

    /// This node's database could not take what memory holds (the cluster's tree): it leaves the group, and the sync
    /// when it rejoins rewrites its database from the leader's tree (a diverged node never leads).
    private func leaveToResync(_ reason: String) {
        condition.withLock { diverged = true }
        log("\(reason); leaving \(Self.groupName) to resync")
        reconnect(corosyncGone: false, then: "joined \(Self.groupName) again")
    }

    // MARK: deferred persistence

    /// How long changes other nodes wrote may wait in memory before this node writes them to its database: long
    /// enough that a stream of them shares commits, short enough that a node killed loses little it must resync.
    public static let defaultPersistDelay: TimeInterval = 0.1
    let persistDelay: TimeInterval
    private let persistSignal = NSCondition()
    /// Under `persistSignal`: changes wait to be written; the persister is stopped.
    private var persistDue = false
    private var persisterStopped = false

    private func persistSoon() {
        persistSignal.withLock {
            guard !persistDue else { return }
            persistDue = true
            persistSignal.signal()
        }
    }

    /// Writes what waits `persistDelay` after the first of it was applied; at `stop()`, at once.
    private func startPersister() {
        Thread.detachNewThread { [self] in
            while true {
                let stopping: Bool = persistSignal.withLock {
                    while !persistDue && !persisterStopped { persistSignal.wait() }
                    if !persisterStopped { _ = persistSignal.wait(until: Date(timeIntervalSinceNow: persistDelay)) }
                    persistDue = false
                    return persisterStopped
                }
                if !fileSystem.persistDeferred() { leaveToResync("could not write changes of other nodes to the database") }
                if stopping { return }
            }
        }
    }

    /// Whether `change` is this node's and came through its mount (see `submit`); under `condition`.
    private func cameThroughMount(_ change: Change) -> Bool {
        change.from == me && pending[NumberKey(change.counter)]?.seenByKernel == true
    }

    /// The pending-table key of the writer on this node still waiting for `change`, if there is one; under `condition`.
    private func waitingWriter(of change: Change) -> NumberKey? {
        let key = NumberKey(change.counter)
        return change.from == me && pending[key]?.isWaiting == true ? key : nil
    }

    /// Hands this node's writers waiting for these changes their results: a waiting writer is woken, one that does not
    /// wait is answered from here.
    private func answer(_ results: some Sequence<(Change, Int32)>) {
        var replies: [(Reply, Int32)] = []
        condition.withLock {
            var woken = false
            for (change, result) in results {
                guard let key = waitingWriter(of: change) else { continue }
                if let reply = settle(key, result) { replies.append((reply, result)) } else { woken = true }
            }
            if woken { condition.broadcast() }
        }
        for (reply, result) in replies { reply(result) }
    }

    /// A change delivered while this node has no quorum: refused (EACCES to its writer here), and this node is out of
    /// sync from here; what follows waits for the resync, which rejoining brings once quorate.
    private func refuse(_ change: Change) {
        settleQuorumView()
        condition.withLock {
            synced = false
            refusedSinceSync = true
            rejoinPending = true
        }
        // Quorum may be back already (its notification and this delivery come on different channels).
        if isQuorate { rejoinIfPending() }
        answer(CollectionOfOne((change, -EACCES)))
    }

    /// Copies the tree's corosync.conf to corosync's when its config_version is not lower (and the text differs), as
    /// the original does, then reloads corosync (`corosync-cfgtool -R`, which every node's corosync follows). Every node
    /// that installs it reloads, not only the one whose write it was (the original's rule): that reload could reach a
    /// node before its own copy was installed, and that node kept the old nodelist (a node added then never joined).
    func installCorosyncConfig() {
        guard let target = corosyncConfigPath else { return }
        let (found, attributes) = fileSystem.getattr("/corosync.conf")
        guard found == 0, let attributes else { return }
        let (read, bytes) = fileSystem.read("/corosync.conf", size: attributes.size, offset: 0)
        guard read >= 0 else { return }
        let current = FileManager.default.contents(atPath: target).map { Array($0) }
        guard current != bytes else { return }
        // A file being written (truncated, half there) has no config_version yet: only a whole config is installed.
        guard let treeVersion = Self.configVersion(bytes) else { return }
        if let current, let installed = Self.configVersion(current), treeVersion < installed {
            log("corosync.conf in the tree has config_version \(treeVersion), lower than \(target)'s \(installed): not installed")
            return
        }
        let temporary = target + ".pmxcfs.\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes), attributes: [.posixPermissions: 0o644]),
              rename(temporary, target) == 0 else {
            log("cannot write \(target): \(String(cString: strerror(errno)))")
            return
        }
        log("installed corosync.conf (config_version \(treeVersion)) as \(target)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/corosync-cfgtool")
        process.arguments = ["-R"]
        do {
            try process.run()
            process.waitUntilExit()
            log("reloaded corosync (corosync-cfgtool -R: exit \(process.terminationStatus))")
        } catch {
            log("cannot reload corosync: \(error)")
        }
    }

    /// The `config_version:` in a corosync.conf's totem section (the first one in the file).
    static func configVersion(_ bytes: [UInt8]) -> UInt64? {
        for line in splitLines(String(decoding: bytes, as: UTF8.self)) {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.hasPrefix("config_version:") else { continue }
            return UInt64(trimmed.dropFirst("config_version:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// A change as multicast: the sender's counter (0: nobody waits for it), the sender's time, the operation.
    private func changeMessage(id: UInt64, _ operation: TreeOperation) -> [UInt8] {
        Self.encode(kind: .change, capacity: 13 + operation.encodedSizeEstimate) { writer in
            writer.u64(id)
            writer.u32(clock())
            operation.encode(into: &writer)
        }
    }

    /// In sync and the member with the lowest node id (who decides lock expiry and asks for verifications); under
    /// `condition`.
    private var isSyncedLowestMember: Bool { synced && members.map(\.nodeID).min() == me.nodeID }

    private func send(_ message: [UInt8]) {
        do {
            try connection.withLock({ group })?.multicast(message)
        } catch {
            log("cannot send: \(error)")
        }
    }

    // MARK: wire

    /// The members of a view, as a state message names the view it was sent for.
    static func viewTag(_ members: [GroupMember]) -> [UInt8] {
        var writer = WireWriter()
        for member in members.sorted() {
            writer.u32(member.nodeID)
            writer.u32(member.pid)
        }
        return writer.bytes
    }

    /// - Parameter capacity: the bytes the message will take, if known: a change is encoded on every write, and growing
    ///   its buffer field by field cost more than the encoding.
    static func encode(kind: Kind, capacity: Int = 0, _ body: (inout WireWriter) -> Void) -> [UInt8] {
        var writer = WireWriter()
        writer.bytes.reserveCapacity(capacity)
        writer.u8(kind.rawValue)
        body(&writer)
        return writer.bytes
    }
}

/// Little-endian fields, as the replication messages carry them.
struct WireWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    mutating func bytes(_ value: [UInt8]) { bytes += value }
    mutating func blob(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes += value
    }
    mutating func text(_ value: String) {
        u32(UInt32(value.utf8.count))
        bytes += value.utf8
    }
}

struct WireReader {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Where the next `count` bytes start, the position moved past them. Fixed-size fields are read from there in
    /// place: every delivered change is decoded on the dispatch thread, and an array per field showed in its cost.
    private mutating func advance(_ count: Int) throws -> Int {
        guard count >= 0, bytes.count - position >= count else { throw Failure(description: "truncated message") }
        defer { position += count }
        return position
    }

    mutating func take(_ count: Int) throws -> [UInt8] {
        let start = try advance(count)
        return Array(bytes[start..<(start + count)])
    }

    mutating func u8() throws -> UInt8 { bytes[try advance(1)] }
    mutating func u32() throws -> UInt32 { try little(UInt32.self) }
    mutating func u64() throws -> UInt64 { try little(UInt64.self) }

    private mutating func little<Value: FixedWidthInteger>(_: Value.Type) throws -> Value {
        let start = try advance(MemoryLayout<Value>.size)
        return bytes.withUnsafeBytes { Value(littleEndian: $0.loadUnaligned(fromByteOffset: start, as: Value.self)) }
    }

    mutating func blob() throws -> [UInt8] { try take(Int(try u32())) }
    mutating func text() throws -> String {
        let count = Int(try u32())
        let start = try advance(count)
        return try bytes.withUnsafeBufferPointer { buffer in
            let field = UnsafeBufferPointer(rebasing: buffer[start..<(start + count)])
            // ASCII (the paths the tools write) is UTF-8 as it is: made a String directly, without the generic validation
            // that showed in the cost of every delivered change.
            if field.allSatisfy({ $0 < 0x80 }) { return String(decoding: field, as: UTF8.self) }
            guard let text = String(validating: field, as: UTF8.self) else { throw Failure(description: "a name that is not UTF-8") }
            return text
        }
    }

    /// Whether every byte was read.
    var isAtEnd: Bool { position == bytes.count }
    var remaining: Int { bytes.count - position }
}
