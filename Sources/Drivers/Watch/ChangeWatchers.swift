import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A thread that waits on one file descriptor and hands what it reads to a
/// callback, until `stop()`. A pipe wakes the thread for stopping: closing a
/// descriptor another thread is blocked on does not wake it on Linux.
public final class DescriptorWatcher: @unchecked Sendable {
    // @unchecked: `descriptor` and the pipe are fixed after init; the thread
    // owns reading, `stop()` only writes one byte to the pipe.
    let descriptor: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32

    init(descriptor: Int32) throws {
        self.descriptor = descriptor
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else {
            close(descriptor)
            throw WatchError(message: "pipe: \(String(cString: strerror(errno)))")
        }
        wakeRead = ends[0]
        wakeWrite = ends[1]
        // Not inherited by the QEMU and tools pvectl starts.
        _ = fcntl(wakeRead, F_SETFD, FD_CLOEXEC)
        _ = fcntl(wakeWrite, F_SETFD, FD_CLOEXEC)
    }

    deinit {
        close(descriptor)
        close(wakeRead)
        close(wakeWrite)
    }

    /// Starts the thread; `onReadable` is called on it each time the descriptor
    /// is readable. The thread keeps the watcher (and so its descriptors) alive
    /// until it ends: after `stop()`, or when the descriptor hangs up.
    func start(name: String, onReadable: @escaping @Sendable () -> Void) {
        let thread = Thread { [self] in
            var fds = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            while true {
                let ready = poll(&fds, 2, -1)
                if ready < 0 && errno == EINTR { continue }
                if ready < 0 || fds[1].revents != 0 { return }
                // POLLERR is read too: on a netlink socket it is an overrun
                // (ENOBUFS), which the read reports and clears; the watch goes on.
                if fds[0].revents & Int16(POLLIN | POLLERR) != 0 { onReadable() }
                if fds[0].revents & Int16(POLLHUP | POLLNVAL) != 0 { return }
            }
        }
        thread.name = name
        thread.start()
    }

    public func stop() {
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }
}

public struct WatchError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Reports changed files below directories (inotify): writes closed, files
/// created, removed or renamed into place, and new subdirectories, which are
/// watched in turn. Editors and Proxmox write a temporary file and rename it,
/// so the name reported is the final one.
public final class FileChangeWatcher: @unchecked Sendable {
    // @unchecked: the watch table is guarded by `lock`.
    private let watcher: DescriptorWatcher
    private let lock = NSLock()
    private var directories: [Int32: String] = [:]
    private let maximumDepth: Int

    /// Watches each of `paths` (directories) and, up to `depth` levels, the
    /// directories below them. Missing directories are skipped.
    public init(directories paths: [String], depth: Int, onChange: @escaping @Sendable (String) -> Void) throws {
        let descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard descriptor >= 0 else { throw WatchError(message: "inotify_init1: \(String(cString: strerror(errno)))") }
        watcher = try DescriptorWatcher(descriptor: descriptor)
        maximumDepth = depth
        for path in paths { add(path, depth: 0) }
        watcher.start(name: "pvectl-inotify") { [weak self] in self?.drain(onChange) }
    }

    public func stop() { watcher.stop() }

    public var watchedDirectories: [String] { lock.withLock { Array(directories.values).sorted() } }

    private func add(_ directory: String, depth: Int) {
        let mask = UInt32(IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF)
        let handle = inotify_add_watch(watcher.descriptor, directory, mask | UInt32(IN_ONLYDIR))
        guard handle >= 0 else { return }
        lock.withLock { directories[handle] = directory }
        guard depth < maximumDepth else { return }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            var isDirectory: ObjCBool = false
            let path = directory + "/" + name
            // Symbolic links (pmxcfs's local, qemu-server, lxc) point into nodes/, watched there.
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) == nil,
               FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                add(path, depth: depth + 1)
            }
        }
    }

    private func depth(of directory: String) -> Int {
        // Depth below the nearest watched root: counted from the shortest watched prefix.
        let roots = lock.withLock { directories.values.filter { directory.hasPrefix($0 + "/") } }
        guard let root = roots.min(by: { $0.count < $1.count }) else { return 0 }
        return directory.dropFirst(root.count).split(separator: "/").count
    }

    private func drain(_ onChange: @Sendable (String) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(watcher.descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { return }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= count {
                let (handle, mask, nameLength) = buffer.withUnsafeBytes { raw -> (Int32, UInt32, Int) in
                    let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    return (event.wd, event.mask, Int(event.len))
                }
                let nameStart = offset + MemoryLayout<inotify_event>.size
                let nameBytes = buffer[nameStart..<min(nameStart + nameLength, count)].prefix { $0 != 0 }
                offset = nameStart + nameLength
                if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    // Events were lost: report the roots, which means "look at everything".
                    for root in watchedDirectories { onChange(root) }
                    continue
                }
                guard let directory = lock.withLock({ directories[handle] }) else { continue }
                if mask & UInt32(IN_IGNORED) != 0 {
                    lock.withLock { directories[handle] = nil }
                    continue
                }
                let path = nameBytes.isEmpty ? directory : directory + "/" + String(decoding: nameBytes, as: UTF8.self)
                let isDirectory = mask & UInt32(IN_ISDIR) != 0
                if isDirectory && mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 {
                    let level = depth(of: path)
                    if level <= maximumDepth { add(path, depth: level) }
                }
                // A file just created is still being written: its close (IN_CLOSE_WRITE) reports it.
                if !isDirectory && mask & UInt32(IN_CREATE) != 0 { continue }
                onChange(path)
            }
        }
    }
}

/// Reports that the kernel's network configuration changed: links,
/// addresses and routes (an rtnetlink socket subscribed to their multicast
/// groups, in the network namespace pvectl runs in). What changed is not
/// decoded: the loop observes everything again, level-triggered.
public final class NetworkChangeWatcher: @unchecked Sendable {
    // @unchecked: only the watcher thread reads the socket.
    private let watcher: DescriptorWatcher

    public init(onChange: @escaping @Sendable () -> Void) throws {
        let socketDescriptor = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue),
                                      0 /* NETLINK_ROUTE */)
        guard socketDescriptor >= 0 else { throw WatchError(message: "netlink socket: \(String(cString: strerror(errno)))") }
        // struct sockaddr_nl: family, pad, pid (0: the kernel assigns), multicast groups.
        let groups: UInt32 = 0x1 /* RTMGRP_LINK */ | 0x10 /* RTMGRP_IPV4_IFADDR */ | 0x40 /* RTMGRP_IPV4_ROUTE */
            | 0x100 /* RTMGRP_IPV6_IFADDR */ | 0x400 /* RTMGRP_IPV6_ROUTE */
        // Room for a burst (an apply of many bridges); an overrun is still reported as a change.
        var bufferSize: Int32 = 1 << 20
        _ = setsockopt(socketDescriptor, SOL_SOCKET, SO_RCVBUF, &bufferSize, socklen_t(MemoryLayout<Int32>.size))
        var address: (UInt16, UInt16, UInt32, UInt32) = (UInt16(AF_NETLINK), 0, 0, groups)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketDescriptor, $0, 12) }
        }
        guard bound == 0 else {
            let reason = String(cString: strerror(errno))
            close(socketDescriptor)
            throw WatchError(message: "netlink bind: \(reason)")
        }
        watcher = try DescriptorWatcher(descriptor: socketDescriptor)
        watcher.start(name: "pvectl-netlink") { [socketDescriptor] in
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var changed = false
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(socketDescriptor, $0.baseAddress, $0.count, 0) }
                // ENOBUFS: the kernel dropped messages; that is a change too.
                if count > 0 || (count < 0 && errno == ENOBUFS) { changed = true; continue }
                break
            }
            if changed { onChange() }
        }
    }

    public func stop() { watcher.stop() }
}
