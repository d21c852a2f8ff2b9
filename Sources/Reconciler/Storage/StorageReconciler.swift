import Foundation
import Resources

/// The storage kind: every storage of `storage.cfg` that applies to this
/// node brought to its usable state, and the volumes the local guests name
/// allocated or grown. Nothing is ever deleted: a volume no config names
/// stays, a shrink is refused, and only mounts this kind made are unmounted.
public struct StorageReconciler: Sendable {
    public var driver: any StorageDriver
    public var store: StateStore
    public var clock: any ReconcilerClock

    public init(driver: any StorageDriver, store: StateStore, clock: any ReconcilerClock = SystemClock()) {
        self.driver = driver
        self.store = store
        self.clock = clock
    }

    /// One storage as `status` shows it.
    public struct StorageStatus: Sendable {
        public var storage: DesiredStorage
        public var observed: ObservedStorage?
        public var active: Bool
        public var reason: String?
        /// Inactive until something is mounted on its `is_mountpoint` path: nothing pvectl watches reports that mount.
        public var waitsForMount = false
    }

    public struct Computed: Sendable {
        public var resources: [ResourcePlan] = []
        /// Steps per resource id, storages first.
        public var steps: [(id: String, steps: [StorageStep])] = []
        public var statuses: [StorageStatus] = []
        public var records = StorageRecords()
        public var problems: [Diagnostic] = []
        public init() {}

        /// Looked at again every 10 s (pvestatd's interval) while a storage waits for its mount, so that the VMs on it
        /// start soon after the mount appears rather than at the next resync.
        public var requeueAfter: TimeInterval? { statuses.contains { $0.waitsForMount } ? 10 : nil }
    }

    static func selected(_ only: [ResourceSelector], storage: String, volume: String? = nil) -> Bool {
        ResourceSelector.select(only, kind: "storage", name: storage)
            || (volume.map { ResourceSelector.select(only, kind: "storage", name: $0) } ?? false)
    }

    public func compute(_ state: DesiredState, only: [ResourceSelector]) async throws -> Computed {
        var computed = Computed()
        computed.records = try store.load("storage", as: StorageRecords.self) ?? StorageRecords()
        guard let file = state.storage else { return computed }
        let fileProblems = state.diagnostics.filter { $0.location.file == file.file && $0.severity == .error }
        if state.frozen.contains(ResourceID(kind: "storage", name: "*")) || !fileProblems.isEmpty {
            computed.problems = fileProblems
            computed.resources = [ResourcePlan(kind: "storage", name: "*", action: .blocked, source: fileProblems.first?.location, changes: [],
                                               message: "\(file.file) has \(fileProblems.count) error(s); "
                                                            + "storage is left as it is until they are fixed")]
            return computed
        }
        var (storages, storageProblems) = StorageDesiredState.storages(from: file, node: state.node)
        for index in storages.indices where storages[index].type == "cifs" && state.storageCredentials.contains(storages[index].id) {
            storages[index].credentialsFile = (state.root.hasSuffix("/") ? state.root : state.root + "/") + "priv/storage/\(storages[index].id).pw"
        }
        for problem in storageProblems where problem.severity == .error { computed.problems.append(problem) }

        // Storages that are (or this apply makes) usable: their volumes can be planned.
        var usable: [String: DesiredStorage] = [:]
        for storage in storages {
            let wanted = Self.selected(only, storage: storage.id)
            guard storage.isActiveHere else {
                computed.statuses.append(StorageStatus(storage: storage, observed: nil, active: false, reason: storage.inactiveReason))
                if wanted, let plan = unmountPlan(storage, records: computed.records) { add(&computed, plan) }
                continue
            }
            let observed = await driver.observe(storage)
            let (plan, steps, status) = plan(storage, observed)
            computed.statuses.append(status)
            if plan.map({ $0.action != .blocked && $0.action != .unavailable }) ?? status.active { usable[storage.id] = storage }
            if wanted, let plan { add(&computed, (plan, steps)) }
        }
        // Storages gone from the file: only their mounts we made are undone.
        for (target, record) in computed.records.mounts.sorted(by: { $0.key < $1.key })
        where !storages.contains(where: { $0.path == target && $0.isActiveHere }) {
            let id = storages.first { $0.path == target }?.id ?? URL(fileURLWithPath: target).lastPathComponent
            guard Self.selected(only, storage: id), !computed.resources.contains(where: { $0.name == id }) else { continue }
            let plan = ResourcePlan(kind: "storage", name: id, action: .delete, source: nil,
                                    changes: [PlannedChange(field: "mount", old: "\(record.source) on \(target)", new: nil, changeClass: .reload)],
                                    operations: [StorageStep.unmount(target).description],
                                    message: "no longer in storage.cfg for this node; unmounting what pvectl mounted (data is not touched)")
            add(&computed, (plan, [.unmount(target)]))
        }

        let (volumes, volumeProblems) = StorageDesiredState.volumes(state, storages: storages)
        for problem in volumeProblems {
            computed.problems.append(problem)
            computed.resources.append(ResourcePlan(kind: "storage", name: "volume@\(problem.location.file):\(problem.location.line)",
                                                   action: .blocked, source: problem.location, changes: [], message: problem.message))
        }
        for volume in volumes where Self.selected(only, storage: volume.storage, volume: volume.volumeID) {
            guard let storage = usable[volume.storage] else {
                let storage = storages.first { $0.id == volume.storage }
                let plan = ResourcePlan(kind: "storage", name: volume.volumeID, action: .unavailable, source: volume.source, changes: [],
                                        message: "unavailable: storage '\(volume.storage)' "
                                                     + "is \(storage?.inactiveReason ?? "not active") on this node")
                computed.resources.append(plan)
                continue
            }
            if let (plan, steps) = await planVolume(volume, storage: storage) {
                if plan.action == .blocked { computed.problems.append(.error(volume.source, plan.message ?? "blocked", code: .blocked)) }
                add(&computed, (plan, steps))
            }
        }
        return computed
    }

    private func add(_ computed: inout Computed, _ entry: (ResourcePlan, [StorageStep])) {
        computed.resources.append(entry.0)
        if !entry.1.isEmpty { computed.steps.append((entry.0.id, entry.1)) }
    }

    private func unmountPlan(_ storage: DesiredStorage, records: StorageRecords) -> (ResourcePlan, [StorageStep])? {
        guard let path = storage.path, let record = records.mounts[path] else { return nil }
        let plan = ResourcePlan(kind: "storage", name: storage.id, action: .delete, source: storage.source,
                                changes: [PlannedChange(field: "mount", old: "\(record.source) on \(path)", new: nil, changeClass: .reload)],
                                operations: [StorageStep.unmount(path).description],
                                message: "\(storage.inactiveReason ?? "inactive"): unmounting what pvectl mounted (data is not touched)")
        return (plan, [.unmount(path)])
    }

    /// What activating one storage takes. nil plan: nothing to do.
    func plan(_ storage: DesiredStorage, _ observed: ObservedStorage) -> (ResourcePlan?, [StorageStep], StorageStatus) {
        func status(_ active: Bool, _ reason: String?) -> StorageStatus {
            StorageStatus(storage: storage, observed: observed, active: active, reason: reason)
        }
        if let why = observed.unavailable {
            let plan = ResourcePlan(kind: "storage", name: storage.id, action: .unavailable, source: storage.source, changes: [],
                                    message: "unavailable: \(why)")
            return (plan, [], status(false, why))
        }
        var steps: [StorageStep] = []
        var changes: [PlannedChange] = []
        var action = ResourcePlan.Action.update
        func blocked(_ message: String) -> (ResourcePlan?, [StorageStep], StorageStatus) {
            (ResourcePlan(kind: "storage", name: storage.id, action: .blocked, source: storage.source, changes: [], message: message),
             [], status(false, message))
        }
        switch storage.type {
        case "dir", "btrfs", "nfs", "cifs":
            guard let path = storage.path else { return blocked("no path") }
            if let mountpoint = storage.requiredMountpoint, !observed.requiredMountpointMounted {
                // Upstream's is_mountpoint: the storage waits for its mount; nothing is created under it.
                let why = "not active until something is mounted on \(mountpoint)"
                let plan = ResourcePlan(kind: "storage", name: storage.id, action: .unavailable, source: storage.source, changes: [],
                                        message: "unavailable: \(why)")
                var waiting = status(false, why)
                waiting.waitsForMount = true
                return (plan, [], waiting)
            }
            if storage.type == "nfs" || storage.type == "cifs" {
                let (fileSystem, source, options) = mountSpec(storage)
                if let mount = observed.mount {
                    if mount.source != source || !mount.fileSystem.hasPrefix(fileSystem) {
                        return blocked("\(path) has \(mount.source) (\(mount.fileSystem)) mounted, not \(source); unmount it first")
                    }
                } else {
                    if !observed.pathIsDirectory {
                        steps.append(.makeDirectory(path))
                        changes.append(PlannedChange(field: "directory", old: nil, new: path, changeClass: .live, source: storage.source))
                    }
                    steps.append(.mount(fileSystem: fileSystem, source: source, target: path, options: options))
                    changes.append(PlannedChange(field: "mount", old: nil, new: "\(source) on \(path)", changeClass: .live, source: storage.source))
                    action = .create
                }
            } else if !observed.pathIsDirectory {
                guard storage.createBasePath else {
                    return blocked("directory \(path) does not exist (create-base-path 0)")
                }
                steps.append(.makeDirectory(path))
                changes.append(PlannedChange(field: "directory", old: nil, new: path, changeClass: .live, source: storage.source))
                action = .create
            }
            if storage.type == "btrfs", observed.pathIsDirectory, let fs = observed.fileSystem, fs != "btrfs" {
                return blocked("\(path) is on \(fs), not on a btrfs file system")
            }
            let subdirectories = storage.subdirectories
            var seen: [String: String] = [:]
            for content in storage.content.sorted() {
                guard let directory = try? StorageVolumes.subdirectory(path: path, contentDirectories: storage.contentDirectories,
                                                                       vtype: content) else { continue }
                if let other = seen[directory] { return blocked("uses directory \(directory) for both \(other) and \(content)") }
                seen[directory] = content
            }
            let missing = steps.isEmpty ? observed.missingSubdirectories : subdirectories
            for directory in missing {
                steps.append(.makeDirectory(directory))
                changes.append(PlannedChange(field: "directory", old: nil, new: directory, changeClass: .live, source: storage.source))
            }
        case "lvm":
            guard let vg = storage.properties["vgname"] else { return blocked("no vgname") }
            guard observed.volumeGroupExists else {
                return blocked("volume group \(vg) does not exist on this node (pvectl does not create volume groups)")
            }
            if !observed.inactiveLogicalVolumes.isEmpty {
                steps.append(.activateVolumeGroup(vg))
                changes.append(PlannedChange(field: "active", old: "\(observed.inactiveLogicalVolumes.count) inactive volume(s)", new: "all active",
                                             changeClass: .live, source: storage.source))
            }
        case "lvmthin":
            guard let vg = storage.properties["vgname"], let pool = storage.properties["thinpool"] else {
                return blocked("needs vgname and thinpool")
            }
            guard observed.volumeGroupExists else {
                return blocked("volume group \(vg) does not exist on this node (pvectl does not create volume groups)")
            }
            guard observed.thinPoolExists else { return blocked("thin pool \(vg)/\(pool) does not exist (create it with lvcreate -T)") }
            if !observed.thinPoolActive {
                steps.append(.activateLogicalVolume("\(vg)/\(pool)"))
                changes.append(PlannedChange(field: "active", old: "no", new: "yes", changeClass: .live, source: storage.source))
            }
        default:
            return blocked("storage type \(storage.type) is not managed by pvectl")
        }
        guard !steps.isEmpty else { return (nil, [], status(true, nil)) }
        let plan = ResourcePlan(kind: "storage", name: storage.id, action: action, source: storage.source, changes: changes,
                                operations: steps.map(\.description))
        return (plan, steps, status(false, "not activated yet (see pvectl plan)"))
    }

    /// mount(8) arguments for nfs and cifs: (file system, source, options).
    func mountSpec(_ storage: DesiredStorage) -> (String, String, String?) {
        let server = storage.properties["server"] ?? ""
        let host = server.contains(":") && !server.hasPrefix("[") ? "[\(server)]" : server
        if storage.type == "nfs" {
            return ("nfs", "\(host):\(storage.properties["export"] ?? "/")", storage.properties["options"])
        }
        var source = "//\(host)/\(storage.properties["share"] ?? "")"
        if let subdir = storage.properties["subdir"] { source += subdir.hasPrefix("/") ? subdir : "/" + subdir }
        var options: [String] = []
        if let user = storage.properties["username"] {
            options.append("username=\(user)")
            if let file = storage.credentialsFile { options.append("credentials=\(file)") }
        } else {
            options.append("guest")
        }
        if let domain = storage.properties["domain"] { options.append("domain=\(domain)") }
        if let version = storage.properties["smbversion"], version != "default" { options.append("vers=\(version)") }
        if let extra = storage.properties["options"] { options.append(extra) }
        return ("cifs", source, options.joined(separator: ","))
    }

    func planVolume(_ volume: DesiredVolume, storage: DesiredStorage) async -> (ResourcePlan, [StorageStep])? {
        func blocked(_ message: String) -> (ResourcePlan, [StorageStep]) {
            (ResourcePlan(kind: "storage", name: volume.volumeID, action: .blocked, source: volume.source, changes: [],
                          message: "\(volume.key): \(message)"), [])
        }
        let format = volume.volume.format ?? "raw"
        let current = await driver.observe(volume, format: format)
        let isContainer = volume.guestKind == .lxc
        if current.exists {
            guard let wanted = volume.sizeBytes, let have = current.sizeBytes, wanted != have else { return nil }
            if format == "subvol" { return nil }
            if wanted < have {
                return blocked("size=\(Self.human(wanted)) is smaller than the volume's \(Self.human(have)); "
                                   + "shrinking is refused and the volume is left as it is")
            }
            let filesystem = isContainer && format == "raw"
            let isLogicalVolume = ["lvm", "lvmthin"].contains(storage.type)
            var steps: [StorageStep]
            if !isContainer, await driver.isRunning(vmid: volume.vmid) {
                // As qemu-server does: QEMU grows a file image itself; a logical volume is extended first.
                steps = isLogicalVolume ? [.resizeLogicalVolume(path: volume.hostPath, bytes: wanted, filesystem: false)] : []
                steps.append(.resizeRunningDisk(vmid: volume.vmid, device: "drive-\(volume.key)", bytes: wanted))
            } else {
                steps = [isLogicalVolume ? .resizeLogicalVolume(path: volume.hostPath, bytes: wanted, filesystem: filesystem)
                                         : .resizeImage(path: volume.hostPath, format: format, bytes: wanted, filesystem: filesystem)]
            }
            return (ResourcePlan(kind: "storage", name: volume.volumeID, action: .update, source: volume.source,
                                 changes: [PlannedChange(field: "size", old: Self.human(have), new: Self.human(wanted), changeClass: .live,
                                                         source: volume.source)],
                                 operations: steps.map(\.description)), steps)
        }
        // Allocation: only what upstream would allocate for this guest on this storage.
        let needed = isContainer ? "rootdir" : "images"
        guard storage.content.contains(needed) else {
            return blocked(TreeValidator.contentProblem(storage: storage.id, needed: needed, content: storage.content))
        }
        guard volume.volume.vmid == String(volume.vmid) else {
            return blocked("volume \(volume.volname) belongs to guest \(volume.volume.vmid ?? "?"), not \(volume.vmid)")
        }
        if volume.volume.isBase != nil { return blocked("template base volumes come from converting a guest to a template, not from allocation") }
        if volume.volume.baseName != nil { return blocked("linked clones are made from their base (qm clone), not allocated") }
        guard let size = volume.sizeBytes else { return blocked("the volume does not exist and no size= says how large to make it") }
        let steps: [StorageStep]
        switch storage.type {
        case "lvm", "lvmthin":
            guard let vg = storage.properties["vgname"] else { return blocked("storage has no vgname") }
            steps = [.createLogicalVolume(volumeGroup: vg, name: volume.volume.name, bytes: size,
                                          thinPool: storage.type == "lvmthin" ? storage.properties["thinpool"] : nil, filesystem: isContainer)]
        case "btrfs":
            let subvolume = format == "subvol" ? volume.hostPath : URL(fileURLWithPath: volume.hostPath).deletingLastPathComponent().path
            var list: [StorageStep] = [.makeDirectory(URL(fileURLWithPath: subvolume).deletingLastPathComponent().path),
                                       .createBtrfsSubvolume(subvolume)]
            if format != "subvol" { list.append(.createImage(path: volume.hostPath, format: "raw", bytes: size, filesystem: isContainer)) }
            steps = list
        default:
            if format == "subvol" {
                if size != 0 {
                    return blocked("storage '\(storage.id)' (\(storage.type)) does not support subvol quotas: use size=0 or a raw volume")
                }
                steps = [.makeDirectory(URL(fileURLWithPath: volume.hostPath).deletingLastPathComponent().path),
                         .createDirectoryVolume(volume.hostPath)]
            } else {
                guard ["raw", "qcow2", "vmdk"].contains(format) else { return blocked("cannot allocate format \(format)") }
                steps = [.makeDirectory(URL(fileURLWithPath: volume.hostPath).deletingLastPathComponent().path),
                         .createImage(path: volume.hostPath, format: format, bytes: size, filesystem: isContainer && format == "raw")]
            }
        }
        let allocation = "\(format), \(Self.human(size)) for \(volume.guestKind.rawValue)/\(volume.vmid) \(volume.key)"
        let plan = ResourcePlan(kind: "storage", name: volume.volumeID, action: .create, source: volume.source,
                                changes: [PlannedChange(field: "volume", old: nil, new: allocation,
                                                        changeClass: .live, source: volume.source)],
                                operations: steps.map(\.description))
        return (plan, steps)
    }

    static func human(_ bytes: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (size, unit) in units where bytes >= size && bytes % size == 0 { return "\(bytes / size)\(unit)" }
        return "\(bytes)B"
    }

    /// Runs the steps, storages before volumes; a failed storage skips its volumes.
    public func apply(_ computed: Computed, progress log: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome {
        var outcome = ApplyOutcome()
        var records = computed.records
        var failedStorages = Set<String>()
        let ordered = computed.steps.sorted { lhs, rhs in
            let l = lhs.id.contains(":") ? 1 : 0, r = rhs.id.contains(":") ? 1 : 0
            return l != r ? l < r : lhs.id < rhs.id
        }
        for (id, steps) in ordered {
            let name = String(id.dropFirst("storage/".count))
            if let storage = StorageVolumes.parseVolumeID(name)?.storage, failedStorages.contains(storage) {
                outcome.failed.append(.init(name: name, message: "skipped: storage \(storage) failed"))
                continue
            }
            do {
                for step in steps {
                    log("storage/\(name): \(step)")
                    try await driver.perform(step)
                    switch step {
                    case .mount(let fs, let source, let target, _):
                        records.mounts[target] = StorageRecords.MountRecord(target: target, source: source, fileSystem: fs, mountedAt: clock.now())
                        try store.save(records, as: "storage")
                    case .unmount(let target):
                        records.mounts[target] = nil
                        try store.save(records, as: "storage")
                    default: break
                    }
                }
                outcome.applied.append(name)
            } catch {
                failedStorages.insert(name)
                outcome.failed.append(.init(name: name, message: "\(error)"))
            }
        }
        return outcome
    }
}
