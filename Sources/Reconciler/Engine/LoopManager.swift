import Foundation
import Logging
import Resources

/// The continuous loop's manager, as a Kubernetes controller manager keeps one: which keys it follows, its work
/// queue, and one pass at a time, each planning its key from scratch through the engine and applying what differs.
/// The watchers that post keys live with the command (`pvectl run`); everything they trigger is here, on an injected
/// clock, so that the queue, backoff and passes are tested without sleeping.
public struct LoopManager: Sendable {
    public let engine: ReconcileEngine
    /// The operator's `--only`.
    public let selectors: [ResourceSelector]
    /// Kinds whose drift is logged, never applied (`--report-only`).
    public let reportOnly: Set<String>
    public let clock: any ReconcilerClock
    /// Seconds between full passes that catch what no event reports (a mount that went away).
    public let resync: TimeInterval
    private var nextResync: Date
    public private(set) var queue: WorkQueue<ResourceKey>
    /// What the loop last did per kind (saved for `pvectl status`).
    public var record: LoopRecord
    /// The findings last logged per key: logged again only when they change.
    private var reported: [ResourceKey: [String]] = [:]

    public init(engine: ReconcileEngine, selectors: [ResourceSelector], reportOnly: Set<String> = [], pid: Int32,
                clock: any ReconcilerClock = SystemClock(), resync: TimeInterval = 300, baseDelay: TimeInterval = 1,
                maximumDelay: TimeInterval = 300, minimumInterval: TimeInterval = 0.1) {
        self.engine = engine
        self.selectors = selectors
        self.reportOnly = reportOnly
        self.clock = clock
        self.resync = resync
        nextResync = clock.now().addingTimeInterval(resync)
        queue = WorkQueue(baseDelay: baseDelay, maximumDelay: maximumDelay, minimumInterval: minimumInterval, order: engine.precedes)
        record = LoopRecord(pid: pid, startedAt: clock.now())
        record.followed = engine.plannedKinds(selectors)
    }

    /// The kinds the loop reconciles: those the operator selected.
    public var kinds: [String] { engine.plannedKinds(selectors) }

    /// A key is followed when its kind is, and a resource key when the operator's `--only` takes that resource.
    public func follows(_ key: ResourceKey) -> Bool {
        kinds.contains(key.kind) && (key.name.map { ResourceSelector.select(selectors, kind: key.kind, name: $0) } ?? true)
    }

    /// The followed keys a changed file concerns.
    public func keys(forChangeOf path: String, root: String, interfaces: String?) -> Set<ResourceKey> {
        engine.affected(byChangeOf: path, root: root, interfaces: interfaces).filter(follows)
    }

    /// The followed kinds a host event concerns.
    public func kinds(following event: HostEvent) -> [String] { engine.kinds(following: event).filter(kinds.contains) }

    public mutating func post<S: Sequence>(_ keys: S) where S.Element == ResourceKey {
        queue.add(keys.filter(follows), now: clock.now())
    }

    /// Every followed kind, whole: at start and at each resync.
    public mutating func postAll() { post(kinds.map { ResourceKey($0) }) }

    /// The next key due, if any (every followed kind when a resync is due); a whole kind covers the resources of it that
    /// wait.
    public mutating func next() -> ResourceKey? {
        let now = clock.now()
        if now >= nextResync {
            postAll()
            nextResync = now.addingTimeInterval(resync)
        }
        guard let key = queue.next(now: now) else { return nil }
        if key.name == nil { queue.drop { $0.kind == key.kind && $0.name != nil } }
        return key
    }

    /// When `next` may next return a key: a queued key's time, or the resync.
    public var nextWake: Date { min(queue.nextWake ?? nextResync, nextResync) }

    /// Plans one kind, or one resource of it, from scratch on `load()`'s state and applies what differs; records and
    /// returns what it did. A failure is retried with the key's own backoff; a plan blocked by its input is not
    /// retried: it waits for that input to change.
    @discardableResult
    /// - Parameter hold: why nothing may be applied now (a node without quorum keeps its guests as they are): the pass
    ///   plans and says what it would do, and applies nothing.
    public mutating func pass(_ key: ResourceKey, load: @Sendable () throws -> DesiredState, logger: Logger,
                              hold: String? = nil) async -> LoopRecord.KindRecord {
        var (outcome, requested) = await run(key, load: load, logger: logger, hold: hold)
        if let delay = requested {
            // A kind asked to be looked at again: not a failure, no backoff.
            let at = clock.now().addingTimeInterval(delay)
            queue.add(key, at: at)
            outcome.retryAt = at
        }
        record.kinds[key.kind] = outcome
        return outcome
    }

    /// What the pass did, and when its kinds asked to be looked at again (`KindComputation.requeueAfter`).
    private mutating func run(_ key: ResourceKey, load: @Sendable () throws -> DesiredState,
                              logger: Logger, hold: String?) async -> (LoopRecord.KindRecord, requeueAfter: TimeInterval?) {
        let started = clock.now()
        let chosen = selectors.filter { $0.kind == key.kind }
        // One resource: planned alone; the operator's own selectors still say which VMs they named.
        let scope = key.name.map { [ResourceSelector(kind: key.kind, name: $0)] } ?? (chosen.isEmpty ? [ResourceSelector(kind: key.kind)] : chosen)
        var log = logger
        log[metadataKey: "kind"] = "\(key)"
        do {
            let computation = try await engine.plan(try load(), scope: scope, named: chosen)
            let requested = computation.requeueAfter
            let plan = computation.plan
            let blocked = plan.resources.filter { $0.action == .blocked }
            // Findings are logged when they change, not on every pass an event causes.
            let errors = computation.findings.filter { $0.severity == .error }.map(\.description)
            let warnings = computation.findings.filter { $0.severity == .warning }.map(\.description)
                + blocked.map { "\($0.id) blocked: \($0.message ?? "")" }
            let notes = plan.notes ?? []
            if errors + warnings + notes != reported[key] {
                for error in errors { log.error("\(error)") }
                for warning in warnings { log.warning("\(warning)") }
                for note in notes where !(reported[key] ?? []).contains(note) { log.notice("\(note)") }
                if errors.isEmpty && warnings.isEmpty && !(reported[key] ?? []).isEmpty { log.notice("the errors are fixed") }
                reported[key] = errors + warnings + notes
            }
            let blockedNote = blocked.isEmpty ? nil : "blocked: \(blocked.map(\.id).joined(separator: ", "))"
            let changing = plan.changingResources
            guard !changing.isEmpty else {
                log.debug("nothing to do")
                queue.succeeded(key)
                // Blocked is terminal: nothing retries it until its input changes (an edit posts the key again).
                return (blocked.isEmpty ? LoopRecord.KindRecord(lastPassAt: started, outcome: "converged")
                    : LoopRecord.KindRecord(lastPassAt: started, outcome: "blocked", message: blocked.map(\.id).joined(separator: ", ")),
                    requested)
            }
            if let hold {
                let would = changing.map { "\($0.action.rawValue) \($0.id)" }.joined(separator: ", ")
                log.notice("held (\(hold)): not applying \(would)")
                // Not a failure: the key is posted again when the hold ends.
                queue.succeeded(key)
                return (LoopRecord.KindRecord(lastPassAt: started, outcome: "held", message: "\(hold): keeping everything as it is; would " + would),
                        requested)
            }
            if reportOnly.contains(key.kind) {
                for resource in changing {
                    log.notice("drift (report only): \(resource.action.rawValue) \(resource.id)",
                               metadata: ["changes": "\(resource.changes.map { "\($0.field): \($0.old ?? "-") → \($0.new ?? "-")" })"])
                }
                queue.succeeded(key)
                return (LoopRecord.KindRecord(lastPassAt: started, outcome: "reported",
                                              message: "drift: " + changing.map { "\($0.action.rawValue) \($0.id)" }.joined(separator: ", ")),
                        requested)
            }
            log.info("applying \(changing.count) change(s): \(changing.map { "\($0.action.rawValue) \($0.id)" }.joined(separator: ", "))")
            let report = try await engine.apply(computation, reload: load, progress: { [log] line in log.info("\(line)") })
            guard report.failures.isEmpty else {
                for failure in report.failures { log.error("\(failure)") }
                return (retry(key, started: started, log: log, message: report.failures.joined(separator: "; ")), nil)
            }
            queue.succeeded(key)
            log.info("converged: \(report.applied.joined(separator: ", "))")
            queue.add(engine.feeds(key.kind).filter(kinds.contains).map { ResourceKey($0) }, now: clock.now())
            return (LoopRecord.KindRecord(lastPassAt: started, outcome: "applied",
                                          message: ([report.applied.joined(separator: ", ")] + [blockedNote].compactMap { $0 })
                                              .joined(separator: "; ")),
                    requested)
        } catch {
            log.error("pass failed: \(error)")
            return (retry(key, started: started, log: log, message: "\(error)"), nil)
        }
    }

    private mutating func retry(_ key: ResourceKey, started: Date, log: Logger, message: String) -> LoopRecord.KindRecord {
        let now = clock.now()
        let delay = queue.failed(key, now: now)
        log.warning("retrying in \(Int(delay.rounded(.up))) s (attempt \(queue.failureCount(key)))")
        return LoopRecord.KindRecord(lastPassAt: started, outcome: "failed", message: message, failures: queue.failureCount(key),
                                     retryAt: now.addingTimeInterval(delay))
    }
}
