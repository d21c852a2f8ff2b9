import Foundation

/// Real packets between network namespaces, to see what a firewall does with
/// them: accepted (the receiver got it), rejected (the sender got a TCP reset
/// or an ICMP error) or dropped (neither, within the wait).
///
/// A socket belongs to the namespace it was created in, so each socket is made
/// on a short-lived thread that first joins the namespace; the probing itself
/// then runs on the caller's thread.
// Glibc hides setns(2) behind _GNU_SOURCE.
@_silgen_name("setns") private func joinNamespace(_ fd: Int32, _ type: Int32) -> Int32

public enum PacketProbe {
    public enum Verdict: String, Sendable, CustomStringConvertible {
        case accept = "ACCEPT"
        case drop = "DROP"
        case reject = "REJECT"
        public var description: String { rawValue }
    }

    public struct ProbeError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Creates a socket inside a named network namespace.
    public static func socket(in namespace: String, domain: Int32, type: Int32, proto: Int32) throws -> Int32 {
        final class Box: @unchecked Sendable {
            var fd: Int32 = -1
            var error: String?
        }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let nsfd = open("/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
            guard nsfd >= 0 else {
                box.error = "cannot open namespace \(namespace)"
                return
            }
            defer { close(nsfd) }
            guard joinNamespace(nsfd, 0x4000_0000 /* CLONE_NEWNET */) == 0 else {
                box.error = "setns \(namespace): \(String(cString: strerror(errno)))"
                return
            }
            box.fd = Glibc.socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), proto)
            if box.fd < 0 { box.error = "socket: \(String(cString: strerror(errno)))" }
        }
        thread.start()
        done.wait()
        if let error = box.error { throw ProbeError(description: error) }
        return box.fd
    }

    static func address(_ ip: String, port: Int) throws -> (sockaddr_storage, socklen_t) {
        var storage = sockaddr_storage()
        if ip.contains(":") {
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
            guard inet_pton(AF_INET6, ip, &v6.sin6_addr) == 1 else { throw ProbeError(description: "bad address \(ip)") }
            withUnsafeBytes(of: v6) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
            return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
        var v4 = sockaddr_in()
        v4.sin_family = sa_family_t(AF_INET)
        v4.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, ip, &v4.sin_addr) == 1 else { throw ProbeError(description: "bad address \(ip)") }
        withUnsafeBytes(of: v4) { source in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: source) } }
        return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
    }

    static func bind(_ fd: Int32, _ ip: String, _ port: Int) throws {
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        // The address may still be tentative (IPv6 DAD is off, but be safe).
        setsockopt(fd, ip.contains(":") ? Int32(IPPROTO_IPV6) : Int32(IPPROTO_IP), ip.contains(":") ? 63 /* IPV6_FREEBIND */ : IP_FREEBIND,
                   &one, socklen_t(MemoryLayout<Int32>.size))
        var (storage, length) = try address(ip, port: port)
        let result = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) } }
        guard result == 0 else { throw ProbeError(description: "bind \(ip):\(port): \(String(cString: strerror(errno)))") }
    }

    static func connect(_ fd: Int32, _ ip: String, _ port: Int) -> Int32 {
        guard let (address, length) = try? address(ip, port: port) else { return EINVAL }
        var storage = address
        let result = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) } }
        return result == 0 ? 0 : errno
    }

    /// Milliseconds until `deadline`, at least 0.
    static func remaining(_ deadline: Date) -> Int32 { Int32(max(0, deadline.timeIntervalSinceNow * 1000)) }

    static let rejectErrors: Set<Int32> = [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EACCES, EPERM, ECONNRESET]

    /// A TCP connection attempt: established → accept, reset or ICMP error → reject, silence → drop.
    public static func tcp(from source: String, sourceIP: String, sourcePort: Int = 0, to destination: String, destinationIP: String,
                           port: Int, wait: TimeInterval) throws -> Verdict {
        let domain = destinationIP.contains(":") ? AF_INET6 : AF_INET
        let listener = try socket(in: destination, domain: domain, type: Int32(SOCK_STREAM.rawValue), proto: 0)
        defer { close(listener) }
        try bind(listener, destinationIP, port)
        guard listen(listener, 8) == 0 else { throw ProbeError(description: "listen: \(String(cString: strerror(errno)))") }
        let client = try socket(in: source, domain: domain, type: Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), proto: 0)
        defer { close(client) }
        try bind(client, sourceIP, sourcePort)
        var syncnt: Int32 = 1
        setsockopt(client, Int32(IPPROTO_TCP), TCP_SYNCNT, &syncnt, socklen_t(MemoryLayout<Int32>.size))
        let started = connect(client, destinationIP, port)
        if started != 0 && started != EINPROGRESS { return rejectErrors.contains(started) ? .reject : .drop }
        let deadline = Date().addingTimeInterval(wait)
        var poller = pollfd(fd: client, events: Int16(POLLOUT), revents: 0)
        while Glibc.poll(&poller, 1, remaining(deadline)) < 0 && errno == EINTR {}
        guard poller.revents != 0 else { return .drop }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(client, SOL_SOCKET, SO_ERROR, &error, &length)
        if error == 0 { return .accept }
        return rejectErrors.contains(error) ? .reject : .drop
    }

    /// A UDP datagram: received → accept, ICMP error back → reject, silence → drop.
    public static func udp(from source: String, sourceIP: String, sourcePort: Int = 0, to destination: String, destinationIP: String,
                           port: Int, wait: TimeInterval, multicastInterface: (sender: String, receiver: String)? = nil) throws -> Verdict {
        let domain = destinationIP.contains(":") ? AF_INET6 : AF_INET
        let receiver = try socket(in: destination, domain: domain, type: Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), proto: 0)
        defer { close(receiver) }
        try bind(receiver, multicastInterface == nil ? destinationIP : (domain == AF_INET ? "0.0.0.0" : "::"), port)
        let sender = try socket(in: source, domain: domain, type: Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), proto: 0)
        defer { close(sender) }
        try bind(sender, sourceIP, sourcePort)
        if let multicastInterface, domain == AF_INET {
            var membership = ip_mreqn()
            inet_pton(AF_INET, destinationIP, &membership.imr_multiaddr)
            membership.imr_ifindex = Int32(ifIndex(multicastInterface.receiver, in: destination))
            setsockopt(receiver, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &membership, socklen_t(MemoryLayout<ip_mreqn>.size))
            var outgoing = ip_mreqn()
            outgoing.imr_ifindex = Int32(ifIndex(multicastInterface.sender, in: source))
            setsockopt(sender, Int32(IPPROTO_IP), IP_MULTICAST_IF, &outgoing, socklen_t(MemoryLayout<ip_mreqn>.size))
        }
        let started = connect(sender, destinationIP, port)
        if started != 0 { return rejectErrors.contains(started) ? .reject : .drop }
        let payload = Array("pvectl firewall probe".utf8)
        let deadline = Date().addingTimeInterval(wait)
        var sentAgain = false
        _ = payload.withUnsafeBytes { send(sender, $0.baseAddress, $0.count, 0) }
        while true {
            var pollers = [pollfd(fd: receiver, events: Int16(POLLIN), revents: 0), pollfd(fd: sender, events: Int16(POLLIN), revents: 0)]
            // An ARP resolution may eat the first datagram's wait: send once more midway.
            let slice = sentAgain ? remaining(deadline) : min(remaining(deadline), 300)
            let ready = Glibc.poll(&pollers, 2, slice)
            if ready < 0 && errno == EINTR { continue }
            if pollers[0].revents & Int16(POLLIN) != 0 { return .accept }
            if pollers[1].revents & Int16(POLLERR | POLLIN) != 0 {
                var buffer = [UInt8](repeating: 0, count: 64)
                let got = recv(sender, &buffer, buffer.count, 0)
                if got < 0 && rejectErrors.contains(errno) { return .reject }
            }
            if remaining(deadline) == 0 { return .drop }
            if ready == 0 && !sentAgain {
                sentAgain = true
                _ = payload.withUnsafeBytes { send(sender, $0.baseAddress, $0.count, 0) }
            }
        }
    }

    /// A raw IP packet of protocol `proto` (ICMP echo request for 1, an
    /// opaque payload otherwise): arrived → accept, ICMP error → reject, silence → drop.
    public static func raw(from source: String, sourceIP: String, to destination: String, destinationIP: String,
                           proto: Int32, icmpType: UInt8 = 8, wait: TimeInterval) throws -> Verdict {
        let v6 = destinationIP.contains(":")
        let domain = v6 ? AF_INET6 : AF_INET
        let receiver = try socket(in: destination, domain: domain, type: Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue), proto: proto)
        defer { close(receiver) }
        let sender = try socket(in: source, domain: domain, type: Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue), proto: proto)
        defer { close(sender) }
        try bind(sender, sourceIP, 0)
        // A unique identifier tells our packet from anything else the receiver sees.
        let identifier = UInt16.random(in: 1...UInt16.max)
        var packet: [UInt8] = [icmpType, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xFF), 0, 1] + Array("pvectl".utf8)
        if proto == IPPROTO_ICMP {
            var sum: UInt32 = 0
            for index in stride(from: 0, to: packet.count, by: 2) {
                sum += UInt32(packet[index]) << 8 | UInt32(index + 1 < packet.count ? packet[index + 1] : 0)
            }
            while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
            let checksum = ~UInt16(sum)
            packet[2] = UInt8(checksum >> 8)
            packet[3] = UInt8(checksum & 0xFF)
        }
        var (storage, length) = try address(destinationIP, port: 0)
        let deadline = Date().addingTimeInterval(wait)
        var sentAgain = false
        func transmit() {
            _ = packet.withUnsafeBytes { bytes in
                withUnsafePointer(to: &storage) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(sender, bytes.baseAddress, bytes.count, 0, $0, length) }
                }
            }
        }
        transmit()
        while true {
            var pollers = [pollfd(fd: receiver, events: Int16(POLLIN), revents: 0), pollfd(fd: sender, events: Int16(POLLIN), revents: 0)]
            let slice = sentAgain ? remaining(deadline) : min(remaining(deadline), 300)
            let ready = Glibc.poll(&pollers, 2, slice)
            if ready < 0 && errno == EINTR { continue }
            if pollers[0].revents & Int16(POLLIN) != 0 {
                var buffer = [UInt8](repeating: 0, count: 2048)
                let got = recv(receiver, &buffer, buffer.count, 0)
                // IPv4 raw sockets deliver the IP header; find our identifier after it.
                let offset = v6 ? 0 : Int(buffer[0] & 0x0F) * 4
                if got >= offset + 8, buffer[offset] == icmpType, buffer[offset + 4] == UInt8(identifier >> 8),
                   buffer[offset + 5] == UInt8(identifier & 0xFF) {
                    return .accept
                }
                continue
            }
            if pollers[1].revents & Int16(POLLERR) != 0 { return .reject }
            if pollers[1].revents & Int16(POLLIN) != 0 {
                // The sender's raw ICMP socket sees every ICMP message: an unreachable is the reject.
                var buffer = [UInt8](repeating: 0, count: 2048)
                let got = recv(sender, &buffer, buffer.count, 0)
                let offset = v6 ? 0 : Int(buffer[0] & 0x0F) * 4
                if got > offset, buffer[offset] == (v6 ? 1 : 3) { return .reject }
                continue
            }
            if remaining(deadline) == 0 { return .drop }
            if ready == 0 && !sentAgain {
                sentAgain = true
                transmit()
            }
        }
    }

    static func ifIndex(_ name: String, in namespace: String) -> Int {
        let result = NetworkNamespace.capture(["ip", "-n", namespace, "-json", "link", "show", name])
        guard let array = try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]] else { return 0 }
        return array.first?["ifindex"] as? Int ?? 0
    }
}

/// Runs blocking work (process spawning, sockets, sleeps in the kernel) on a
/// thread of its own, so it does not hold one of the few threads Swift's
/// cooperative pool has; parallel tests would otherwise starve.
public func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(with: Result { try work() })
        }.start()
    }
}
