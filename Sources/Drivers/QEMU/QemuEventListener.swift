import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What qemu-server's qmeventd does, for the loop: every VM's QEMU connects
/// to `/var/run/qmeventd.sock` (`-chardev socket,id=qmp-event,…,reconnect=5`
/// on its command line) and sends QMP events there. The listener answers the
/// QMP greeting and reports, with the QEMU's pid (SO_PEERCRED), each event
/// and the end of each connection (QEMU exited or was killed).
///
/// It never takes the socket from a running qmeventd (or another loop): when
/// something answers on the path, `init` fails and the loop relies on its
/// other events and resync.
public final class QemuEventListener: @unchecked Sendable {
    // @unchecked: the connection table is guarded by `lock`; descriptors are
    // owned by their watchers.
    public enum Event: Sendable, Equatable {
        /// A QEMU connected (at its start, or up to 5 s after the listener came up).
        case connected(pid: pid_t)
        /// A QMP event by name (SHUTDOWN, RESET, STOP, RESUME, ...).
        case qmp(name: String, pid: pid_t)
        /// The QEMU closed its connection: it exited, or was killed.
        case disconnected(pid: pid_t)
    }

    public let path: String
    private let listener: DescriptorWatcher
    private let lock = NSLock()
    private var connections: [Int32: DescriptorWatcher] = [:]

    public init(path: String = "/var/run/qmeventd.sock", onEvent: @escaping @Sendable (Event) -> Void) throws {
        self.path = path
        if Self.answers(path) { throw WatchError(message: "\(path) is served by another process (qmeventd?)") }
        unlink(path)
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard descriptor >= 0 else { throw WatchError(message: "socket: \(String(cString: strerror(errno)))") }
        guard withUnixAddress(path, { bind(descriptor, $0, $1) }) == 0, listen(descriptor, 64) == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw WatchError(message: "cannot listen on \(path): \(reason)")
        }
        listener = try DescriptorWatcher(descriptor: descriptor)
        listener.start(name: "pvectl-qmeventd") { [weak self] in self?.acceptAll(onEvent) }
    }

    deinit { unlink(path) }

    public func stop() {
        listener.stop()
        lock.withLock { for connection in connections.values { connection.stop() } }
    }

    /// Whether a process accepts connections on `path`.
    static func answers(_ path: String) -> Bool {
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { return false }
        defer { close(probe) }
        return withUnixAddress(path) { connect(probe, $0, $1) } == 0
    }

    private func acceptAll(_ onEvent: @escaping @Sendable (Event) -> Void) {
        while true {
            let client = accept(listener.descriptor, nil, nil)
            guard client >= 0 else { return }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
            // struct ucred: pid, uid, gid.
            var credentials: (pid_t, uid_t, gid_t) = (0, 0, 0)
            var length = socklen_t(MemoryLayout<(pid_t, uid_t, gid_t)>.size)
            let pid = getsockopt(client, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 ? credentials.0 : 0
            guard let watcher = try? DescriptorWatcher(descriptor: client) else { continue }
            onEvent(.connected(pid: pid))
            lock.withLock { connections[client] = watcher }
            let lines = QMPLines()
            watcher.start(name: "pvectl-qmp-event") { [weak self, weak watcher] in
                var chunk = [UInt8](repeating: 0, count: 16 * 1024)
                while true {
                    let count = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                    if count > 0 {
                        lines.append(chunk[0..<count])
                        while true {
                            let message: [String: Any]
                            do {
                                guard let next = try lines.next() else { break }
                                message = next
                            } catch {
                                continue  // not a JSON object: dropped
                            }
                            if message["QMP"] != nil {
                                // The greeting: capabilities negotiation turns events on.
                                let negotiate = Array(#"{"execute":"qmp_capabilities"}"#.utf8) + [10]
                                _ = negotiate.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                            } else if let name = message["event"] as? String {
                                onEvent(.qmp(name: name, pid: pid))
                            }
                        }
                        continue
                    }
                    if count == 0 || (errno != EAGAIN && errno != EINTR) {
                        // Closed: its watcher thread ends on the hang-up; forget it.
                        watcher?.stop()
                        self?.lock.withLock { _ = self?.connections.removeValue(forKey: client) }
                        onEvent(.disconnected(pid: pid))
                    }
                    return
                }
            }
        }
    }
}
