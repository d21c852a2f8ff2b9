import Foundation
import Reconciler

@_silgen_name("pidfd_open") private func pidfdOpen(_ pid: pid_t, _ flags: UInt32) -> Int32
@_silgen_name("setns") private func setNamespace(_ fd: Int32, _ type: Int32) -> Int32

/// A mount point added to a running container, as pve-container hot-plugs one: the volume is mounted (or the host path
/// taken) on the host, cloned as a detached mount tree (`open_tree`), made read-only when asked (`mount_setattr`), and
/// moved into the container's mount namespace (`move_mount`) by a forked child that joins it through a pidfd of the
/// container's init: a multi-threaded process cannot join a mount namespace itself, and the child, alone in its
/// process, calls nothing but system calls on values prepared before the fork.
enum MountPointHotplug {
    // Kernel ABI values Glibc's module does not export.
    static let atRecursive: UInt32 = 0x8000
    static let atEmptyPath: UInt32 = 0x1000
    static let cloneNewNS: Int32 = 0x0002_0000

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// `owner` is the container's root on the host (100000 when unprivileged), given the directories made for the target.
    static func insert(_ mount: ContainerMount, initPID: Int32, owner: (uid: uid_t, gid: gid_t)?, staging: String) async throws {
        let tree = try await detachedTree(mount, staging: staging)
        defer { close(tree) }
        if mount.readOnly {
            var attributes = mount_attr()
            attributes.attr_set = UInt64(MOUNT_ATTR_RDONLY)
            guard mount_setattr(tree, "", atEmptyPath | atRecursive, &attributes, MemoryLayout<mount_attr>.size) == 0 else {
                throw Failure(description: "\(mount.key): cannot make the mount read-only: \(String(cString: strerror(errno)))")
            }
        }
        let pidfd = pidfdOpen(initPID, 0)
        guard pidfd >= 0 else { throw Failure(description: "\(mount.key): the container's init (pid \(initPID)) is gone") }
        defer { close(pidfd) }
        try moveIntoContainer(tree: tree, pidfd: pidfd, target: mount.path, owner: owner, key: mount.key)
    }

    /// The volume as a detached mount tree: a directory or host path cloned as it is; an image or device mounted on a
    /// staging directory first (the clone keeps it mounted, a loop device with it), which is then let go.
    static func detachedTree(_ mount: ContainerMount, staging: String) async throws -> Int32 {
        let flags = UInt32(OPEN_TREE_CLONE) | UInt32(OPEN_TREE_CLOEXEC) | atRecursive
        switch mount.type {
        case .directory, .bind:
            guard FileManager.default.fileExists(atPath: mount.source) else {
                throw Failure(description: "\(mount.key): \(mount.source) does not exist")
            }
            let tree = open_tree(AT_FDCWD, mount.source, flags)
            guard tree >= 0 else { throw Failure(description: "\(mount.key): open_tree \(mount.source): \(String(cString: strerror(errno)))") }
            return tree
        case .image, .block:
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
            defer { rmdir(staging) }
            try await Command.check(["mount"] + (mount.type == .image ? ["-o", "loop"] : []) + [mount.source, staging])
            let tree = open_tree(AT_FDCWD, staging, flags)
            let reason = String(cString: strerror(errno))
            _ = try? await Command.run(["umount", "-l", staging])
            guard tree >= 0 else { throw Failure(description: "\(mount.key): open_tree \(staging): \(reason)") }
            return tree
        }
    }

    static func moveIntoContainer(tree: Int32, pidfd: Int32, target: String, owner: (uid: uid_t, gid: gid_t)?, key: String) throws {
        // Every C string the child needs, made before the fork (it must not allocate).
        let components = target.split(separator: "/").map(String.init)
        let prefixes = (1...max(components.count, 1)).map { "/" + components.prefix($0).joined(separator: "/") }.map { strdup($0)! }
        let destination = strdup(target)!
        let empty = strdup("")!
        defer {
            for prefix in prefixes { free(prefix) }
            free(destination)
            free(empty)
        }
        var report: [Int32] = [0, 0]
        guard pipe(&report) == 0 else { throw Failure(description: "\(key): pipe: \(String(cString: strerror(errno)))") }
        let child = fork()
        if child == 0 {
            // The child: join the container's mount namespace, make the target's directories, move the tree there.
            close(report[0])
            var failure: (stage: Int32, error: Int32) = (0, 0)
            if setNamespace(pidfd, cloneNewNS) != 0 {
                failure = (1, errno)
            } else {
                for prefix in prefixes where mkdir(prefix, 0o755) == 0 {
                    if let owner { chown(prefix, owner.uid, owner.gid) }
                }
                if move_mount(tree, empty, AT_FDCWD, destination, UInt32(MOVE_MOUNT_F_EMPTY_PATH)) != 0 { failure = (2, errno) }
            }
            withUnsafeBytes(of: &failure) { _ = write(report[1], $0.baseAddress, $0.count) }
            _exit(failure.stage == 0 ? 0 : 1)
        }
        close(report[1])
        defer { close(report[0]) }
        guard child > 0 else { throw Failure(description: "\(key): fork: \(String(cString: strerror(errno)))") }
        var failure: (stage: Int32, error: Int32) = (0, 0)
        let count = withUnsafeMutableBytes(of: &failure) { read(report[0], $0.baseAddress, $0.count) }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        guard count == MemoryLayout<(Int32, Int32)>.size, failure.stage == 0 else {
            let what = failure.stage == 1 ? "cannot join the container's mount namespace" : "cannot mount it on \(target) in the container"
            throw Failure(description: "\(key): \(what): \(String(cString: strerror(failure.error)))")
        }
    }
}
