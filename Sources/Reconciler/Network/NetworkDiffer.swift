import Resources

/// Compares desired interfaces with the kernel and the last-applied records,
/// and produces per-resource plans with the steps that converge them.
///
/// Rules (three-way):
/// - a declared interface is fully managed: extra global addresses on it go;
/// - bridge ports are added when declared and detached only when the
///   reconciler attached them before (guest taps and veths stay);
/// - a device is deleted only when it is no longer declared and the
///   reconciler created it; an undeclared device it did not create
///   (docker0, a stray veth) is never touched.
public struct NetworkDiffer: Sendable {
    public struct Result: Sendable {
        public var resources: [ResourcePlan]
        /// Steps per interface name.
        public var steps: [String: [NetworkStep]]
        /// Interfaces in dependency order (what a device needs comes first).
        public var order: [String]

        /// Every step in execution order: deletions (reverse dependency
        /// order) first, then creation and configuration phase by phase.
        public var orderedSteps: [(name: String, step: NetworkStep)] {
            let rank = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
            var all: [(name: String, step: NetworkStep, sequence: Int)] = []
            var sequence = 0
            for name in order {
                for step in steps[name] ?? [] {
                    all.append((name, step, sequence))
                    sequence += 1
                }
            }
            return all.sorted { a, b in
                if a.step.phase != b.step.phase { return a.step.phase < b.step.phase }
                let ra = rank[a.name] ?? 0
                let rb = rank[b.name] ?? 0
                if ra != rb {
                    // Tear-down runs children first.
                    return a.step.phase < 10 ? ra > rb : ra < rb
                }
                return a.sequence < b.sequence
            }.map { ($0.name, $0.step) }
        }
    }

    public var desired: [DesiredInterface]
    public var observed: ObservedNetwork
    public var records: NetworkRecords

    public init(desired: [DesiredInterface], observed: ObservedNetwork, records: NetworkRecords) {
        self.desired = desired
        self.observed = observed
        self.records = records
    }

    static func changeClass(_ option: String) -> ChangeClass {
        Specs.network.options[option]?.changeClass ?? .live
    }

    public func diff() -> Result {
        var resources: [ResourcePlan] = []
        var steps: [String: [NetworkStep]] = [:]
        let declared = Dictionary(desired.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

        // As `ifreload -a`: interfaces brought up at boot and what they need are
        // configured; a declared interface outside that set is left alone.
        var active: Set<String> = []
        func activate(_ name: String) {
            guard active.insert(name).inserted, let interface = declared[name] else { return }
            interface.dependencies.forEach(activate)
        }
        desired.filter(\.autostart).map(\.name).forEach(activate)

        for var interface in desired where active.contains(interface.name) {
            // What an interface brought up at boot needs (ports, slaves, a VLAN's
            // raw device) comes up with it: a VLAN cannot go up on a down device.
            interface.autostart = true
            let (plan, interfaceSteps) = diff(interface, declared: declared)
            if let plan { resources.append(plan) }
            if !interfaceSteps.isEmpty { steps[interface.name] = interfaceSteps }
        }

        // No longer declared: delete what we created, release what we configured.
        for (name, record) in records.interfaces.sorted(by: { $0.key < $1.key }) where declared[name] == nil {
            guard let link = observed.links[name] else { continue }
            var removal: [NetworkStep] = []
            var changes: [PlannedChange] = []
            for command in record.config.hooks["pre-down"] ?? [] { removal.append(.runHook(name: name, phase: "pre-down", command: command)) }
            if record.created {
                changes.append(PlannedChange(field: "interface", old: record.config.kind.rawValue, new: nil, changeClass: .replace))
                removal.append(.deleteLink(name: name))
            } else {
                for cidr in record.config.addresses where link.addresses.contains(cidr) {
                    changes.append(PlannedChange(field: "address", old: cidr, new: nil, changeClass: .live))
                    removal.append(.deleteAddress(name: name, cidr: cidr))
                }
                for route in observed.defaultRoutes where route.device == name
                    && (route.gateway == record.config.gateway || route.gateway == record.config.gateway6) {
                    changes.append(PlannedChange(field: "gateway", old: route.gateway, new: nil, changeClass: .live))
                    removal.append(.deleteDefaultRoute(gateway: route.gateway, device: name, family: route.family))
                }
            }
            for phase in ["down", "post-down"] {
                for command in record.config.hooks[phase] ?? [] { removal.append(.runHook(name: name, phase: phase, command: command)) }
            }
            guard !changes.isEmpty else { continue }
            resources.append(ResourcePlan(kind: "network", name: name, action: .delete, source: nil, changes: changes,
                                          operations: removal.map(\.description)))
            steps[name] = removal
        }
        return Result(resources: resources, steps: steps, order: dependencyOrder(declared: declared))
    }

    /// Declared interfaces in dependency order, then removed ones.
    func dependencyOrder(declared: [String: DesiredInterface]) -> [String] {
        var order: [String] = []
        var visiting: Set<String> = []
        var done: Set<String> = []
        func visit(_ name: String) {
            if done.contains(name) || visiting.contains(name) { return }
            visiting.insert(name)
            for dependency in declared[name]?.dependencies ?? records.interfaces[name]?.config.dependencies ?? [] {
                visit(dependency)
            }
            visiting.remove(name)
            done.insert(name)
            order.append(name)
        }
        for interface in desired { visit(interface.name) }
        for name in records.interfaces.keys.sorted() { visit(name) }
        return order
    }

    func diff(_ want: DesiredInterface, declared: [String: DesiredInterface]) -> (ResourcePlan?, [NetworkStep]) {
        let name = want.name
        let record = records.interfaces[name]
        var changes: [PlannedChange] = []
        var steps: [NetworkStep] = []
        func source(_ key: String) -> SourceLocation? { want.sources[key] ?? want.source }

        guard var have = observed.links[name] else {
            if want.kind == .physical || want.kind == .loopback {
                return (ResourcePlan(kind: "network", name: name, action: .blocked, source: want.source, changes: [],
                                     message: "device '\(name)' does not exist and is not a kind the reconciler creates (a NIC)"), [])
            }
            // Create from nothing.
            changes.append(PlannedChange(field: "interface", old: nil, new: want.kind.rawValue, changeClass: .replace, source: want.source))
            steps += createSteps(want)
            var empty = ObservedLink(name: name, ifindex: 0, kind: kindName(want.kind))
            empty.mtu = 1500
            if want.bridge != nil { empty.bridge = .init(stp: false, forwardDelay: 15, vlanFiltering: false) }
            if let bond = want.bond { empty.bond = .init(mode: bond.mode, miimon: 0) }
            if let vlan = want.vlan { empty.vlan = .init(id: vlan.id, rawDevice: vlan.rawDevice, proto: vlan.proto) }
            let (configureChanges, configureSteps) = configure(want, have: empty, record: nil, declared: declared, creating: true)
            changes += configureChanges
            steps += configureSteps
            for command in want.hooks["pre-up"] ?? [] { steps.insert(.runHook(name: name, phase: "pre-up", command: command), at: 0) }
            for phase in ["up", "post-up"] {
                for command in want.hooks[phase] ?? [] { steps.append(.runHook(name: name, phase: phase, command: command)) }
            }
            return (ResourcePlan(kind: "network", name: name, action: .create, source: want.source, changes: changes,
                                 operations: steps.map(\.description)), steps)
        }

        var action: ResourcePlan.Action = .update
        if let expected = kindName(want.kind), have.kind != expected {
            // Another kind of device under this name: recreate it.
            action = .replace
            changes.append(PlannedChange(field: "kind", old: have.kind ?? "device", new: expected, changeClass: .replace, source: want.source))
            steps.append(.deleteLink(name: name))
            steps += createSteps(want)
            have = ObservedLink(name: name, ifindex: 0, kind: expected, mtu: 1500)
            if want.bridge != nil { have.bridge = .init(stp: false, forwardDelay: 15, vlanFiltering: false) }
            if let bond = want.bond { have.bond = .init(mode: bond.mode, miimon: 0) }
            if let vlan = want.vlan { have.vlan = .init(id: vlan.id, rawDevice: vlan.rawDevice, proto: vlan.proto) }
        } else if let vlan = want.vlan, let current = have.vlan,
                  current.id != vlan.id || (current.rawDevice != nil && current.rawDevice != vlan.rawDevice)
                    || current.proto.lowercased() != vlan.proto.lowercased() {
            action = .replace
            changes.append(PlannedChange(field: "vlan", old: "\(current.rawDevice ?? "?").\(current.id) \(current.proto)",
                                         new: "\(vlan.rawDevice).\(vlan.id) \(vlan.proto)",
                                         changeClass: Self.changeClass("vlan-id"), source: source("vlan-id")))
            steps.append(.deleteLink(name: name))
            steps += createSteps(want)
            have = ObservedLink(name: name, ifindex: 0, kind: "vlan", mtu: 1500,
                                vlan: .init(id: vlan.id, rawDevice: vlan.rawDevice, proto: vlan.proto))
        } else if let bond = want.bond, let current = have.bond, current.mode != bond.mode {
            // The kernel only changes a bond's mode while it is down and empty.
            action = .replace
            changes.append(PlannedChange(field: "bond-mode", old: current.mode, new: bond.mode,
                                         changeClass: Self.changeClass("bond-mode"), source: source("bond-mode")))
            steps.append(.deleteLink(name: name))
            steps += createSteps(want)
            have = ObservedLink(name: name, ifindex: 0, kind: "bond", mtu: 1500, bond: .init(mode: bond.mode, miimon: 0))
        }
        let (configureChanges, configureSteps) = configure(want, have: have, record: record, declared: declared, creating: action == .replace)
        changes += configureChanges
        steps += configureSteps

        // Hooks run when the interface changed, or when they themselves changed.
        let hooksChanged = record.map { $0.config.hooks != want.hooks } ?? !want.hooks.isEmpty
        if !steps.isEmpty || hooksChanged {
            if hooksChanged && steps.isEmpty {
                changes.append(PlannedChange(field: "hooks", old: nil, new: want.hooks.keys.sorted().joined(separator: ","),
                                             changeClass: .reload, source: source("post-up")))
            }
            for phase in ["up", "post-up"] {
                for command in want.hooks[phase] ?? [] { steps.append(.runHook(name: name, phase: phase, command: command)) }
            }
        }
        guard !changes.isEmpty else { return (nil, []) }
        return (ResourcePlan(kind: "network", name: name, action: action, source: want.source, changes: changes,
                             operations: steps.map(\.description)), steps)
    }

    func kindName(_ kind: DesiredInterface.Kind) -> String? {
        switch kind {
        case .bridge: "bridge"
        case .bond: "bond"
        case .vlan: "vlan"
        case .physical, .loopback: nil
        }
    }

    func createSteps(_ want: DesiredInterface) -> [NetworkStep] {
        switch want.kind {
        case .bridge: [.createBridge(name: want.name)]
        case .bond: [.createBond(name: want.name, mode: want.bond?.mode ?? "balance-rr")]
        case .vlan:
            want.vlan.map { [.createVLAN(name: want.name, rawDevice: $0.rawDevice, id: $0.id, proto: $0.proto)] } ?? []
        case .physical, .loopback: []
        }
    }

    /// Attribute-level differences on an existing (or just created) link.
    func configure(_ want: DesiredInterface, have: ObservedLink, record: AppliedInterface?,
                   declared: [String: DesiredInterface], creating: Bool) -> ([PlannedChange], [NetworkStep]) {
        let name = want.name
        var changes: [PlannedChange] = []
        var steps: [NetworkStep] = []
        func source(_ key: String) -> SourceLocation? { want.sources[key] ?? want.source }

        if let bond = want.bond {
            let current = have.bond
            if creating || current?.miimon != bond.miimon || (bond.xmitHashPolicy != nil && current?.xmitHashPolicy != bond.xmitHashPolicy)
                || (bond.lacpRate != nil && current?.lacpRate != bond.lacpRate) || (bond.minLinks != nil && current?.minLinks != bond.minLinks)
                || (bond.primary != nil && current?.primary != bond.primary) {
                if creating {
                    changes.append(PlannedChange(field: "bond-mode", old: nil, new: bond.mode,
                                                 changeClass: Self.changeClass("bond-mode"), source: source("bond-mode")))
                    changes.append(PlannedChange(field: "bond-miimon", old: nil, new: String(bond.miimon),
                                                 changeClass: Self.changeClass("bond-miimon"), source: source("bond-miimon")))
                    if let policy = bond.xmitHashPolicy {
                        changes.append(PlannedChange(field: "bond-xmit-hash-policy", old: nil, new: policy,
                                                     changeClass: Self.changeClass("bond-xmit-hash-policy"), source: source("bond-xmit-hash-policy")))
                    }
                } else {
                    if current?.miimon != bond.miimon {
                        changes.append(PlannedChange(field: "bond-miimon", old: current.map { String($0.miimon) }, new: String(bond.miimon),
                                                     changeClass: Self.changeClass("bond-miimon"), source: source("bond-miimon")))
                    }
                    if let policy = bond.xmitHashPolicy, current?.xmitHashPolicy != policy {
                        changes.append(PlannedChange(field: "bond-xmit-hash-policy", old: current?.xmitHashPolicy, new: policy,
                                                     changeClass: Self.changeClass("bond-xmit-hash-policy"), source: source("bond-xmit-hash-policy")))
                    }
                }
                steps.append(.setBond(name: name, miimon: bond.miimon, xmitHashPolicy: bond.xmitHashPolicy,
                                      lacpRate: bond.lacpRate, minLinks: bond.minLinks, primary: bond.primary))
            }
            for slave in bond.slaves {
                guard let port = observed.links[slave] else {
                    changes.append(PlannedChange(field: "bond-slaves", old: nil, new: "\(slave) (missing device, skipped)",
                                                 changeClass: .live, source: source("bond-slaves")))
                    continue
                }
                if port.master != name || creating {
                    changes.append(PlannedChange(field: "bond-slaves", old: nil, new: slave,
                                                 changeClass: Self.changeClass("bond-slaves"), source: source("bond-slaves")))
                    steps.append(.setBondSlave(port: slave, bond: name))
                }
            }
        }

        if let mtu = want.mtu, mtu != have.mtu || creating && mtu != 1500 {
            changes.append(PlannedChange(field: "mtu", old: creating ? nil : String(have.mtu), new: String(mtu),
                                         changeClass: Self.changeClass("mtu"), source: source("mtu")))
            steps.append(.setMTU(name: name, mtu: mtu))
        } else if want.mtu == nil, let previous = record?.config.mtu, previous != 1500, have.mtu == previous {
            // The file no longer sets an MTU we set: back to the default.
            changes.append(PlannedChange(field: "mtu", old: String(have.mtu), new: "1500", changeClass: Self.changeClass("mtu"), source: want.source))
            steps.append(.setMTU(name: name, mtu: 1500))
        }

        if let bridge = want.bridge {
            let current = have.bridge
            if creating || current?.stp != bridge.stp || current?.forwardDelay != bridge.forwardDelay || current?.vlanFiltering != bridge.vlanAware {
                if current?.stp != bridge.stp && !(creating && !bridge.stp) {
                    changes.append(PlannedChange(field: "bridge-stp", old: creating ? nil : (current?.stp == true ? "on" : "off"),
                                                 new: bridge.stp ? "on" : "off",
                                                 changeClass: Self.changeClass("bridge-stp"), source: source("bridge-stp")))
                }
                if current?.forwardDelay != bridge.forwardDelay {
                    changes.append(PlannedChange(field: "bridge-fd", old: creating ? nil : current.map { String($0.forwardDelay) },
                                                 new: String(bridge.forwardDelay),
                                                 changeClass: Self.changeClass("bridge-fd"), source: source("bridge-fd")))
                }
                if current?.vlanFiltering != bridge.vlanAware && !(creating && !bridge.vlanAware) {
                    changes.append(PlannedChange(field: "bridge-vlan-aware", old: creating ? nil : (current?.vlanFiltering == true ? "yes" : "no"),
                                                 new: bridge.vlanAware ? "yes" : "no", changeClass: Self.changeClass("bridge-vlan-aware"),
                                                 source: source("bridge-vlan-aware")))
                }
                let touchesFiltering = bridge.vlanAware || current?.vlanFiltering == true
                steps.append(.setBridge(name: name, stp: bridge.stp, forwardDelay: bridge.forwardDelay,
                                        vlanFiltering: touchesFiltering ? bridge.vlanAware : nil))
            }
            for portName in bridge.ports {
                // A port this apply creates (a bond, a VLAN) counts as there; a missing NIC does not.
                let created = declared[portName].flatMap {
                    $0.kind == .physical || $0.kind == .loopback ? nil : ObservedLink(name: $0.name, ifindex: 0)
                }
                guard let port = observed.links[portName] ?? created else {
                    changes.append(PlannedChange(field: "bridge-ports", old: nil, new: "\(portName) (missing device, skipped)",
                                                 changeClass: .live, source: source("bridge-ports")))
                    continue
                }
                if port.master != name || creating || port.ifindex == 0 {
                    changes.append(PlannedChange(field: "bridge-ports", old: nil, new: portName,
                                                 changeClass: Self.changeClass("bridge-ports"), source: source("bridge-ports")))
                    steps.append(.setMaster(port: portName, master: name))
                    steps.append(.setUp(name: portName))
                }
                if bridge.disableMACLearning && (port.learning != false || port.master != name) {
                    changes.append(PlannedChange(field: "bridge-disable-mac-learning", old: nil, new: portName,
                                                 changeClass: Self.changeClass("bridge-disable-mac-learning"),
                                                 source: source("bridge-disable-mac-learning")))
                    steps.append(.setLearning(port: portName, learning: false))
                }
                if bridge.vlanAware, let vids = bridge.vids, !VLANRanges.contains(observed.vlans[portName] ?? "", vids) || port.master != name {
                    changes.append(PlannedChange(field: "bridge-vids", old: observed.vlans[portName], new: "\(portName): \(vids)",
                                                 changeClass: Self.changeClass("bridge-vids"), source: source("bridge-vids")))
                    steps.append(.setBridgeVLANs(port: portName, vids: vids, isBridge: false))
                }
            }
            // A VLAN interface on a VLAN-aware bridge (vmbr0.30) only receives its
            // traffic when the bridge itself is a member of that VLAN.
            if bridge.vlanAware {
                let childIDs = declared.values.compactMap { $0.vlan?.rawDevice == name ? $0.vlan?.id : nil }.sorted()
                for id in childIDs where creating || !VLANRanges.contains(observed.vlans[name] ?? "", String(id)) {
                    changes.append(PlannedChange(field: "bridge vlan (self)", old: nil, new: String(id), changeClass: Self.changeClass("bridge-vids"),
                                                 source: declared.values.first { $0.vlan?.rawDevice == name && $0.vlan?.id == id }?.source))
                    steps.append(.setBridgeVLANs(port: name, vids: String(id), isBridge: true))
                }
            }
            // Detach only ports the reconciler attached before and the file dropped.
            for previous in record?.config.bridge?.ports ?? [] where !bridge.ports.contains(previous) {
                if observed.links[previous]?.master == name {
                    changes.append(PlannedChange(field: "bridge-ports", old: previous, new: nil,
                                                 changeClass: Self.changeClass("bridge-ports"), source: source("bridge-ports")))
                    steps.append(.clearMaster(port: previous))
                }
            }
        }

        if want.autostart && (!have.up || creating) {
            if !creating { changes.append(PlannedChange(field: "state", old: "down", new: "up", changeClass: .live, source: want.source)) }
            steps.append(.setUp(name: name))
        }

        let currentAddresses = creating ? [] : have.addresses
        for cidr in want.addresses where !currentAddresses.contains(cidr) {
            changes.append(PlannedChange(field: "address", old: nil, new: cidr, changeClass: Self.changeClass("address"), source: source("address")))
            steps.append(.addAddress(name: name, cidr: cidr))
        }
        let removed = currentAddresses.filter { !want.addresses.contains($0) }
        if removed.contains(where: { !$0.contains(":") }) && want.addresses.contains(where: { !$0.contains(":") }) {
            steps.append(.promoteSecondaries(name: name))
        }
        for cidr in removed {
            changes.append(PlannedChange(field: "address", old: cidr, new: nil, changeClass: Self.changeClass("address"), source: want.source))
            steps.append(.deleteAddress(name: name, cidr: cidr))
        }

        // Removing an address drops the routes through it; re-assert the gateway then.
        let addressesChange = steps.contains { if case .deleteAddress = $0 { true } else { false } }
        for (family, gateway, previous) in [(4, want.gateway, record?.config.gateway), (6, want.gateway6, record?.config.gateway6)] {
            let current = observed.defaultRoutes.first { $0.family == family && $0.device == name }
            if let gateway {
                if addressesChange && current?.gateway == gateway {
                    steps.append(.replaceDefaultRoute(gateway: gateway, device: name, family: family))
                } else if creating || current?.gateway != gateway {
                    changes.append(PlannedChange(field: family == 4 ? "gateway" : "gateway6", old: creating ? nil : current?.gateway, new: gateway,
                                                 changeClass: Self.changeClass("gateway"), source: source("gateway")))
                    steps.append(.replaceDefaultRoute(gateway: gateway, device: name, family: family))
                }
            } else if let previous, let current, current.gateway == previous {
                changes.append(PlannedChange(field: family == 4 ? "gateway" : "gateway6", old: previous, new: nil,
                                             changeClass: Self.changeClass("gateway"), source: want.source))
                steps.append(.deleteDefaultRoute(gateway: previous, device: name, family: family))
            }
        }
        return (changes, steps)
    }
}

/// VLAN id sets written as `2-4094` or `10 20 30-40`.
public enum VLANRanges {
    public static func ids(_ text: String) -> Set<Int> {
        var result: Set<Int> = []
        for part in text.split(whereSeparator: { $0 == " " || $0 == "," || $0 == ";" }) {
            let bounds = part.split(separator: "-").compactMap { Int($0) }
            if bounds.count == 1 { result.insert(bounds[0]) }
            if bounds.count == 2, bounds[0] <= bounds[1] { result.formUnion(bounds[0]...bounds[1]) }
        }
        return result
    }

    /// Whether the observed set covers the wanted one.
    public static func contains(_ observed: String, _ wanted: String) -> Bool {
        ids(wanted).isSubset(of: ids(observed))
    }
}
