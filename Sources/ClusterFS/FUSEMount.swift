import CFuse3
import Foundation
import Synchronization

/// Serves a `ClusterFileSystem` through libfuse3's low-level (inode-based) API.
///
/// The kernel keeps names, attributes and file pages in its caches: a change
/// made through this mount keeps the kernel's copies right, and most calls
/// never reach the daemon. In cluster mode a change from another node is
/// applied here behind the kernel's back: the file system then tells the
/// kernel what to forget (FUSE notify: attributes, pages) before the change
/// counts as applied here, and gives a moved entry a fresh node id, so that
/// a cached name for its old place is answered ESTALE and looked up again
/// (names that do not exist are not cached in cluster mode). Status files
/// (generated per read, direct I/O) and lock directories (they expire) are
/// never cached.
/// `default_permissions` lets the kernel enforce the modes (priv/ is root
/// only), `allow_other` lets www-data read.
public enum FUSEMount {
    /// How long the kernel may trust cached names and attributes (seconds).
    static let cacheTimeout = 86_400.0

    /// What every handler finds through `fuse_req_userdata`.
    final class MountContext: Sendable {
        let fileSystem: ClusterFileSystem
        let session = SessionGate()

        init(_ fileSystem: ClusterFileSystem) { self.fileSystem = fileSystem }
    }

    /// Answers given after their handler returned, and notifications, come from other threads (the replicator's
    /// dispatch thread) and use the session, which is destroyed once its loop ends: from then on none is given (the
    /// process is exiting, and a request still unanswered goes with the mount).
    final class SessionGate: Sendable {
        private let users = Atomic<Int>(0)
        private let closed = Atomic<Bool>(false)

        func pass(_ use: () -> Void) {
            users.add(1, ordering: .sequentiallyConsistent)
            defer { users.subtract(1, ordering: .sequentiallyConsistent) }
            guard !closed.load(ordering: .sequentiallyConsistent) else { return }
            use()
        }

        /// Lets nobody in any more, and waits for whoever is inside: an answer is one write to /dev/fuse, but a
        /// notification can wait in the kernel for a page lock that a READ nobody will serve any more holds, so the wait
        /// is bounded (that thread goes with the process).
        func close() {
            closed.store(true, ordering: .sequentiallyConsistent)
            let deadline = ContinuousClock.now + .seconds(2)
            while users.load(ordering: .sequentiallyConsistent) > 0 && ContinuousClock.now < deadline { usleep(1000) }
        }
    }

    private static func context(_ request: fuse_req_t?) -> MountContext {
        Unmanaged<MountContext>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    private static func fileSystem(_ request: fuse_req_t?) -> ClusterFileSystem { context(request).fileSystem }

    static func fill(_ stat: inout stat, _ attributes: Attributes) {
        stat = Glibc.stat()
        switch attributes.kind {
        case .directory: stat.st_mode = S_IFDIR | attributes.mode
        case .file: stat.st_mode = S_IFREG | attributes.mode
        case .symlink: stat.st_mode = S_IFLNK | attributes.mode
        }
        stat.st_ino = UInt(attributes.inode)
        stat.st_nlink = UInt(attributes.links)
        stat.st_uid = attributes.uid
        stat.st_gid = attributes.gid
        stat.st_size = attributes.size
        stat.st_blksize = 4096
        stat.st_blocks = (attributes.size + 511) / 512
        let time = timespec(tv_sec: Int(attributes.mtime), tv_nsec: 0)
        stat.st_mtim = time
        stat.st_ctim = time
        stat.st_atim = time
    }

    private static func timeout(_ attributes: Attributes) -> Double {
        attributes.cacheable ? cacheTimeout : 0
    }

    /// A name the kernel sends, if it is UTF-8. Names are kept, compared and replicated as strings, and decoding other
    /// bytes would repair them (each bad byte becoming U+FFFD): two different names would be one. They are refused.
    private static func name(_ raw: UnsafePointer<CChar>) -> String? {
        String(validatingCString: raw)
    }

    /// The path of a child name under a directory node, or the error to answer: EILSEQ for a name that is not UTF-8,
    /// ESTALE for a directory node that names nothing any more.
    private static func childPath(_ fs: ClusterFileSystem, _ parent: fuse_ino_t, _ raw: UnsafePointer<CChar>?) -> (String?, Int32) {
        guard let raw else { return (nil, -EINVAL) }
        guard let name = name(raw) else { return (nil, -EILSEQ) }
        guard let directory = fs.path(ofNode: UInt64(parent)) else { return (nil, -ESTALE) }
        return (ClusterFileSystem.childPath(directory, name), 0)
    }

    /// What LOOKUP, MKNOD, MKDIR and CREATE answer for an entry.
    private static func entryParameters(_ attributes: Attributes) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = fuse_ino_t(attributes.nodeID)
        fill(&entry.attr, attributes)
        entry.attr_timeout = timeout(attributes)
        entry.entry_timeout = timeout(attributes)
        return entry
    }

    /// A request answered after its handler returned, by the thread that applied its change (cluster mode: the
    /// replicator's dispatch thread; libfuse's replies may come from any thread). The handler's own arguments are gone
    /// by then: what the answer needs is copied.
    struct LaterRequest: @unchecked Sendable {
        private let request: fuse_req_t?
        private let session: SessionGate

        init(_ request: fuse_req_t?) {
            self.request = request
            session = FUSEMount.context(request).session
        }

        func answer(_ reply: (fuse_req_t?) -> Void) { session.pass { reply(request) } }
    }

    /// What LOOKUP (of a name that exists), MKNOD and MKDIR answer.
    private static func replyEntry(_ request: fuse_req_t?, _ fs: ClusterFileSystem, _ result: Int32, _ attributes: Attributes?) {
        guard result == 0, let attributes else {
            fuse_reply_err(request, -result)
            return
        }
        var entry = entryParameters(attributes)
        fs.kernelNodes.learned(attributes.nodeID)
        fuse_reply_entry(request, &entry)
    }

    private static func replyResult(_ request: fuse_req_t?, _ result: Int32) {
        fuse_reply_err(request, -result)
    }

    static func makeOperations() -> fuse_lowlevel_ops {
        var operations = fuse_lowlevel_ops()
        operations.`init` = { _, connection in
            // No writeback cache: a write() returns only once the change is in
            // SQLite, errors (EFBIG) come from write() itself, and the kernel
            // keeps trusting the daemon's sizes (status files change size
            // without a write; with writeback the kernel would keep its own).
            connection?.pointee.want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE)
            // Every change the kernel does not see is invalidated by notify (cluster mode): no GETATTR before each
            // cached read to learn whether the pages still hold.
            connection?.pointee.want &= ~UInt32(FUSE_CAP_AUTO_INVAL_DATA)
        }
        operations.lookup = { request, parent, name in
            // A name that is not UTF-8 cannot have been made here.
            guard let raw = name, let name = FUSEMount.name(raw) else { return FUSEMount.replyResult(request, -ENOENT) }
            let (result, attributes, cacheMissing) = FUSEMount.fileSystem(request).lookup(parent: UInt64(parent), name: name)
            if result == -ENOENT {
                // A negative entry: the kernel remembers the name is missing (when it may).
                var entry = fuse_entry_param()
                entry.entry_timeout = cacheMissing ? FUSEMount.cacheTimeout : 0
                fuse_reply_entry(request, &entry)
                return
            }
            FUSEMount.replyEntry(request, FUSEMount.fileSystem(request), result, attributes)
        }
        operations.forget = { request, node, count in
            FUSEMount.fileSystem(request).kernelNodes.forgot(UInt64(node), count: UInt64(count))
            fuse_reply_none(request)
        }
        operations.forget_multi = { request, count, forgets in
            let nodes = FUSEMount.fileSystem(request).kernelNodes
            for forget in UnsafeBufferPointer(start: forgets, count: count) { nodes.forgot(UInt64(forget.ino), count: UInt64(forget.nlookup)) }
            fuse_reply_none(request)
        }
        operations.getattr = { request, node, _ in
            let (result, attributes) = FUSEMount.fileSystem(request).getattr(node: UInt64(node))
            guard result == 0, let attributes else { return FUSEMount.replyResult(request, result) }
            var stat = Glibc.stat()
            FUSEMount.fill(&stat, attributes)
            fuse_reply_attr(request, &stat, FUSEMount.timeout(attributes))
        }
        operations.setattr = { request, node, attributes, toSet, _ in
            let fs = FUSEMount.fileSystem(request)
            guard let path = fs.path(ofNode: UInt64(node)), let attributes else { return FUSEMount.replyResult(request, -ESTALE) }
            let (found, before) = fs.getattr(node: UInt64(node))
            guard found == 0, let before else { return FUSEMount.replyResult(request, found) }
            var result: Int32 = 0
            if result == 0, toSet & FUSE_SET_ATTR_MODE != 0 { result = fs.chmod(path, mode: attributes.pointee.st_mode) }
            if result == 0, toSet & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0 {
                result = fs.chown(path, uid: toSet & FUSE_SET_ATTR_UID != 0 ? attributes.pointee.st_uid : UInt32.max,
                                  gid: toSet & FUSE_SET_ATTR_GID != 0 ? attributes.pointee.st_gid : UInt32.max)
            }
            if result == 0, toSet & FUSE_SET_ATTR_SIZE != 0 { result = fs.truncate(path, size: Int(attributes.pointee.st_size)) }
            if result == 0, toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
                result = fs.utimens(path, mtime: nil)
            } else if result == 0, toSet & FUSE_SET_ATTR_MTIME != 0 {
                result = fs.utimens(path, mtime: UInt32(truncatingIfNeeded: attributes.pointee.st_mtim.tv_sec))
            }
            guard result == 0 else { return FUSEMount.replyResult(request, result) }
            let (_, after) = fs.getattr(node: UInt64(node))
            // A lock directory that expired on utime(0) is gone: answer with what it was.
            var stat = Glibc.stat()
            FUSEMount.fill(&stat, after ?? before)
            fuse_reply_attr(request, &stat, FUSEMount.timeout(after ?? before))
        }
        operations.readlink = { request, node in
            let fs = FUSEMount.fileSystem(request)
            guard let path = fs.path(ofNode: UInt64(node)) else { return FUSEMount.replyResult(request, -ESTALE) }
            let (result, target) = fs.readlink(path)
            guard result == 0, let target else { return FUSEMount.replyResult(request, result) }
            fuse_reply_readlink(request, target)
        }
        operations.mknod = { request, parent, name, mode, _ in
            let fs = FUSEMount.fileSystem(request)
            let (path, error) = FUSEMount.childPath(fs, parent, name)
            guard let path else { return FUSEMount.replyResult(request, error) }
            guard mode & S_IFMT == S_IFREG else { return FUSEMount.replyResult(request, -EPERM) }
            let later = LaterRequest(request)
            fs.create(path, type: .file) { result, attributes in later.answer { FUSEMount.replyEntry($0, fs, result, attributes) } }
        }
        operations.mkdir = { request, parent, name, _ in
            let fs = FUSEMount.fileSystem(request)
            let (path, error) = FUSEMount.childPath(fs, parent, name)
            guard let path else { return FUSEMount.replyResult(request, error) }
            let later = LaterRequest(request)
            fs.create(path, type: .directory) { result, attributes in later.answer { FUSEMount.replyEntry($0, fs, result, attributes) } }
        }
        operations.unlink = { request, parent, name in
            guard let raw = name else { return FUSEMount.replyResult(request, -EINVAL) }
            guard let name = FUSEMount.name(raw) else { return FUSEMount.replyResult(request, -ENOENT) }
            let later = LaterRequest(request)
            FUSEMount.fileSystem(request).remove(parent: UInt64(parent), name: name, directory: false) { result in
                later.answer { FUSEMount.replyResult($0, result) }
            }
        }
        operations.rmdir = { request, parent, name in
            guard let raw = name else { return FUSEMount.replyResult(request, -EINVAL) }
            guard let name = FUSEMount.name(raw) else { return FUSEMount.replyResult(request, -ENOENT) }
            let later = LaterRequest(request)
            FUSEMount.fileSystem(request).remove(parent: UInt64(parent), name: name, directory: true) { result in
                later.answer { FUSEMount.replyResult($0, result) }
            }
        }
        operations.rename = { request, parent, name, newParent, newName, flags in
            // RENAME_EXCHANGE and RENAME_NOREPLACE are not part of the original's semantics.
            if flags != 0 { return FUSEMount.replyResult(request, -EINVAL) }
            let fs = FUSEMount.fileSystem(request)
            let (from, fromError) = FUSEMount.childPath(fs, parent, name), (to, toError) = FUSEMount.childPath(fs, newParent, newName)
            guard let from, let to else { return FUSEMount.replyResult(request, from == nil ? fromError : toError) }
            let later = LaterRequest(request)
            fs.rename(from, to) { result in later.answer { FUSEMount.replyResult($0, result) } }
        }
        operations.link = { request, _, _, _ in FUSEMount.replyResult(request, -EPERM) }
        operations.open = { request, node, info in
            let fs = FUSEMount.fileSystem(request)
            guard let info else { return FUSEMount.replyResult(request, -EINVAL) }
            // libfuse asks for atomic O_TRUNC: the truncation comes with OPEN
            // instead of a separate SETATTR.
            let writing = info.pointee.flags & O_ACCMODE != O_RDONLY
            var direct = false
            if info.pointee.flags & O_TRUNC != 0 {
                guard let path = fs.path(ofNode: UInt64(node)) else { return FUSEMount.replyResult(request, -ESTALE) }
                let truncated = fs.truncate(path, size: 0)
                if truncated != 0 { return FUSEMount.replyResult(request, truncated) }
            } else {
                guard let bypass = fs.readBypassesPageCache(node: UInt64(node)) else { return FUSEMount.replyResult(request, -ESTALE) }
                direct = bypass && !writing
            }
            // Status files are made per read: never cached. In cluster mode a file opened for writing bypasses the page
            // cache, so that no page lock is held while its write waits for the cluster (the kernel's invalidation of a
            // change from another node waits for page locks), and what was read stays cached until such a change.
            if direct || (node >= ClusterFileSystem.statusNodeBase && node < ClusterFileSystem.symlinkNodeBase) || (writing && fs.isClusterMode) {
                info.pointee.direct_io = 1
            } else {
                info.pointee.keep_cache = 1
                fs.notePagesCached(UInt64(node))
            }
            fuse_reply_open(request, info)
        }
        operations.create = { request, parent, name, _, info in
            let fs = FUSEMount.fileSystem(request)
            guard let raw = name, let info else { return FUSEMount.replyResult(request, -EINVAL) }
            guard let name = FUSEMount.name(raw) else { return FUSEMount.replyResult(request, -EILSEQ) }
            let later = LaterRequest(request), opened = info.pointee
            fs.create(parent: UInt64(parent), name: name) { result, attributes in
                later.answer { request in
                    guard result == 0, let attributes else { return FUSEMount.replyResult(request, result) }
                    var entry = FUSEMount.entryParameters(attributes), file = opened
                    if fs.isClusterMode && file.flags & O_ACCMODE != O_RDONLY {
                        file.direct_io = 1
                    } else {
                        file.keep_cache = 1
                    }
                    fs.kernelNodes.learned(attributes.nodeID)
                    fuse_reply_create(request, &entry, &file)
                }
            }
        }
        operations.read = { request, node, size, offset, _ in
            let (result, bytes) = FUSEMount.fileSystem(request).read(node: UInt64(node), size: size, offset: Int(offset))
            guard result == 0 else { return FUSEMount.replyResult(request, result) }
            _ = bytes.withUnsafeBytes { fuse_reply_buf(request, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        }
        operations.write = { request, node, buffer, size, offset, _ in
            guard let buffer else { return FUSEMount.replyResult(request, -EINVAL) }
            let later = LaterRequest(request)
            FUSEMount.fileSystem(request).write(node: UInt64(node), bytes: UnsafeRawBufferPointer(start: buffer, count: size),
                                                offset: Int(offset)) { result in
                later.answer { result >= 0 ? _ = fuse_reply_write($0, Int(result)) : FUSEMount.replyResult($0, result) }
            }
        }
        operations.statfs = { request, _ in
            var info = statvfs()
            info.f_bsize = 4096
            info.f_frsize = 4096
            info.f_blocks = (128 << 20) / 4096
            info.f_bfree = info.f_blocks
            info.f_bavail = info.f_blocks
            info.f_files = 262_144
            info.f_ffree = 262_144
            info.f_namemax = 255
            fuse_reply_statfs(request, &info)
        }
        // ENOSYS tells the kernel there are no xattrs at all: it stops asking
        // (for security.capability on every write) and applications get
        // EOPNOTSUPP (== ENOTSUP), as from the original.
        operations.setxattr = { request, _, _, _, _, _ in FUSEMount.replyResult(request, -ENOSYS) }
        operations.getxattr = { request, _, _, _ in FUSEMount.replyResult(request, -ENOSYS) }
        operations.listxattr = { request, _, _ in FUSEMount.replyResult(request, -ENOSYS) }
        operations.removexattr = { request, _, _ in FUSEMount.replyResult(request, -ENOSYS) }
        operations.readdir = { request, node, size, offset, _ in
            let fs = FUSEMount.fileSystem(request)
            guard let path = fs.path(ofNode: UInt64(node)) else { return FUSEMount.replyResult(request, -ESTALE) }
            let (result, children) = fs.readdirAttributes(path)
            guard result == 0 else { return FUSEMount.replyResult(request, result) }
            var list: [(String, UInt, mode_t)] = [(".", UInt(node), S_IFDIR), ("..", 0, S_IFDIR)]
            for child in children {
                var stat = Glibc.stat()
                FUSEMount.fill(&stat, child.attributes)
                list.append((child.name, stat.st_ino, stat.st_mode))
            }
            var buffer = [CChar](repeating: 0, count: size)
            var used = 0
            var index = Int(offset)
            while index < list.count {
                var stat = Glibc.stat()
                stat.st_ino = list[index].1
                stat.st_mode = list[index].2
                let needed = buffer.withUnsafeMutableBufferPointer { whole in
                    fuse_add_direntry(request, whole.baseAddress! + used, size - used, list[index].0, &stat, off_t(index + 1))
                }
                if needed > size - used { break }
                used += needed
                index += 1
            }
            buffer.withUnsafeBufferPointer { _ = fuse_reply_buf(request, $0.baseAddress, used) }
        }
        return operations
    }

    /// The session, for notifications from other threads (libfuse's notify calls are thread safe).
    struct SessionHandle: @unchecked Sendable {
        let session: OpaquePointer

        /// Attributes alone where the bytes did not change (no page lock needed), pages too where they did. A node id
        /// the kernel does not hold answers ENOENT: nothing to forget.
        func invalidate(_ stale: CacheInvalidation) {
            for node in stale.contents { fuse_lowlevel_notify_inval_inode(session, fuse_ino_t(node), 0, 0) }
            for node in stale.attributes.subtracting(stale.contents) { fuse_lowlevel_notify_inval_inode(session, fuse_ino_t(node), -1, 0) }
        }
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
        let mount = MountContext(fileSystem)
        let context = Unmanaged.passUnretained(mount).toOpaque()
        let result: Int32 = cArguments.withUnsafeMutableBufferPointer { buffer in
            fuseArguments.argv = buffer.baseAddress
            guard let session = fuse_session_new(&fuseArguments, &operations, MemoryLayout<fuse_lowlevel_ops>.size, context) else {
                return -1
            }
            defer { fuse_session_destroy(session) }
            let handle = SessionHandle(session: session), gate = mount.session
            fileSystem.invalidateKernelCache = { stale in gate.pass { handle.invalidate(stale) } }
            defer { fileSystem.invalidateKernelCache = nil }
            guard fuse_set_signal_handlers(session) == 0 else { return -3 }
            defer { fuse_remove_signal_handlers(session) }
            guard fuse_session_mount(session, mountPoint) == 0 else { return -2 }
            defer { fuse_session_unmount(session) }
            if daemonize { _ = fuse_daemonize(0) }
            // The threads `ready` starts (IPC, the replicator's) and theirs never take SIGTERM/SIGINT/SIGHUP: libfuse's
            // handler only marks the session ended, which the loop's thread sees when the signal interrupts its wait.
            // Taken by another thread, the daemon went on until the next request came (a SIGTERM seen not to stop it).
            var stopSignals = sigset_t()
            sigemptyset(&stopSignals)
            for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&stopSignals, signal) }
            pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
            ready()
            pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
            var config = fuse_loop_config(clone_fd: 0, max_idle_threads: 10)
            let ended = fuse_session_loop_mt_32(session, &config)
            gate.close()
            return ended
        }
        withExtendedLifetime(mount) {}
        switch result {
        case -1: throw MountError(description: "cannot set up FUSE (fuse_session_new)")
        case -2: throw MountError(description: "cannot mount on \(mountPoint)")
        case -3: throw MountError(description: "cannot install signal handlers")
        default: break
        }
    }
}

