import Foundation
import Resources

/// Reads the storage kind's desired state: the storages of `storage.cfg` and
/// the volumes the local guests' configs name.
public enum StorageDesiredState {
    /// Upstream always has a `local` directory storage at /var/lib/vz with this content.
    static let localContent: Set<String> = ["backup", "images", "iso", "rootdir", "snippets", "vztmpl"]

    public static func storages(from file: SectionConfigFile, node: String) -> (storages: [DesiredStorage], problems: [Diagnostic]) {
        var problems: [Diagnostic] = []
        var result: [DesiredStorage] = []
        var sawLocal = false
        for section in file.sections {
            var properties: [String: String] = [:]
            // A key without a value is a boolean set to 1, as upstream's SectionConfig reads `disable` alone.
            for property in section.properties { properties[property.key] = property.value ?? "1" }
            if section.id == "local" {
                sawLocal = true
                if section.type != "dir" || (properties["path"].map { $0 != "/var/lib/vz" } ?? false) {
                    problems.append(.warning(section.location, "storage 'local' is always the directory /var/lib/vz (as Proxmox VE enforces); "
                                                               + "this section is replaced by it", code: .conflict))
                    result.append(implicitLocal(source: section.location))
                    continue
                }
                properties["nodes"] = nil
            }
            result.append(storage(id: section.id, type: section.type, properties: properties, source: section.location, node: node))
        }
        if !sawLocal && !file.sections.isEmpty { result.append(implicitLocal(source: nil)) }
        return (result.sorted { $0.id < $1.id }, problems)
    }

    static func implicitLocal(source: SourceLocation?) -> DesiredStorage {
        var local = storage(id: "local", type: "dir", properties: ["path": "/var/lib/vz"], source: source, node: "")
        local.content = localContent
        return local
    }

    static func flag(_ value: String?) -> Bool? {
        value.flatMap(BooleanValue.parse)
    }

    static func storage(id: String, type: String, properties: [String: String], source: SourceLocation?, node: String) -> DesiredStorage {
        var inactive: String?
        if flag(properties["disable"]) == true {
            inactive = "disabled"
        } else if let nodes = properties["nodes"], !node.isEmpty {
            let list = StorageVolumes.splitList(nodes)
            if !list.isEmpty && !list.contains(node) { inactive = "not for this node (nodes \(list.joined(separator: ",")))" }
        }
        var content = StorageVolumes.defaultContent(storageType: type)
        if let text = properties["content"] {
            content = Set(StorageVolumes.splitList(text))
            content.remove("none")
        }
        var path = properties["path"]
        if path == nil, ["nfs", "cifs", "cephfs", "glusterfs"].contains(type) { path = "/mnt/pve/\(id)" }
        if ["lvm", "lvmthin", "zfspool", "zfs", "rbd", "iscsi", "iscsidirect", "pbs", "esxi"].contains(type) { path = nil }
        var mountpoint: String?
        if let value = properties["is_mountpoint"], let path {
            if let yes = flag(value) { mountpoint = yes ? path : nil } else if value != "no" && value != "0" { mountpoint = value }
        }
        return DesiredStorage(
            id: id, type: type, source: source, properties: properties, inactiveReason: inactive, content: content, path: path,
            contentDirectories: StorageVolumes.parseContentDirectories(properties["content-dirs"]),
            createBasePath: flag(properties["create-base-path"]) ?? flag(properties["mkdir"]) ?? true,
            createSubdirectories: (flag(properties["create-subdirs"]) ?? true) && (flag(properties["mkdir"]) ?? true),
            requiredMountpoint: mountpoint, credentialsFile: nil)
    }

    /// The volumes named by the main section of each local guest's config
    /// (not snapshots, not pending values): disks, EFI and TPM state, rootfs
    /// and mount points. CD-ROMs, `none`, host paths and bind mounts are not volumes.
    /// `guests` defaults to this node's; `pvectl validate` checks every node's
    /// guests through the same code.
    public static func volumes(_ state: DesiredState, storages: [DesiredStorage],
                               guests: [DesiredState.Guest]? = nil) -> (volumes: [DesiredVolume], problems: [Diagnostic]) {
        let byID = storagesByID(storages)
        let ordered = (guests ?? state.localGuests).sorted(by: { $0.vmid < $1.vmid })
        // Guests are independent: on all cores, merged in VMID order.
        let perGuest = UnsafeResultSlots<(volumes: [DesiredVolume], problems: [Diagnostic])>(count: ordered.count)
        DispatchQueue.concurrentPerform(iterations: ordered.count) { index in
            let guest = ordered[index]
            let frozen = state.frozen.contains(ResourceID(kind: guest.kind.rawValue, name: String(guest.vmid)))
            perGuest.set(index, frozen ? ([], []) : Self.volumes(of: guest, storages: byID))
        }
        var volumes: [DesiredVolume] = []
        var problems: [Diagnostic] = []
        for found in perGuest.values {
            volumes += found.volumes
            problems += found.problems
        }
        return (volumes, problems)
    }

    /// Storages by ID, the first of a repeated ID winning (storage.cfg's own problem reports the repeat).
    public static func storagesByID(_ storages: [DesiredStorage]) -> [String: DesiredStorage] {
        Dictionary(storages.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// One guest's volumes on the storages of this node, and the names its storage types cannot hold.
    public static func volumes(of guest: DesiredState.Guest,
                               storages byID: [String: DesiredStorage]) -> (volumes: [DesiredVolume], problems: [Diagnostic]) {
        var volumes: [DesiredVolume] = []
        var problems: [Diagnostic] = []
        for entry in guest.config.main.entries where GuestConfig.isDriveKey(entry.key) {
            let isContainerKey = entry.key == "rootfs" || entry.key.hasPrefix("mp")
            if isContainerKey != (guest.kind == .lxc) { continue }
            let value = PropertyString(parsing: entry.value)
            guard let text = value["file"] ?? value["volume"] ?? value.bareValue else { continue }
            if text == "none" || text == "cdrom" || text.hasPrefix("/") || value["media"] == "cdrom" { continue }
            guard let (storageID, volname) = StorageVolumes.parseVolumeID(text) else { continue }
            // A storage missing from storage.cfg is reported by the reference checks (TreeValidator.checkVolumes).
            guard let storage = byID[storageID] else { continue }
            let volume: StorageVolumes.Volume
            do {
                volume = try StorageVolumes.parseVolname(volname, storageType: storage.type)
            } catch {
                // `local-lvm:32` is the API's way to ask for a new disk; a config file names its volume.
                if Int(volname) != nil {
                    let example = "\(storageID):\(suggestedName(storage: storage, vmid: guest.vmid, kind: guest.kind))"
                    problems.append(.error(entry.valueLocation, "\(entry.key): '\(text)' asks for a new \(volname) GiB disk, "
                                           + "which only the API allocates; name the volume (e.g. \(example))", code: .volume))
                } else {
                    problems.append(.error(entry.valueLocation, "\(entry.key): \(error.description)", code: .volume))
                }
                continue
            }
            if volume.vtype == "iso" { continue }
            guard let hostPath = hostPath(storage: storage, volname: volname, volume: volume) else { continue }
            let size = value["size"].flatMap { SizeValue.bytes($0) }
            if value["size"] != nil && size == nil {
                problems.append(.error(entry.valueLocation, "\(entry.key): size '\(value["size"]!)' is not a size (e.g. 32G)", code: .volume))
                continue
            }
            volumes.append(DesiredVolume(volumeID: text, storage: storageID, volname: volname, volume: volume, guestKind: guest.kind,
                                         vmid: guest.vmid, key: entry.key, sizeBytes: size, source: entry.valueLocation, hostPath: hostPath))
        }
        return (volumes, problems)
    }

    static func suggestedName(storage: DesiredStorage, vmid: Int, kind: GuestConfig.Kind) -> String {
        if storage.isFileBased { return "\(vmid)/vm-\(vmid)-disk-0.\(kind == .lxc ? "raw" : "qcow2")" }
        return "vm-\(vmid)-disk-0"
    }

    /// Where a volume is on the host, or nil for storage types whose volumes are not local paths.
    static func hostPath(storage: DesiredStorage, volname: String, volume: StorageVolumes.Volume) -> String? {
        switch storage.type {
        case "lvm", "lvmthin":
            guard let vg = storage.properties["vgname"] else { return nil }
            return "/dev/\(vg)/\(volume.name)"
        case "btrfs":
            // Each image is a subvolume holding disk.raw; a container subvol is the subvolume itself.
            guard let path = storage.path, let vmid = volume.vmid, volume.vtype == "images" else { return nil }
            let directory = (try? StorageVolumes.subdirectory(path: path, contentDirectories: storage.contentDirectories, vtype: "images"))
                ?? path + "/images"
            if volume.format == "subvol" { return "\(directory)/\(vmid)/\(volume.name)" }
            let base = volume.name.hasSuffix(".raw") ? String(volume.name.dropLast(4)) : volume.name
            return "\(directory)/\(vmid)/\(base)/disk.raw"
        default:
            guard storage.isFileBased, let path = storage.path else { return nil }
            return try? StorageVolumes.filesystemPath(path: path, contentDirectories: storage.contentDirectories, volname: volname).path
        }
    }
}
