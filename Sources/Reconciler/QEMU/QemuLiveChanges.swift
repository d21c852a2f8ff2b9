import Foundation
import Resources

/// One operation on a running QEMU, in the order it must happen.
public enum QemuLiveStep: Sendable, Hashable, CustomStringConvertible {
    /// A QMP command with its arguments as a JSON object.
    case qmp(String, arguments: String)
    /// A QMP command whose failure is expected when the object is already gone.
    case qmpIgnoringFailure(String, arguments: String)
    /// A monitor command in QEMU's command-line syntax (`device_add`,
    /// `netdev_add`, `drive_add`, `object_add`), sent as QMP `human-monitor-command`:
    /// the device strings are then exactly the ones the command line uses.
    case monitor(String)
    /// A monitor command whose failure means there was nothing to remove.
    case monitorIgnoringFailure(String)
    /// `device_del`, then wait for QEMU's DEVICE_DELETED event (the guest must release it).
    case unplug(id: String)
    /// Put a NIC's tap on its bridge (and VLAN).
    case attachTap(tap: String, bridge: String, tag: Int?)
    /// Bring the number of present vCPUs to `count` (`device_add`/`device_del` of CPU devices).
    case setCPUs(count: Int)

    /// A QMP command with its arguments built as canonical JSON.
    static func qmp(_ name: String, _ members: [String: CanonicalJSON], ignoringFailure: Bool = false) -> QemuLiveStep {
        let arguments = CanonicalJSON.object(members).text
        return ignoringFailure ? .qmpIgnoringFailure(name, arguments: arguments) : .qmp(name, arguments: arguments)
    }

    /// `set_link`: a NIC's link up or down.
    static func setLink(_ nic: String, up: Bool) -> QemuLiveStep { .qmp("set_link", ["name": .string(nic), "up": .bool(up)]) }

    public var description: String {
        switch self {
        case .qmp(let name, let arguments), .qmpIgnoringFailure(let name, let arguments):
            arguments == "{}" ? "qmp \(name)" : "qmp \(name) \(arguments)"
        case .monitor(let text), .monitorIgnoringFailure(let text): "monitor \(text)"
        case .unplug(let id): "qmp device_del \(id) (wait for the guest to release it)"
        case .attachTap(let tap, let bridge, let tag):
            "ip link set \(tap) master \(bridge) up" + (tag.map { "; bridge vlan add dev \(tap) vid \($0) pvid untagged" } ?? "")
        case .setCPUs(let count): "hot-plug vCPUs up to \(count)"
        }
    }
}

/// How a config change reaches a running VM: live, with the steps, or only at the next start.
public struct QemuKeyChange: Sendable, Hashable {
    public var key: String
    public var old: String?
    public var new: String?
    public var changeClass: ChangeClass
    public var steps: [QemuLiveStep]
    /// Why a change waits for a restart, for the plan.
    public var reason: String?
}

/// The QEMU command line as flag/value pairs, to find the exact device
/// strings a hot-plug must use.
public struct QemuArguments: Sendable {
    public var pairs: [(flag: String, value: String)] = []

    public init(_ arguments: [String]) {
        var index = 1
        while index < arguments.count {
            let flag = arguments[index]
            if flag.hasPrefix("-"), index + 1 < arguments.count, !arguments[index + 1].hasPrefix("-") || arguments[index + 1].hasPrefix("-{") {
                pairs.append((flag, arguments[index + 1]))
                index += 2
            } else {
                pairs.append((flag, ""))
                index += 1
            }
        }
    }

    /// `key=value` options of one argument (`virtio-net-pci,mac=…,id=net1`).
    public static func options(_ text: String) -> [String: String] { QemuLiveChanges.parse(text) }

    /// The `-device` string whose `id=` is `id`.
    public func device(id: String) -> String? {
        pairs.first { $0.flag == "-device" && Self.options($0.value)["id"] == id }?.value
    }

    public func netdev(id: String) -> String? {
        pairs.first { $0.flag == "-netdev" && Self.options($0.value)["id"] == id }?.value
    }

    /// A `-drive` (old QEMU) or `-blockdev` (JSON) whose id or top node name is `id`.
    public func drive(id: String) -> (flag: String, value: String)? {
        pairs.first { pair in
            if pair.flag == "-drive" { return Self.options(pair.value)["id"] == id }
            if pair.flag == "-blockdev" {
                let object = (try? JSONSerialization.jsonObject(with: Data(pair.value.utf8))) as? [String: Any]
                return object?["node-name"] as? String == id
            }
            return false
        }
    }

    public func object(id: String) -> String? {
        pairs.first { $0.flag == "-object" && Self.options($0.value)["id"] == id }?.value
    }
}

/// Which config changes a running QEMU can take, and how: the change
/// classes of qemu-server's hot-plug (per the `hotplug` option), with the
/// device strings taken from the command line the new config would start with.
public enum QemuLiveChanges {
    /// Keys with no effect on the running QEMU (qemu-server's fast-plug
    /// options and bookkeeping): applied by writing the file alone.
    public static let configOnly: Set<String> = [
        "name", "description", "onboot", "startup", "protection", "tags", "lock", "hookscript", "vmstatestorage", "shares",
        "meta", "parent", "snaptime", "vmstate", "runningmachine", "runningcpu", "hotplug", "template",
    ]

    public static func isConfigOnly(_ key: String) -> Bool {
        configOnly.contains(key) || key.hasPrefix("unused")
    }

    /// The `hotplug` option: `network,disk,usb` unless set; `0` none, `1` the default set.
    public static func features(_ value: String?) -> Set<String> {
        guard let value, !value.isEmpty else { return ["network", "disk", "usb"] }
        if value == "0" { return [] }
        if value == "1" { return ["network", "disk", "usb"] }
        return Set(value.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
    }

    static func isNIC(_ key: String) -> Bool { key.hasPrefix("net") && Int(key.dropFirst(3)) != nil }

    static func isHotplugDisk(_ key: String) -> Bool {
        for prefix in ["virtio", "scsi"] where key.hasPrefix(prefix) && Int(key.dropFirst(prefix.count)) != nil { return true }
        return false
    }

    static func isCDROM(_ value: String?) -> Bool { value.map { parse($0)["media"] == "cdrom" } ?? false }

    /// A property string as a dictionary; a bare value (a disk's volume) under "".
    public static func parse(_ value: String) -> [String: String] {
        var result: [String: String] = [:]
        for entry in PropertyString(parsing: value).entries { result[entry.key ?? ""] = entry.value }
        return result
    }

    /// The property string without the keys in `ignoring`.
    static func properties(_ value: String, ignoring: Set<String>) -> [String: String] {
        parse(value).filter { !ignoring.contains($0.key) }
    }

    /// A NIC's bridge and VLAN tag.
    public static func tapTarget(vmid: Int, key: String, value: String) -> (tap: String, bridge: String, tag: Int?)? {
        let options = parse(value)
        guard let bridge = options["bridge"], let index = Int(key.dropFirst(3)) else { return nil }
        return ("tap\(vmid)i\(index)", bridge, options["tag"].flatMap { Int($0) })
    }

    /// Classifies one key's change and, when it can be applied live, gives the steps.
    /// - Parameters:
    ///   - running: the config the QEMU runs (as recorded at start plus live changes).
    ///   - desired: the effective desired config.
    ///   - arguments: the command line `desired` would start with.
    ///   - present: the device ids the running QEMU has, when known.
    ///   - emulated: the VM runs under TCG.
    public static func change(vmid: Int, key: String, running: [String: String], desired: [String: String],
                              arguments: QemuArguments, present: Set<String>? = nil, emulated: Bool = false) -> QemuKeyChange {
        let old = running[key], new = desired[key]
        var change = QemuKeyChange(key: key, old: old, new: new, changeClass: .restart, steps: [], reason: nil)
        if isConfigOnly(key) {
            change.changeClass = .none
            return change
        }
        let hotplug = features(desired["hotplug"])
        if key == "balloon" {
            let oldTarget = Int(old ?? "") ?? Int(running["memory"] ?? "") ?? 2048
            let newTarget = Int(new ?? "") ?? Int(desired["memory"] ?? "") ?? 2048
            // balloon: 0 removes the device: that needs a restart, as does adding it.
            if oldTarget != 0 && newTarget != 0 {
                change.changeClass = .live
                change.steps = [.qmp("balloon", ["value": .number(newTarget * 1024 * 1024)])]
            } else {
                change.reason = "the balloon device is added or removed only at start"
            }
            return change
        }
        if key == "vcpus" {
            guard hotplug.contains("cpu") else {
                change.reason = "hotplug does not include cpu"
                return change
            }
            let sockets = Int(desired["sockets"] ?? "1") ?? 1, cores = Int(desired["cores"] ?? "1") ?? 1
            let count = Int(new ?? "") ?? sockets * cores
            guard count >= 1, count <= sockets * cores else {
                change.reason = "vcpus must be between 1 and sockets × cores"
                return change
            }
            if emulated, count < Int(old ?? "") ?? sockets * cores {
                // Measured with QEMU 7.2: a TCG guest that releases a vCPU takes QEMU down with it.
                change.reason = "removing vCPUs crashes QEMU under TCG (emulation)"
                return change
            }
            change.changeClass = .live
            change.steps = [.setCPUs(count: count)]
            return change
        }
        if key == "memory" {
            return memoryChange(change, hotplug: hotplug.contains("memory"), numa: desired["numa"] == "1", arguments: arguments, present: present)
        }
        if isNIC(key) {
            return nicChange(vmid: vmid, change: change, hotplug: hotplug.contains("network"), arguments: arguments)
        }
        if GuestConfig.isDriveKey(key), isCDROM(old), isCDROM(new), let new {
            return mediumChange(change, key: key, new: new, arguments: arguments)
        }
        if GuestConfig.isDriveKey(key), !isCDROM(old), !isCDROM(new), let old, let new {
            if properties(old, ignoring: ["size"]) == properties(new, ignoring: ["size"]) {
                // A size change is the storage kind's (it grows the volume and tells QEMU).
                change.changeClass = .none
                return change
            }
            let fixed = throttleKeys.union(["size"])
            if properties(old, ignoring: fixed) == properties(new, ignoring: fixed) {
                // Only limits: QEMU changes them in place.
                change.changeClass = .live
                change.steps = [throttleStep(key: key, parse(new), arguments: arguments)]
                return change
            }
            if parse(old)[""] == parse(new)[""] {
                // The same volume with other options: qemu-server leaves that for the next start too.
                change.reason = "disk options other than limits apply at the next start"
                return change
            }
        }
        if isHotplugDisk(key) && !isCDROM(old) && !isCDROM(new) {
            guard hotplug.contains("disk") else {
                change.reason = "hotplug does not include disk"
                return change
            }
            return replaceDevice(change, unplug: unplugDisk(key), plug: new.map { _ in plugDisk(key, arguments: arguments) })
        }
        change.reason = "QEMU cannot change \(key) while running"
        return change
    }

    /// With `hotplug: memory` and NUMA, memory above the static part is DIMMs:
    /// the new config's command line names the DIMMs it starts with, and the
    /// running QEMU gets or loses the difference (largest last in, first out).
    static func memoryChange(_ change: QemuKeyChange, hotplug: Bool, numa: Bool, arguments: QemuArguments, present: Set<String>?) -> QemuKeyChange {
        var change = change
        guard hotplug, numa else {
            change.reason = hotplug ? "memory hot-plug needs numa: 1" : "hotplug does not include memory"
            return change
        }
        guard let present else {
            change.reason = "the running QEMU's DIMMs are unknown (QMP did not answer)"
            return change
        }
        func number(_ id: String) -> Int { Int(id.dropFirst(4)) ?? 0 }
        let wanted = arguments.pairs.filter { $0.flag == "-device" && $0.value.hasPrefix("pc-dimm,") }
            .compactMap { pair in QemuArguments.options(pair.value)["id"].map { (id: $0, device: pair.value) } }
        let wantedIDs = Set(wanted.map(\.id))
        var steps: [QemuLiveStep] = []
        for dimm in wanted.sorted(by: { number($0.id) < number($1.id) }) where !present.contains(dimm.id) {
            guard let memdev = QemuArguments.options(dimm.device)["memdev"], let backend = arguments.object(id: memdev) else { continue }
            steps += [.monitor("object_add " + backend), .monitor("device_add " + dimm.device)]
        }
        for id in present.filter({ $0.hasPrefix("dimm") && !wantedIDs.contains($0) }).sorted(by: { number($0) > number($1) }) {
            steps += [.unplug(id: id), .qmp("object-del", ["id": .string("mem-" + id)], ignoringFailure: true)]
        }
        let staticPart = arguments.pairs.first { $0.flag == "-m" }.flatMap { QemuArguments.options($0.value)["size"] }
        if let new = change.new, let size = Int(new), let base = staticPart.flatMap({ Int($0) }), size < base {
            change.reason = "memory cannot go below the static \(base) MiB while running"
            return change
        }
        change.changeClass = .live
        change.steps = steps
        return change
    }

    /// A disk's bandwidth and IOPS limits (qemu-server's names).
    static let throttleKeys: Set<String> = ["mbps", "mbps_rd", "mbps_wr", "iops", "iops_rd", "iops_wr", "mbps_max", "mbps_rd_max", "mbps_wr_max",
                                            "iops_max", "iops_rd_max", "iops_wr_max", "bps_max_length", "bps_rd_max_length", "bps_wr_max_length",
                                            "iops_max_length", "iops_rd_max_length", "iops_wr_max_length"]

    /// New limits for a running disk: its throttle group's `limits` with
    /// -blockdev, else `block_set_io_throttle` on the drive (as qemu-server does).
    static func throttleStep(key: String, _ options: [String: String], arguments: QemuArguments) -> QemuLiveStep {
        let limits = throttleLimits(options)
        if arguments.drive(id: "drive-" + key)?.flag == "-blockdev" {
            // Every rate is given (0: none), or QEMU would keep the group's old value.
            return .qmp("qom-set", ["path": .string("throttle-drive-" + key), "property": .string("limits"),
                                    "value": .object(Dictionary(uniqueKeysWithValues: limits.map { ($0.group, $0.value) }))])
        }
        var members = Dictionary(uniqueKeysWithValues: limits.map { ($0.legacy, $0.value) })
        members["device"] = .string("drive-" + key)
        return .qmp("block_set_io_throttle", members)
    }

    /// Every limit, 0 for none (MB/s become bytes/s), under its
    /// `block_set_io_throttle` name (`bps_rd_max`) and its throttle-group name (`bps-read-max`).
    static func throttleLimits(_ options: [String: String]) -> [(legacy: String, group: String, value: CanonicalJSON)] {
        var limits: [(legacy: String, group: String, value: CanonicalJSON)] = []
        for (kind, groupKind) in [("", "-total"), ("_rd", "-read"), ("_wr", "-write")] {
            let mbps = Double(options["mbps\(kind)"] ?? "") ?? 0, mbpsMax = Double(options["mbps\(kind)_max"] ?? "") ?? 0
            limits.append(("bps\(kind)", "bps\(groupKind)", .number(Int(mbps * 1_048_576))))
            limits.append(("bps\(kind)_max", "bps\(groupKind)-max", .number(Int(mbpsMax * 1_048_576))))
            limits.append(("iops\(kind)", "iops\(groupKind)", .number(Int(options["iops\(kind)"] ?? "") ?? 0)))
            limits.append(("iops\(kind)_max", "iops\(groupKind)-max", .number(Int(options["iops\(kind)_max"] ?? "") ?? 0)))
            for rate in ["bps", "iops"] {
                if let length = options["\(rate)\(kind)_max_length"].flatMap({ Int($0) }) {
                    limits.append(("\(rate)\(kind)_max_length", "\(rate)\(groupKind)-max-length", .number(length)))
                }
            }
        }
        return limits
    }

    /// A CD-ROM's medium changes live (eject, or insert the new image), as qemu-server does.
    static func mediumChange(_ change: QemuKeyChange, key: String, new: String, arguments: QemuArguments) -> QemuKeyChange {
        var change = change
        let oldOptions = properties(change.old ?? "", ignoring: [""]), newOptions = properties(new, ignoring: [""])
        guard oldOptions == newOptions else {
            change.reason = "only the medium of a CD-ROM drive changes while running"
            return change
        }
        let volume = parse(new)[""] ?? ""
        if volume == "none" {
            change.changeClass = .live
            change.steps = [.qmp("eject", ["force": .bool(true), "id": .string(key)])]
            return change
        }
        guard volume != "cdrom", let path = arguments.drive(id: "drive-" + key).flatMap(mediumPath) else {
            change.reason = "the host's CD-ROM drive is attached only at start"
            return change
        }
        let format = arguments.drive(id: "drive-" + key).flatMap { QemuArguments.options($0.value)["format"] } ?? "raw"
        change.changeClass = .live
        change.steps = [.qmp("blockdev-change-medium", ["id": .string(key), "filename": .string(path), "format": .string(format)])]
        return change
    }

    /// The image file of a `-drive` (`file=`) or `-blockdev` (the innermost `filename`).
    static func mediumPath(_ drive: (flag: String, value: String)) -> String? {
        if drive.flag == "-drive" { return QemuArguments.options(drive.value)["file"] }
        var node = (try? JSONSerialization.jsonObject(with: Data(drive.value.utf8))) as? [String: Any]
        while let current = node {
            if let filename = current["filename"] as? String { return filename }
            node = current["file"] as? [String: Any]
        }
        return nil
    }

    static func nicChange(vmid: Int, change: QemuKeyChange, hotplug: Bool, arguments: QemuArguments) -> QemuKeyChange {
        var change = change
        let key = change.key
        if let old = change.old, let new = change.new {
            let before = properties(old, ignoring: ["link_down", "bridge", "tag", "firewall"])
            let after = properties(new, ignoring: ["link_down", "bridge", "tag", "firewall"])
            if before == after {
                // Only the link, the bridge, the VLAN or the firewall flag: live, as qemu-server does.
                var steps: [QemuLiveStep] = []
                let oldOptions = parse(old), newOptions = parse(new)
                if oldOptions["bridge"] != newOptions["bridge"] || oldOptions["tag"] != newOptions["tag"],
                   let target = tapTarget(vmid: vmid, key: key, value: new) {
                    steps.append(.attachTap(tap: target.tap, bridge: target.bridge, tag: target.tag))
                }
                if (oldOptions["link_down"] == "1") != (newOptions["link_down"] == "1") {
                    steps.append(.setLink(key, up: newOptions["link_down"] != "1"))
                }
                change.changeClass = steps.isEmpty ? .none : .live
                change.steps = steps
                return change
            }
        }
        guard hotplug else {
            change.reason = "hotplug does not include network"
            return change
        }
        return replaceDevice(change, unplug: unplugNIC(key), plug: change.new.map { plugNIC(vmid: vmid, key: key, value: $0, arguments: arguments) })
    }

    /// Unplug the old device (when there was one), then plug the new one
    /// (`plug` is nil when the key goes away, `.some(nil)` when the command line has no such device).
    static func replaceDevice(_ change: QemuKeyChange, unplug: [QemuLiveStep], plug: [QemuLiveStep]??) -> QemuKeyChange {
        var change = change
        var steps: [QemuLiveStep] = change.old != nil ? unplug : []
        if let plug {
            guard let plug else {
                change.reason = "no device for \(change.key) in the command line"
                return change
            }
            steps += plug
        }
        change.changeClass = .live
        change.steps = steps
        return change
    }

    static func plugNIC(vmid: Int, key: String, value: String, arguments: QemuArguments) -> [QemuLiveStep]? {
        guard let device = arguments.device(id: key) else { return nil }
        var steps: [QemuLiveStep] = []
        if let netdev = arguments.netdev(id: key) {
            steps.append(.monitor("netdev_add " + netdev))
            if let target = tapTarget(vmid: vmid, key: key, value: value) {
                steps.append(.attachTap(tap: target.tap, bridge: target.bridge, tag: target.tag))
            }
        }
        steps.append(.monitor("device_add " + device))
        if parse(value)["link_down"] == "1" {
            steps.append(.setLink(key, up: false))
        }
        return steps
    }

    static func unplugNIC(_ key: String) -> [QemuLiveStep] {
        [.unplug(id: key), .qmp("netdev_del", ["id": .string(key)], ignoringFailure: true)]
    }

    static func plugDisk(_ key: String, arguments: QemuArguments) -> [QemuLiveStep]? {
        guard let device = arguments.device(id: key), let drive = arguments.drive(id: "drive-" + key) else { return nil }
        var steps: [QemuLiveStep] = []
        // Objects the disk refers to (its throttle group, its own iothread).
        for id in ["throttle-drive-" + key, "iothread-" + key] {
            if let object = arguments.object(id: id) { steps.append(.monitor("object_add " + object)) }
        }
        // A controller of its own (virtio-scsi-single) comes first.
        if let bus = QemuArguments.options(device)["bus"], let controllerID = bus.split(separator: ".").first.map(String.init),
           controllerID.hasPrefix("virtioscsi") || controllerID.hasPrefix("scsihw"), let controller = arguments.device(id: controllerID) {
            if let iothread = QemuArguments.options(controller)["iothread"], let object = arguments.object(id: iothread) {
                steps.append(.monitor("object_add " + object))
            }
            steps.append(.monitor("device_add " + controller))
        }
        steps.append(drive.flag == "-blockdev" ? .qmp("blockdev-add", arguments: drive.value) : .monitor("drive_add auto " + drive.value))
        steps.append(.monitor("device_add " + device))
        return steps
    }

    static func unplugDisk(_ key: String) -> [QemuLiveStep] {
        [.unplug(id: key),
         .qmp("blockdev-del", ["node-name": .string("drive-" + key)], ignoringFailure: true),
         .monitorIgnoringFailure("drive_del drive-\(key)"),
         .qmp("object-del", ["id": .string("throttle-drive-" + key)], ignoringFailure: true),
         .qmp("object-del", ["id": .string("iothread-" + key)], ignoringFailure: true)]
            // virtio-scsi-single gives each disk its own controller.
            + (key.hasPrefix("scsi") ? [.qmp("device_del", ["id": .string("virtioscsi\(key.dropFirst(4))")], ignoringFailure: true)] : [])
    }
}
