import Foundation
import Reconciler
import Synchronization

/// /etc/pve as a push writes it: the files of the push layout, the push's record, its lock, and atomic writes
/// (a temporary name and a rename, as Proxmox writes on pmxcfs), so a push killed at any point leaves every file
/// either old or new.
public struct PushTarget: Sendable {
    public let root: String

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(root: String) {
        self.root = root
    }

    func absolute(_ relative: String) -> String { root.hasSuffix("/") ? root + relative : root + "/" + relative }

    /// Whether the root is a pmxcfs mount (its status files answer), where locks expire through pmxcfs itself.
    public var isClusterFileSystem: Bool { FileManager.default.fileExists(atPath: absolute(".members")) }

    /// Every file of the push layout under the root (`priv/` only when asked for), with its bytes.
    public func layoutFiles(includePrivate: Bool) throws -> [String: Data] {
        var files: [String: Data] = [:]
        func walk(_ relative: String) throws {
            let directory = relative.isEmpty ? root : absolute(relative)
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
            for name in names {
                let path = relative.isEmpty ? name : relative + "/" + name
                if name.hasPrefix(".") || path == PushLayout.recordDirectory || (path == "priv" && !includePrivate) { continue }
                var info = stat()
                guard lstat(absolute(path), &info) == 0 else { continue }
                if info.st_mode & S_IFMT == S_IFDIR {
                    if path != "priv/lock" { try walk(path) }
                } else if info.st_mode & S_IFMT == S_IFREG, PushLayout.stage(of: path, includePrivate: includePrivate) != nil {
                    guard let data = FileManager.default.contents(atPath: absolute(path)) else {
                        throw Failure(description: "\(absolute(path)): cannot read file")
                    }
                    files[path] = data
                }
            }
        }
        try walk("")
        return files
    }

    /// Digests of the same files, to tell whether /etc/pve changed since a plan was made.
    public func layoutDigests(includePrivate: Bool) throws -> [String: String] {
        try layoutFiles(includePrivate: includePrivate).mapValues { PushRecord.digest($0) }
    }

    // MARK: record

    var recordDirectory: String { absolute(PushLayout.recordDirectory) }

    public func record() throws -> PushRecord? {
        let header = recordDirectory + "/" + PushRecord.headerName
        guard let data = FileManager.default.contents(atPath: header) else { return nil }
        return try PushRecord.decode(header: data, file: header) { FileManager.default.contents(atPath: recordDirectory + "/" + $0) }
    }

    /// The parts first, then the header that names them (replaced atomically), then the previous generation's parts.
    public func writeRecord(_ record: PushRecord) throws {
        try FileManager.default.createDirectory(atPath: recordDirectory, withIntermediateDirectories: true)
        let (chunks, header) = try record.encoded()
        for chunk in chunks { try writeAtomically(chunk.data, to: recordDirectory + "/" + chunk.name) }
        try writeAtomically(header, to: recordDirectory + "/" + PushRecord.headerName)
        let current = Set(chunks.map(\.name))
        for name in (try? FileManager.default.contentsOfDirectory(atPath: recordDirectory)) ?? []
        where name.hasPrefix("files-") && !current.contains(name) && !name.contains(".tmp.") {
            try? FileManager.default.removeItem(atPath: recordDirectory + "/" + name)
        }
    }

    // MARK: lock

    /// The push lock, held while files are written: `priv/lock/pvectl-push`, a directory as pmxcfs locks are. On pmxcfs
    /// an expired lock (120 s) is released by asking pmxcfs (utime 0, as PVE::Cluster's cfs_lock does); on a plain
    /// directory a lock older than that is taken over.
    public func lock(timeout: Double = 10) throws -> PushLock {
        let path = absolute(PushLayout.lockPath)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let deadline = Date().addingTimeInterval(timeout)
        let onClusterFileSystem = isClusterFileSystem
        while true {
            if mkdir(path, 0o755) == 0 {
                var info = stat()
                _ = stat(path, &info)
                return PushLock(path: path, inode: UInt64(info.st_ino))
            }
            let failure = errno
            guard failure == EEXIST else { throw Failure(description: "\(path): cannot take the push lock: \(String(cString: strerror(failure)))") }
            var info = stat()
            if stat(path, &info) == 0 {
                let age = Date().timeIntervalSince1970 - Double(info.st_mtim.tv_sec)
                if onClusterFileSystem {
                    var times = [timespec(tv_sec: 0, tv_nsec: 0), timespec(tv_sec: 0, tv_nsec: 0)]
                    _ = utimensat(AT_FDCWD, path, &times, 0)
                } else if age > PushLayout.lockExpiry {
                    rmdir(path)
                    continue
                }
                if Date() >= deadline {
                    throw Failure(description: "another push holds \(path) (taken \(Int(age)) s ago; it expires after "
                                  + "\(Int(PushLayout.lockExpiry)) s)")
                }
            }
            usleep(100_000)
        }
    }

    // MARK: writes

    /// A write or a deletion of one file of the plan.
    public func apply(_ change: PushPlan.FileChange) throws {
        let path = absolute(change.path)
        if change.action == .delete {
            if unlink(path) != 0 && errno != ENOENT {
                throw Failure(description: "\(path): cannot delete: \(String(cString: strerror(errno)))")
            }
            return
        }
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try writeAtomically(change.content ?? Data(), to: path)
    }

    /// Temporary files of earlier pushes that were killed (`NAME.tmp.pvectl.PID` of a process that is gone).
    public func removeLeftovers(in relativePaths: [String]) {
        let directories = Set(relativePaths.map { (absolute($0) as NSString).deletingLastPathComponent } + [recordDirectory])
        for directory in directories {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                guard let range = name.range(of: ".tmp.pvectl."),
                      let pid = Int32(name[range.upperBound...].split(separator: ".").first ?? "") else { continue }
                if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH { unlink(directory + "/" + name) }
            }
        }
    }

    /// A file only root reads (a saved push plan may hold priv/ files), replaced atomically.
    public static func writePrivately(_ data: Data, to path: String) throws {
        try PushTarget(root: "/").writeAtomically(data, to: path, mode: 0o600)
    }

    /// Several threads of one process may write (the loop's watchers stage the same file): each its own temporary.
    static let temporaryCounter = Atomic<Int>(0)

    func writeAtomically(_ data: Data, to path: String, mode: mode_t = 0o640) throws {
        let serial = Self.temporaryCounter.add(1, ordering: .relaxed).newValue
        let temporary = path + ".tmp.pvectl.\(getpid())" + (serial > 1 ? ".\(serial)" : "")
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard descriptor >= 0 else { throw Failure(description: "\(temporary): cannot create: \(String(cString: strerror(errno)))") }
        // A write may take less than all (FUSE hands over at most its buffer per call): go on from where it stopped.
        let failure: Int32? = data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                if written == 0 { return EIO }
                offset += written
            }
            return nil
        }
        close(descriptor)
        if let failure {
            unlink(temporary)
            throw Failure(description: "\(temporary): cannot write: \(String(cString: strerror(failure)))")
        }
        guard rename(temporary, path) == 0 else {
            let failure = errno
            unlink(temporary)
            throw Failure(description: "\(path): cannot replace: \(String(cString: strerror(failure)))")
        }
    }

    // MARK: the node's network file

    /// Stages the repository's `nodes/<node>/network/interfaces` as `interfaces.new` beside the node's live file, as
    /// Proxmox stages network changes, when it differs from the live file; removes a staged file the repository
    /// makes moot. Returns what it did, or nil when nothing was needed.
    public static func stageInterfaces(_ content: Data, live: String) throws -> String? {
        let staged = live + ".new"
        let liveContent = FileManager.default.contents(atPath: live)
        let stagedContent = FileManager.default.contents(atPath: staged)
        if liveContent == content {
            guard stagedContent != nil else { return nil }
            try FileManager.default.removeItem(atPath: staged)
            return "removed \(staged): the repository's interfaces are the live ones"
        }
        if stagedContent == content { return nil }
        try PushTarget(root: "/").writeAtomically(content, to: staged)
        return "staged \(staged); apply it with: pvectl apply --only network"
    }
}

/// The held push lock; released by `release()` (pmxcfs also expires it after 120 s should the holder die).
public struct PushLock: Sendable {
    public let path: String
    /// The lock directory this push made: one another push made after it expired is not this one's to remove.
    let inode: UInt64

    /// Keeps it from expiring (a newer mtime, as pmxcfs lets the holder do).
    public func refresh() {
        guard isStillOurs else { return }
        _ = utimensat(AT_FDCWD, path, nil, 0)
    }

    public func release() {
        if isStillOurs { rmdir(path) }
    }

    var isStillOurs: Bool {
        var info = stat()
        return stat(path, &info) == 0 && UInt64(info.st_ino) == inode
    }
}
