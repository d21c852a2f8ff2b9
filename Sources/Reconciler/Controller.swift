import Foundation

/// What the loop queues: a whole kind (`qemu`) or one resource of it (`qemu/100`), so that one failing VM backs off
/// alone and an edit of one VM's config plans that VM only. Ordered by the engine (`ReconcileEngine.precedes`).
public struct ResourceKey: Hashable, Sendable, CustomStringConvertible {
    public var kind: String
    /// nil: every resource of the kind.
    public var name: String?

    public init(_ kind: String, _ name: String? = nil) {
        self.kind = kind
        self.name = name
    }

    public var description: String { name.map { "\(kind)/\($0)" } ?? kind }
}

/// The loop's work queue, as Kubernetes controllers keep theirs: keyed by
/// resource or kind (a key queued twice runs once), each key due at a time
/// (now, or later after its own failures: exponential backoff), one pass at a
/// time, and at most one pass per `minimumInterval` overall (a storm of events
/// cannot turn into a storm of passes). Pure: time is passed in. Among due keys the first in `order` runs first.
public struct WorkQueue<Key: Hashable & Sendable>: Sendable {
    public var baseDelay: TimeInterval
    public var maximumDelay: TimeInterval
    public var minimumInterval: TimeInterval
    public let order: @Sendable (Key, Key) -> Bool

    private var due: [Key: Date] = [:]
    private var failures: [Key: Int] = [:]
    private var lastPass: Date?

    public init(baseDelay: TimeInterval = 1, maximumDelay: TimeInterval = 300, minimumInterval: TimeInterval = 0.1,
                order: @escaping @Sendable (Key, Key) -> Bool) {
        self.baseDelay = baseDelay
        self.maximumDelay = maximumDelay
        self.minimumInterval = minimumInterval
        self.order = order
    }

    /// Keys in their own order.
    public init(baseDelay: TimeInterval = 1, maximumDelay: TimeInterval = 300, minimumInterval: TimeInterval = 0.1) where Key: Comparable {
        self.init(baseDelay: baseDelay, maximumDelay: maximumDelay, minimumInterval: minimumInterval, order: { $0 < $1 })
    }

    /// Queues a kind to run now. A kind already waiting for a retry keeps its
    /// backoff: an event does not turn a failing kind into a busy loop.
    public mutating func add(_ kind: Key, now: Date) {
        if failures[kind, default: 0] > 0, let existing = due[kind], existing > now { return }
        due[kind] = min(due[kind] ?? now, now)
    }

    /// Queues a key to run at `date` (a kind asked to be looked at again then), unless it is due sooner.
    public mutating func add(_ key: Key, at date: Date) {
        due[key] = min(due[key] ?? date, date)
    }

    public mutating func add<S: Sequence>(_ kinds: S, now: Date) where S.Element == Key {
        for kind in kinds { add(kind, now: now) }
    }

    /// The pass of `kind` failed: it runs again after base × 2^(failures − 1), capped.
    /// Returns the delay.
    @discardableResult
    public mutating func failed(_ kind: Key, now: Date) -> TimeInterval {
        let count = failures[kind, default: 0] + 1
        failures[kind] = count
        let delay = min(maximumDelay, baseDelay * pow(2, Double(min(count - 1, 30))))
        due[kind] = now.addingTimeInterval(delay)
        return delay
    }

    /// The pass of `kind` converged (or had nothing to do): its backoff is forgotten.
    public mutating func succeeded(_ kind: Key) {
        failures[kind] = nil
    }

    public func failureCount(_ kind: Key) -> Int { failures[kind, default: 0] }

    /// The next kind to run at `now`, in apply order among those due, or nil.
    public mutating func next(now: Date) -> Key? {
        if let lastPass, now < lastPass.addingTimeInterval(minimumInterval) { return nil }
        guard let kind = due.filter({ $0.value <= now }).keys.min(by: order) else { return nil }
        due[kind] = nil
        lastPass = now
        return kind
    }

    /// When `next` can next return a kind: nil when nothing is queued.
    public var nextWake: Date? {
        guard let earliest = due.values.min() else { return nil }
        guard let lastPass else { return earliest }
        return max(earliest, lastPass.addingTimeInterval(minimumInterval))
    }

    public var isEmpty: Bool { due.isEmpty }

    /// Forgets queued keys a pass just covered (the resources of a kind that ran whole); their backoff stays.
    public mutating func drop(where covered: (Key) -> Bool) {
        for key in due.keys where covered(key) && failures[key, default: 0] == 0 { due[key] = nil }
    }
}

/// Where event sources (file changes, netlink, timers, signals) drop kinds
/// for the loop, and where the loop sleeps until one arrives or a deadline
/// passes. Waking is level-triggered: the loop reads everything posted.
public actor ControllerInbox {
    private var posted: Set<ResourceKey> = []
    private var stopping = false
    private var waiter: CheckedContinuation<Void, Never>?
    private var timer: Task<Void, Never>?

    public init() {}

    /// Whole kinds.
    public func post<S: Sequence & Sendable>(kinds: S) where S.Element == String {
        post(keys: kinds.map { ResourceKey($0) })
    }

    public func post<S: Sequence & Sendable>(keys: S) where S.Element == ResourceKey {
        posted.formUnion(keys)
        wake()
    }

    public func stop() {
        stopping = true
        wake()
    }

    public var isStopping: Bool { stopping }

    /// Everything posted since the last call.
    public func take() -> Set<ResourceKey> {
        defer { posted = [] }
        return posted
    }

    /// Returns when something is posted, on stop, or at `deadline` (never, when nil).
    public func wait(until deadline: ContinuousClock.Instant?) async {
        guard posted.isEmpty && !stopping else { return }
        if let deadline {
            timer = Task { [weak self] in
                // Cancelled when something else wakes the loop first: no sleeper outlives its wait.
                guard (try? await Task.sleep(until: deadline, clock: .continuous)) != nil else { return }
                await self?.wake()
            }
        }
        await withCheckedContinuation { waiter = $0 }
    }

    private func wake() {
        timer?.cancel()
        timer = nil
        waiter?.resume()
        waiter = nil
    }
}

/// What the loop last did per kind, kept in the state directory so that
/// `pvectl status` (and an operator after a crash) can see it.
public struct LoopRecord: Codable, Sendable {
    public struct KindRecord: Codable, Sendable {
        public var lastPassAt: Date
        /// converged (nothing to do), applied, failed, or reported (report-only drift).
        public var outcome: String
        public var message: String?
        public var failures: Int
        public var retryAt: Date?

        public init(lastPassAt: Date, outcome: String, message: String? = nil, failures: Int = 0, retryAt: Date? = nil) {
            self.lastPassAt = lastPassAt
            self.outcome = outcome
            self.message = message
            self.failures = failures
            self.retryAt = retryAt
        }
    }

    public var pid: Int32
    public var startedAt: Date
    public var stoppedAt: Date?
    public var kinds: [String: KindRecord] = [:]
    /// The kinds the loop follows: one without a record has not had its first pass yet (nil in older records).
    public var followed: [String]?

    /// The followed kinds without a pass yet.
    public var kindsAwaitingFirstPass: [String] { (followed ?? []).filter { kinds[$0] == nil } }

    /// Every followed kind has had a pass.
    public var passedEveryKind: Bool { kindsAwaitingFirstPass.isEmpty }

    public init(pid: Int32, startedAt: Date) {
        self.pid = pid
        self.startedAt = startedAt
    }
}
