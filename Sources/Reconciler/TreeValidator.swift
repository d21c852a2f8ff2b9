import Foundation
import Resources

/// Validates a whole desired state: every file against its spec, then the
/// references between files (guest disks → storage, NICs → bridges, VMIDs
/// unique across nodes, firewall groups). Never stops at the first problem.
public enum TreeValidator {
    /// Every check on desired state, the plan's included: `pvectl plan` shows
    /// these same diagnostics, so validate and plan never disagree about a file.
    public static func validate(_ state: DesiredState) -> [Diagnostic] {
        var diagnostics = state.diagnostics
        // What the storage kind reads from storage.cfg; the volume names, per storage type, of every node's guests are
        // checked with the other per-guest checks below, in the same pass.
        let storageKind = state.storage.map { StorageDesiredState.storages(from: $0, node: state.node) }
        let storagesByID = storageKind.map { StorageDesiredState.storagesByID($0.storages) }
        if let datacenter = state.datacenter { diagnostics += DatacenterValidator.validate(datacenter) }
        if let corosync = state.corosync { diagnostics += CorosyncValidator.validate(corosync, node: state.node) }
        if let users = state.users { diagnostics += UserConfigValidator.validate(users) }

        // Guest files are independent: validate them on all cores, beside storage.cfg and the interfaces file (the first
        // two iterations, so that neither ends up last on one core).
        let guests = state.guests
        let perGuest = UnsafeResultSlots<[Diagnostic]>(count: guests.count + 2)
        let bridges = bridgeNames(state)
        let storages = state.storage.map { StorageIndex($0) }
        DispatchQueue.concurrentPerform(iterations: guests.count + 2) { iteration in
            switch iteration {
            case 0:
                perGuest.set(0, (state.storage.map { StorageValidator.validate($0) } ?? []) + (storageKind?.problems ?? []))
            case 1:
                perGuest.set(1, state.interfaces.map { interfaces in
                    InterfacesValidator.validate(interfaces) + checkInterfaceReferences(interfaces)
                        + NetworkDesiredState.interfaces(from: interfaces).diagnostics
                } ?? [])
            default:
                let guest = guests[iteration - 2]
                var found = GuestValidator.validate(guest.config, spec: Specs.guest(guest.kind))
                if let storages { found += checkVolumes(guest, storages: storages) }
                if let storagesByID, !state.frozen.contains(ResourceID(kind: guest.kind.rawValue, name: String(guest.vmid))) {
                    found += StorageDesiredState.volumes(of: guest, storages: storagesByID).problems
                }
                if guest.node == state.node, let bridges { found += checkBridges(guest, bridges: bridges) }
                if guest.kind == .lxc, !state.frozen.contains(ResourceID(kind: guest.kind.rawValue, name: String(guest.vmid))) {
                    found += LxcReconciler.check(guest, storages: storagesByID)
                }
                perGuest.set(iteration, found)
            }
        }
        for found in perGuest.values { diagnostics += found }
        diagnostics += checkUniqueVMIDs(state.guests)

        let groups = Set(state.clusterFirewall?.groups.keys.map { $0 } ?? [])
        if let cluster = state.clusterFirewall { diagnostics += FirewallValidator.validate(cluster) }
        if let host = state.hostFirewall { diagnostics += FirewallValidator.validate(host, groups: groups) }
        let vmids = Set(state.guests.map(\.vmid))
        for (vmid, file) in state.guestFirewalls.sorted(by: { $0.key < $1.key }) {
            diagnostics += FirewallValidator.validate(file, groups: groups)
            if !vmids.contains(vmid) {
                diagnostics.append(.warning(SourceLocation(file: file.file, line: 1), "firewall rules for VMID \(vmid), which has no guest config",
                                            code: .reference))
            }
        }
        // What the firewall compiler leaves out (unknown ipsets, aliases, groups, rules it cannot compile), as the plan notes it.
        if state.clusterFirewall != nil || state.hostFirewall != nil || !state.guestFirewalls.isEmpty {
            diagnostics += FirewallCompiler.compile(FirewallCompiler.Input(state: state)).skipped
        }
        return diagnostics.sorted().saidOnce()
    }

    /// Bridges a guest NIC may use: bridges of the interfaces file and SDN
    /// vnets. nil when no interfaces file was given (nothing to check against).
    static func bridgeNames(_ state: DesiredState) -> Set<String>? {
        guard let interfaces = state.interfaces else { return nil }
        var names = state.sdnVnets
        for (name, stanzas) in interfaces.ifaceStanzas {
            let isBridge = stanzas.contains { stanza in
                stanza.option("bridge-ports") != nil || stanza["ovs_type"] == "OVSBridge"
            }
            if isBridge { names.insert(name) }
        }
        return names
    }

    static func checkBridges(_ guest: DesiredState.Guest, bridges: Set<String>) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        for section in guest.config.sections where section.role == .main || section.role == .pending {
            for entry in section.entries where entry.key.hasPrefix("net") && Int(entry.key.dropFirst(3)) != nil {
                guard let bridge = PropertyString(parsing: entry.value)["bridge"] else { continue }
                // A warning: a bridge made outside the interfaces file (by hand, by an SDN plugin) serves as well; QEMU fails to
                // start only where no bridge of that name exists.
                if !bridges.contains(bridge) {
                    diagnostics.append(.warning(entry.valueLocation,
                                                "\(entry.key): bridge '\(bridge)' is not defined in the interfaces file "
                                                    + "(bridges: \(bridges.sorted().joined(separator: ", ")))", code: .reference))
                }
            }
        }
        return diagnostics
    }

    /// Which storage content a volume needs.
    static func contentType(key: String, kind: GuestConfig.Kind, value: PropertyString) -> String {
        if kind == .lxc { return "rootdir" }
        if value["media"] == "cdrom" { return "iso" }
        return "images"
    }

    /// What volume checks need from storage.cfg, computed once per run.
    struct StorageIndex: Sendable {
        var byID: [String: SectionConfigFile.Section]
        var ids: String
        var content: [String: Set<String>]
        var nodes: [String: Set<String>]

        init(_ file: SectionConfigFile) {
            byID = file.sectionsByID
            ids = file.sections.map(\.id).joined(separator: ", ")
            content = byID.mapValues { section in
                section["content"].map { Set(StorageVolumes.splitList($0)) } ?? StorageVolumes.defaultContent(storageType: section.type)
            }
            nodes = byID.compactMapValues { section in section["nodes"].map { Set(StorageVolumes.splitList($0)) } }
        }
    }

    static func checkVolumes(_ guest: DesiredState.Guest, storages: StorageIndex) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        for section in guest.config.sections where section.role == .main || section.role == .pending {
            for entry in section.entries where GuestConfig.isDriveKey(entry.key) {
                let parsed = PropertyString(parsing: entry.value)
                guard let volume = parsed.bareValue ?? parsed["file"] ?? parsed["volume"] else { continue }
                // Not storage volumes: empty drives, host devices and bind mounts.
                if volume == "none" || volume == "cdrom" || volume.hasPrefix("/") { continue }
                guard let colon = volume.firstIndex(of: ":") else {
                    diagnostics.append(.error(entry.valueLocation, "\(entry.key): volume '\(volume)' is not STORAGE:VOLUME", code: .volume))
                    continue
                }
                let storageID = String(volume[..<colon])
                guard storages.byID[storageID] != nil else {
                    diagnostics.append(.error(entry.valueLocation,
                                              "\(entry.key): storage '\(storageID)' does not exist in storage.cfg (defined: \(storages.ids))",
                                              code: .reference))
                    continue
                }
                let needed = contentType(key: entry.key, kind: guest.kind, value: parsed)
                let content = storages.content[storageID] ?? []
                if !content.contains(needed) {
                    diagnostics.append(.error(entry.valueLocation,
                                              "\(entry.key): " + contentProblem(storage: storageID, needed: needed, content: content),
                                              code: .volume))
                }
                if let allowed = storages.nodes[storageID], !allowed.contains(guest.node) {
                    diagnostics.append(.error(entry.valueLocation,
                                              "\(entry.key): storage '\(storageID)' is not available on node '\(guest.node)' "
                                                + "(nodes: \(allowed.sorted().joined(separator: ",")))", code: .reference))
                }
            }
        }
        return diagnostics
    }

    /// One wording for a volume on a storage without its content type, for validate and the storage kind.
    static func contentProblem(storage: String, needed: String, content: Set<String>) -> String {
        "storage '\(storage)' does not allow content '\(needed)' (content: \(content.sorted().joined(separator: ",")))"
    }

    static func checkUniqueVMIDs(_ guests: [DesiredState.Guest]) -> [Diagnostic] {
        var first: [Int: DesiredState.Guest] = [:]
        var diagnostics: [Diagnostic] = []
        for guest in guests {
            if let previous = first[guest.vmid] {
                diagnostics.append(.error(SourceLocation(file: guest.path, line: 1),
                                          "duplicate VMID \(guest.vmid): also \(previous.path) (node \(previous.node))", code: .duplicate))
            } else {
                first[guest.vmid] = guest
            }
            if guest.vmid < 100 || guest.vmid > 999_999_999 {
                diagnostics.append(.error(SourceLocation(file: guest.path, line: 1), "VMID \(guest.vmid) is out of range (100 to 999999999)",
                                          code: .invalidValue))
            }
        }
        return diagnostics
    }

    /// Bridge ports, bond slaves and VLAN raw devices must be declared or be NICs.
    static func checkInterfaceReferences(_ file: InterfacesFile) -> [Diagnostic] {
        let declared = Set(file.ifaceStanzas.keys)
        var diagnostics: [Diagnostic] = []
        var portOwner: [String: String] = [:]
        func known(_ name: String) -> Bool {
            declared.contains(name) || PVENetworkConfig.looksPhysical(name) || name.contains(".")
        }
        for stanza in file.stanzas {
            guard case .iface(let name, _, _) = stanza.kind else { continue }
            for key in ["bridge-ports", "bond-slaves", "slaves"] {
                guard let option = stanza.option(key) else { continue }
                for port in option.value.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init) where port != "none" {
                    if !known(port) {
                        diagnostics.append(.warning(option.valueLocation, "\(option.key): '\(port)' is neither declared in this file nor a NIC name",
                                                    code: .reference))
                    }
                    if let owner = portOwner[port], owner != name {
                        diagnostics.append(.error(option.valueLocation, "\(option.key): '\(port)' is already used by '\(owner)'", code: .duplicate))
                    }
                    portOwner[port] = name
                }
            }
            if let raw = stanza.option("vlan-raw-device"), !known(raw.value) {
                diagnostics.append(.warning(raw.valueLocation, "vlan-raw-device: '\(raw.value)' is neither declared in this file nor a NIC name",
                                            code: .reference))
            }
        }
        return diagnostics
    }
}

/// Slots written once each from concurrent iterations (distinct indices),
/// read after all of them finished.
final class UnsafeResultSlots<Value>: @unchecked Sendable {
    // Safe because every index is written by exactly one iteration of
    // concurrentPerform and read only after it returns; the buffer itself is
    // never reallocated, so there is no shared mutable array header.
    private let buffer: UnsafeMutableBufferPointer<Value?>

    init(count: Int) {
        buffer = .allocate(capacity: count)
        buffer.initialize(repeating: nil)
    }

    deinit {
        buffer.deinitialize()
        buffer.deallocate()
    }

    func set(_ index: Int, _ value: Value) { buffer[index] = value }

    /// Every slot's value, in index order; all slots must have been set.
    var values: [Value] { buffer.map { $0! } }

    /// One slot, nil when its iteration set nothing.
    subscript(index: Int) -> Value? { buffer[index] }
}
