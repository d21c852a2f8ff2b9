import Foundation

/// What `corosync-quorumtool -s -p` (and `-l -p`) prints, parsed: the quorum and votequorum figures and the members,
/// as `pvectl cluster status --json` gives them.
public struct QuorumStatus: Codable, Hashable, Sendable {
    public struct Member: Codable, Hashable, Sendable {
        public var nodeid: UInt32
        public var votes: Int
        public var name: String
        public var local: Bool

        public init(nodeid: UInt32, votes: Int, name: String, local: Bool) {
            self.nodeid = nodeid
            self.votes = votes
            self.name = name
            self.local = local
        }
    }

    public var quorate: Bool?
    public var provider: String?
    public var nodes: Int?
    public var nodeid: UInt32?
    public var ringID: String?
    public var expectedVotes: Int?
    public var highestExpected: Int?
    public var totalVotes: Int?
    public var quorum: Int?
    public var flags: [String] = []
    public var members: [Member] = []

    enum CodingKeys: String, CodingKey {
        case quorate, provider, nodes, nodeid, flags, members, quorum
        case ringID = "ring_id"
        case expectedVotes = "expected_votes"
        case highestExpected = "highest_expected"
        case totalVotes = "total_votes"
    }

    public init() {}

    /// Reads the tool's text; lines it does not know are skipped (a newer corosync may print more).
    public static func parse(_ text: String) -> QuorumStatus {
        var status = QuorumStatus()
        var inMembers = false
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line == "Membership information" { inMembers = true; continue }
            if line.hasSuffix("information") || line.allSatisfy({ $0 == "-" }) || line.hasPrefix("Nodeid") { continue }
            if inMembers {
                // "1  1  NR node1 (local)" with -p (a Qdevice column), "1  1 node1" without.
                var words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
                guard words.count >= 3, let nodeid = UInt32(words[0].hasPrefix("0x") ? String(words[0].dropFirst(2)) : words[0],
                                                            radix: words[0].hasPrefix("0x") ? 16 : 10),
                      let votes = Int(words[1]) else { continue }
                let local = words.last == "(local)"
                if local { words.removeLast() }
                let name = words.count >= 4 ? words[3...].joined(separator: " ") : words[2...].joined(separator: " ")
                status.members.append(Member(nodeid: nodeid, votes: votes, name: name, local: local))
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let key = String(line[..<colon])
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch key {
            case "Quorate": status.quorate = value == "Yes"
            case "Quorum provider": status.provider = value
            case "Nodes": status.nodes = Int(value)
            case "Node ID": status.nodeid = value.hasPrefix("0x") ? UInt32(value.dropFirst(2), radix: 16) : UInt32(value)
            case "Ring ID": status.ringID = value
            case "Expected votes": status.expectedVotes = Int(value)
            case "Highest expected": status.highestExpected = Int(value)
            case "Total votes": status.totalVotes = Int(value)
            case "Quorum": status.quorum = Int(value.split(separator: " ").first ?? "")
            case "Flags": status.flags = value.split(separator: " ").map(String.init)
            default: continue
            }
        }
        return status
    }
}
