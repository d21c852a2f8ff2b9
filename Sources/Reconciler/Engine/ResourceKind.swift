import Foundation
import Resources

/// What one kind found for one plan: its resources, the errors that block some of them, and what a reader should know.
public protocol KindComputation: Sendable {
    var resources: [ResourcePlan] { get }
    var problems: [Diagnostic] { get }
    var notes: [String] { get }
    /// Seconds after which the loop should look at this kind again although nothing it watches will report a change
    /// (a storage waiting for a mount made outside pvectl); nil when events suffice.
    var requeueAfter: TimeInterval? { get }
}

extension KindComputation {
    public var notes: [String] { [] }
    public var requeueAfter: TimeInterval? { nil }
}

/// What applying one kind did, by resource name within the kind (`vmbr0`, `100`).
public struct ApplyOutcome: Sendable {
    public struct Failure: Sendable, Hashable {
        public var name: String
        public var message: String

        public init(name: String, message: String) {
            self.name = name
            self.message = message
        }
    }

    public var applied: [String]
    public var failed: [Failure]

    public init(applied: [String] = [], failed: [Failure] = []) {
        self.applied = applied
        self.failed = failed
    }
}

/// A changed file, as the kinds look at it: its path below the desired-state root, or the interfaces file.
public struct TreeChange: Sendable, Hashable {
    /// Path components below the root (`nodes`, `pve1`, `qemu-server`, `100.conf`); empty for the interfaces file.
    public var parts: [String]
    /// The interfaces file or its staged `.new`.
    public var isInterfaces: Bool

    public init(parts: [String], isInterfaces: Bool = false) {
        self.parts = parts
        self.isInterfaces = isInterfaces
    }

    /// nil when the path is neither under `root` nor the interfaces file.
    public init?(path: String, root: String, interfaces: String?) {
        if let interfaces, path == interfaces || path == interfaces + ".new" {
            self.init(parts: [], isInterfaces: true)
            return
        }
        let prefix = root.hasSuffix("/") ? root : root + "/"
        guard path.hasPrefix(prefix) else { return nil }
        self.init(parts: path.dropFirst(prefix.count).split(separator: "/").map(String.init))
    }

    /// A guest config's VMID when this is `<dir>/<vmid>.conf` with `dir` one of `directories` (`qemu-server`, `lxc`).
    public func guestConfig(in directories: Set<String>) -> Int? {
        guard parts.count >= 2, directories.contains(parts[parts.count - 2]), let last = parts.last, last.hasSuffix(".conf") else { return nil }
        return Int(last.dropLast(5))
    }

    /// Under a node's or a guest directory (`nodes/…`, `qemu-server/…`, `lxc/…`, `local/…`).
    public var isUnderGuestDirectories: Bool { ["nodes", "qemu-server", "lxc", "local"].contains(parts.first ?? "") }

    /// A directory that appeared or went (it may hold configs), as opposed to a file such as `host.fw` or `100.conf.tmp.42`.
    public var isDirectory: Bool { parts.last.map { !$0.contains(".") } ?? false }
}

/// How much of a kind a changed file concerns.
public enum ChangeConcern: Hashable, Sendable {
    case none
    /// Every resource of the kind.
    case kind
    /// One resource (`100` for `qemu-server/100.conf`).
    case resource(String)
}

/// Host events a kind's observations follow, besides its files.
public enum HostEvent: Hashable, Sendable {
    /// The kernel's links, addresses or routes changed (rtnetlink).
    case kernelNetwork
    /// A VM's QEMU reported an event or exited (qmeventd's socket).
    case qemuEvents
    /// A container changed state (LXC's monitor: started, stopped, init gone).
    case containerEvents
}

/// What a kind's plan may read besides the desired state: the scope of this run and the kinds it reads.
public struct PlanContext: Sendable {
    /// What this run plans: the operator's `--only`, or one resource of a loop pass.
    public var scope: [ResourceSelector]
    /// What the operator named with `--only` (a VM named there is started; a pass's scope names nothing).
    public var named: [ResourceSelector]
    /// The kinds this run plans (their resources are in the plan).
    public var planned: Set<String>
    /// The computations of the kinds this kind reads, planned for it even when they are not in the plan.
    public var inputs: [String: any KindComputation]

    public init(scope: [ResourceSelector], named: [ResourceSelector], planned: Set<String>, inputs: [String: any KindComputation] = [:]) {
        self.scope = scope
        self.named = named
        self.planned = planned
        self.inputs = inputs
    }

    public func input<Kind: ResourceKind>(_ kind: Kind.Type) -> Kind.Computed? { inputs[Kind.name] as? Kind.Computed }
}

/// One line of `pvectl status`: a resource's condition (Ready, Pending, Blocked, …) and why.
public struct StatusRow: Codable, Sendable, Hashable {
    public var id: String
    public var condition: String
    public var generation: String?
    public var updatedAt: Date?
    public var message: String?
    public var pendingChanges: [String]

    public init(id: String, condition: String, generation: String? = nil, updatedAt: Date? = nil, message: String? = nil,
                pendingChanges: [String] = []) {
        self.id = id
        self.condition = condition
        self.generation = generation
        self.updatedAt = updatedAt
        self.message = message
        self.pendingChanges = pendingChanges
    }

    enum CodingKeys: String, CodingKey {
        case id, condition, generation, message
        case updatedAt = "updated_at"
        case pendingChanges = "pending_changes"
    }
}

/// A kind of resource (network, storage, qemu, firewall, …): the one shape every kind has. The engine
/// (`ReconcileEngine`) plans, orders, applies and reports across kinds through it; a kind brings its desired state from
/// the tree, observes through its own driver protocol, and diffs to a plan with change classes and file:line.
///
/// Adding a kind: a type conforming to this protocol (with its driver protocol) in the Reconciler, a driver in Drivers,
/// and one registration line in `Sources/pvectl/Kinds.swift`.
public protocol ResourceKind: Sendable {
    associatedtype Computed: KindComputation

    /// The kind's name in ids (`network/vmbr0`), `--only`, status and the loop's records.
    static var name: String { get }
    /// One line for help texts.
    static var summary: String { get }
    /// Kinds a full apply runs before this one (a VM after the bridges and storages it uses).
    static var appliedAfter: [String] { get }
    /// Kinds whose plans this kind's plan reads (VMs read which storages are active); planned for it when not selected.
    static var reads: [String] { get }
    /// Kinds whose apply in the same run makes this kind's plan stale: it is planned again before it applies.
    static var replannedAfter: [String] { get }
    /// Kinds the loop looks at again after this one applied something (a recreated bridge loses its VMs' taps).
    static var feeds: [String] { get }
    /// Host events besides file changes that concern this kind.
    static var events: Set<HostEvent> { get }
    /// How much of this kind a changed file concerns.
    static func concern(_ change: TreeChange) -> ChangeConcern

    /// Plans the kind: desired from `state`, observed through the driver, diffed.
    func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed
    /// Performs a plan; stops at a resource whose failure the rest depends on.
    func apply(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome
    /// After a successful apply (or one with nothing to do): makes staged inputs current; returns what it did.
    func finishApply(_ computed: Computed, state: DesiredState) throws -> [String]
    /// Status rows of what the kind knows beside the plan (records, observations); the engine adds a row for every
    /// planned resource of the kind these leave out.
    func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow]
}

extension ResourceKind {
    public static var reads: [String] { [] }
    public static var replannedAfter: [String] { [] }
    public static var feeds: [String] { [] }
    public static var events: Set<HostEvent> { [] }
    public func finishApply(_ computed: Computed, state: DesiredState) throws -> [String] { [] }

    // The engine holds kinds and their computations type-erased; these open them again.
    func computeAny(_ state: DesiredState, context: PlanContext) async throws -> any KindComputation {
        try await compute(state, context: context)
    }

    func applyAny(_ computed: any KindComputation, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        guard let computed = computed as? Computed else { preconditionFailure("\(Self.name): a computation of another kind") }
        return try await apply(computed, progress: progress)
    }

    func finishAny(_ computed: any KindComputation, state: DesiredState) throws -> [String] {
        guard let computed = computed as? Computed else { preconditionFailure("\(Self.name): a computation of another kind") }
        return try finishApply(computed, state: state)
    }

    func statusRowsAny(_ computed: any KindComputation, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] {
        guard let computed = computed as? Computed else { preconditionFailure("\(Self.name): a computation of another kind") }
        return statusRows(computed, plan: plan, scope: scope)
    }

    var kindName: String { Self.name }
    var kindType: any ResourceKind.Type { Self.self }
}
