import Foundation
import Resources

/// What the firewall kind sees of the host.
public struct ObservedFirewall: Sendable {
    /// `nft list table` of pvectl's tables, nil when neither exists.
    public var listing: String?
    /// Whether bridged IPv4 and IPv6 traffic is handed to the inet hooks (br_netfilter).
    public var bridgeNetfilter: Bool
    /// Network devices by name, with the bridge each is enslaved to.
    public var masters: [String: String?]
    /// `address/prefix` of the host's addresses, for local_network.
    public var hostAddresses: [String]
    /// What the node name resolves to; only looked up when local_network needs it.
    public var resolvedNodeAddress: String?

    public init(listing: String?, bridgeNetfilter: Bool, masters: [String: String?], hostAddresses: [String] = [],
                resolvedNodeAddress: String? = nil) {
        self.listing = listing
        self.bridgeNetfilter = bridgeNetfilter
        self.masters = masters
        self.hostAddresses = hostAddresses
        self.resolvedNodeAddress = resolvedNodeAddress
    }
}

/// How the firewall kind changes the host: nftables and the guest NIC plumbing.
public protocol FirewallDriver: Sendable {
    /// `resolvingNodeName`: the node name to look up (/etc/hosts, DNS), or nil
    /// when the plan does not need its address.
    func observe(resolvingNodeName: String?) async throws -> ObservedFirewall
    /// Loads an `nft -f` script in one transaction; returns the new listing of pvectl's tables.
    func load(script: String) async throws -> String?
    func enableBridgeNetfilter() async throws
    /// Puts a guest NIC behind its firewall bridge.
    func plumb(_ port: GuestFirewallPort) async throws
    /// Puts a guest NIC back on its bridge and removes the firewall bridge and its veth pair.
    func unplumb(_ port: GuestFirewallPort) async throws
}

/// What the last apply loaded, to tell "nothing to do" from drift and to show rule-level changes.
public struct FirewallRecords: Codable, Sendable {
    public var scriptDigest: String?
    public var listingDigest: String?
    public var rules: [CompiledFirewallRule] = []
    /// Guest NICs pvectl put behind a firewall bridge.
    public var ports: [GuestFirewallPort] = []
    public var appliedAt: Date?
    public init() {}
}

/// The firewall kind: one nftables ruleset from the firewall files, loaded
/// atomically and only when it differs, plus each firewalled guest NIC's
/// firewall bridge.
public struct FirewallReconciler: Sendable {
    public var driver: any FirewallDriver
    public var store: StateStore
    public var clock: any ReconcilerClock

    public init(driver: any FirewallDriver, store: StateStore, clock: any ReconcilerClock = SystemClock()) {
        self.driver = driver
        self.store = store
        self.clock = clock
    }

    public enum Step: Sendable, CustomStringConvertible {
        case plumb(GuestFirewallPort)
        case unplumb(GuestFirewallPort)
        case bridgeNetfilter
        case load(String)

        public var description: String {
            switch self {
            case .plumb(let port): "put \(port.device) behind \(port.firewallBridge) (\(port.firewallLink) ⇄ \(port.bridgePort) on \(port.bridge))"
            case .unplumb(let port): "put \(port.device) back on \(port.bridge); remove \(port.firewallBridge), \(port.bridgePort)"
            case .bridgeNetfilter: "sysctl net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1"
            case .load(let script): "nft -f (one transaction, \(script.split(separator: "\n").count) lines)"
            }
        }
    }

    public struct Computed: Sendable {
        public var resources: [ResourcePlan] = []
        public var steps: [(id: String, steps: [Step])] = []
        public var compiled: CompiledFirewall?
        public var records = FirewallRecords()
        public var problems: [Diagnostic] = []
        /// Rules left out, and the local_network in use: shown with the plan.
        public var notes: [String] = []
        public init() {}
    }

    /// Errors of FirewallConfig.parse that concern one rule line: that rule
    /// is skipped; any other parse error freezes the file's firewall.
    static func isRuleLineError(_ diagnostic: Diagnostic) -> Bool {
        diagnostic.code == .firewallRuleLine
    }

    public func compute(_ state: DesiredState, only: [ResourceSelector]) async throws -> Computed {
        var computed = Computed()
        computed.records = try store.load("firewall", as: FirewallRecords.self) ?? FirewallRecords()
        let files = [state.clusterFirewall?.file, state.hostFirewall?.file].compactMap { $0 } + state.guestFirewalls.values.map(\.file)
        let fileErrors = state.diagnostics.filter { $0.severity == .error && files.contains($0.location.file) }
        let freezing = fileErrors.filter { !Self.isRuleLineError($0) }
        if !freezing.isEmpty {
            computed.problems = freezing
            computed.resources = [ResourcePlan(kind: "firewall", name: "ruleset", action: .blocked, source: freezing.first?.location, changes: [],
                                               message: "a firewall file cannot be read (\(freezing.count) error(s)); "
                                                            + "the loaded ruleset is kept as it is")]
            return computed
        }
        let observed: ObservedFirewall
        do {
            observed = try await driver.observe(resolvingNodeName: FirewallCompiler.needsNodeAddress(state) ? state.node : nil)
        } catch {
            // A node without nftables can still plan everything else; a firewall it should enforce is reported.
            guard FirewallCompiler.isOn(state.clusterFirewall?.options["enable"], default: false) else { return computed }
            computed.resources = [ResourcePlan(kind: "firewall", name: "ruleset", action: .unavailable, source: nil, changes: [],
                                               message: "cannot observe the firewall: \(error)")]
            return computed
        }
        var compiled = FirewallCompiler.compile(FirewallCompiler.Input(state: state, hostAddresses: observed.hostAddresses,
                                                                     resolvedNodeAddress: observed.resolvedNodeAddress))
        compiled.skipped += fileErrors.map { .warning($0.location, "rule skipped: \($0.message)", code: $0.code) }
        compiled.skipped.sort()
        computed.compiled = compiled
        if compiled.enabled {
            computed.notes.append("firewall: local_network = \(compiled.localNetwork ?? "(none)") from \(compiled.localNetworkOrigin)")
        }
        computed.notes += compiled.skipped.map(\.description)

        // Guest NIC plumbing: only devices that exist (a stopped guest has none).
        if ResourceSelector.wants(only, kind: "firewall") {
            for port in compiled.ports where compiled.enabled {
                guard let master = observed.masters[port.device] else { continue }
                let behind = master == port.firewallBridge && observed.masters[port.firewallLink] == .some(port.firewallBridge)
                    && observed.masters[port.bridgePort] == .some(port.bridge)
                if !behind {
                    let id = "port/\(port.device)"
                    guard ResourceSelector.select(only, kind: "firewall", name: id) else { continue }
                    computed.resources.append(ResourcePlan(kind: "firewall", name: id, action: .create, source: nil,
                                                           changes: [PlannedChange(field: "firewall bridge", old: master ?? "(none)",
                                                                                   new: port.firewallBridge, changeClass: .live)],
                                                           operations: [Step.plumb(port).description],
                                                           message: "guest \(port.vmid) \(port.netName) has firewall=1"))
                    computed.steps.append((id, [.plumb(port)]))
                }
            }
            let wanted = compiled.enabled ? Set(compiled.ports.map(\.device)) : []
            for port in computed.records.ports where !wanted.contains(port.device) {
                let id = "port/\(port.device)"
                guard ResourceSelector.select(only, kind: "firewall", name: id),
                      observed.masters[port.firewallBridge] != nil || observed.masters[port.device] != nil else { continue }
                computed.resources.append(ResourcePlan(kind: "firewall", name: id, action: .delete, source: nil,
                                                       changes: [PlannedChange(field: "firewall bridge", old: port.firewallBridge, new: port.bridge,
                                                                               changeClass: .live)],
                                                       operations: [Step.unplumb(port).description],
                                                       message: compiled.enabled ? "the NIC no longer has firewall=1" : "the firewall is disabled"))
                computed.steps.append((id, [.unplumb(port)]))
            }
        }

        guard ResourceSelector.select(only, kind: "firewall", name: "ruleset") else { return computed }
        let script = compiled.script()
        let scriptDigest = Digest.sha256Hex(Data(script.utf8))
        let listingDigest = observed.listing.map { Digest.sha256Hex(Data($0.utf8)) }
        var changes: [PlannedChange] = []
        var steps: [Step] = []
        if compiled.enabled && !compiled.ports.isEmpty && !observed.bridgeNetfilter {
            changes.append(PlannedChange(field: "bridge netfilter", old: "off", new: "on (guest traffic reaches the firewall)", changeClass: .live))
            steps.append(.bridgeNetfilter)
        }
        let action: ResourcePlan.Action
        if !compiled.enabled {
            guard observed.listing != nil else { return computed }
            action = .delete
            changes.append(PlannedChange(field: "ruleset", old: "pvectl's tables", new: nil, changeClass: .live))
            changes += Self.ruleChanges(from: computed.records.rules, to: [])
        } else if observed.listing == nil {
            action = .create
            changes += Self.ruleChanges(from: [], to: compiled.rules)
        } else if scriptDigest != computed.records.scriptDigest || listingDigest != computed.records.listingDigest {
            action = .update
            let ruleChanges = Self.ruleChanges(from: computed.records.rules, to: compiled.rules)
            if listingDigest != computed.records.listingDigest {
                changes.append(PlannedChange(field: "live ruleset", old: "changed outside pvectl", new: "reloaded from the firewall files",
                                             changeClass: .live))
            }
            changes += ruleChanges
        } else if !steps.isEmpty {
            action = .update
        } else {
            return computed
        }
        steps.append(.load(script))
        let summary = compiled.enabled
            ? "\(compiled.rules.count) rules in \(compiled.chains.count) chains, \(compiled.sets.count) sets"
            : "firewall disabled in cluster.fw"
        computed.resources.append(ResourcePlan(kind: "firewall", name: "ruleset", action: action, source: nil, changes: changes,
                                               operations: steps.map(\.description), message: summary))
        computed.steps.append(("ruleset", steps))
        return computed
    }

    /// Rule-level differences per chain: added, removed and moved rules, each
    /// with the firewall file line it comes from.
    static func ruleChanges(from old: [CompiledFirewallRule], to new: [CompiledFirewallRule]) -> [PlannedChange] {
        var changes: [PlannedChange] = []
        let chains = Set(old.map(\.chain)).union(new.map(\.chain)).sorted()
        for chain in chains {
            let before = old.filter { $0.chain == chain }
            let after = new.filter { $0.chain == chain }
            let kept = longestCommonSubsequence(before.map(\.text), after.map(\.text))
            var removed = before.indices.filter { !kept.old.contains($0) }
            var added = after.indices.filter { !kept.new.contains($0) }
            // A rule removed at one place and added at another moved.
            for index in added {
                guard let match = removed.first(where: { before[$0].text == after[index].text }) else { continue }
                removed.removeAll { $0 == match }
                added.removeAll { $0 == index }
                changes.append(PlannedChange(field: chain, old: "#\(match + 1) \(after[index].origin)", new: "#\(index + 1) \(after[index].text)",
                                             changeClass: .live, source: after[index].source.map { SourceLocation(file: $0.file, line: $0.line) }))
            }
            for index in removed {
                changes.append(PlannedChange(field: chain, old: "\(before[index].text)  ← \(before[index].origin)", new: nil, changeClass: .live,
                                             source: before[index].source.map { SourceLocation(file: $0.file, line: $0.line) }))
            }
            for index in added {
                changes.append(PlannedChange(field: chain, old: nil, new: "\(after[index].text)  ← \(after[index].origin)", changeClass: .live,
                                             source: after[index].source.map { SourceLocation(file: $0.file, line: $0.line) }))
            }
        }
        return changes
    }

    /// Indices of both sequences that belong to one longest common subsequence.
    static func longestCommonSubsequence(_ a: [String], _ b: [String]) -> (old: Set<Int>, new: Set<Int>) {
        // Common prefix and suffix first: large rulesets usually differ in a few places.
        var start = 0
        while start < a.count, start < b.count, a[start] == b[start] { start += 1 }
        var endA = a.count, endB = b.count
        while endA > start, endB > start, a[endA - 1] == b[endB - 1] { endA -= 1; endB -= 1 }
        var old = Set(0..<start).union(endA..<a.count)
        var new = Set(0..<start).union(endB..<b.count)
        let midA = Array(a[start..<endA]), midB = Array(b[start..<endB])
        guard !midA.isEmpty, !midB.isEmpty else { return (old, new) }
        guard midA.count * midB.count <= 4_000_000 else { return (old, new) }
        var table = [[Int]](repeating: [Int](repeating: 0, count: midB.count + 1), count: midA.count + 1)
        for i in stride(from: midA.count - 1, through: 0, by: -1) {
            for j in stride(from: midB.count - 1, through: 0, by: -1) {
                table[i][j] = midA[i] == midB[j] ? table[i + 1][j + 1] + 1 : max(table[i + 1][j], table[i][j + 1])
            }
        }
        var i = 0, j = 0
        while i < midA.count && j < midB.count {
            if midA[i] == midB[j] {
                old.insert(start + i)
                new.insert(start + j)
                i += 1
                j += 1
            } else if table[i + 1][j] >= table[i][j + 1] {
                i += 1
            } else {
                j += 1
            }
        }
        return (old, new)
    }

    /// Plumbing first (the guest chains key on the firewall bridges), then the ruleset.
    public func apply(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        var outcome = ApplyOutcome()
        var records = computed.records
        for (id, steps) in computed.steps {
            do {
                for step in steps {
                    progress("firewall/\(id): \(step.description)")
                    switch step {
                    case .plumb(let port):
                        try await driver.plumb(port)
                        records.ports.removeAll { $0.device == port.device }
                        records.ports.append(port)
                    case .unplumb(let port):
                        try await driver.unplumb(port)
                        records.ports.removeAll { $0.device == port.device }
                    case .bridgeNetfilter:
                        try await driver.enableBridgeNetfilter()
                    case .load(let script):
                        let listing = try await driver.load(script: script)
                        records.scriptDigest = Digest.sha256Hex(Data(script.utf8))
                        records.listingDigest = listing.map { Digest.sha256Hex(Data($0.utf8)) }
                        records.rules = computed.compiled?.enabled == true ? computed.compiled?.rules ?? [] : []
                        records.appliedAt = clock.now()
                    }
                    try store.save(records, as: "firewall")
                }
                outcome.applied.append(id)
            } catch {
                outcome.failed.append(.init(name: id, message: "\(error)"))
            }
        }
        return outcome
    }
}
