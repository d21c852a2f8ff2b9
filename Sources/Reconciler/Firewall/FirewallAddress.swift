import Foundation
import Resources

/// One address, network or range as nftables needs it: the family it belongs
/// to and its normalised spelling (host bits cleared, /32 and /128 dropped),
/// because nft refuses a prefix with host bits set.
struct FirewallAddress: Hashable, Sendable {
    /// The address parser's family, with what nftables calls it.
    typealias Family = IPAddress.Family

    var family: Family
    /// `192.0.2.0/24`, `192.0.2.7`, `192.0.2.1-192.0.2.9`.
    var text: String

    /// Parses an address, CIDR or `a-b` range; nil when it is none of them.
    static func parse(_ raw: String) -> FirewallAddress? {
        let value = raw.trimmingCharacters(in: .whitespaces)
        if let dash = value.firstIndex(of: "-"), !value.contains("/") {
            guard let low = parseHost(String(value[..<dash])), let high = parseHost(String(value[value.index(after: dash)...])),
                  low.family == high.family else { return nil }
            return FirewallAddress(family: low.family, text: "\(low.text)-\(high.text)")
        }
        var address = value
        var bits: Int?
        if let slash = value.lastIndex(of: "/") {
            address = String(value[..<slash])
            guard let parsed = Int(value[value.index(after: slash)...]) else { return nil }
            bits = parsed
        }
        guard case (let family, var bytes)? = bytes(of: address) else { return nil }
        let width = family == .v4 ? 32 : 128
        let prefix = bits ?? width
        guard (0...width).contains(prefix) else { return nil }
        for index in bytes.indices {
            let keep = max(0, min(8, prefix - index * 8))
            bytes[index] &= keep == 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        guard let text = string(of: bytes, family: family) else { return nil }
        return FirewallAddress(family: family, text: prefix == width ? text : "\(text)/\(prefix)")
    }

    private static func parseHost(_ text: String) -> FirewallAddress? {
        guard let (family, bytes) = bytes(of: text), let normal = string(of: bytes, family: family) else { return nil }
        return FirewallAddress(family: family, text: normal)
    }

    /// Through the one address parser validation uses too, so validate never passes an address the compiler skips.
    static func bytes(of text: String) -> (Family, [UInt8])? {
        IPAddress.parse(text).map { ($0.family, $0.bytes) }
    }

    static func string(of bytes: [UInt8], family: Family) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let ok = bytes.withUnsafeBytes { raw in
            inet_ntop(family == .v4 ? AF_INET : AF_INET6, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil
        }
        guard ok else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The network an address with a prefix length belongs to: `172.16.1.2/24` → `172.16.1.0/24`.
    static func network(address: String, prefix: Int) -> FirewallAddress? {
        parse("\(address)/\(prefix)")
    }

    /// Whether `address` lies inside this network (only for CIDR or single addresses).
    func contains(_ address: String) -> Bool {
        guard let (family, bytes) = Self.bytes(of: address), family == self.family else { return false }
        let parts = text.split(separator: "/")
        guard let (_, network) = Self.bytes(of: String(parts[0])) else { return false }
        let prefix = parts.count == 2 ? Int(parts[1]) ?? 0 : bytes.count * 8
        for bit in 0..<prefix {
            let mask = UInt8(0x80 >> (bit % 8))
            if bytes[bit / 8] & mask != network[bit / 8] & mask { return false }
        }
        return true
    }

    /// The IPv6 link-local address SLAAC derives from a MAC (EUI-64), which a
    /// guest uses for neighbour discovery and must keep when IP filtering is on.
    static func linkLocal(mac: String) -> String? {
        let octets = mac.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard octets.count == 6 else { return nil }
        let eui = [octets[0] ^ 0x02, octets[1], octets[2], 0xFF, 0xFE, octets[3], octets[4], octets[5]]
        return string(of: [0xFE, 0x80, 0, 0, 0, 0, 0, 0] + eui, family: .v6)
    }
}

extension IPAddress.Family {
    /// The nftables payload keyword: `ip saddr` or `ip6 saddr`.
    var payload: String { self == .v4 ? "ip" : "ip6" }
    var setType: String { self == .v4 ? "ipv4_addr" : "ipv6_addr" }
}
