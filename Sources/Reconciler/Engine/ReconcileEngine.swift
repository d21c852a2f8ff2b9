import Foundation
import Resources

/// The engine every command and the loop share: plans across the registered kinds, orders and applies them, reports
/// their status, and tells which kinds and resources a changed file concerns. It knows no kind by name: everything
/// it does comes from the kinds' declarations (`ResourceKind`), so a new kind is one registration.
public struct ReconcileEngine: Sendable {
    /// The registered kinds in apply order (each after the kinds it is applied after, otherwise as registered).
    public let kinds: [any ResourceKind]

    public enum RegistrationError: Error, CustomStringConvertible {
        case duplicate(String)
        case unknown(kind: String, names: String)
        case cycle([String])

        public var description: String {
            switch self {
            case .duplicate(let name): "the kind \(name) is registered twice"
            case .unknown(let kind, let name): "the kind \(kind) names \(name), which is not registered"
            case .cycle(let names): "the kinds \(names.joined(separator: ", ")) are applied after each other"
            }
        }
    }

    public init(kinds registered: [any ResourceKind]) throws {
        let names = registered.map(\.kindName)
        if let duplicate = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
            throw RegistrationError.duplicate(duplicate)
        }
        for kind in registered {
            let type = kind.kindType
            for name in type.appliedAfter + type.reads + type.replannedAfter + type.feeds where !names.contains(name) {
                throw RegistrationError.unknown(kind: kind.kindName, names: name)
            }
        }
        // Kahn's algorithm, taking the earliest registered kind whose predecessors are placed.
        var remaining = registered
        var ordered: [any ResourceKind] = []
        while !remaining.isEmpty {
            let placed = Set(ordered.map(\.kindName))
            guard let index = remaining.firstIndex(where: { Set($0.kindType.appliedAfter).isSubset(of: placed) }) else {
                throw RegistrationError.cycle(remaining.map(\.kindName))
            }
            ordered.append(remaining.remove(at: index))
        }
        kinds = ordered
    }

    /// The kinds' names in apply order.
    public var names: [String] { kinds.map(\.kindName) }

    public func kind(named name: String) -> (any ResourceKind)? { kinds.first { $0.kindName == name } }

    /// Parses `--only KIND[/ID]` against the registered kinds; nil for an unknown kind.
    public func selector(_ text: String) -> ResourceSelector? {
        guard let selector = ResourceSelector(text), names.contains(selector.kind) else { return nil }
        return selector
    }

    // MARK: - Plan

    /// Every planned kind's view of one run.
    public struct Computation: Sendable {
        public var plan: Plan
        public var state: DesiredState
        /// `pvectl validate`'s diagnostics for the files of the planned kinds.
        public var checks: [Diagnostic]
        /// The kinds whose resources are in the plan, in apply order.
        public var planned: [String]
        /// Every kind computed for this run: the planned ones and the kinds they read.
        public var computed: [String: any KindComputation]
        public var scope: [ResourceSelector]
        public var named: [ResourceSelector]

        /// The soonest look again a planned kind asked for.
        public var requeueAfter: TimeInterval? { planned.compactMap { computed[$0]?.requeueAfter }.min() }

        public func computed<Kind: ResourceKind>(_ kind: Kind.Type) -> Kind.Computed? {
            planned.contains(Kind.name) ? computed[Kind.name] as? Kind.Computed : nil
        }

        /// What the planned kinds found.
        public var kindProblems: [Diagnostic] { planned.flatMap { computed[$0]?.problems ?? [] } }

        /// Errors: plan exits 1 and apply refuses, as validate exits 1, on any of them (`pvectl run` instead goes on
        /// with what they do not touch). Each finding said once: a check and a kind may reach the same one.
        public var problems: [Diagnostic] { (checks.filter { $0.severity == .error } + kindProblems).saidOnce() }

        /// Everything to tell the operator: the checks `pvectl validate` makes, warnings included, then what only a
        /// plan finds (the system's side); each finding said once.
        public var findings: [Diagnostic] { (checks + kindProblems).saidOnce() }
    }

    /// The kinds a run with `scope` plans: all without selectors, else those named.
    public func plannedKinds(_ scope: [ResourceSelector]) -> [String] {
        names.filter { ResourceSelector.wants(scope, kind: $0) }
    }

    /// Plans every kind `scope` selects, and the kinds they read first (not in the plan), in apply order.
    /// `named`: what the operator named with `--only` (a loop pass's scope is narrower and names nothing).
    public func plan(_ state: DesiredState, scope: [ResourceSelector], named: [ResourceSelector]) async throws -> Computation {
        let planned = plannedKinds(scope)
        var needed = Set(planned)
        var frontier = planned
        while let name = frontier.popLast() {
            for read in kind(named: name)?.kindType.reads ?? [] where needed.insert(read).inserted { frontier.append(read) }
        }
        var computed: [String: any KindComputation] = [:]
        for kind in kinds where needed.contains(kind.kindName) {
            let isPlanned = planned.contains(kind.kindName)
            // A kind planned only to be read is read whole: which storages are active, not only the selected ones.
            let context = Self.context(for: kind, scope: isPlanned ? scope : [ResourceSelector(kind: kind.kindName)], named: named,
                                       planned: planned, computed: computed)
            computed[kind.kindName] = try await kind.computeAny(state, context: context)
        }
        let layout = Layout(state)
        let checks = TreeValidator.validate(state).filter { concerns($0, scope: scope, layout: layout) }
        let resources = planned.flatMap { computed[$0]?.resources ?? [] }
        let plan = Plan(node: state.node, inputs: state.digests, resources: resources, notes: planned.flatMap { computed[$0]?.notes ?? [] })
        return Computation(plan: plan, state: state, checks: checks, planned: planned, computed: computed, scope: scope, named: named)
    }

    /// What `kind` sees of a run: its scope and the computations of the kinds it reads.
    static func context(for kind: any ResourceKind, scope: [ResourceSelector], named: [ResourceSelector], planned: [String],
                        computed: [String: any KindComputation]) -> PlanContext {
        PlanContext(scope: scope, named: named, planned: Set(planned), inputs: computed.filter { kind.kindType.reads.contains($0.key) })
    }

    /// Where the tree and the interfaces file are, to tell which kind a file belongs to.
    struct Layout {
        var root: String
        var interfaces: String?

        init(_ state: DesiredState) {
            root = state.root
            interfaces = state.interfacesPath.map { $0.hasSuffix(".new") ? String($0.dropLast(4)) : $0 }
        }
    }

    /// Whether a diagnostic is about a file of a selected kind (every file without selectors).
    func concerns(_ diagnostic: Diagnostic, scope: [ResourceSelector], layout: Layout) -> Bool {
        guard !scope.isEmpty else { return true }
        guard let change = TreeChange(path: diagnostic.location.file, root: layout.root, interfaces: layout.interfaces) else { return false }
        return scope.contains { selector in kind(named: selector.kind).map { $0.kindType.concern(change) != .none } ?? false }
    }

    // MARK: - Apply

    /// What one apply did: the resources it converged (`kind/name`), and failures as `kind/name: message`.
    public struct ApplyReport: Sendable {
        public var applied: [String] = []
        public var failures: [String] = []
        /// What the kinds did after applying (a staged interfaces file installed).
        public var finished: [String] = []

        public init() {}
    }

    /// Applies a computation kind by kind in apply order. The first kind with a failure stops the rest (a VM must not
    /// start on a bridge or storage that did not come up). A kind whose plan an earlier kind's apply made stale
    /// (`replannedAfter`) is planned again on `reload()`'s state first. After each kind succeeds, its `finishApply`
    /// runs (the network installs a staged interfaces.new before the storages reached over it). Guest kinds (VMs and
    /// containers) that are ready together apply side by side, their guests stopped and started in one `startup`
    /// order through a shared `StartupGate`.
    public func apply(_ computation: Computation, reload: @Sendable () throws -> DesiredState,
                      progress: @escaping @Sendable (String) -> Void) async throws -> ApplyReport {
        var report = ApplyReport()
        var changedKinds = Set<String>()
        var done = Set<String>()
        var state = computation.state
        let applying = kinds.filter { computation.planned.contains($0.kindName) && computation.computed[$0.kindName] != nil }
        for kind in applying where !done.contains(kind.kindName) {
            // This kind, or every guest kind whose turn it is (each applied after what precedes it).
            let ready = applying.filter { other in
                kind is any GuestKind && other is any GuestKind && !done.contains(other.kindName)
                    && Set(other.kindType.appliedAfter).intersection(applying.map(\.kindName)).isSubset(of: done)
            }
            let group: [any ResourceKind] = ready.contains { $0.kindName == kind.kindName } ? ready : [kind]
            var computations: [String: any KindComputation] = [:]
            for member in group {
                var computed = computation.computed[member.kindName]!
                if !changedKinds.isDisjoint(with: member.kindType.replannedAfter) {
                    state = try reload()
                    computed = try await member.computeAny(state, context: Self.context(for: member, scope: computation.scope,
                                                                                        named: computation.named, planned: computation.planned,
                                                                                        computed: computation.computed))
                }
                computations[member.kindName] = computed
            }
            let outcomes = try await Self.applyGroup(group, computations, progress: progress)
            for member in group {
                let name = member.kindName
                done.insert(name)
                guard let outcome = outcomes[name] else { continue }
                report.applied += outcome.applied.map { "\(name)/\($0)" }
                report.failures += outcome.failed.map { "\(name)/\($0.name): \($0.message)" }
                if !outcome.applied.isEmpty { changedKinds.insert(name) }
            }
            guard report.failures.isEmpty else { return report }
            for member in group {
                let finished = try member.finishAny(computations[member.kindName]!, state: state)
                for line in finished { progress(line) }
                report.finished += finished
            }
        }
        return report
    }

    /// One kind alone, or guest kinds side by side through one gate.
    static func applyGroup(_ group: [any ResourceKind], _ computations: [String: any KindComputation],
                           progress: @escaping @Sendable (String) -> Void) async throws -> [String: ApplyOutcome] {
        guard group.count > 1 else {
            let kind = group[0]
            return [kind.kindName: try await kind.applyAny(computations[kind.kindName]!, progress: progress)]
        }
        let guests = group.compactMap { $0 as? any GuestKind }
        let gate = StartupGate(guests.flatMap { $0.guestOperationsAny(computations[$0.kindName]!) })
        return try await withThrowingTaskGroup(of: (String, ApplyOutcome).self) { tasks in
            for kind in guests {
                let computed = computations[kind.kindName]!
                tasks.addTask {
                    do {
                        let outcome = try await kind.applyAny(computed, gate: gate, progress: progress)
                        await gate.abandon(kind: kind.kindName)
                        return (kind.kindName, outcome)
                    } catch {
                        await gate.abandon(kind: kind.kindName)
                        throw error
                    }
                }
            }
            var outcomes: [String: ApplyOutcome] = [:]
            for try await (name, outcome) in tasks { outcomes[name] = outcome }
            return outcomes
        }
    }

    /// What the planned kinds do after an apply that had nothing to change (a staged interfaces file equal to the
    /// running network is still installed).
    public func finish(_ computation: Computation) throws -> [String] {
        var done: [String] = []
        for kind in kinds where computation.planned.contains(kind.kindName) {
            if let computed = computation.computed[kind.kindName] { done += try kind.finishAny(computed, state: computation.state) }
        }
        return done
    }

    // MARK: - Status

    /// Each planned resource's condition: what the kinds report, and a row for every planned resource they leave out.
    public func status(_ computation: Computation) -> [StatusRow] {
        var rows: [StatusRow] = []
        for kind in kinds where computation.planned.contains(kind.kindName) {
            guard let computed = computation.computed[kind.kindName] else { continue }
            rows += kind.statusRowsAny(computed, plan: computation.plan, scope: computation.scope)
        }
        let shown = Set(rows.map(\.id))
        for resource in computation.plan.resources where !shown.contains(resource.id) {
            let condition = switch resource.action {
            case .blocked: "Blocked"
            case .unavailable: "Unavailable"
            default: "Pending"
            }
            rows.append(StatusRow(id: resource.id, condition: condition, message: resource.message, pendingChanges: resource.changes.map(\.field)))
        }
        return rows.sorted { $0.id < $1.id }
    }

    // MARK: - Saved plans

    /// Why a saved plan no longer holds, or nil.
    public static func staleness(saved: Plan, current: Plan) -> String? {
        if saved.node != current.node { return "it was made for node \(saved.node)" }
        for path in Set(saved.inputs.keys).union(current.inputs.keys).sorted() where saved.inputs[path] != current.inputs[path] {
            return "\(path) changed"
        }
        guard saved.resources != current.resources else { return nil }
        // Name what moved, so the operator can tell a concurrent change from their own.
        let before = Dictionary(saved.resources.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let after = Dictionary(current.resources.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        for id in Set(before.keys).union(after.keys).sorted() where before[id] != after[id] {
            let was = before[id].map { "planned \($0.action.rawValue)" } ?? "not planned"
            let now = after[id].map { "now \($0.action.rawValue)" } ?? "now nothing to do"
            let detail = before[id]?.action == after[id]?.action ? "its changes differ" : "\(was), \(now)"
            return "the system changed: \(id) (\(detail))"
        }
        return "the system changed: the order of the planned resources differs"
    }

    // MARK: - The loop's keys

    /// The keys a changed file concerns: a whole kind, or one resource of it (`qemu/100` for its own config).
    public func affected(byChangeOf path: String, root: String, interfaces: String?) -> Set<ResourceKey> {
        guard let change = TreeChange(path: path, root: root, interfaces: interfaces) else { return [] }
        var keys = Set<ResourceKey>()
        for kind in kinds {
            switch kind.kindType.concern(change) {
            case .none: break
            case .kind: keys.insert(ResourceKey(kind.kindName))
            case .resource(let name): keys.insert(ResourceKey(kind.kindName, name))
            }
        }
        return keys
    }

    /// The plan scope changed files call for: the resources an edit of them may change (the whole kind where a kind
    /// cannot name one), within `within` (the operator's `--only`; empty: everything). Empty when they concern nothing.
    public func scope(forChangesOf paths: [String], root: String, interfaces: String?, within: [ResourceSelector]) -> [ResourceSelector] {
        let keys = paths.reduce(into: Set<ResourceKey>()) { $0.formUnion(affected(byChangeOf: $1, root: root, interfaces: interfaces)) }
        let wholeKinds = Set(keys.filter { $0.name == nil }.map(\.kind))
        var scope: Set<ResourceSelector> = []
        for key in keys where key.name == nil || !wholeKinds.contains(key.kind) {
            let selector = ResourceSelector(kind: key.kind, name: key.name)
            guard !within.isEmpty else {
                scope.insert(selector)
                continue
            }
            for wanted in within where wanted.kind == key.kind {
                if key.name == nil { scope.insert(wanted) } else if wanted.name == nil || wanted.name == key.name { scope.insert(selector) }
            }
        }
        return scope.sorted { precedes(ResourceKey($0.kind, $0.name), ResourceKey($1.kind, $1.name)) }
    }

    /// The kinds a host event concerns.
    public func kinds(following event: HostEvent) -> [String] {
        kinds.filter { $0.kindType.events.contains(event) }.map(\.kindName)
    }

    /// The kinds to look at again after `name` applied something.
    public func feeds(_ name: String) -> [String] { kind(named: name)?.kindType.feeds ?? [] }

    /// Apply order for the loop's queue: kinds in apply order, a whole kind before its resources, resources by name.
    public func precedes(_ lhs: ResourceKey, _ rhs: ResourceKey) -> Bool {
        if lhs.kind != rhs.kind {
            return (names.firstIndex(of: lhs.kind) ?? Int.max, lhs.kind) < (names.firstIndex(of: rhs.kind) ?? Int.max, rhs.kind)
        }
        switch (lhs.name, rhs.name) {
        case (nil, nil): return false
        case (nil, _): return true
        case (_, nil): return false
        case (let left?, let right?): return left.localizedStandardCompare(right) == .orderedAscending
        }
    }
}
