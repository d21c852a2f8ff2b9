import Crypto
import Foundation
import Resources

/// A VM's QEMU process as the driver sees it.
public enum QemuRunState: Sendable, Equatable, CustomStringConvertible {
    case stopped
    /// Running, with QEMU's run state (`running`, `paused`, `prelaunch`, ...).
    case running(pid: Int32, status: String)
    /// A pid file without a live QEMU: the process died (a crash or kill -9).
    case crashed(pid: Int32)

    public var description: String {
        switch self {
        case .stopped: "stopped"
        case .running(let pid, let status): "running (pid \(pid), \(status))"
        case .crashed(let pid): "crashed (pid \(pid) is gone)"
        }
    }
}

public struct ObservedVM: Sendable {
    public var state: QemuRunState
    /// Ids of the devices the QEMU has (`/machine/peripheral`); nil when QMP did not answer.
    public var deviceIDs: Set<String>?
    /// Existing taps and the bridge each is enslaved to ("" for none).
    public var tapMasters: [String: String]

    public init(state: QemuRunState, deviceIDs: Set<String>? = nil, tapMasters: [String: String] = [:]) {
        self.state = state
        self.deviceIDs = deviceIDs
        self.tapMasters = tapMasters
    }
}

/// Whether this node runs guests with KVM or emulates them (TCG), and why.
public struct QemuAcceleration: Sendable, Codable, Hashable {
    public var kvm: Bool
    public var reason: String
    public init(kvm: Bool, reason: String) {
        self.kvm = kvm
        self.reason = reason
    }
}

/// How the QEMU kind changes the host: QEMU processes and their QMP sockets.
public protocol QemuDriver: Sendable {
    /// `setting` is `auto`, `kvm` or `tcg`.
    func acceleration(setting: String) -> QemuAcceleration
    func hostProfile(node: String, acceleration: QemuAcceleration) -> QemuHostProfile
    /// VMs with a live QEMU (from the pid files).
    func runningVMIDs() -> [Int]
    func observe(vmid: Int, taps: [String]) async -> ObservedVM
    /// Runs the daemonizing command line and waits until QMP answers; returns QEMU's pid.
    func start(vmid: Int, arguments: [String]) async throws -> Int32
    /// ACPI power-down, then hard stop after `timeout` seconds; returns how it ended.
    func stop(vmid: Int, timeout: Double) async throws -> String
    func perform(vmid: Int, _ step: QemuLiveStep) async throws
    /// Writes generated values back into a guest config, as qemu-server does, refused when the file no longer has
    /// `expectedDigest` (someone edited it since it was read).
    func writeConfig(path: String, text: String, expectedDigest: String?) throws
}

/// What pvectl knows about a QEMU it started: the config it runs.
public struct QemuVMRecord: Codable, Sendable, Hashable {
    public var pid: Int32
    /// The effective config at start, plus the changes applied live since.
    public var running: [String: String]
    public var startedAt: Date
    public var accelerator: String
}

public struct QemuRecords: Codable, Sendable {
    public var vms: [String: QemuVMRecord] = [:]
    public init() {}
}

/// The QEMU kind: which VMs run, started from their config's command line,
/// stopped by ACPI then by force, and changed live over QMP where QEMU can;
/// everything else waits (pending) for a restart the operator asks for.
public struct QemuReconciler: Sendable {
    public var driver: any QemuDriver
    public var store: StateStore
    public var clock: any ReconcilerClock
    /// `auto`, `kvm` or `tcg` (`--qemu-accel`).
    public var accelerationSetting: String
    /// Restart running guests whose changes need it: nil none, empty all, else these VMIDs.
    public var restart: Set<Int>?

    public init(driver: any QemuDriver, store: StateStore, accelerationSetting: String = "auto", restart: Set<Int>? = nil,
                clock: any ReconcilerClock = SystemClock()) {
        self.driver = driver
        self.store = store
        self.clock = clock
        self.accelerationSetting = accelerationSetting
        self.restart = restart
    }

    public struct StartSpec: Sendable {
        public var arguments: [String]
        public var taps: [(tap: String, bridge: String, tag: Int?)]
        public var linkDown: [String]
        public var running: [String: String]
        /// Seconds to wait after the start before the next guest (`startup: up=`).
        public var up: Int?
    }

    public enum Action: Sendable {
        case start(StartSpec)
        case stop(timeout: Double)
        /// Stop, then start with the new command line (`--restart`).
        case restart(timeout: Double, StartSpec)
        case live([QemuLiveStep], running: [String: String])
        /// Take over a QEMU started elsewhere: its config is taken to be the file's.
        case adopt(pid: Int32, running: [String: String])
    }

    public struct VMPlan: Sendable {
        public var vmid: Int
        public var action: Action
        /// The config file rewritten with generated values or merged pending changes.
        public var writeBack: (path: String, text: String, digest: String?)?
        public var order: Int?
    }

    /// One VM for `pvectl status`.
    public struct VMStatus: Sendable {
        public var vmid: Int
        public var state: QemuRunState
        public var intent: String
        public var name: String?
    }

    public struct Computed: Sendable {
        public var resources: [ResourcePlan] = []
        public var vms: [VMPlan] = []
        public var records = QemuRecords()
        public var problems: [Diagnostic] = []
        public var notes: [String] = []
        public var acceleration: QemuAcceleration?
        public var statuses: [VMStatus] = []
        public init() {}

        /// Plans a stop: ACPI shutdown, hard stop after `timeout` (a QEMU whose
        /// guest already powered off is quit at once).
        mutating func stop(_ vmid: Int, source: SourceLocation?, from old: String, timeout: Double, order: Int?,
                           operation: String? = nil, message: String) {
            resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .delete, source: source,
                                          changes: [PlannedChange(field: "state", old: old, new: "stopped", changeClass: .live)],
                                          operations: [operation ?? "ACPI shutdown, hard stop after \(Int(timeout)) s"], message: message))
            vms.append(VMPlan(vmid: vmid, action: .stop(timeout: timeout), writeBack: nil, order: order))
        }
    }

    /// Whether and why a VM should run.
    public enum Intent: Sendable, Equatable {
        case run(String)
        case stop(String)
        /// pvectl leaves the run state to the operator.
        case leave(String)

        var text: String {
            switch self {
            case .run(let why): "run (\(why))"
            case .stop(let why): "stopped (\(why))"
            case .leave(let why): "as it is (\(why))"
            }
        }
    }

    /// template → stopped; the HA resource's state (started/stopped/disabled/
    /// ignored) when the VM is an HA resource; `onboot: 1` → running; a VM
    /// named with `--only qemu/<vmid>` → running; else its run state is the operator's.
    public static func intent(vmid: Int, config: [String: String], haState: String?, named: Bool) -> Intent {
        if config["template"] == "1" { return .stop("template: 1") }
        switch haState {
        case "started"?, "enabled"?: return .run("HA state \(haState!)")
        case "stopped"?, "disabled"?: return .stop("HA state \(haState!)")
        case "ignored"?: return .leave("HA state ignored")
        default: break
        }
        if config["onboot"] == "1" { return .run("onboot: 1") }
        if named { return .run("named with --only") }
        return .leave("onboot is not set")
    }

    /// The config QEMU should run: the main section with `[PENDING]` applied
    /// (its values replace, its `delete:` removes), as qemu-server does at start.
    public static func effectiveConfig(_ config: GuestConfig) -> [String: String] {
        var result: [String: String] = [:]
        for entry in config.main.effectiveEntries where entry.key != "digest" { result[entry.key] = entry.value }
        if let pending = config.pending {
            for entry in pending.effectiveEntries where entry.key != "delete" { result[entry.key] = entry.value }
            for key in config.pendingDeletions { result[key] = nil }
        }
        return result
    }

    static let nicModels: Set<String> = ["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "e1000-82540em", "e1000-82544gc",
                                         "e1000-82545em", "i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet"]

    /// Bytes derived from the config file, so a plan and the apply after it generate the same values.
    static func derivedBytes(_ seed: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(seed.utf8)))
    }

    /// A MAC under `prefix` (`BC:24:11`), its other bytes derived from `seed`; a locally administered unicast one
    /// when there is no prefix.
    static func macAddress(seed: String, prefix macPrefix: String) -> String {
        let bytes = derivedBytes(seed)
        var parts = macPrefix.split(separator: ":").map { String($0).uppercased() }.filter { !$0.isEmpty }
        var index = 0
        while parts.count < 6 {
            parts.append(String(format: "%02X", parts.isEmpty ? (bytes[index] & 0xFE) | 0x02 : bytes[index]))
            index += 1
        }
        return parts.joined(separator: ":")
    }

    static func uuid(_ bytes: [UInt8]) -> String {
        var b = Array(bytes.prefix(16))
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        let hex = b.map { String(format: "%02x", $0) }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
    }

    /// Values Proxmox generates when a config lacks them: a NIC's MAC, the
    /// SMBIOS UUID, a `vmgenid: 1`. Returned as the new values of their keys.
    public static func generatedValues(vmid: Int, config: [String: String], seed: String, macPrefix: String) -> [String: String] {
        var result: [String: String] = [:]
        for (key, value) in config where QemuLiveChanges.isNIC(key) {
            var parts = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard let first = parts.first else { continue }
            let hasMAC = parts.contains { $0.hasPrefix("macaddr=") }
                || (first.contains("=") && nicModels.contains(String(first.split(separator: "=")[0])))
            if hasMAC { continue }
            let mac = macAddress(seed: "\(seed)/\(key)", prefix: macPrefix)
            if nicModels.contains(first) {
                parts[0] = "\(first)=\(mac)"
            } else {
                parts.append("macaddr=\(mac)")
            }
            result[key] = parts.joined(separator: ",")
        }
        let smbios = config["smbios1"]
        if smbios.map({ QemuLiveChanges.parse($0)["uuid"] == nil }) ?? true {
            let generated = "uuid=" + uuid(derivedBytes("\(seed)/smbios1"))
            result["smbios1"] = smbios.map { generated + "," + $0 } ?? generated
        }
        if config["vmgenid"] == "1" { result["vmgenid"] = uuid(derivedBytes("\(seed)/vmgenid")) }
        return result
    }

    /// `startup: order=N,up=N,down=N`.
    static func startup(_ value: String?) -> (order: Int?, up: Int?, down: Int?) {
        guard let value else { return (nil, nil, nil) }
        let options = QemuLiveChanges.parse(value)
        return (options["order"].flatMap { Int($0) }, options["up"].flatMap { Int($0) }, options["down"].flatMap { Int($0) })
    }

    /// qemu-server's default shutdown timeout.
    static let defaultStopTimeout = 180.0

    /// The file with `values` set in the main section; the keys in `fromPending` leave `[PENDING]`.
    public static func rewritten(_ config: GuestConfig, values: [String: String], removing removed: [String], fromPending: Set<String>) -> String {
        var config = config
        var main = config.main
        for key in values.keys.sorted() { main[key] = values[key] }
        for key in removed { main[key] = nil }
        config.main = main
        for index in config.elements.indices {
            guard case .block(var section) = config.elements[index], section.role == .pending else { continue }
            let deletions = config.pendingDeletions.filter { !fromPending.contains($0) }
            section.entries.removeAll { fromPending.contains($0.key) || $0.key == "delete" }
            if !deletions.isEmpty { section["delete"] = deletions.joined(separator: ",") }
            config.elements[index] = .block(section)
        }
        let sectionsBefore = config.elements.count
        config.elements.removeAll { element in
            if case .block(let section) = element, section.role == .pending { return section.entries.isEmpty }
            return false
        }
        var text = config.losslessText()
        // The blank line that separated the removed [PENDING] goes with it.
        if config.elements.count < sectionsBefore { while text.hasSuffix("\n\n") { text.removeLast() } }
        return text
    }

    /// - Parameter inactiveStorages: storages this node cannot serve now, with the
    ///   reason (from the storage kind): a VM with a disk there cannot start.
    /// - Parameter named: the VMs the operator named with `--only qemu/<vmid>` (they should run); nil takes them from
    ///   `only`. The loop narrows `only` to the one VM an event concerns without naming it.
    public func compute(_ state: DesiredState, only: [ResourceSelector], cpuModels: SectionConfigFile? = nil,
                        inactiveStorages: [String: String] = [:], named: Set<Int>? = nil) async throws -> Computed {
        var computed = Computed()
        computed.records = try store.load("qemu", as: QemuRecords.self) ?? QemuRecords()
        let acceleration = driver.acceleration(setting: accelerationSetting)
        computed.acceleration = acceleration
        let host = driver.hostProfile(node: state.node, acceleration: acceleration)
        if !acceleration.kvm { computed.notes.append("qemu: VMs run under TCG (emulation): \(acceleration.reason)") }
        let haStates = state.haStates(type: "vm")
        let macPrefix = state.datacenter?["mac_prefix"] ?? "BC:24:11"
        let named = named ?? Set(only.filter { $0.kind == "qemu" }.compactMap { $0.name.flatMap { Int($0) } })
        let local = state.localGuests.filter { $0.kind == .qemu }
        var seen: Set<Int> = []

        for guest in local.sorted(by: { $0.vmid < $1.vmid }) {
            let vmid = guest.vmid
            seen.insert(vmid)
            guard ResourceSelector.select(only, kind: "qemu", name: String(vmid)) else { continue }
            let source = SourceLocation(file: guest.path, line: 1)
            if state.frozen.contains(ResourceID(kind: "qemu", name: String(vmid))) {
                computed.problems += state.diagnostics.filter { $0.severity == .error && $0.location.file == guest.path }
                computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .blocked, source: source, changes: [],
                                                       message: "the config cannot be read; the VM is left as it is"))
                continue
            }
            let effective = Self.effectiveConfig(guest.config)
            let generated = Self.generatedValues(vmid: vmid, config: effective, seed: "\(state.node)/\(vmid)/\(state.digests[guest.path] ?? "")",
                                                 macPrefix: macPrefix)
            var desired = effective
            for (key, value) in generated { desired[key] = value }
            let intent = Self.intent(vmid: vmid, config: desired, haState: haStates[vmid], named: named.contains(vmid))
            let observed = await driver.observe(vmid: vmid, taps: desired.keys.filter(QemuLiveChanges.isNIC).compactMap { key in
                QemuLiveChanges.tapTarget(vmid: vmid, key: key, value: desired[key]!)?.tap
            })
            computed.statuses.append(VMStatus(vmid: vmid, state: observed.state, intent: intent.text, name: desired["name"]))
            let startup = Self.startup(desired["startup"])
            let stopTimeout = startup.down.map(Double.init) ?? Self.defaultStopTimeout
            let record = computed.records.vms[String(vmid)]
            // A guest that powered itself off (QEMU kept by -no-shutdown) is stopped.
            var runState = observed.state
            if case .running(_, "shutdown") = runState {
                runState = .stopped
                // Nobody wants it running: quit the QEMU left behind, as qemu-server's qmeventd does.
                if case .run = intent {} else {
                    computed.stop(vmid, source: source, from: "powered off by the guest (QEMU kept by -no-shutdown)", timeout: stopTimeout,
                                  order: startup.order, operation: "quit QEMU", message: "clean up: the guest powered itself off")
                    continue
                }
            }
            if case .running = runState {} else if case .run = intent {} else { continue }
            // A stop needs no command line: a config that no longer builds one still stops.
            if case .running = runState, case .stop(let why) = intent {
                computed.stop(vmid, source: source, from: "running", timeout: stopTimeout, order: startup.order, message: "stop: \(why)")
                continue
            }

            // Without a QEMU binary there is nothing to start with (its version would read as 0.0.0).
            let isRunning: Bool = if case .running = runState { true } else { false }
            if !isRunning, case .run(let why) = intent, let missing = host.missingQEMU {
                computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .unavailable, source: source, changes: [],
                                                       message: "cannot start (\(why)): \(missing)"))
                continue
            }
            // The command line this config starts with, on this node.
            var forCommand = desired
            if !acceleration.kvm && forCommand["kvm"] != "0" { forCommand["kvm"] = "0" }
            var commandConfig = guest.config
            var main = GuestConfig.Section(role: .main, kind: .qemu)
            for key in forCommand.keys.sorted() { main[key] = forCommand[key] }
            commandConfig.main = main
            let arguments: [String]
            do {
                arguments = try QemuCommandLine(vmid: vmid, config: commandConfig, storage: state.storage, host: host,
                                                cpuModels: cpuModels).build().arguments
            } catch {
                // Running: its changes cannot be worked out; stopped: it cannot start.
                computed.problems.append(.error(source, isRunning ? "VM \(vmid): the config does not give a command line: \(error)"
                                                                : "VM \(vmid) cannot start: \(error)", code: .blocked))
                computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .blocked, source: source, changes: [],
                                                       message: "cannot build its command line: \(error)"
                                                           + (isRunning ? "; the running VM is left as it is" : "")))
                continue
            }
            let parsedArguments = QemuArguments(arguments)
            func startSpec() -> StartSpec {
                let nics = desired.keys.filter(QemuLiveChanges.isNIC).sorted()
                return StartSpec(arguments: arguments,
                                 taps: nics.compactMap { QemuLiveChanges.tapTarget(vmid: vmid, key: $0, value: desired[$0]!) },
                                 linkDown: nics.filter { QemuLiveChanges.parse(desired[$0]!)["link_down"] == "1" },
                                 running: desired, up: startup.up)
            }
            let writeBacks = GuestWriteBack(guest: guest, desired: desired, digest: state.digests[guest.path])
            let pendingKeys = writeBacks.pendingKeys
            func writeBack(keys generatedKeys: Set<String>, fromPending: Set<String>) -> (path: String, text: String, digest: String?)? {
                writeBacks.file(generated: generatedKeys, fromPending: fromPending)
            }
            let generatedChanges = GuestWriteBack.changes(generated: generated, effective: effective, guest: guest)
            let commandText = "start: "
                + QemuCommandLine.render(Array(arguments.prefix(3)), pretty: false).trimmingCharacters(in: .whitespacesAndNewlines)
                + " … (\(arguments.count) arguments, \(acceleration.kvm ? "KVM" : "TCG"))"

            switch runState {
            case .running(let pid, _):
                guard let record, record.pid == pid else {
                    computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .update, source: source,
                                                           changes: generatedChanges,
                                                           operations: ["record the running QEMU (pid \(pid)) as running this config"],
                                                           message: "adopt: QEMU was started outside pvectl; "
                                                                        + "its configuration is taken to be the file's"))
                    // Generated values are written now too, or the next edit of the file would generate others.
                    computed.vms.append(VMPlan(vmid: vmid, action: .adopt(pid: pid, running: desired),
                                               writeBack: writeBack(keys: Set(generated.keys), fromPending: []), order: startup.order))
                    continue
                }
                var changes: [QemuKeyChange] = []
                let keys = Set(desired.keys).union(record.running.keys).filter { !QemuLiveChanges.isConfigOnly($0) }
                for key in keys.sorted() where desired[key] != record.running[key] {
                    changes.append(QemuLiveChanges.change(vmid: vmid, key: key, running: record.running, desired: desired, arguments: parsedArguments,
                                                          present: observed.deviceIDs, emulated: forCommand["kvm"] == "0"))
                }
                // Drift: devices or tap wiring changed behind pvectl's back.
                var drift: [QemuKeyChange] = []
                for key in record.running.keys.sorted() where desired[key] == record.running[key] {
                    if QemuLiveChanges.isNIC(key) || (QemuLiveChanges.isHotplugDisk(key) && !QemuLiveChanges.isCDROM(desired[key])),
                       let ids = observed.deviceIDs, !ids.contains(key) {
                        var change = QemuLiveChanges.change(vmid: vmid, key: key, running: record.running.filter { $0.key != key },
                                                            desired: desired, arguments: parsedArguments)
                        change.old = "missing in the running QEMU (removed outside pvectl)"
                        drift.append(change)
                    } else if QemuLiveChanges.isNIC(key), let target = QemuLiveChanges.tapTarget(vmid: vmid, key: key, value: desired[key]!),
                              let master = observed.tapMasters[target.tap], master != target.bridge, master != "fwbr\(vmid)i\(key.dropFirst(3))" {
                        drift.append(QemuKeyChange(key: key, old: "\(target.tap) on \(master.isEmpty ? "no bridge" : master)",
                                                   new: "\(target.tap) on \(target.bridge)", changeClass: .live,
                                                   steps: [.attachTap(tap: target.tap, bridge: target.bridge, tag: target.tag)]))
                    }
                }
                let all = changes + drift
                let live = all.filter { $0.changeClass == .live }
                let restartNeeded = all.filter { $0.changeClass == .restart }
                let cosmetic = all.filter { $0.changeClass == .none }
                guard !all.isEmpty else { continue }
                let planned = all.map { change in
                    PlannedChange(field: change.key, old: change.old, new: change.new.map { new in change.reason.map { "\(new) (\($0))" } ?? new }
                                    ?? change.reason.map { "(removed; \($0))" }, changeClass: change.changeClass,
                                  source: guest.config.main.entry(change.key)?.location ?? guest.config.pending?.entry(change.key)?.location)
                }
                let wantsRestart = restart.map { $0.isEmpty || $0.contains(vmid) } ?? false
                if !restartNeeded.isEmpty && wantsRestart {
                    computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .replace, source: source,
                                                           changes: planned + generatedChanges,
                                                           operations: ["ACPI shutdown, hard stop after \(Int(stopTimeout)) s", commandText],
                                                           message: "restart (asked with --restart)"))
                    computed.vms.append(VMPlan(vmid: vmid, action: .restart(timeout: stopTimeout, startSpec()),
                                               writeBack: writeBack(keys: Set(generated.keys), fromPending: pendingKeys), order: startup.order))
                    continue
                }
                var running = record.running
                for change in live + cosmetic { running[change.key] = desired[change.key] }
                if live.isEmpty && cosmetic.isEmpty {
                    computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .pending, source: source, changes: planned,
                                                           message: "restart required: pvectl apply --restart --only qemu/\(vmid)"))
                    continue
                }
                let appliedKeys = Set((live + cosmetic).map(\.key))
                computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .update, source: source, changes: planned,
                                                       operations: live.flatMap(\.steps).map(\.description),
                                                       message: restartNeeded.isEmpty ? nil
                                                           : "\(restartNeeded.count) change(s) stay pending until a restart "
                                                                 + "(pvectl apply --restart --only qemu/\(vmid))"))
                computed.vms.append(VMPlan(vmid: vmid, action: .live(live.flatMap(\.steps), running: running),
                                           writeBack: writeBack(keys: appliedKeys.intersection(generated.keys),
                                                                fromPending: appliedKeys.intersection(pendingKeys)),
                                           order: startup.order))
            case .stopped, .crashed:
                guard case .run(let why) = intent else { continue }
                let blockedDisks = desired.keys.sorted().filter {
                    GuestConfig.isDriveKey($0) && !QemuLiveChanges.isCDROM(desired[$0])
                }.compactMap { key -> String? in
                    let volume = QemuLiveChanges.parse(desired[key]!)[""] ?? ""
                    guard let colon = volume.firstIndex(of: ":"), let reason = inactiveStorages[String(volume[..<colon])] else { return nil }
                    return "\(key) is on storage \(volume[..<colon]), which is not active here (\(reason))"
                }
                if !blockedDisks.isEmpty {
                    computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .unavailable, source: source, changes: [],
                                                           message: "cannot start (\(why)): " + blockedDisks.joined(separator: "; ")))
                    continue
                }
                var message = "start: \(why)"
                if case .crashed(let pid) = runState { message = "start again: QEMU (pid \(pid)) is gone (crashed or killed); \(why)" }
                else if record != nil { message = "start again: QEMU is not running; \(why)" }
                var operations: [String] = []
                let write = writeBack(keys: Set(generated.keys), fromPending: pendingKeys)
                if write != nil {
                    operations.append("write generated values\(pendingKeys.isEmpty ? "" : " and the pending changes") into \(guest.path)")
                }
                operations.append(commandText)
                let spec = startSpec()
                operations += spec.taps.map { "attach \($0.tap) to \($0.bridge)" + ($0.tag.map { " (VLAN \($0))" } ?? "") }
                operations += spec.linkDown.map { "set_link \($0) down" }
                computed.resources.append(ResourcePlan(kind: "qemu", name: String(vmid), action: .create, source: source,
                                                       changes: [PlannedChange(field: "state", old: observed.state.description, new: "running",
                                                                               changeClass: .live)]
                                                           + generatedChanges,
                                                       operations: operations, message: message))
                computed.vms.append(VMPlan(vmid: vmid, action: .start(spec), writeBack: write, order: startup.order))
            }
        }

        // A QEMU whose config is gone from this node is stopped.
        let frozenVMIDs = Set(state.frozen.filter { $0.kind == "qemu" }.compactMap { Int($0.name) })
        for vmid in driver.runningVMIDs().sorted() where !seen.contains(vmid) && !frozenVMIDs.contains(vmid) {
            guard ResourceSelector.select(only, kind: "qemu", name: String(vmid)) else { continue }
            computed.statuses.append(VMStatus(vmid: vmid, state: await driver.observe(vmid: vmid, taps: []).state,
                                              intent: "stopped (no config on this node)", name: nil))
            // The timeout of the config it was started with, when pvectl started it.
            let recorded = computed.records.vms[String(vmid)].map { Self.startup($0.running["startup"]) }
            let timeout = recorded?.down.map(Double.init) ?? Self.defaultStopTimeout
            computed.stop(vmid, source: nil, from: "running", timeout: timeout, order: recorded?.order,
                          message: "stop: no config for VM \(vmid) on node \(state.node)")
        }
        return computed
    }

    /// Each VM's operation for the startup order shared with the other guest kinds.
    public func guestOperations(_ computed: Computed) -> [GuestOperation] {
        computed.vms.map { plan in
            switch plan.action {
            case .stop: GuestOperation(kind: Self.name, vmid: plan.vmid, phase: .stop, order: plan.order)
            case .start(let spec): GuestOperation(kind: Self.name, vmid: plan.vmid, phase: .start, order: plan.order, up: spec.up)
            default: GuestOperation(kind: Self.name, vmid: plan.vmid, phase: .change, order: plan.order)
            }
        }
    }

    /// Stops first (highest `startup` order first), then live changes and
    /// restarts, then starts in `startup` order, waiting `up` seconds after each,
    /// each when `gate` gives it its turn among every guest kind's guests.
    public func apply(_ computed: Computed, gate: StartupGate, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        var outcome = ApplyOutcome()
        var records = computed.records
        func rank(_ plan: VMPlan) -> (Int, Int) { (plan.order ?? Int.max, plan.vmid) }
        let stops = computed.vms.filter { if case .stop = $0.action { true } else { false } }.sorted { rank($0) > rank($1) }
        let starts = computed.vms.filter { if case .start = $0.action { true } else { false } }.sorted { rank($0) < rank($1) }
        let others = computed.vms.filter { plan in
            switch plan.action {
            case .stop, .start: false
            default: true
            }
        }.sorted { rank($0) < rank($1) }

        for plan in stops + others + starts {
            let vmid = plan.vmid
            await gate.turn(kind: Self.name, vmid: vmid)
            do {
                if let writeBack = plan.writeBack {
                    try driver.writeConfig(path: writeBack.path, text: writeBack.text, expectedDigest: writeBack.digest)
                    progress("qemu/\(vmid): wrote \(writeBack.path)")
                }
                switch plan.action {
                case .stop(let timeout):
                    let how = try await driver.stop(vmid: vmid, timeout: timeout)
                    records.vms[String(vmid)] = nil
                    progress("qemu/\(vmid): stopped (\(how))")
                case .start(let spec):
                    records.vms[String(vmid)] = try await start(vmid: vmid, spec, progress: progress)
                    if let up = spec.up, up > 0, !gate.isLastStart(kind: Self.name, vmid: vmid) {
                        progress("qemu/\(vmid): waiting \(up) s (startup up=\(up)) before the next guest")
                        try await clock.sleep(seconds: Double(up))
                    }
                case .restart(let timeout, let spec):
                    let how = try await driver.stop(vmid: vmid, timeout: timeout)
                    progress("qemu/\(vmid): stopped (\(how))")
                    records.vms[String(vmid)] = try await start(vmid: vmid, spec, progress: progress)
                case .live(let steps, let running):
                    for step in steps {
                        progress("qemu/\(vmid): \(step)")
                        try await driver.perform(vmid: vmid, step)
                    }
                    records.vms[String(vmid)]?.running = running
                case .adopt(let pid, let running):
                    records.vms[String(vmid)] = QemuVMRecord(pid: pid, running: running, startedAt: clock.now(),
                                                             accelerator: computed.acceleration?.kvm == false ? "tcg" : "kvm")
                    progress("qemu/\(vmid): adopted the running QEMU (pid \(pid))")
                }
                outcome.applied.append(String(vmid))
            } catch {
                outcome.failed.append(.init(name: String(vmid), message: "\(error)"))
            }
            await gate.done(kind: Self.name, vmid: vmid)
            try store.save(records, as: "qemu")
        }
        return outcome
    }

    func start(vmid: Int, _ spec: StartSpec, progress: @Sendable (String) -> Void) async throws -> QemuVMRecord {
        let pid = try await driver.start(vmid: vmid, arguments: spec.arguments)
        progress("qemu/\(vmid): started (pid \(pid))")
        for tap in spec.taps {
            try await driver.perform(vmid: vmid, .attachTap(tap: tap.tap, bridge: tap.bridge, tag: tap.tag))
        }
        for nic in spec.linkDown {
            try await driver.perform(vmid: vmid, .setLink(nic, up: false))
        }
        return QemuVMRecord(pid: pid, running: spec.running, startedAt: clock.now(),
                            accelerator: spec.arguments.contains { $0.contains("accel=tcg") } ? "tcg" : "kvm")
    }
}
