import Foundation
import Reconciler
import Resources

/// The storage kind on this host: the mount table, statvfs, LVM's report
/// commands and qemu-img for observation; mkdir, mount(8), LVM and qemu-img
/// for the operations.
public struct HostStorageDriver: StorageDriver {
    public init() {}

    // MARK: the mount table

    struct MountEntry {
        var target: String
        var source: String
        var fileSystem: String
    }

    /// /proc/self/mountinfo, with its octal escapes (\040 for a space) undone.
    static func mounts() -> [MountEntry] {
        guard let text = readProcFile("/proc/self/mountinfo") else { return [] }
        func unescape(_ field: Substring) -> String {
            var out = ""
            var characters = field.makeIterator()
            while let character = characters.next() {
                if character == "\\" {
                    let digits = String([characters.next(), characters.next(), characters.next()].compactMap { $0 })
                    if let code = UInt8(digits, radix: 8) { out.unicodeScalars.append(Unicode.Scalar(code)) } else { out += "\\" + digits }
                } else {
                    out.append(character)
                }
            }
            return out
        }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count, fields.count > 4 else { return nil }
            return MountEntry(target: unescape(fields[4]), source: unescape(fields[dash + 2]), fileSystem: String(fields[dash + 1]))
        }
    }

    /// The mount a path lives on (the longest mount point that is a prefix of it).
    static func mount(containing path: String, in mounts: [MountEntry]) -> MountEntry? {
        let resolved = HostVolumeFiles().resolve(path) ?? path
        return mounts.filter { resolved == $0.target || resolved.hasPrefix($0.target == "/" ? "/" : $0.target + "/") }
            .max { $0.target.count < $1.target.count }
    }

    static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    // MARK: what this node can do

    static func hasTool(_ name: String) -> Bool {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        let directories: [String] = path.split(separator: ":").map(String.init) + ["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
        return directories.contains { FileManager.default.isExecutableFile(atPath: $0 + "/" + name) }
    }

    /// Whether the kernel knows a file system type, loading its module if it can.
    static func kernelHasFileSystem(_ name: String) async -> Bool {
        func listed() -> Bool {
            (readProcFile("/proc/filesystems") ?? "").split(separator: "\n")
                .contains { $0.split(separator: "\t").last.map(String.init) == name }
        }
        if listed() { return true }
        _ = try? await Command.run(["modprobe", "-q", name])
        return listed()
    }

    static func kernelHasDeviceMapper() async -> Bool {
        if FileManager.default.fileExists(atPath: "/dev/mapper/control") { return true }
        _ = try? await Command.run(["modprobe", "-q", "dm_mod"])
        return (readProcFile("/proc/misc") ?? "").contains("device-mapper")
    }

    /// Why this node cannot use a storage type, or nil.
    static func unavailability(_ type: String) async -> String? {
        switch type {
        case "dir": return nil
        case "btrfs":
            if !(await kernelHasFileSystem("btrfs")) { return "the kernel has no btrfs support" }
            return hasTool("btrfs") ? nil : "the btrfs command is not installed (btrfs-progs)"
        case "nfs":
            if !hasTool("mount.nfs") { return "mount.nfs is not installed (nfs-common)" }
            return await kernelHasFileSystem("nfs") ? nil : "the kernel has no NFS client"
        case "cifs":
            if !hasTool("mount.cifs") { return "mount.cifs is not installed (cifs-utils)" }
            return await kernelHasFileSystem("cifs") ? nil : "the kernel has no CIFS client"
        case "lvm", "lvmthin":
            if !hasTool("lvs") { return "LVM is not installed (lvm2)" }
            return await kernelHasDeviceMapper() ? nil : "the kernel has no device-mapper"
        case "zfspool": return hasTool("zfs") ? "pvectl does not activate zfspool storage yet" : "zfs is not installed (zfsutils-linux)"
        case "zfs":
            return hasTool("iscsiadm") ? "pvectl does not manage ZFS over iSCSI yet" : "ZFS over iSCSI needs open-iscsi (iscsiadm), not installed"
        case "iscsi", "iscsidirect":
            return hasTool("iscsiadm") ? "pvectl does not log in to iSCSI targets yet" : "iscsiadm is not installed (open-iscsi)"
        case "rbd": return hasTool("rbd") ? "pvectl does not map Ceph RBD images yet" : "the rbd command is not installed (ceph-common)"
        case "cephfs": return hasTool("mount.ceph") ? "pvectl does not mount CephFS yet" : "mount.ceph is not installed (ceph-common)"
        case "pbs":
            return hasTool("proxmox-backup-client") ? "a Proxmox Backup Server storage has nothing to activate on the node"
                : "proxmox-backup-client is not installed"
        case "glusterfs":
            return hasTool("mount.glusterfs") ? "pvectl does not mount GlusterFS yet" : "mount.glusterfs is not installed (glusterfs-client)"
        case "esxi": return "the ESXi import storage needs Proxmox's esxi-folder-fuse, not available here"
        default: return "unknown storage type \(type)"
        }
    }

    // MARK: LVM

    /// LVM without udev (containers, test VMs) must make its device nodes itself.
    static var lvmEnvironment: [String: String] {
        FileManager.default.fileExists(atPath: "/run/udev/control") ? [:] : ["DM_DISABLE_UDEV": "1"]
    }

    static func lvm(_ arguments: [String]) async throws -> CommandResult {
        try await Command.run(arguments, environment: lvmEnvironment)
    }

    static func lvmCheck(_ arguments: [String]) async throws {
        let result = try await lvm(arguments)
        guard result.succeeded else { throw CommandError(command: arguments, result: result) }
    }

    /// /dev/mapper/<vg>-<lv>: present even where udev made no /dev/<vg> links.
    static func mapperPath(volumeGroup: String, volume: String) -> String {
        "/dev/mapper/" + volumeGroup.replacingOccurrences(of: "-", with: "--") + "-" + volume.replacingOccurrences(of: "-", with: "--")
    }

    static func logicalVolume(fromPath path: String) -> (vg: String, lv: String)? {
        let parts = path.split(separator: "/").map(String.init)
        guard parts.count == 3, parts[0] == "dev" else { return nil }
        return (parts[1], parts[2])
    }

    // MARK: observation

    public func observe(_ storage: DesiredStorage) async -> ObservedStorage {
        var observed = ObservedStorage()
        if let why = await Self.unavailability(storage.type) {
            observed.unavailable = why
            return observed
        }
        let mounts = Self.mounts()
        if let path = storage.path {
            observed.pathIsDirectory = Self.isDirectory(path)
            observed.mount = mounts.last { $0.target == path }.map { ObservedStorage.Mount(source: $0.source, fileSystem: $0.fileSystem) }
            observed.fileSystem = observed.pathIsDirectory ? Self.mount(containing: path, in: mounts)?.fileSystem : nil
            if let mountpoint = storage.requiredMountpoint { observed.requiredMountpointMounted = mounts.contains { $0.target == mountpoint } }
            observed.missingSubdirectories = storage.subdirectories.filter { !Self.isDirectory($0) }
            let mountedAsWanted = !(storage.type == "nfs" || storage.type == "cifs") || observed.mount != nil
            if observed.pathIsDirectory && mountedAsWanted {
                var info = statvfs()
                if statvfs(path, &info) == 0, info.f_blocks > 0 {
                    let unit = UInt64(info.f_frsize)
                    let total = UInt64(info.f_blocks) * unit
                    observed.capacity = .init(total: total, used: total - UInt64(info.f_bfree) * unit, available: UInt64(info.f_bavail) * unit)
                }
            }
        }
        if storage.type == "lvm" || storage.type == "lvmthin", let vg = storage.properties["vgname"] {
            if let result = try? await Self.lvm(["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_size,vg_free", vg]),
               result.succeeded {
                observed.volumeGroupExists = true
                let numbers = result.output.split(whereSeparator: \.isWhitespace).compactMap { UInt64($0) }
                if storage.type == "lvm", numbers.count == 2 {
                    observed.capacity = .init(total: numbers[0], used: numbers[0] - numbers[1], available: numbers[1])
                }
                let volumes = (try? await Self.lvm(["lvs", "--noheadings", "--units", "b", "--nosuffix", "-o",
                                                    "lv_name,lv_attr,lv_size,data_percent", vg]))?.output ?? ""
                for line in volumes.split(separator: "\n") {
                    let fields = line.split(whereSeparator: \.isWhitespace).map(String.init)
                    guard fields.count >= 2 else { continue }
                    let attributes = Array(fields[1])
                    let active = attributes.count > 4 && attributes[4] == "a"
                    if !active { observed.inactiveLogicalVolumes.append(fields[0]) }
                    if storage.type == "lvmthin", fields[0] == storage.properties["thinpool"], attributes.first == "t" {
                        observed.thinPoolExists = true
                        observed.thinPoolActive = active
                        if fields.count >= 4, let size = UInt64(fields[2]), let percent = Double(fields[3]) {
                            let used = UInt64(Double(size) * percent / 100)
                            observed.capacity = .init(total: size, used: used, available: size - used)
                        }
                    }
                }
            }
        }
        return observed
    }

    public func observe(_ volume: DesiredVolume, format: String) async -> ObservedVolume {
        if let (vg, lv) = Self.logicalVolume(fromPath: volume.hostPath) {
            guard let result = try? await Self.lvm(["lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_size", "\(vg)/\(lv)"]),
                  result.succeeded else { return ObservedVolume(exists: false) }
            return ObservedVolume(exists: true, sizeBytes: UInt64(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        var info = stat()
        guard lstat(volume.hostPath, &info) == 0 else { return ObservedVolume(exists: false) }
        if (info.st_mode & S_IFMT) == S_IFDIR { return ObservedVolume(exists: true, sizeBytes: nil) }
        if format == "raw" { return ObservedVolume(exists: true, sizeBytes: UInt64(info.st_size)) }
        // A qcow2 header states the virtual size (big-endian u64 at byte 24):
        // no qemu-img process per volume on a node with hundreds of disks.
        if format == "qcow2", let header = HostVolumeFiles().qcow2Header(volume.hostPath) {
            return ObservedVolume(exists: true, sizeBytes: header.virtualSize)
        }
        // -U: a running QEMU holds the image locked; reading its size is safe.
        guard let result = try? await Command.run(["qemu-img", "info", "-U", "--output=json", "-f", format, volume.hostPath]), result.succeeded,
              let object = try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any],
              let size = (object["virtual-size"] as? NSNumber)?.uint64Value else {
            return ObservedVolume(exists: true, sizeBytes: nil)
        }
        return ObservedVolume(exists: true, sizeBytes: size)
    }

    // MARK: operations

    public func perform(_ step: StorageStep) async throws {
        switch step {
        case .makeDirectory(let path):
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        case .mount(let fileSystem, let source, let target, let options):
            var arguments = ["mount", "-t", fileSystem, source, target]
            if let options, !options.isEmpty { arguments += ["-o", options] }
            try await Command.check(arguments)
        case .unmount(let target):
            try await Command.check(["umount", target])
        case .activateVolumeGroup(let vg):
            try await Self.lvmCheck(["vgchange", "-aly", vg])
        case .activateLogicalVolume(let lv):
            try await Self.lvmCheck(["lvchange", "-ay", lv])
        case .createImage(let path, let format, let bytes, let filesystem):
            guard !FileManager.default.fileExists(atPath: path) else { throw StorageDriverError("disk image '\(path)' already exists") }
            // Upstream's defaults: qcow2 with metadata preallocation, raw sparse.
            var arguments = ["qemu-img", "create"]
            if format == "qcow2" { arguments += ["-o", "preallocation=metadata"] }
            arguments += ["-f", format, path, "\(Self.kibibytes(bytes))K"]
            do {
                try await Command.check(arguments)
                // As upstream allocates (umask 0037): readable by root's group, nobody else.
                chmod(path, 0o640)
                if filesystem { try await Command.check(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", path]) }
            } catch {
                unlink(path)
                throw error
            }
        case .createDirectoryVolume(let path):
            guard mkdir(path, 0o755) == 0 else { throw StorageDriverError("unable to create subvol '\(path)': \(String(cString: strerror(errno)))") }
        case .createBtrfsSubvolume(let path):
            try await Command.check(["btrfs", "-q", "subvolume", "create", path])
        case .createLogicalVolume(let vg, let name, let bytes, let pool, let filesystem):
            if let pool {
                try await Self.lvmCheck(["lvcreate", "-aly", "-V", "\(Self.kibibytes(bytes))k", "--name", name, "--thinpool", "\(vg)/\(pool)"])
            } else {
                try await Self.lvmCheck(["lvcreate", "-aly", "-Wy", "--yes", "--size", "\(Self.kibibytes(bytes))k", "--name", name, vg])
            }
            if filesystem {
                try await Command.check(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", Self.mapperPath(volumeGroup: vg, volume: name)])
            }
        case .resizeImage(let path, let format, let bytes, let filesystem):
            try await Command.check(["qemu-img", "resize", "-f", format, path, String(Self.kibibytes(bytes) * 1024)])
            if filesystem { try await growFilesystem(path) }
        case .resizeRunningDisk(let vmid, let device, let bytes):
            let socket = Self.runDirectory + "/\(vmid).qmp"
            try await Task.detached {
                let client = try QMPClient(path: socket)
                try client.execute("block_resize", arguments: ["device": device, "size": bytes])
            }.value
        case .resizeLogicalVolume(let path, let bytes, let filesystem):
            guard let (vg, lv) = Self.logicalVolume(fromPath: path) else { throw StorageDriverError("not a logical volume: \(path)") }
            try await Self.lvmCheck(["lvextend", "-L", "\(Self.kibibytes(bytes))k", "\(vg)/\(lv)"])
            if filesystem { try await growFilesystem(Self.mapperPath(volumeGroup: vg, volume: lv)) }
        }
    }

    /// Where qemu-server keeps a VM's pid file and QMP socket.
    public static let runDirectory = "/run/qemu-server"

    public func isRunning(vmid: Int) async -> Bool {
        guard let text = try? String(contentsOfFile: Self.runDirectory + "/\(vmid).pid", encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0 else { return false }
        // A recycled pid is not our QEMU: its command line must name QEMU.
        let commandLine = readProcFile("/proc/\(pid)/cmdline") ?? ""
        return commandLine.contains("qemu")
    }

    /// A container's ext4 grown to its volume (offline: checked first, as resize2fs requires).
    func growFilesystem(_ device: String) async throws {
        let check = try await Command.run(["e2fsck", "-f", "-p", device])
        // 0: clean, 1: errors corrected.
        guard check.status == 0 || check.status == 1 else { throw CommandError(command: ["e2fsck", "-f", "-p", device], result: check) }
        try await Command.check(["resize2fs", device])
    }

    /// Sizes go to the tools in KiB, rounded up, as upstream allocates.
    static func kibibytes(_ bytes: UInt64) -> UInt64 { (bytes + 1023) / 1024 }
}

public struct StorageDriverError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A /proc file read to its end. Foundation's String(contentsOfFile:) trusts
/// the size stat reports, which is 0 for procfs, and returns one page: a host
/// with many mounts (every `ip netns add` is one) lost the rest of mountinfo.
/// A process's command line (`/proc/PID/cmdline`), empty when it is gone.
public func processArguments(_ pid: Int32) -> [String] {
    (readProcFile("/proc/\(pid)/cmdline") ?? "").split(separator: "\0").map(String.init)
}

func readProcFile(_ path: String) -> String? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    guard let data = try? handle.readToEnd() else { return nil }
    return String(decoding: data, as: UTF8.self)
}
