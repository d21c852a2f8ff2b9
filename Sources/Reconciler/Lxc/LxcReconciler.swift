import Foundation
import Resources

/// What pvectl knows about a container it started: the config it runs.
public struct LxcContainerRecord: Codable, Sendable, Hashable {
    public var initPID: Int32
    /// The effective config at start, plus the changes applied live since.
    public var running: [String: String]
    public var startedAt: Date
}

public struct LxcRecords: Codable, Sendable {
    public var containers: [String: LxcContainerRecord] = [:]
    public init() {}
}

/// A container's resource limits, parsed once from its config into what the cgroup files take. A value no cgroup file can
/// hold (memory beyond 2^63 bytes, a non-finite number) is an error here, where upstream would write a number the kernel
/// refuses at start.
public struct LxcLimits: Sendable, Hashable {
    public var memoryBytes: Int
    /// memory.high on a v2 host: 128 MiB below the limit from 16 GiB up, else 1016/1024 of it.
    public var memoryHighBytes: Int
    public var swapBytes: Int
    /// memory.memsw.limit_in_bytes on a v1 host.
    public var memoryAndSwapBytes: Int
    /// CPU time per 100 ms period in microseconds; nil is unlimited.
    public var cpuQuota: Int?
    public var cpuunits: Int?

    public struct InvalidLimit: Error, CustomStringConvertible {
        /// The key whose value cannot be used.
        public var key: String
        public var description: String
        /// A number, but one no cgroup file holds (the spec's checks do not catch it; a non-number they do).
        public var outOfRange: Bool
    }

    /// `value` looks a key up in the config (pve-container's defaults: 512 MiB memory, no swap, no CPU limit).
    public init(_ value: (String) -> String?) throws(InvalidLimit) {
        func number(_ key: String, default fallback: Double) throws(InvalidLimit) -> Double {
            guard let text = value(key) else { return fallback }
            guard let number = Double(text), number.isFinite, number >= 0 else {
                throw InvalidLimit(key: key, description: "\(key): '\(text)' is not a non-negative number", outOfRange: false)
            }
            return number
        }
        func scaled(_ number: Double, by factor: Double, _ key: String, _ what: String) throws(InvalidLimit) -> Int {
            let scaled = (number * factor).rounded(.towardZero)
            // Int(exactly:) is nil past Int.max; Double(Int.max) rounds up to 2^63, hence the strict bound.
            guard scaled < Double(Int.max), let result = Int(exactly: scaled) else {
                throw InvalidLimit(key: key, description: "\(what) is more than a cgroup limit can hold", outOfRange: true)
            }
            return result
        }
        let mib = 1024.0 * 1024
        let memory = try number("memory", default: 512)
        let swap = try number("swap", default: 0)
        let cpulimit = try number("cpulimit", default: 0)
        let memoryText = "memory \(value("memory") ?? "") MiB"
        memoryBytes = try scaled(memory, by: mib, "memory", memoryText)
        swapBytes = try scaled(swap, by: mib, "swap", "swap \(value("swap") ?? "") MiB")
        memoryAndSwapBytes = try scaled(memory + swap, by: mib, "swap", "memory plus swap")
        memoryHighBytes = memory >= 16 * 1024 ? try scaled(memory - 128, by: mib, "memory", memoryText)
            : try scaled(memory, by: 1024 * 1016, "memory", memoryText)
        cpuQuota = cpulimit > 0 ? try scaled(cpulimit, by: 100_000, "cpulimit", "cpulimit \(value("cpulimit") ?? "")") : nil
        cpuunits = value("cpuunits").flatMap { Int($0) }
    }

    public init(_ config: [String: String]) throws(InvalidLimit) {
        try self.init { config[$0] }
    }

    /// `(controller, file, value)` in writing order, as pve-container writes them on a live change; `current` (by
    /// `controller/file`) decides the order of the memory limits on a v1 host, where the memory+swap limit may never be
    /// below the memory limit.
    public func files(layout: LxcHostFacts.CgroupLayout,
                      current: [String: String] = [:]) -> [(controller: String, file: String, value: String)] {
        switch layout {
        case .v1:
            let limit = ("memory", "memory.limit_in_bytes", String(memoryBytes))
            let withSwap = ("memory", "memory.memsw.limit_in_bytes", String(memoryAndSwapBytes))
            let growing = (current["memory/memory.limit_in_bytes"].flatMap { Int($0) } ?? 0) < memoryBytes
            return (growing ? [withSwap, limit] : [limit, withSwap]) + [
                ("cpu", "cpu.cfs_period_us", "100000"),
                ("cpu", "cpu.cfs_quota_us", cpuQuota.map(String.init) ?? "-1"),
                ("cpu", "cpu.shares", String(max(cpuunits ?? 1024, 2))),
            ]
        case .v2:
            return [
                ("", "memory.max", String(memoryBytes)),
                ("", "memory.high", String(memoryHighBytes)),
                ("", "memory.swap.max", String(swapBytes)),
                ("", "cpu.max", "\(cpuQuota.map(String.init) ?? "max") 100000"),
                ("", "cpu.weight", String(min(cpuunits ?? 100, 10_000))),
            ]
        }
    }

    /// The keys whose live change is a write to the limit cgroup.
    static let keys: Set<String> = ["memory", "swap", "cpulimit", "cpuunits"]
}

/// The LXC kind: which containers run, started from their config (rootfs and mount points mounted, the guest set up,
/// an empty rootfs populated once from its OS template), stopped cleanly then by force, and changed live where
/// `pct set` does: limits in the limit cgroup, NICs; everything else waits (pending) for a restart.
public struct LxcReconciler: Sendable {
    public var driver: any LxcDriver
    public var store: StateStore
    public var clock: any ReconcilerClock
    /// Restart running containers whose changes need it: nil none, empty all, else these VMIDs.
    public var restart: Set<Int>?

    public init(driver: any LxcDriver, store: StateStore, restart: Set<Int>? = nil, clock: any ReconcilerClock = SystemClock()) {
        self.driver = driver
        self.store = store
        self.restart = restart
        self.clock = clock
    }

    public enum Action: Sendable {
        case start(ContainerStartSpec, running: [String: String], up: Int?)
        case stop(timeout: Double)
        case restart(timeout: Double, ContainerStartSpec, running: [String: String])
        case live([LxcLiveStep], running: [String: String])
        /// Take over a container started elsewhere: its config is taken to be the file's.
        case adopt(initPID: Int32, running: [String: String])
    }

    public struct ContainerPlan: Sendable {
        public var vmid: Int
        public var action: Action
        public var writeBack: (path: String, text: String, digest: String?)?
        public var order: Int?
    }

    public struct ContainerStatus: Sendable {
        public var vmid: Int
        public var state: ContainerRunState
        public var intent: String
        public var hostname: String?
    }

    public struct Computed: KindComputation {
        public var resources: [ResourcePlan] = []
        public var containers: [ContainerPlan] = []
        public var records = LxcRecords()
        public var problems: [Diagnostic] = []
        public var notes: [String] = []
        public var statuses: [ContainerStatus] = []
        public init() {}
    }

    /// pct's default shutdown timeout.
    static let defaultStopTimeout = 60.0

    /// Keys a running container takes as they are: they change nothing in it.
    static let configOnlyKeys: Set<String> = ["onboot", "startup", "protection", "tags", "description", "lock", "template", "digest",
                                              "hookscript"]

    /// The OS template named in a container's description: a line `pvectl ostemplate=STORAGE:vztmpl/FILE`. Proxmox keeps
    /// description lines as notes, so its own tools read such a config without complaint.
    public static func osTemplate(_ section: GuestConfig.Section) -> String? {
        for line in section.description {
            let words = line.split(separator: " ")
            guard words.count == 2, words[0] == "pvectl", words[1].hasPrefix("ostemplate=") else { continue }
            return String(words[1].dropFirst("ostemplate=".count))
        }
        return nil
    }

    /// A MAC for every NIC without `hwaddr`, derived from the file so a plan and its apply agree; as the new values.
    static func generatedValues(vmid: Int, config: [String: String], seed: String, macPrefix: String) -> [String: String] {
        var result: [String: String] = [:]
        for (key, value) in config where isNIC(key) && PropertyString(parsing: value)["hwaddr"] == nil {
            result[key] = value + ",hwaddr=" + QemuReconciler.macAddress(seed: "\(seed)/\(key)", prefix: macPrefix)
        }
        return result
    }

    /// What a container config needs to start on any node, checked by `pvectl validate` and every plan alike (through
    /// `TreeValidator`): an ostype and a rootfs (warnings: Proxmox reads such a file, it cannot start), an OS template line
    /// that names a template volume of a known storage, host-managed NICs without SLAAC.
    public static func check(_ guest: DesiredState.Guest, storages: [String: DesiredStorage]?) -> [Diagnostic] {
        var problems: [Diagnostic] = []
        let main = guest.config.main
        let file = SourceLocation(file: guest.path, line: 1)
        for (key, why) in [("ostype", "no LXC config"), ("rootfs", "no root file system")] where main[key] == nil {
            problems.append(.warning(file, "missing '\(key)': the container cannot start (\(why))", code: .missingValue))
        }
        for entry in main.entries where isNIC(entry.key) {
            let nic = PropertyString(parsing: entry.value)
            if nic["host-managed"] == "1" && nic["ip6"] == "auto" {
                problems.append(.error(entry.valueLocation, "\(entry.key): SLAAC (ip6=auto) is not supported with host-managed=1",
                                       code: .invalidValue))
            }
        }
        do {
            _ = try LxcLimits(QemuReconciler.effectiveConfig(guest.config))
        } catch where error.outOfRange {
            let location = guest.config.pending?.entry(error.key)?.valueLocation ?? main.entry(error.key)?.valueLocation ?? file
            problems.append(.error(location, "\(error.description)", code: .invalidValue))
        } catch {}
        if let template = osTemplate(main) {
            let storageID = String(template.prefix { $0 != ":" })
            let volname = template.dropFirst(storageID.count + 1)
            if !template.contains(":") || !volname.hasPrefix("vztmpl/") || volname.count <= "vztmpl/".count {
                problems.append(.error(file, "pvectl ostemplate=\(template): expected STORAGE:vztmpl/FILE", code: .invalidValue))
            } else if let storages, storages[storageID] == nil {
                problems.append(.error(file, "pvectl ostemplate=\(template): storage '\(storageID)' is not defined in storage.cfg", code: .reference))
            } else if let storage = storages?[storageID], !storage.content.contains("vztmpl") {
                problems.append(.warning(file, "pvectl ostemplate=\(template): storage '\(storageID)' does not have content vztmpl",
                                         code: .reference))
            }
        }
        return problems
    }

    static func isNIC(_ key: String) -> Bool { key.hasPrefix("net") && Int(key.dropFirst(3)) != nil }
    static func isMountPoint(_ key: String) -> Bool { key.hasPrefix("mp") && Int(key.dropFirst(2)) != nil }

    /// The main section with the desired values (pending applied); raw `lxc.*` lines kept as written.
    static func section(_ guest: DesiredState.Guest, desired: [String: String]) -> GuestConfig.Section {
        var section = guest.config.main
        section.entries.removeAll { !$0.isRawLXC && desired[$0.key] == nil }
        for key in desired.keys.sorted() where !key.hasPrefix("lxc.") { section[key] = desired[key] }
        return section
    }

    public func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed {
        var computed = Computed()
        computed.records = try store.load(Self.name, as: LxcRecords.self) ?? LxcRecords()
        let storageInput = context.input(StorageReconciler.self)
        let inactive = storageInput?.inactiveStorages(fixedFirst: context.planned.contains(StorageReconciler.name)) ?? [:]
        // Volumes the storage kind cannot allocate (a subvol size a dir storage cannot hold, ...), by volume id.
        var unallocatable: [String: String] = [:]
        for volume in storageInput?.resources ?? [] where volume.action == .blocked && volume.name.contains(":") {
            unallocatable[volume.name] = volume.message ?? volume.changes.first?.new ?? "blocked"
        }
        let only = context.scope
        let named = Set(context.named.filter { $0.kind == Self.name }.compactMap { $0.name.flatMap { Int($0) } })
        let haStates = state.haStates(type: "ct")
        let macPrefix = state.datacenter?["mac_prefix"] ?? "BC:24:11"
        let storages = state.storage.map { StorageDesiredState.storagesByID(StorageDesiredState.storages(from: $0, node: state.node).storages) }
            ?? [:]
        var seen: Set<Int> = []
        let containers = state.localGuests.filter { $0.kind == .lxc }.sorted { $0.vmid < $1.vmid }
        // This host's facts, asked once for every bridge and device the containers in scope name.
        let inScope = containers.filter { ResourceSelector.select(only, kind: Self.name, name: String($0.vmid)) }
        var bridges: Set<String> = [], devices: Set<String> = []
        for guest in inScope {
            for entry in guest.config.main.entries + (guest.config.pending?.entries ?? []) {
                let value = PropertyString(parsing: entry.value)
                if Self.isNIC(entry.key), let bridge = value["bridge"] { bridges.insert(bridge) }
                if entry.key.hasPrefix("dev"), Int(entry.key.dropFirst(3)) != nil, let path = value["path"] ?? value.bareValue {
                    devices.insert(path)
                }
            }
        }
        var hostFacts: LxcHostFacts?
        var factsError: String?
        if !inScope.isEmpty {
            do {
                hostFacts = try await driver.hostFacts(bridges: bridges.sorted(), devicePaths: devices.sorted())
            } catch {
                factsError = "\(error)"
            }
        }

        for guest in containers {
            let vmid = guest.vmid
            seen.insert(vmid)
            guard ResourceSelector.select(only, kind: Self.name, name: String(vmid)) else { continue }
            let source = SourceLocation(file: guest.path, line: 1)
            func add(_ action: ResourcePlan.Action, changes: [PlannedChange] = [], operations: [String] = [], _ message: String?) {
                computed.resources.append(ResourcePlan(kind: Self.name, name: String(vmid), action: action, source: source, changes: changes,
                                                       operations: operations, message: message))
            }
            if state.frozen.contains(ResourceID(kind: Self.name, name: String(vmid))) {
                computed.problems += state.diagnostics.filter { $0.severity == .error && $0.location.file == guest.path }
                add(.blocked, "the config cannot be read; the container is left as it is")
                continue
            }
            let effective = QemuReconciler.effectiveConfig(guest.config)
            let generated = Self.generatedValues(vmid: vmid, config: effective, seed: "\(state.node)/\(vmid)/\(state.digests[guest.path] ?? "")",
                                                 macPrefix: macPrefix)
            var desired = effective
            for (key, value) in generated { desired[key] = value }
            let intent = QemuReconciler.intent(vmid: vmid, config: desired, haState: haStates[vmid], named: named.contains(vmid))
            let nics = desired.keys.filter(Self.isNIC).sorted().compactMap { key in
                Int(key.dropFirst(3)).map { ContainerNIC(vmid: vmid, index: $0, value: desired[key]!) }
            }
            if let facts = hostFacts, !facts.ingressPolicing {
                for nic in nics where nic.rate != nil {
                    computed.notes.append("lxc/\(vmid): net\(nic.index) rate=\(nic.rate!) limits traffic to the container only: this kernel "
                                          + "cannot police ingress (no act_police module)")
                }
            }
            let record = computed.records.containers[String(vmid)]
            var facts = hostFacts
            // A bridge the network kind creates in this same run: its MTU from the interfaces file until it exists (the
            // kind is planned again after the network applied, with the bridge's own).
            if context.planned.contains(NetworkReconciler.name), let stanzas = state.interfaces?.ifaceStanzas {
                for nic in nics where facts?.bridgeMTUs[nic.bridge] == nil {
                    guard let declared = stanzas[nic.bridge] else { continue }
                    facts?.bridgeMTUs[nic.bridge] = declared.compactMap { $0["mtu"].flatMap { Int($0) } }.last ?? 1500
                }
            }
            let limits: LxcLimits
            do {
                limits = try LxcLimits(desired)
            } catch {
                // `check` reported it (or the spec's checks did, for a value that is no number).
                add(.blocked, "its limits cannot be set (\(error)); the container is left as it is")
                continue
            }
            let limitFiles = facts.map { facts in
                limits.files(layout: facts.cgroupLayout).map { $0.controller.isEmpty ? $0.file : "\($0.controller)/\($0.file)" }
            } ?? []
            let observed = await driver.observe(vmid: vmid, limits: limitFiles, nics: nics.map(\.veth))
            computed.statuses.append(ContainerStatus(vmid: vmid, state: observed.state, intent: intent.text, hostname: desired["hostname"]))
            if let lock = desired["lock"] {
                add(.blocked, "locked (\(lock)): left as it is until the lock is removed")
                continue
            }
            let startup = QemuReconciler.startup(desired["startup"])
            let stopTimeout = startup.down.map(Double.init) ?? Self.defaultStopTimeout
            let isRunning = observed.state != .stopped
            if !isRunning, case .run = intent {} else if !isRunning { continue }
            if isRunning, case .stop(let why) = intent {
                add(.delete, changes: [PlannedChange(field: "state", old: "running", new: "stopped", changeClass: .live)],
                    operations: ["clean shutdown, hard stop after \(Int(stopTimeout)) s"], "stop: \(why)")
                computed.containers.append(ContainerPlan(vmid: vmid, action: .stop(timeout: stopTimeout), writeBack: nil, order: startup.order))
                continue
            }

            let writeBacks = GuestWriteBack(guest: guest, desired: desired, digest: state.digests[guest.path])
            let pendingKeys = writeBacks.pendingKeys
            func writeBack(keys generatedKeys: Set<String>, fromPending: Set<String>) -> (path: String, text: String, digest: String?)? {
                writeBacks.file(generated: generatedKeys, fromPending: fromPending)
            }
            let generatedChanges = GuestWriteBack.changes(generated: generated, effective: effective, guest: guest)

            // A rootfs or mount point as the host has it: a host path, or a volume of a storage this node serves.
            let volumes = Dictionary(StorageDesiredState.volumes(of: guest, storages: storages).volumes.map { ($0.key, $0) },
                                     uniquingKeysWith: { first, _ in first })
            func containerMount(_ key: String) -> Result<ContainerMount, StartProblem> {
                let options = PropertyString(parsing: desired[key] ?? "")
                guard let volumeText = options["volume"] ?? options.bareValue else { return .failure(.blocked("\(key) names no volume")) }
                let path = key == "rootfs" ? "/" : (options["mp"] ?? "")
                guard path.hasPrefix("/") else { return .failure(.blocked("\(key): mp= must be an absolute path inside the container")) }
                let readOnly = options["ro"] == "1"
                if volumeText.hasPrefix("/") {
                    return .success(ContainerMount(key: key, source: volumeText, type: key == "rootfs" ? .directory : .bind, path: path,
                                                   readOnly: readOnly))
                }
                let storageID = String(volumeText.prefix { $0 != ":" })
                if let reason = unallocatable[volumeText] { return .failure(.blocked("\(key): volume \(volumeText) is blocked: \(reason)")) }
                if let reason = inactive[storageID] {
                    return .failure(.unavailable("\(key) is on storage \(storageID), which is not active here (\(reason))"))
                }
                guard let volume = volumes[key] else {
                    return .failure(.blocked("\(key): volume \(volumeText) is not on a storage this node serves as files or devices"))
                }
                let type: ContainerMount.SourceType = volume.hostPath.hasPrefix("/dev/") ? .block
                    : volume.volume.format == "subvol" ? .directory : .image
                return .success(ContainerMount(key: key, source: volume.hostPath, type: type, path: path, readOnly: readOnly))
            }

            // What a start would run: the LXC config, the file systems and the template.
            func startSpec() -> Result<(ContainerStartSpec, [String]), StartProblem> {
                guard let facts else { return .failure(.unavailable(factsError ?? "LXC is not installed")) }
                var mounts: [ContainerMount] = []
                var operations: [String] = []
                let mountKeys = desired.keys.filter { $0 == "rootfs" || Self.isMountPoint($0) }
                for key in mountKeys.sorted() {
                    switch containerMount(key) {
                    case .success(let mount): mounts.append(mount)
                    case .failure(let problem): return .failure(problem)
                    }
                }
                guard let rootfs = mounts.first(where: { $0.key == "rootfs" }) else { return .failure(.blocked("missing 'rootfs' configuration")) }
                mounts = [rootfs] + mounts.filter { $0.key != "rootfs" }.sorted { $0.path < $1.path }
                operations.append("mount \(rootfs.type == .image ? "the image" : rootfs.type == .block ? "the device" : "the directory") "
                                  + "\(rootfs.source) as the rootfs" + mounts.dropFirst().map { ", \($0.key) on \($0.path)" }.joined())

                var template: (volume: String, path: String)?
                if let named = Self.osTemplate(guest.config.main) {
                    let storageID = String(named.prefix { $0 != ":" })
                    guard let storage = storages[storageID] else {
                        return .failure(.blocked("the OS template \(named) is on storage \(storageID), which this node does not have"))
                    }
                    let volname = String(named.dropFirst(storageID.count + 1))
                    guard let path = try? StorageVolumes.filesystemPath(path: storage.path ?? "", contentDirectories: storage.contentDirectories,
                                                                         volname: volname).path, volname.hasPrefix("vztmpl/") else {
                        return .failure(.blocked("the OS template \(named) is not a vztmpl volume of a directory storage"))
                    }
                    template = (named, path)
                }
                switch driver.holdsData(rootfs) {
                case true?:
                    break
                case false?:
                    guard let template else {
                        return .failure(.blocked("the rootfs \(rootfs.source) is empty and the config names no OS template "
                                                 + "(a description line 'pvectl ostemplate=STORAGE:vztmpl/FILE')"))
                    }
                    guard driver.fileExists(template.path) else {
                        return .failure(.blocked("the rootfs is empty and its OS template \(template.volume) is missing (\(template.path))"))
                    }
                    operations.append("populate the empty rootfs from \(template.volume)")
                case nil:
                    if let template {
                        operations.append("populate the rootfs from \(template.volume) if it is empty")
                    }
                }
                let arch = desired["arch"] ?? driver.architecture(rootfs) ?? "amd64"
                let section = Self.section(guest, desired: desired)
                let generatedConfig: LxcConfig
                do {
                    generatedConfig = try LxcConfig.generate(vmid: vmid, config: section, host: facts, arch: arch)
                } catch {
                    return .failure(.blocked("cannot generate its LXC config: \(error)"))
                }
                operations.append("guest setup (\(desired["ostype"] ?? "?")), lxc-start")
                operations += nics.map { "put \($0.veth) on \($0.bridge)" + ($0.tag.map { " (VLAN \($0))" } ?? "")
                    + ($0.rate.map { ", \($0) MB/s" } ?? "") }
                let spec = ContainerStartSpec(
                    vmid: vmid, config: generatedConfig.config, seccompRules: generatedConfig.seccompRules, mounts: mounts, nics: nics,
                    guestConfig: section.entries.map { "\($0.key): \($0.value)\n" }.joined(), template: template?.path,
                    templateVolume: template?.volume,
                    unprivileged: desired["unprivileged"] == "1" || section.entries.contains { $0.key == "lxc.idmap" })
                return .success((spec, operations))
            }

            guard isRunning, let initPID = observed.state.initPID else {
                // Stopped and should run.
                guard case .run(let why) = intent else { continue }
                switch startSpec() {
                case .failure(.unavailable(let reason)): add(.unavailable, "cannot start (\(why)): \(reason)")
                case .failure(.blocked(let reason)):
                    computed.problems.append(.error(source, "container \(vmid) cannot start: \(reason)", code: .blocked))
                    add(.blocked, "cannot start (\(why)): \(reason)")
                case .success(let (spec, operations)):
                    let write = writeBack(keys: Set(generated.keys), fromPending: pendingKeys)
                    let message = record != nil ? "start again: the container is not running; \(why)" : "start: \(why)"
                    add(.create, changes: [PlannedChange(field: "state", old: "stopped", new: "running", changeClass: .live)] + generatedChanges,
                        operations: (write != nil ? ["write generated values\(pendingKeys.isEmpty ? "" : " and the pending changes") "
                                                     + "into \(guest.path)"] : []) + operations, message)
                    computed.containers.append(ContainerPlan(vmid: vmid, action: .start(spec, running: desired, up: startup.up),
                                                             writeBack: write, order: startup.order))
                }
                continue
            }

            guard let record, record.initPID == initPID else {
                add(.update, changes: generatedChanges, operations: ["record the running container (init pid \(initPID)) as running this config"],
                    "adopt: the container was started outside pvectl; its configuration is taken to be the file's")
                computed.containers.append(ContainerPlan(vmid: vmid, action: .adopt(initPID: initPID, running: desired),
                                                         writeBack: writeBack(keys: Set(generated.keys), fromPending: []), order: startup.order))
                continue
            }

            // Running, started by pvectl: changes since, and drift.
            var live: [(key: String, steps: [LxcLiveStep])] = []
            var restartKeys: [String] = []
            var cosmetic: [String] = []
            let keys = Set(desired.keys).union(record.running.keys)
            for key in keys.sorted() where desired[key] != record.running[key] {
                if Self.configOnlyKeys.contains(key) {
                    cosmetic.append(key)
                } else if LxcLimits.keys.contains(key) {
                    live.append((key, []))
                } else if Self.isMountPoint(key), record.running[key] == nil, case .success(let mount) = containerMount(key) {
                    // A new mount point is hot-plugged, as pct set does; a changed or removed one waits for a restart.
                    live.append((key, [.addMountPoint(mount, unprivileged: desired["unprivileged"] == "1")]))
                } else if Self.isNIC(key), let index = Int(key.dropFirst(3)) {
                    let old = record.running[key].map { ContainerNIC(vmid: vmid, index: index, value: $0) }
                    let new = desired[key].map { ContainerNIC(vmid: vmid, index: index, value: $0) }
                    live.append((key, Self.nicSteps(old: old, new: new)))
                } else {
                    restartKeys.append(key)
                }
            }
            // Limits: whatever the limit cgroup holds that the config does not say, including changes made behind pvectl's back.
            var limitSteps: [LxcLiveStep] = []
            if let facts {
                for file in limits.files(layout: facts.cgroupLayout, current: observed.limits) {
                    let name = file.controller.isEmpty ? file.file : "\(file.controller)/\(file.file)"
                    if let current = observed.limits[name], current != file.value {
                        limitSteps.append(.setLimit(controller: file.controller, file: file.file, value: file.value))
                    }
                }
            }
            var drift: [PlannedChange] = []
            if !limitSteps.isEmpty && !live.contains(where: { LxcLimits.keys.contains($0.key) }) {
                drift.append(PlannedChange(field: "limits", old: "changed outside pvectl", new: "as the config says", changeClass: .live))
            }
            var nicSteps: [LxcLiveStep] = live.flatMap(\.steps)
            for nic in nics where record.running["net\(nic.index)"] == desired["net\(nic.index)"] {
                guard let master = observed.nicMasters[nic.veth] else {
                    drift.append(PlannedChange(field: "net\(nic.index)", old: "\(nic.veth) is gone", new: "\(nic.veth) on \(nic.bridge)",
                                               changeClass: .live))
                    nicSteps += [.addNIC(nic)]
                    continue
                }
                if master != nic.bridge && master != "fwbr\(vmid)i\(nic.index)" {
                    drift.append(PlannedChange(field: "net\(nic.index)", old: "\(nic.veth) on \(master.isEmpty ? "no bridge" : master)",
                                               new: "\(nic.veth) on \(nic.bridge)", changeClass: .live))
                    nicSteps.append(.attachNIC(nic))
                }
            }
            let changes = live.map { change in
                PlannedChange(field: change.key, old: record.running[change.key], new: desired[change.key] ?? "(removed)", changeClass: .live,
                              source: guest.config.main.entry(change.key)?.location ?? guest.config.pending?.entry(change.key)?.location)
            } + restartKeys.map { key in
                PlannedChange(field: key, old: record.running[key], new: desired[key] ?? "(removed)", changeClass: .restart,
                              source: guest.config.main.entry(key)?.location ?? guest.config.pending?.entry(key)?.location)
            } + cosmetic.map { key in
                PlannedChange(field: key, old: record.running[key], new: desired[key] ?? "(removed)", changeClass: .none)
            }
            let allChanges = changes + drift
            guard !allChanges.isEmpty || !limitSteps.isEmpty || !nicSteps.isEmpty else { continue }
            let wantsRestart = restart.map { $0.isEmpty || $0.contains(vmid) } ?? false
            if !restartKeys.isEmpty && wantsRestart {
                switch startSpec() {
                case .success(let (spec, operations)):
                    add(.replace, changes: allChanges, operations: ["clean shutdown, hard stop after \(Int(stopTimeout)) s"] + operations,
                        "restart (asked with --restart)")
                    computed.containers.append(ContainerPlan(vmid: vmid, action: .restart(timeout: stopTimeout, spec, running: desired),
                                                             writeBack: writeBack(keys: Set(generated.keys), fromPending: pendingKeys),
                                                             order: startup.order))
                case .failure(.unavailable(let reason)), .failure(.blocked(let reason)):
                    add(.blocked, changes: allChanges, "cannot restart: \(reason); the running container is left as it is")
                }
                continue
            }
            var running = record.running
            let appliedKeys = Set(live.map(\.key) + cosmetic)
            for key in appliedKeys { running[key] = desired[key] }
            let steps = limitSteps + nicSteps
            if steps.isEmpty && cosmetic.isEmpty {
                add(.pending, changes: allChanges, "restart required: pvectl apply --restart --only lxc/\(vmid)")
                continue
            }
            add(.update, changes: allChanges, operations: steps.map(\.description),
                restartKeys.isEmpty ? nil : "\(restartKeys.count) change(s) stay pending until a restart (pvectl apply --restart --only lxc/\(vmid))")
            computed.containers.append(ContainerPlan(vmid: vmid, action: .live(steps, running: running),
                                                     writeBack: writeBack(keys: appliedKeys.intersection(generated.keys),
                                                                          fromPending: appliedKeys.intersection(pendingKeys)),
                                                     order: startup.order))
        }

        // A container whose config is gone from this node is stopped.
        let frozen = Set(state.frozen.filter { $0.kind == Self.name }.compactMap { Int($0.name) })
        for vmid in await driver.runningContainers().sorted() where !seen.contains(vmid) && !frozen.contains(vmid) {
            guard ResourceSelector.select(only, kind: Self.name, name: String(vmid)) else { continue }
            let observed = await driver.observe(vmid: vmid, limits: [], nics: [])
            computed.statuses.append(ContainerStatus(vmid: vmid, state: observed.state, intent: "stopped (no config on this node)", hostname: nil))
            let recorded = computed.records.containers[String(vmid)].map { QemuReconciler.startup($0.running["startup"]) }
            let timeout = recorded?.down.map(Double.init) ?? Self.defaultStopTimeout
            computed.resources.append(ResourcePlan(kind: Self.name, name: String(vmid), action: .delete, source: nil,
                                                   changes: [PlannedChange(field: "state", old: "running", new: "stopped", changeClass: .live)],
                                                   operations: ["clean shutdown, hard stop after \(Int(timeout)) s"],
                                                   message: "stop: no config for container \(vmid) on node \(state.node)"))
            computed.containers.append(ContainerPlan(vmid: vmid, action: .stop(timeout: timeout), writeBack: nil, order: recorded?.order))
        }
        return computed
    }

    enum StartProblem: Error {
        case unavailable(String)
        case blocked(String)
    }

    /// A NIC's change on a running container, as pct set does it: a bridge or VLAN change moves the host end, an address
    /// change readdresses the guest side, a rate change replaces the limit; a new MAC, name or MTU is a new NIC (removed,
    /// then added).
    static func nicSteps(old: ContainerNIC?, new: ContainerNIC?) -> [LxcLiveStep] {
        switch (old, new) {
        case (nil, let new?): return [.addNIC(new)]
        case (let old?, nil): return [.removeNIC(veth: old.veth)]
        case (let old?, let new?):
            if old.hwaddr != new.hwaddr || old.name != new.name || old.mtu != new.mtu { return [.removeNIC(veth: old.veth), .addNIC(new)] }
            var steps: [LxcLiveStep] = []
            if old.bridge != new.bridge || old.tag != new.tag { steps.append(.attachNIC(new)) }
            if old.ip != new.ip || old.ip6 != new.ip6 || old.gw != new.gw || old.gw6 != new.gw6 { steps.append(.setAddresses(new)) }
            // A veth that moves keeps its qdiscs; a new limit is set either way.
            if old.rate != new.rate { steps.append(.setRate(new)) }
            return steps
        case (nil, nil): return []
        }
    }

    /// Each container's operation for the startup order shared with the other guest kinds.
    public func guestOperations(_ computed: Computed) -> [GuestOperation] {
        computed.containers.map { plan in
            switch plan.action {
            case .stop: GuestOperation(kind: Self.name, vmid: plan.vmid, phase: .stop, order: plan.order)
            case .start: GuestOperation(kind: Self.name, vmid: plan.vmid, phase: .start, order: plan.order, up: Self.up(plan))
            default: GuestOperation(kind: Self.name, vmid: plan.vmid, phase: .change, order: plan.order)
            }
        }
    }

    /// Stops first (highest `startup` order first), then live changes and restarts, then starts in `startup` order,
    /// waiting `up` seconds after each, each when `gate` gives it its turn among every guest kind's guests.
    public func apply(_ computed: Computed, gate: StartupGate, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        var outcome = ApplyOutcome()
        var records = computed.records
        func rank(_ plan: ContainerPlan) -> (Int, Int) { (plan.order ?? Int.max, plan.vmid) }
        func isStop(_ plan: ContainerPlan) -> Bool { if case .stop = plan.action { true } else { false } }
        func isStart(_ plan: ContainerPlan) -> Bool { if case .start = plan.action { true } else { false } }
        let stops = computed.containers.filter(isStop).sorted { rank($0) > rank($1) }
        let starts = computed.containers.filter(isStart).sorted { rank($0) < rank($1) }
        let others = computed.containers.filter { !isStop($0) && !isStart($0) }.sorted { rank($0) < rank($1) }
        for plan in stops + others {
            let vmid = plan.vmid
            let id = "\(Self.name)/\(vmid)"
            await gate.turn(kind: Self.name, vmid: vmid)
            do {
                if let writeBack = plan.writeBack {
                    try driver.writeConfig(path: writeBack.path, text: writeBack.text, expectedDigest: writeBack.digest)
                    progress("\(id): wrote \(writeBack.path)")
                }
                switch plan.action {
                case .stop(let timeout):
                    let how = try await driver.stop(vmid: vmid, timeout: timeout)
                    records.containers[String(vmid)] = nil
                    progress("\(id): stopped (\(how))")
                case .start:
                    break
                case .restart(let timeout, let spec, let running):
                    let how = try await driver.stop(vmid: vmid, timeout: timeout)
                    progress("\(id): stopped (\(how))")
                    let pid = try await driver.start(spec)
                    records.containers[String(vmid)] = LxcContainerRecord(initPID: pid, running: running, startedAt: clock.now())
                    progress("\(id): started (init pid \(pid))")
                case .live(let steps, let running):
                    for step in steps {
                        progress("\(id): \(step)")
                        try await driver.perform(vmid: vmid, step)
                    }
                    records.containers[String(vmid)]?.running = running
                case .adopt(let pid, let running):
                    records.containers[String(vmid)] = LxcContainerRecord(initPID: pid, running: running, startedAt: clock.now())
                    progress("\(id): adopted the running container (init pid \(pid))")
                }
                outcome.applied.append(String(vmid))
            } catch {
                outcome.failed.append(.init(name: String(vmid), message: "\(error)"))
            }
            await gate.done(kind: Self.name, vmid: vmid)
            try store.save(records, as: Self.name)
        }

        // Starts in startup order; containers that share an order and wait for nobody (`up=`) start side by side, a few
        // at a time (each start mostly waits for LXC and its hooks).
        var index = 0
        while index < starts.count {
            var batch = [starts[index]]
            while index + batch.count < starts.count, Self.up(batch[0]) == nil, Self.up(starts[index + batch.count]) == nil,
                  starts[index + batch.count].order == batch[0].order, batch.count < Self.parallelStarts {
                batch.append(starts[index + batch.count])
            }
            index += batch.count
            let results = await withTaskGroup(of: (Int, Result<LxcContainerRecord, any Error>).self) { group in
                for plan in batch {
                    group.addTask {
                        await gate.turn(kind: Self.name, vmid: plan.vmid)
                        return (plan.vmid, await self.start(plan, progress: progress))
                    }
                }
                var results: [Int: Result<LxcContainerRecord, any Error>] = [:]
                for await (vmid, result) in group { results[vmid] = result }
                return results
            }
            for plan in batch {
                switch results[plan.vmid] {
                case .success(let record)?:
                    records.containers[String(plan.vmid)] = record
                    outcome.applied.append(String(plan.vmid))
                case .failure(let error)?:
                    outcome.failed.append(.init(name: String(plan.vmid), message: "\(error)"))
                case nil:
                    break
                }
            }
            try store.save(records, as: Self.name)
            if let up = Self.up(batch[0]), !gate.isLastStart(kind: Self.name, vmid: batch[0].vmid) {
                progress("\(Self.name)/\(batch[0].vmid): waiting \(up) s (startup up=\(up)) before the next guest")
                try await clock.sleep(seconds: Double(up))
            }
            for plan in batch { await gate.done(kind: Self.name, vmid: plan.vmid) }
        }
        return outcome
    }

    /// How many containers of one startup order start at once.
    static let parallelStarts = 4

    static func up(_ plan: ContainerPlan) -> Int? {
        if case .start(_, _, let up?) = plan.action, up > 0 { return up }
        return nil
    }

    func start(_ plan: ContainerPlan, progress: @escaping @Sendable (String) -> Void) async -> Result<LxcContainerRecord, any Error> {
        guard case .start(let spec, let running, _) = plan.action else { preconditionFailure("not a start") }
        let id = "\(Self.name)/\(plan.vmid)"
        do {
            if let writeBack = plan.writeBack {
                try driver.writeConfig(path: writeBack.path, text: writeBack.text, expectedDigest: writeBack.digest)
                progress("\(id): wrote \(writeBack.path)")
            }
            let pid = try await driver.start(spec)
            progress("\(id): started (init pid \(pid))")
            return .success(LxcContainerRecord(initPID: pid, running: running, startedAt: clock.now()))
        } catch {
            return .failure(error)
        }
    }
}
