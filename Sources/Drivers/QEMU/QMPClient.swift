import Foundation

/// A QEMU Machine Protocol client: JSON objects, one per line, over the unix
/// socket QEMU serves (`-qmp unix:PATH,server=on,wait=off`). Connecting reads
/// the greeting and negotiates capabilities; `execute` sends one command and
/// returns its `return` value, keeping the asynchronous events that arrive
/// meanwhile in `events`.
public final class QMPClient {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    private let socket: Int32
    private let lines = QMPLines()
    private let timeout: Double
    /// Events received so far (`{"event": ..., "data": ..., "timestamp": ...}`), oldest first.
    public private(set) var events: [[String: Any]] = []
    /// QEMU's version from the greeting (`major.minor.micro`).
    public private(set) var version: String = ""

    /// - Parameter timeout: seconds to wait for any one reply.
    public init(path: String, timeout: Double = 10) throws {
        self.timeout = timeout
        socket = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw Failure("socket: \(String(cString: strerror(errno)))") }
        guard let connected = withUnixAddress(path, { connect(socket, $0, $1) }) else {
            close(socket)
            throw Failure("socket path too long: \(path)")
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(socket)
            throw Failure("cannot connect to \(path): \(reason)")
        }
        do {
            let greeting = try readMessage()
            guard let qmp = greeting["QMP"] as? [String: Any] else { throw Failure("no QMP greeting from \(path)") }
            if let qemu = (qmp["version"] as? [String: Any])?["qemu"] as? [String: Any] {
                version = ["major", "minor", "micro"].map { ((qemu[$0] as? NSNumber)?.intValue).map(String.init) ?? "0" }.joined(separator: ".")
            }
            _ = try execute("qmp_capabilities")
        } catch {
            close(socket)
            throw error
        }
    }

    deinit { close(socket) }

    /// Runs one command; QMP errors come back as `Failure` with QEMU's description.
    @discardableResult
    public func execute(_ command: String, arguments: [String: Any]? = nil) throws -> Any {
        var message: [String: Any] = ["execute": command]
        if let arguments { message["arguments"] = arguments }
        var data = try JSONSerialization.data(withJSONObject: message)
        data.append(0x0A)
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = send(socket, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                guard written > 0 else { throw Failure("QMP write failed: \(String(cString: strerror(errno)))") }
                offset += written
            }
        }
        while true {
            let reply = try readMessage()
            if reply["event"] != nil {
                events.append(reply)
                continue
            }
            if let error = reply["error"] as? [String: Any] {
                throw Failure("\(command): \(error["desc"] as? String ?? "\(error)")")
            }
            if let value = reply["return"] { return value }
        }
    }

    /// Waits up to `seconds` for an event named `name` whose data satisfies `matching`.
    public func waitForEvent(_ name: String, seconds: Double, matching: ([String: Any]) -> Bool = { _ in true }) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if events.contains(where: { $0["event"] as? String == name && matching($0["data"] as? [String: Any] ?? [:]) }) { return true }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return false }
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, Int32(min(left, 0.2) * 1000) + 1) > 0 else { continue }
            guard let message = try? readMessage() else { return false }
            if message["event"] != nil { events.append(message) }
        }
    }

    private func readMessage() throws -> [String: Any] {
        while true {
            if let object = try lines.next() { return object }
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(timeout * 1000))
            guard ready > 0 else { throw Failure(ready == 0 ? "QMP: no reply within \(timeout) s" : "QMP poll failed") }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = recv(socket, &chunk, chunk.count, 0)
            guard count > 0 else { throw Failure("QMP: QEMU closed the connection") }
            lines.append(chunk[..<count])
        }
    }
}

/// QMP's framing: one JSON object per line. Shared by the client and the
/// event listener (qmeventd's socket).
final class QMPLines: @unchecked Sendable {
    // @unchecked: each instance is read by one thread (its connection's).
    private var buffer: [UInt8] = []

    func append(_ bytes: ArraySlice<UInt8>) { buffer += bytes }

    /// The next whole message, or nil until a line is complete. A line that is
    /// not a JSON object is dropped with an error.
    func next() throws -> [String: Any]? {
        while let newline = buffer.firstIndex(of: 0x0A) {
            let line = Array(buffer[..<newline])
            buffer.removeSubrange(...newline)
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) { continue }
            guard let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw QMPClient.Failure("QMP sent something that is not a JSON object")
            }
            return object
        }
        return nil
    }
}

/// Hands `body` (connect, bind) the unix socket address of `path`; nil when
/// the path does not fit in one.
func withUnixAddress<T>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T? {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}
