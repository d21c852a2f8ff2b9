import Foundation
import Resources

/// One storage of `storage.cfg` as this node should have it.
public struct DesiredStorage: Hashable, Sendable {
    public var id: String
    public var type: String
    public var source: SourceLocation?
    public var properties: [String: String]
    /// Why the storage is not for this node (disabled, other nodes); nil when it is.
    public var inactiveReason: String?
    public var content: Set<String>
    /// The directory (dir, btrfs) or mount point (nfs, cifs).
    public var path: String?
    public var contentDirectories: [String: String]
    public var createBasePath: Bool
    public var createSubdirectories: Bool
    /// `is_mountpoint`: the storage is usable only while something is mounted here.
    public var requiredMountpoint: String?
    /// CIFS: the credentials file (`priv/storage/<id>.pw` under the config root) when it exists.
    public var credentialsFile: String?

    public var isActiveHere: Bool { inactiveReason == nil }
    public var isFileBased: Bool { path != nil && ["dir", "nfs", "cifs", "btrfs", "cephfs", "glusterfs"].contains(type) }

    /// The content sub-directories activation creates (backup comes with rootdir, as upstream has it).
    public var subdirectories: [String] {
        guard let path, createSubdirectories else { return [] }
        var types = content.filter { StorageVolumes.contentSubdirectories[$0] != nil }
        if content.contains("rootdir") { types.insert("backup") }
        return types.sorted().compactMap { try? StorageVolumes.subdirectory(path: path, contentDirectories: contentDirectories, vtype: $0) }
            .filter { $0 != path }
    }
}

/// A disk or container volume a guest config names.
public struct DesiredVolume: Hashable, Sendable {
    public var volumeID: String
    public var storage: String
    public var volname: String
    public var volume: StorageVolumes.Volume
    public var guestKind: GuestConfig.Kind
    public var vmid: Int
    /// The config key (scsi0, rootfs, mp1).
    public var key: String
    public var sizeBytes: UInt64?
    public var source: SourceLocation
    /// Where the volume lives on this host: a file, a directory or a block device.
    public var hostPath: String
}

/// What a storage looks like on the host now.
public struct ObservedStorage: Hashable, Sendable {
    public struct Capacity: Hashable, Sendable {
        public var total: UInt64
        public var used: UInt64
        public var available: UInt64
        public init(total: UInt64, used: UInt64, available: UInt64) {
            self.total = total
            self.used = used
            self.available = available
        }
    }

    public struct Mount: Hashable, Sendable {
        public var source: String
        public var fileSystem: String
        public init(source: String, fileSystem: String) {
            self.source = source
            self.fileSystem = fileSystem
        }
    }

    public var pathIsDirectory = false
    public var missingSubdirectories: [String] = []
    /// What is mounted exactly at the storage's path, if anything.
    public var mount: Mount?
    /// Whether the is_mountpoint directory has something mounted on it.
    public var requiredMountpointMounted = true
    /// The file system the path lives on.
    public var fileSystem: String?
    public var capacity: Capacity?
    /// LVM: whether the volume group exists, and its inactive logical volumes.
    public var volumeGroupExists = false
    public var inactiveLogicalVolumes: [String] = []
    /// LVM-thin: the thin pool exists / is active.
    public var thinPoolExists = false
    public var thinPoolActive = false
    /// Why this node cannot use the storage type at all (a missing tool or
    /// kernel feature); nil when it can.
    public var unavailable: String?

    public init() {}
}

/// A volume on the host now.
public struct ObservedVolume: Hashable, Sendable {
    public var exists: Bool
    /// The guest-visible size (virtual size of an image, size of a logical volume).
    public var sizeBytes: UInt64?

    public init(exists: Bool, sizeBytes: UInt64? = nil) {
        self.exists = exists
        self.sizeBytes = sizeBytes
    }
}

/// One operation on the host, in the order apply runs them.
public enum StorageStep: Hashable, Sendable, Codable, CustomStringConvertible {
    case makeDirectory(String)
    case mount(fileSystem: String, source: String, target: String, options: String?)
    case unmount(String)
    case activateVolumeGroup(String)
    case activateLogicalVolume(String)
    /// qemu-img create; `filesystem` formats a raw container image with ext4.
    case createImage(path: String, format: String, bytes: UInt64, filesystem: Bool)
    case createDirectoryVolume(String)
    case createBtrfsSubvolume(String)
    case createLogicalVolume(volumeGroup: String, name: String, bytes: UInt64, thinPool: String?, filesystem: Bool)
    case resizeImage(path: String, format: String, bytes: UInt64, filesystem: Bool)
    case resizeLogicalVolume(path: String, bytes: UInt64, filesystem: Bool)
    /// A running VM's disk grown through QMP block_resize (QEMU grows the image itself).
    case resizeRunningDisk(vmid: Int, device: String, bytes: UInt64)

    public var description: String {
        switch self {
        case .makeDirectory(let path): "mkdir -p \(path)"
        case .mount(let fs, let source, let target, let options): "mount -t \(fs) \(source) \(target)" + (options.map { " -o \($0)" } ?? "")
        case .unmount(let target): "umount \(target)"
        case .activateVolumeGroup(let vg): "vgchange -aly \(vg)"
        case .activateLogicalVolume(let lv): "lvchange -ay \(lv)"
        case .createImage(let path, let format, let bytes, let filesystem):
            "qemu-img create -f \(format) \(path) \(bytes / 1024)K" + (filesystem ? " && mkfs.ext4 \(path)" : "")
        case .createDirectoryVolume(let path): "mkdir \(path)"
        case .createBtrfsSubvolume(let path): "btrfs subvolume create \(path)"
        case .createLogicalVolume(let vg, let name, let bytes, let pool, let filesystem):
            (pool.map { "lvcreate -V \(bytes / 1024)k -T \(vg)/\($0) -n \(name)" } ?? "lvcreate -L \(bytes / 1024)k -n \(name) \(vg)")
                + (filesystem ? " && mkfs.ext4 /dev/\(vg)/\(name)" : "")
        case .resizeImage(let path, let format, let bytes, let filesystem):
            "qemu-img resize -f \(format) \(path) \(bytes)" + (filesystem ? " && resize2fs \(path)" : "")
        case .resizeLogicalVolume(let path, let bytes, let filesystem):
            "lvextend -L \(bytes / 1024)k \(path)" + (filesystem ? " && resize2fs \(path)" : "")
        case .resizeRunningDisk(let vmid, let device, let bytes):
            "QMP block_resize \(device) \(bytes) (VM \(vmid) is running)"
        }
    }
}

/// The host side of the storage kind: observation and the operations above.
public protocol StorageDriver: Sendable {
    func observe(_ storage: DesiredStorage) async -> ObservedStorage
    func observe(_ volume: DesiredVolume, format: String) async -> ObservedVolume
    func perform(_ step: StorageStep) async throws
    /// Whether a VM's QEMU process runs (its disks are then resized over QMP).
    func isRunning(vmid: Int) async -> Bool
}

/// What the storage kind remembers: the mounts it made (it unmounts only those).
public struct StorageRecords: Codable, Hashable, Sendable {
    public struct MountRecord: Codable, Hashable, Sendable {
        public var target: String
        public var source: String
        public var fileSystem: String
        public var mountedAt: Date
    }

    public var mounts: [String: MountRecord] = [:]
    public init() {}
}
