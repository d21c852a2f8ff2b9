import CQB
import Foundation

/// Request ids of the `pve2` service (the original's cfs-ipc-ops).
public enum IPCRequest: Int32, Sendable {
    case getFSVersion = 1
    case getClusterInfo = 2
    case getGuestList = 3
    case setStatus = 4
    case getStatus = 5
    case getConfig = 6
    case logClusterMessage = 7
    case getClusterLog = 8
    case getGuestConfigProperties = 13
    /// This implementation's own: the tree's change counter, quorum, and every entry's version (`treeVersions`), for a
    /// watcher on another process (pvectl run) to see other nodes' changes. Body: the u64 counter last seen.
    case getTreeVersions = 100
}

/// Sizes of the wire structures, as the C compiler lays them out.
enum Wire {
    static let requestHeader = MemoryLayout<qb_ipc_request_header>.size      // 16
    static let responseHeader = MemoryLayout<qb_ipc_response_header>.size    // 24
    static let statusName = 256
}

/// The libqb IPC server clients use for fast reads (what Proxmox's Perl tools
/// call `pve2`): shared-memory transport, a qb main loop on its own thread.
/// root:root clients have full access, www-data clients read only (and not
/// private files), anyone else is rejected.
public enum IPCServer {
    // One server per process; the C callbacks cannot capture, so they reach
    // these through statics set once before the loop starts.
    nonisolated(unsafe) private static var loop: OpaquePointer?
    nonisolated(unsafe) private static var service: OpaquePointer?
    nonisolated(unsafe) private static var fileSystem: ClusterFileSystem?

    struct ConnectionContext {
        var readOnly: Bool
        var pid: Int32
    }

    public struct StartError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Creates the service and runs its loop on a new thread.
    /// - Parameter name: the service name clients connect to (`pve2` upstream).
    public static func start(name: String = "pve2", fileSystem: ClusterFileSystem) throws {
        Self.fileSystem = fileSystem
        guard let loop = qb_loop_create() else { throw StartError(description: "qb_loop_create failed") }
        Self.loop = loop
        var handlers = qb_ipcs_service_handlers(
            connection_accept: { connection, uid, gid in
                guard let fs = IPCServer.fileSystem else { return -EACCES }
                let readOnly: Bool
                if uid == 0 && gid == 0 {
                    readOnly = false
                } else if gid == fs.wwwDataGID {
                    readOnly = true
                } else {
                    return -EACCES
                }
                var stats = qb_ipcs_connection_stats()
                qb_ipcs_connection_stats_get(connection, &stats, 0)
                let context = UnsafeMutablePointer<ConnectionContext>.allocate(capacity: 1)
                context.initialize(to: ConnectionContext(readOnly: readOnly, pid: stats.client_pid))
                qb_ipcs_context_set(connection, context)
                return 0
            },
            connection_created: nil,
            msg_process: { connection, data, size in
                IPCServer.process(connection, data, size)
                return 0
            },
            connection_closed: { _ in 0 },
            connection_destroyed: { connection in
                if let context = qb_ipcs_context_get(connection) {
                    context.assumingMemoryBound(to: ConnectionContext.self).deallocate()
                }
            })
        guard let service = qb_ipcs_create(name, 1, QB_IPC_SHM, &handlers) else {
            throw StartError(description: "cannot create IPC service \(name)")
        }
        Self.service = service
        var poll = qb_ipcs_poll_handlers(
            job_add: { priority, data, dispatch in qb_loop_job_add(IPCServer.loop, priority, data, dispatch) },
            dispatch_add: { priority, fd, events, data, dispatch in
                qb_loop_poll_add(IPCServer.loop, priority, fd, events, data, dispatch)
            },
            dispatch_mod: { priority, fd, events, data, dispatch in
                qb_loop_poll_mod(IPCServer.loop, priority, fd, events, data, dispatch)
            },
            dispatch_del: { fd in qb_loop_poll_del(IPCServer.loop, fd) })
        qb_ipcs_poll_handlers_set(service, &poll)
        let result = qb_ipcs_run(service)
        guard result == 0 else { throw StartError(description: "cannot run IPC service \(name): \(String(cString: strerror(-result)))") }
        let thread = Thread { qb_loop_run(IPCServer.loop) }
        thread.name = "pmxcfs-ipc"
        thread.start()
    }

    /// Stops the loop and removes the service (its shared memory included).
    public static func stop() {
        if let service { qb_ipcs_destroy(service) }
        if let loop { qb_loop_stop(loop) }
        service = nil
    }

    static func process(_ connection: OpaquePointer?, _ data: UnsafeMutableRawPointer?, _ size: Int) {
        guard let data, size >= Wire.requestHeader, let fs = fileSystem,
              let contextPointer = qb_ipcs_context_get(connection) else {
            qb_ipcs_disconnect(connection)
            return
        }
        let context = contextPointer.assumingMemoryBound(to: ConnectionContext.self).pointee
        // Messages in the shared ring buffer are not necessarily 8-byte aligned.
        let header = data.loadUnaligned(as: qb_ipc_request_header.self)
        let requestSize = Int(header.size)
        let body = UnsafeRawBufferPointer(start: data + Wire.requestHeader, count: max(0, min(size, requestSize) - Wire.requestHeader))
        let (result, payload) = handle(IPCRequest(rawValue: header.id), body: body, requestSize: requestSize, context: context, fileSystem: fs)
        var response = qb_ipc_response_header()
        response.id = header.id
        response.size = Int32(Wire.responseHeader + (result == 0 ? payload.count : 0))
        response.error = result
        withUnsafeMutablePointer(to: &response) { headerPointer in
            payload.withUnsafeBytes { bytes in
                var iov = [iovec(iov_base: UnsafeMutableRawPointer(headerPointer), iov_len: Wire.responseHeader)]
                // An error or an empty answer is the header alone (libqb rejects empty vectors).
                if result == 0 && bytes.count > 0 {
                    iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count))
                }
                if qb_ipcs_response_sendv(connection, &iov, iov.count) < 0 { qb_ipcs_disconnect(connection) }
            }
        }
    }

    /// A NUL-terminated string at `offset` of `body` (the rest when unterminated).
    static func string(_ body: UnsafeRawBufferPointer, from offset: Int, maximum: Int? = nil) -> String {
        guard offset < body.count else { return "" }
        let end = min(body.count, maximum.map { offset + $0 } ?? body.count)
        let bytes = body[offset..<end]
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    static func handle(_ request: IPCRequest?, body: UnsafeRawBufferPointer, requestSize: Int, context: ConnectionContext,
                       fileSystem fs: ClusterFileSystem) -> (Int32, [UInt8]) {
        guard let request else { return (-ECHRNG, []) }
        switch request {
        case .getFSVersion:
            return requestSize == Wire.requestHeader ? (0, fs.statusFile(".version")) : (-EINVAL, [])
        case .getClusterInfo:
            return requestSize == Wire.requestHeader ? (0, fs.statusFile(".members")) : (-EINVAL, [])
        case .getGuestList:
            return requestSize == Wire.requestHeader ? (0, fs.statusFile(".vmlist")) : (-EINVAL, [])
        case .setStatus:
            if context.readOnly { return (-EPERM, []) }
            guard body.count >= Wire.statusName else { return (-EINVAL, []) }
            let name = string(body, from: 0, maximum: Wire.statusName - 1)
            fs.setStatus(name: name, value: Array(body[Wire.statusName...]))
            return (0, [])
        case .getStatus:
            guard body.count >= 2 * Wire.statusName else { return (-EINVAL, []) }
            let name = string(body, from: 0, maximum: Wire.statusName - 1)
            let node = string(body, from: Wire.statusName, maximum: Wire.statusName - 1)
            guard let value = fs.status(name: name, node: node) else { return (-ENOENT, []) }
            return (0, value)
        case .getConfig:
            guard !body.isEmpty else { return (-EINVAL, []) }
            let path = string(body, from: 0)
            if context.readOnly && fs.isPrivate(path: path) { return (-EPERM, []) }
            let (result, data) = fs.read("/" + path, size: ClusterFileSystem.maxFileSize, offset: 0)
            return (result, data)
        case .logClusterMessage:
            if context.readOnly { return (-EPERM, []) }
            // u8 priority, u8 ident length, u8 tag length, then ident\0 tag\0 message\0.
            guard body.count >= 3 else { return (-EINVAL, []) }
            let priority = body[0], identLength = Int(body[1]), tagLength = Int(body[2])
            let text = UnsafeRawBufferPointer(rebasing: body[3...])
            guard identLength > 0, tagLength > 0, text.count > identLength + tagLength,
                  text[identLength - 1] == 0, text[identLength + tagLength - 1] == 0 else { return (-EINVAL, []) }
            fs.log(priority: priority, ident: string(text, from: 0), tag: string(text, from: identLength),
                   pid: context.pid, message: string(text, from: identLength + tagLength))
            return (0, [])
        case .getClusterLog:
            // u32 max entries and three reserved u32, then the user name.
            guard body.count > 16 else { return (-EINVAL, []) }
            let maximum = Int(body.loadUnaligned(as: UInt32.self))
            let user = Self.string(body, from: 16)
            return (0, fs.clusterLog(maximum: maximum == 0 ? 50 : maximum, user: user))
        case .getTreeVersions:
            guard body.count == 8 else { return (-EINVAL, []) }
            return (0, fs.treeVersions(since: body.loadUnaligned(as: UInt64.self)))
        case .getGuestConfigProperties:
            // u32 vmid, u8 count, then count NUL-terminated names starting with a-z.
            guard body.count >= 6 else { return (-EINVAL, []) }
            let vmid = Int(body.loadUnaligned(as: UInt32.self))
            let count = Int(body[4])
            if vmid != 0 && vmid < 100 { return (-EINVAL, []) }
            guard count > 0 else { return (-EINVAL, []) }
            var properties: [String] = []
            var offset = 5
            for _ in 0..<count {
                guard offset < body.count, let end = body[offset...].firstIndex(of: 0), end > offset,
                      (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(body[offset]) else { return (-EINVAL, []) }
                properties.append(String(decoding: body[offset..<end], as: UTF8.self))
                offset = end + 1
            }
            guard offset == body.count else { return (-EINVAL, []) }
            return fs.guestConfigProperties(vmid: vmid, properties: properties)
        }
    }
}

/// A `pve2` client: what pvectl and the tests use to talk to a running pmxcfs.
public final class IPCClient: @unchecked Sendable {
    // @unchecked: the libqb connection is used under `lock` only.
    private let connection: OpaquePointer
    private let lock = NSLock()

    public struct ConnectError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(service: String = "pve2") throws {
        guard let connection = qb_ipcc_connect(service, 1 << 20) else {
            throw ConnectError(description: "cannot connect to \(service): \(String(cString: strerror(errno)))")
        }
        self.connection = connection
    }

    deinit { qb_ipcc_disconnect(connection) }

    /// Sends a request and returns (error, payload); error is 0 or -errno.
    public func request(_ id: IPCRequest, body: [UInt8] = []) -> (Int32, [UInt8]) {
        lock.lock()
        defer { lock.unlock() }
        var header = qb_ipc_request_header()
        header.id = id.rawValue
        header.size = Int32(Wire.requestHeader + body.count)
        var response = [UInt8](repeating: 0, count: 1 << 20)
        let received: Int = withUnsafeMutablePointer(to: &header) { headerPointer in
            body.withUnsafeBytes { bytes in
                var iov = [iovec(iov_base: UnsafeMutableRawPointer(headerPointer), iov_len: Wire.requestHeader)]
                if bytes.count > 0 { iov.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)) }
                return response.withUnsafeMutableBytes { out in
                    qb_ipcc_sendv_recv(connection, &iov, UInt32(iov.count), out.baseAddress, out.count, 5000)
                }
            }
        }
        guard received >= Wire.responseHeader else { return (received < 0 ? Int32(truncatingIfNeeded: received) : -EIO, []) }
        let header2 = response.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: qb_ipc_response_header.self) }
        let size = min(received, Int(header2.size))
        return (header2.error, Array(response[Wire.responseHeader..<size]))
    }

    /// A file of the tree (GET_CONFIG), path relative to the root.
    public func config(_ path: String) -> (Int32, [UInt8]) {
        request(.getConfig, body: Array(path.utf8) + [0])
    }

    /// A name in one of the wire's fixed, zero-padded name fields (longer names are cut).
    static func nameField(_ name: String) -> [UInt8] {
        let bytes = Array(name.utf8.prefix(Wire.statusName - 1))
        return bytes + [UInt8](repeating: 0, count: Wire.statusName - bytes.count)
    }

    /// Sets this node's status key (SET_STATUS), replicated to every node; returns 0 or -errno.
    public func setStatus(_ name: String, value: [UInt8]) -> Int32 {
        request(.setStatus, body: Self.nameField(name) + value).0
    }

    /// A node's status key (GET_STATUS).
    public func status(_ name: String, node: String) -> (Int32, [UInt8]) {
        request(.getStatus, body: Self.nameField(name) + Self.nameField(node))
    }
}
