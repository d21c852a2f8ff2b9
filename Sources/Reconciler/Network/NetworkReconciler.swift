import Foundation
import Resources

/// `--only KIND[/ID]`: which resources a run touches. Which kinds exist is the engine's registry
/// (`ReconcileEngine.selector` checks the name).
public struct ResourceSelector: Hashable, Sendable, CustomStringConvertible {
    public var kind: String
    public var name: String?

    public init(kind: String, name: String? = nil) {
        self.kind = kind
        self.name = name
    }

    /// `KIND` or `KIND/ID`; nil when there is no kind.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let kind = parts.first, !kind.isEmpty, parts.count == 1 || !parts[1].isEmpty else { return nil }
        self.kind = kind
        self.name = parts.count > 1 ? parts[1] : nil
    }

    public var description: String { name.map { "\(kind)/\($0)" } ?? kind }

    public func matches(kind: String, name: String) -> Bool {
        self.kind == kind && (self.name == nil || self.name == name)
    }

    /// True when no selector is given or one matches.
    public static func select(_ selectors: [ResourceSelector], kind: String, name: String) -> Bool {
        selectors.isEmpty || selectors.contains { $0.matches(kind: kind, name: name) }
    }

    public static func wants(_ selectors: [ResourceSelector], kind: String) -> Bool {
        selectors.isEmpty || selectors.contains { $0.kind == kind }
    }
}

/// The network kind end to end: desired interfaces from the file, the kernel
/// through a driver, the records in the state store.
public struct NetworkReconciler: Sendable {
    public var driver: any NetworkDriver
    public var store: StateStore
    public var clock: any ReconcilerClock

    public init(driver: any NetworkDriver, store: StateStore, clock: any ReconcilerClock = SystemClock()) {
        self.driver = driver
        self.store = store
        self.clock = clock
    }

    public struct Computed: Sendable {
        public var resources: [ResourcePlan]
        public var diff: NetworkDiffer.Result?
        public var desired: [DesiredInterface]
        public var records: NetworkRecords
        /// Problems that block the network kind (parse or validation errors).
        public var problems: [Diagnostic]
        public var notes: [String] = []

        public init(resources: [ResourcePlan] = [], diff: NetworkDiffer.Result? = nil, desired: [DesiredInterface] = [],
                    records: NetworkRecords = NetworkRecords(), problems: [Diagnostic] = []) {
            self.resources = resources
            self.diff = diff
            self.desired = desired
            self.records = records
            self.problems = problems
        }
    }

    public func compute(_ state: DesiredState, only: [ResourceSelector]) async throws -> Computed {
        let records = try store.load("network", as: NetworkRecords.self) ?? NetworkRecords()
        guard let file = state.interfaces else {
            return Computed(resources: [], diff: nil, desired: [], records: records, problems: [])
        }
        var problems = state.diagnostics.filter { $0.location.file == file.file && $0.severity == .error }
        problems += (InterfacesValidator.validate(file) + TreeValidator.checkInterfaceReferences(file)).filter { $0.severity == .error }
        let (desired, desiredProblems) = NetworkDesiredState.interfaces(from: file)
        problems += desiredProblems.filter { $0.severity == .error }
        if !problems.isEmpty {
            // A file that cannot be read correctly freezes the kind: never act on it.
            let blocked = ResourcePlan(kind: "network", name: "*", action: .blocked, source: problems.first?.location, changes: [],
                                       message: "\(file.file) has \(problems.count) error(s); the network is left as it is until they are fixed")
            return Computed(resources: [blocked], diff: nil, desired: desired, records: records, problems: problems)
        }
        let observed = try await driver.observe()
        var differ = NetworkDiffer(desired: desired, observed: observed, records: records)
        if !only.isEmpty {
            differ.desired = desired.filter { ResourceSelector.select(only, kind: "network", name: $0.name) }
            differ.records.interfaces = records.interfaces.filter { ResourceSelector.select(only, kind: "network", name: $0.key) }
        }
        let result = differ.diff()
        return Computed(resources: result.resources, diff: result, desired: differ.desired, records: records, problems: [])
    }

    /// Runs the steps, recording in-flight work before it starts and the
    /// outcome per interface after, so an interrupted apply is visible and
    /// ownership (what we created) is never lost.
    public func apply(_ computed: Computed, progress log: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        guard let diff = computed.diff else { return ApplyOutcome(applied: [], failed: []) }
        var records = computed.records
        let now = clock.now()
        let planned = Set(diff.steps.keys)
        for name in planned {
            if var record = records.interfaces[name] {
                record.status = .inFlight
                record.updatedAt = now
                records.interfaces[name] = record
            } else if let want = computed.desired.first(where: { $0.name == name }) {
                records.interfaces[name] = AppliedInterface(config: want, created: false, generation: "", status: .inFlight, updatedAt: now)
            }
        }
        try store.save(records, as: "network")

        let ordered = diff.orderedSteps
        var failure: NetworkApplyFailure?
        do {
            try await driver.perform(ordered.map(\.step), log: log)
        } catch let error as any StepFailure {
            failure = NetworkApplyFailure(step: error.failedStep, message: "\(error)")
        }
        let failedIndex = failure?.step ?? ordered.count
        var failedNames: Set<String> = []
        if let failure, failure.step < ordered.count { failedNames.insert(ordered[failure.step].name) }
        // A resource is done when all of its steps ran before the failure.
        var unfinished: Set<String> = failedNames
        for (index, entry) in ordered.enumerated() where index >= failedIndex { unfinished.insert(entry.name) }
        var createdNow: Set<String> = []
        for (index, entry) in ordered.enumerated() where index < failedIndex {
            switch entry.step {
            case .createBridge(let name), .createBond(let name, _), .createVLAN(let name, _, _, _): createdNow.insert(name)
            case .deleteLink(let name): createdNow.remove(name)
            default: break
            }
        }
        let desiredByName = Dictionary(computed.desired.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var outcome = ApplyOutcome(applied: [], failed: [])
        for name in planned.sorted() {
            let wasCreated = (records.interfaces[name]?.created ?? false) || createdNow.contains(name)
            if unfinished.contains(name) {
                var record = records.interfaces[name]!
                record.created = wasCreated || record.created
                record.status = .failed
                record.message = failedNames.contains(name) ? failure?.message : "not applied: an earlier step failed"
                records.interfaces[name] = record
                outcome.failed.append(.init(name: name, message: record.message ?? ""))
            } else if let want = desiredByName[name] {
                records.interfaces[name] = AppliedInterface(config: want, created: wasCreated, generation: want.generation,
                                                            status: .applied, updatedAt: clock.now())
                outcome.applied.append(name)
            } else {
                // Removed from the file and torn down.
                records.interfaces[name] = nil
                outcome.applied.append(name)
            }
        }
        // Declared interfaces that needed nothing are adopted as they are.
        for want in computed.desired where !planned.contains(want.name) {
            let previous = records.interfaces[want.name]
            if previous?.status == .applied && previous?.generation == want.generation { continue }
            records.interfaces[want.name] = AppliedInterface(config: want, created: previous?.created ?? false, generation: want.generation,
                                                             status: .applied, updatedAt: clock.now())
        }
        try store.save(records, as: "network")
        return outcome
    }
}

/// Errors from a driver that know which step failed.
public protocol StepFailure: Error {
    var failedStep: Int { get }
}

struct NetworkApplyFailure {
    var step: Int
    var message: String
}
