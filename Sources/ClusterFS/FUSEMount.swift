import CFuse3
import Foundation

/// Serves a `ClusterFileSystem` through libfuse3's path-based API.
///
/// Regular files keep the kernel page cache (every write goes through this
/// mount, so the kernel's copy stays right); status files are generated per
/// read and use direct I/O. `default_permissions` lets the kernel enforce the
/// modes (priv/ is root only), `allow_other` lets www-data read.
public enum FUSEMount {
    private static func fileSystem() -> ClusterFileSystem {
        Unmanaged<ClusterFileSystem>.fromOpaque(fuse_get_context()!.pointee.private_data).takeUnretainedValue()
    }

    private static func path(_ cPath: UnsafePointer<CChar>?) -> String {
        cPath.map { String(cString: $0) } ?? "/"
    }

    static func fill(_ stat: UnsafeMutablePointer<stat>, _ attributes: Attributes) {
        stat.pointee = Glibc.stat()
        switch attributes.kind {
        case .directory: stat.pointee.st_mode = S_IFDIR | attributes.mode
        case .file: stat.pointee.st_mode = S_IFREG | attributes.mode
        case .symlink: stat.pointee.st_mode = S_IFLNK | attributes.mode
        }
        stat.pointee.st_ino = UInt(attributes.inode)
        stat.pointee.st_nlink = UInt(attributes.links)
        stat.pointee.st_uid = attributes.uid
        stat.pointee.st_gid = attributes.gid
        stat.pointee.st_size = attributes.size
        stat.pointee.st_blksize = 4096
        stat.pointee.st_blocks = (attributes.size + 511) / 512
        let time = timespec(tv_sec: Int(attributes.mtime), tv_nsec: 0)
        stat.pointee.st_mtim = time
        stat.pointee.st_ctim = time
        stat.pointee.st_atim = time
    }

    static func makeOperations() -> fuse_operations {
        var operations = fuse_operations()
        operations.getattr = { cPath, stat, _ in
            let (result, attributes) = FUSEMount.fileSystem().getattr(FUSEMount.path(cPath))
            if let attributes, let stat { FUSEMount.fill(stat, attributes) }
            return result
        }
        operations.readlink = { cPath, buffer, size in
            let (result, target) = FUSEMount.fileSystem().readlink(FUSEMount.path(cPath))
            guard let target, let buffer, size > 0 else { return result }
            let bytes = Array(target.utf8.prefix(size - 1))
            bytes.withUnsafeBytes { UnsafeMutableRawPointer(buffer).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            buffer[bytes.count] = 0
            return 0
        }
        operations.mkdir = { cPath, _ in FUSEMount.fileSystem().mkdir(FUSEMount.path(cPath)) }
        operations.unlink = { cPath in FUSEMount.fileSystem().unlink(FUSEMount.path(cPath)) }
        operations.rmdir = { cPath in FUSEMount.fileSystem().rmdir(FUSEMount.path(cPath)) }
        operations.rename = { from, to, flags in
            // RENAME_EXCHANGE and RENAME_NOREPLACE are not part of the original's semantics.
            if flags != 0 { return -EINVAL }
            return FUSEMount.fileSystem().rename(FUSEMount.path(from), FUSEMount.path(to))
        }
        operations.link = { _, _ in -EPERM }
        operations.chmod = { cPath, mode, _ in FUSEMount.fileSystem().chmod(FUSEMount.path(cPath), mode: mode) }
        operations.chown = { cPath, uid, gid, _ in FUSEMount.fileSystem().chown(FUSEMount.path(cPath), uid: uid, gid: gid) }
        operations.truncate = { cPath, size, _ in FUSEMount.fileSystem().truncate(FUSEMount.path(cPath), size: Int(size)) }
        operations.open = { cPath, info in
            let path = FUSEMount.path(cPath)
            let (result, attributes) = FUSEMount.fileSystem().getattr(path)
            guard result == 0, let attributes else { return result }
            if attributes.kind == .directory { return -EISDIR }
            if let info {
                if ClusterFileSystem.statusFiles.contains(String(path.dropFirst())) {
                    info.pointee.direct_io = 1
                } else {
                    info.pointee.keep_cache = 1
                }
                if (info.pointee.flags & O_TRUNC) != 0 {
                    let truncated = FUSEMount.fileSystem().truncate(path, size: 0)
                    if truncated != 0 { return truncated }
                }
            }
            return 0
        }
        operations.create = { cPath, _, info in
            let path = FUSEMount.path(cPath)
            let fs = FUSEMount.fileSystem()
            // O_CREAT without O_EXCL on an existing file opens (and O_TRUNC empties) it.
            if let info, (info.pointee.flags & O_EXCL) == 0, fs.getattr(path).0 == 0 {
                info.pointee.keep_cache = 1
                return (info.pointee.flags & O_TRUNC) != 0 ? fs.truncate(path, size: 0) : 0
            }
            let result = fs.create(path)
            if result == 0, let info { info.pointee.keep_cache = 1 }
            return result
        }
        operations.read = { cPath, buffer, size, offset, _ in
            let (result, bytes) = FUSEMount.fileSystem().read(FUSEMount.path(cPath), size: size, offset: Int(offset))
            guard result == 0 else { return result }
            if let buffer, !bytes.isEmpty {
                bytes.withUnsafeBytes { UnsafeMutableRawPointer(buffer).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            }
            return Int32(bytes.count)
        }
        operations.write = { cPath, buffer, size, offset, _ in
            guard let buffer else { return -EINVAL }
            return FUSEMount.fileSystem().write(FUSEMount.path(cPath), bytes: UnsafeRawBufferPointer(start: buffer, count: size), offset: Int(offset))
        }
        operations.statfs = { _, info in
            guard let info else { return 0 }
            info.pointee = statvfs()
            info.pointee.f_bsize = 4096
            info.pointee.f_frsize = 4096
            info.pointee.f_blocks = (128 << 20) / 4096
            info.pointee.f_bfree = info.pointee.f_blocks
            info.pointee.f_bavail = info.pointee.f_blocks
            info.pointee.f_files = 262_144
            info.pointee.f_ffree = 262_144
            info.pointee.f_namemax = 255
            return 0
        }
        operations.fsync = { _, _, _ in 0 }
        // ENOSYS tells the kernel there are no xattrs at all: it stops asking
        // (for security.capability on every write) and applications get
        // EOPNOTSUPP (== ENOTSUP), as from the original.
        operations.setxattr = { _, _, _, _, _ in -ENOSYS }
        operations.getxattr = { _, _, _, _ in -ENOSYS }
        operations.listxattr = { _, _, _ in -ENOSYS }
        operations.removexattr = { _, _ in -ENOSYS }
        operations.readdir = { cPath, buffer, filler, _, _, _ in
            let (result, names) = FUSEMount.fileSystem().readdir(FUSEMount.path(cPath))
            guard result == 0, let filler else { return result }
            _ = filler(buffer, ".", nil, 0, fuse_fill_dir_flags(0))
            _ = filler(buffer, "..", nil, 0, fuse_fill_dir_flags(0))
            for name in names { _ = filler(buffer, name, nil, 0, fuse_fill_dir_flags(0)) }
            return 0
        }
        operations.utimens = { cPath, times, _ in
            var mtime: UInt32? = nil
            if let times {
                let modification = times[1]
                // UTIME_OMIT and UTIME_NOW from <sys/stat.h> (macros Swift does not import).
                let omit = (1 << 30) - 2, now = (1 << 30) - 1
                if modification.tv_nsec == omit { return 0 }
                if modification.tv_nsec != now { mtime = UInt32(truncatingIfNeeded: modification.tv_sec) }
            }
            return FUSEMount.fileSystem().utimens(FUSEMount.path(cPath), mtime: mtime)
        }
        operations.`init` = { _, config in
            config?.pointee.use_ino = 1
            // In local mode every change goes through this mount, so the kernel's
            // dentries, attributes and page cache stay right; cache them (and
            // missing names) instead of asking on every lookup and open.
            config?.pointee.attr_timeout = 60
            config?.pointee.entry_timeout = 60
            config?.pointee.negative_timeout = 60
            config?.pointee.kernel_cache = 1
            return fuse_get_context()?.pointee.private_data
        }
        return operations
    }

    public struct MountError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Mounts and serves until unmounted or SIGTERM/SIGINT/SIGHUP; then unmounts.
    /// - Parameters:
    ///   - daemonize: detach from the terminal once mounted.
    ///   - ready: runs once mounted (and detached): the process id is final then.
    public static func serve(_ fileSystem: ClusterFileSystem, at mountPoint: String, daemonize: Bool, debug: Bool = false,
                             ready: () -> Void = {}) throws {
        var arguments = ["pmxcfs", "-o", "default_permissions,allow_other,fsname=pmxcfs,subtype=pmxcfs"]
        if debug { arguments.append("-d") }
        var cArguments = arguments.map { strdup($0) }
        defer { cArguments.forEach { free($0) } }
        var fuseArguments = fuse_args(argc: Int32(cArguments.count), argv: nil, allocated: 0)
        var operations = makeOperations()
        let context = Unmanaged.passUnretained(fileSystem).toOpaque()
        let result: Int32 = cArguments.withUnsafeMutableBufferPointer { buffer in
            fuseArguments.argv = buffer.baseAddress
            guard let fuse = fuse_new(&fuseArguments, &operations, MemoryLayout<fuse_operations>.size, context) else { return -1 }
            defer { fuse_destroy(fuse) }
            guard fuse_mount(fuse, mountPoint) == 0 else { return -2 }
            defer { fuse_unmount(fuse) }
            let session = fuse_get_session(fuse)
            guard fuse_set_signal_handlers(session) == 0 else { return -3 }
            defer { fuse_remove_signal_handlers(session) }
            if daemonize { _ = fuse_daemonize(0) }
            ready()
            var config = fuse_loop_config(clone_fd: 0, max_idle_threads: 10)
            return fuse_loop_mt_32(fuse, &config)
        }
        switch result {
        case -1: throw MountError(description: "cannot set up FUSE (fuse_new)")
        case -2: throw MountError(description: "cannot mount on \(mountPoint)")
        case -3: throw MountError(description: "cannot install signal handlers")
        default: break
        }
    }
}
