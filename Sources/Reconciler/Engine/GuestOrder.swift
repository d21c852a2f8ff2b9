import Foundation

/// One guest's stop, change or start in an apply, with its `startup:` order and `up=` wait.
public struct GuestOperation: Sendable, Hashable {
    public enum Phase: Int, Sendable, Comparable {
        case stop, change, start

        public static func < (lhs: Phase, rhs: Phase) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    public var kind: String
    public var vmid: Int
    public var phase: Phase
    public var order: Int?
    /// Seconds to wait after this guest started before the next one starts.
    public var up: Int?

    public init(kind: String, vmid: Int, phase: Phase, order: Int?, up: Int? = nil) {
        self.kind = kind
        self.vmid = vmid
        self.phase = phase
        self.order = order
        self.up = up.flatMap { $0 > 0 ? $0 : nil }
    }

    var key: String { "\(kind)/\(vmid)" }
}

/// A kind whose resources are guests (VMs, containers): their stops and starts follow `startup: order=` across every
/// guest kind of an apply, as Proxmox's startall and stopall treat VMs and containers as one list.
public protocol GuestKind: ResourceKind {
    /// The guest operations `computed` will perform.
    func guestOperations(_ computed: Computed) -> [GuestOperation]
    /// Applies, taking each operation's turn from `gate` and telling it when the operation is done.
    func apply(_ computed: Computed, gate: StartupGate, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome
}

extension GuestKind {
    /// Alone, a guest kind's operations follow its own guests' order.
    public func apply(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        try await apply(computed, gate: StartupGate(guestOperations(computed)), progress: progress)
    }

    func guestOperationsAny(_ computed: any KindComputation) -> [GuestOperation] {
        guard let computed = computed as? Computed else { preconditionFailure("\(Self.name): a computation of another kind") }
        return guestOperations(computed)
    }

    func applyAny(_ computed: any KindComputation, gate: StartupGate,
                  progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        guard let computed = computed as? Computed else { preconditionFailure("\(Self.name): a computation of another kind") }
        return try await apply(computed, gate: gate, progress: progress)
    }
}

/// The order guests of every kind stop and start in, for kinds applying side by side: stops first, highest `startup`
/// order first; then live changes and restarts; then starts, lowest order first (guests without an order last, as
/// Proxmox has them). Guests of one phase and order go together, except that a start with an `up=` wait is a group
/// of its own: the next group begins after its wait. An operation waits (`turn`) until every operation of the
/// groups before its own is `done`.
public actor StartupGate {
    private let groupOf: [String: Int]
    private var remaining: [Int]
    private var current = 0
    private var waiting: [(group: Int, continuation: CheckedContinuation<Void, Never>)] = []
    private var finished: Set<String> = []
    private let lastStart: String?
    private let byKind: [String: [String]]

    public init(_ operations: [GuestOperation]) {
        func rank(_ operation: GuestOperation) -> (Int, Int) { (operation.order ?? Int.max, operation.vmid) }
        let stops = operations.filter { $0.phase == .stop }.sorted { rank($0) > rank($1) }
        let changes = operations.filter { $0.phase == .change }
        let starts = operations.filter { $0.phase == .start }.sorted { rank($0) < rank($1) }
        var groups: [[GuestOperation]] = []
        for operation in stops + changes + starts {
            if let last = groups.last?.last, last.phase == operation.phase, last.phase == .change || last.order == operation.order,
               last.up == nil, operation.up == nil {
                groups[groups.count - 1].append(operation)
            } else {
                groups.append([operation])
            }
        }
        var groupOf: [String: Int] = [:]
        for (index, group) in groups.enumerated() { for operation in group { groupOf[operation.key] = index } }
        self.groupOf = groupOf
        remaining = groups.map(\.count)
        lastStart = starts.last?.key
        byKind = Dictionary(grouping: operations, by: \.kind).mapValues { $0.map(\.key) }
    }

    /// Whether a start is the last of the apply (no `up=` wait after it).
    public nonisolated func isLastStart(kind: String, vmid: Int) -> Bool { lastStart == "\(kind)/\(vmid)" }

    /// Returns when every operation before this one's group is done.
    public func turn(kind: String, vmid: Int) async {
        guard let group = groupOf["\(kind)/\(vmid)"] else { return }
        advance()
        if group <= current { return }
        await withCheckedContinuation { continuation in waiting.append((group, continuation)) }
    }

    /// The operation finished (or failed: the guests after it go on).
    public func done(kind: String, vmid: Int) {
        let key = "\(kind)/\(vmid)"
        guard let group = groupOf[key], finished.insert(key).inserted else { return }
        remaining[group] -= 1
        advance()
    }

    /// A kind that stopped applying: its operations count as done, so the other kinds' guests are not held up.
    public func abandon(kind: String) {
        for key in byKind[kind] ?? [] {
            let parts = key.split(separator: "/")
            if let vmid = Int(parts[1]) { done(kind: String(parts[0]), vmid: vmid) }
        }
    }

    private func advance() {
        while current < remaining.count && remaining[current] == 0 { current += 1 }
        let ready = waiting.filter { $0.group <= current }
        waiting.removeAll { $0.group <= current }
        for waiter in ready { waiter.continuation.resume() }
    }
}
