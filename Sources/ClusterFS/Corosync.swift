import CCorosync
import Foundation

/// A corosync call that failed, with corosync's error code.
public struct CorosyncError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var code: UInt32

    public var description: String {
        let names: [UInt32: String] = [2: "CS_ERR_LIBRARY (is corosync running?)", 6: "CS_ERR_TRY_AGAIN", 9: "CS_ERR_ACCESS",
                                       11: "CS_ERR_NOT_EXIST", 12: "CS_ERR_NAME_TOO_LONG", 14: "CS_ERR_NO_MEMORY",
                                       100: "CS_ERR_NOT_SUPPORTED"]
        return "\(call): \(names[code] ?? "corosync error \(code)")"
    }
}

/// A process in a closed process group: its corosync node and its pid there.
public struct GroupMember: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var nodeID: UInt32
    public var pid: UInt32

    public init(nodeID: UInt32, pid: UInt32) {
        self.nodeID = nodeID
        self.pid = pid
    }

    public static func < (lhs: GroupMember, rhs: GroupMember) -> Bool { (lhs.nodeID, lhs.pid) < (rhs.nodeID, rhs.pid) }
    public var description: String { "\(nodeID)/\(pid)" }
}

/// Waits on a descriptor in a thread of its own and runs `dispatch` when it is readable, until stopped (a pipe wakes it).
final class DispatchThread: @unchecked Sendable {
    // @unchecked: the pipe is set in init and closed in deinit; the thread only reads it, `stop()` only writes it.
    private let wake: (read: Int32, write: Int32)

    /// `onLost` runs when `dispatch` fails (corosync went away), not when stopped.
    init(name: String, descriptor: Int32, dispatch: @escaping @Sendable () -> Bool, onLost: @escaping @Sendable () -> Void = {}) {
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        wake = (fds[0], fds[1])
        // The thread holds the object, so both ends stay open until it has ended and the owner let go: a `stop()`
        // after the thread ended by itself (corosync lost) writes into a pipe that still has its reader, where a closed
        // reader would raise SIGPIPE and kill the process.
        let thread = Thread { [self] in
            var polled = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            while true {
                let ready = poll(&polled, 2, -1)
                if ready < 0 && errno == EINTR { continue }
                if ready < 0 || polled[1].revents != 0 { break }
                if polled[0].revents != 0 && !dispatch() {
                    onLost()
                    break
                }
            }
        }
        thread.name = name
        thread.start()
    }

    deinit {
        close(wake.read)
        close(wake.write)
    }

    func stop() {
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
    }
}

/// A corosync closed process group: multicast in one total order to every member (CPG_TYPE_AGREED), each message
/// delivered to every member with its sender, and membership changes between messages. Callbacks run on the group's
/// dispatch thread, in delivery order.
public final class ProcessGroup: @unchecked Sendable {
    // @unchecked: the handle is set once in init; libcpg serialises calls on it.
    public enum Event: Sendable {
        case message(from: GroupMember, [UInt8])
        case membership(members: [GroupMember], joined: [GroupMember], left: [GroupMember])
        /// What corosync had for this node is delivered (one dispatch ended): the events before came together.
        case dispatched
    }

    public let name: String
    public private(set) var localNodeID: UInt32 = 0
    private var handle: cpg_handle_t = 0
    private var groupName = cpg_name()
    private let onEvent: @Sendable (Event) -> Void
    private var dispatcher: DispatchThread?

    /// Connects to this node's corosync and joins `name`. The name is sent with its NUL counted, as the original does.
    /// `onLost` runs (on the dispatch thread) when corosync goes away. With `dispatching` false, nothing is delivered
    /// until `startDispatching()` (corosync keeps the events): a caller that must know `localNodeID` first.
    public init(name: String, dispatching: Bool = true, onEvent: @escaping @Sendable (Event) -> Void,
                onLost: @escaping @Sendable () -> Void = {}) throws {
        self.name = name
        self.onEvent = onEvent
        let bytes = Array(name.utf8) + [0]
        guard bytes.count <= Int(CPG_MAX_NAME_LENGTH) else { throw CorosyncError(call: "cpg group name", code: 12) }
        withUnsafeMutableBytes(of: &groupName.value) { buffer in
            for (index, byte) in bytes.enumerated() { buffer[index] = byte }
        }
        groupName.length = UInt32(bytes.count)

        var callbacks = cpg_callbacks_t()
        callbacks.cpg_deliver_fn = { handle, _, nodeID, pid, message, length in
            guard let group = ProcessGroup.from(handle) else { return }
            // Copied once, straight into the bytes the replicator decodes.
            let data = message.map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
            group.onEvent(.message(from: GroupMember(nodeID: nodeID, pid: pid), data))
        }
        callbacks.cpg_confchg_fn = { handle, _, members, memberCount, left, leftCount, joined, joinedCount in
            guard let group = ProcessGroup.from(handle) else { return }
            func list(_ addresses: UnsafePointer<cpg_address>?, _ count: Int) -> [GroupMember] {
                (0..<count).compactMap { index in addresses.map { GroupMember(nodeID: $0[index].nodeid, pid: $0[index].pid) } }
            }
            group.onEvent(.membership(members: list(members, memberCount), joined: list(joined, joinedCount), left: list(left, leftCount)))
        }
        try Self.check("cpg_initialize", cpg_initialize(&handle, &callbacks))
        cpg_context_set(handle, Unmanaged.passUnretained(self).toOpaque())
        var nodeID: UInt32 = 0
        try Self.check("cpg_local_get", cpg_local_get(handle, &nodeID))
        localNodeID = nodeID
        let joined = self.handle
        try Self.retrying("cpg_join") { cpg_join(joined, &groupName) }
        var descriptor: Int32 = -1
        try Self.check("cpg_fd_get", cpg_fd_get(joined, &descriptor))
        self.descriptor = descriptor
        self.onLost = onLost
        if dispatching { startDispatching() }
    }

    private var descriptor: Int32 = -1
    private var onLost: @Sendable () -> Void = {}

    /// Delivers messages and membership changes from now on, on the group's own thread.
    public func startDispatching() {
        guard dispatcher == nil, handle != 0 else { return }
        let joined = handle
        let onEvent = onEvent
        dispatcher = DispatchThread(name: "cpg-\(name)", descriptor: descriptor, dispatch: {
            let result = cpg_dispatch(joined, CS_DISPATCH_ALL)
            onEvent(.dispatched)
            return result == CS_OK || result == CS_ERR_TRY_AGAIN
        }, onLost: onLost)
    }

    deinit { stop() }

    private static func from(_ handle: cpg_handle_t) -> ProcessGroup? {
        var context: UnsafeMutableRawPointer?
        guard cpg_context_get(handle, &context) == CS_OK, let context else { return nil }
        return Unmanaged<ProcessGroup>.fromOpaque(context).takeUnretainedValue()
    }

    /// Multicasts to every member in total order; corosync's flow control is waited out (100 ms steps, at most 10 s).
    public func multicast(_ message: [UInt8]) throws {
        try message.withUnsafeBytes { bytes in
            var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
            try Self.retrying("cpg_mcast_joined") { cpg_mcast_joined(handle, CPG_TYPE_AGREED, &vector, 1) }
        }
    }

    /// Leaves the group and disconnects.
    public func stop() {
        guard handle != 0 else { return }
        dispatcher?.stop()
        dispatcher = nil
        cpg_leave(handle, &groupName)
        cpg_finalize(handle)
        handle = 0
    }

    static func check(_ call: String, _ result: cs_error_t) throws {
        guard result == CS_OK else { throw CorosyncError(call: call, code: result.rawValue) }
    }

    static func retrying(_ call: String, _ body: () -> cs_error_t) throws {
        for _ in 0..<100 {
            let result = body()
            if result == CS_OK { return }
            guard result == CS_ERR_TRY_AGAIN else { throw CorosyncError(call: call, code: result.rawValue) }
            usleep(100_000)
        }
        throw CorosyncError(call: call, code: CS_ERR_TRY_AGAIN.rawValue)
    }
}

/// Whether this node's corosync has quorum, followed as it changes (libquorum, changes tracked).
public final class QuorumTracker: @unchecked Sendable {
    // @unchecked: the handle is set once in init; the state is guarded by `lock`.
    private var handle: quorum_handle_t = 0
    private let lock = NSLock()
    private var quorateState = false
    private var membersState: [UInt32] = []
    private let onChange: @Sendable (Bool, [UInt32]) -> Void
    private var dispatcher: DispatchThread?

    public init(onChange: @escaping @Sendable (_ quorate: Bool, _ members: [UInt32]) -> Void = { _, _ in }) throws {
        self.onChange = onChange
        var callbacks = quorum_callbacks_t()
        callbacks.quorum_notify_fn = { handle, quorate, _, count, members in
            var context: UnsafeRawPointer?
            guard quorum_context_get(handle, &context) == CS_OK, let context else { return }
            let tracker = Unmanaged<QuorumTracker>.fromOpaque(context).takeUnretainedValue()
            let list = (0..<Int(count)).compactMap { index in members.map { $0[index] } }
            tracker.lock.withLock {
                tracker.quorateState = quorate != 0
                tracker.membersState = list
            }
            tracker.onChange(quorate != 0, list)
        }
        var type: UInt32 = 0
        try ProcessGroup.check("quorum_initialize", quorum_initialize(&handle, &callbacks, &type))
        quorum_context_set(handle, Unmanaged.passUnretained(self).toOpaque())
        var quorate: Int32 = 0
        try ProcessGroup.check("quorum_getquorate", quorum_getquorate(handle, &quorate))
        lock.withLock { quorateState = quorate != 0 }
        try ProcessGroup.check("quorum_trackstart", quorum_trackstart(handle, UInt32(CS_TRACK_CHANGES)))
        var descriptor: Int32 = -1
        try ProcessGroup.check("quorum_fd_get", quorum_fd_get(handle, &descriptor))
        let tracked = self.handle
        dispatcher = DispatchThread(name: "quorum", descriptor: descriptor, dispatch: {
            let result = quorum_dispatch(tracked, CS_DISPATCH_ALL)
            return result == CS_OK || result == CS_ERR_TRY_AGAIN
        }, onLost: { [weak self] in
            // Without corosync there is no quorum.
            guard let self else { return }
            self.lock.withLock { self.quorateState = false }
            self.onChange(false, [])
        })
    }

    deinit { stop() }

    public var isQuorate: Bool { lock.withLock { quorateState } }
    public var members: [UInt32] { lock.withLock { membersState } }

    public func stop() {
        guard handle != 0 else { return }
        dispatcher?.stop()
        dispatcher = nil
        quorum_trackstop(handle)
        quorum_finalize(handle)
        handle = 0
    }
}
