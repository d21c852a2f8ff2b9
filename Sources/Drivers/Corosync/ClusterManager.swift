import Foundation
import Resources

/// The running cluster as corosync's own tools report it, for `pvectl cluster` (what `pvecm` runs too).
public enum ClusterManager {
    public struct NotRunning: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { "corosync does not answer on this node (\(reason)): is it running?" }
    }

    /// `corosync-quorumtool -s` as text (`-iH`: addresses and hexadecimal ids, as `pvecm status` shows it) and parsed.
    public static func status() async throws -> (text: String, parsed: QuorumStatus) {
        // Exit status 2 means "not quorate", still a full answer.
        let text = try await Command.run(["corosync-quorumtool", "-siH"])
        guard text.status == 0 || text.status == 2, text.output.contains("Quorum information") else {
            throw NotRunning(reason: text.error.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let parseable = try await Command.run(["corosync-quorumtool", "-s", "-p"])
        return (text.output, QuorumStatus.parse(parseable.output))
    }

    /// `corosync-quorumtool -l` (members by name), as text and parsed.
    public static func nodes() async throws -> (text: String, parsed: [QuorumStatus.Member]) {
        let text = try await Command.run(["corosync-quorumtool", "-l"])
        guard text.status == 0, text.output.contains("Membership information") else {
            throw NotRunning(reason: text.error.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let parseable = try await Command.run(["corosync-quorumtool", "-l", "-p"])
        return (text.output, QuorumStatus.parse(parseable.output).members)
    }

    /// Sets the expected votes (`corosync-quorumtool -e`): how a node without quorum is made quorate on purpose.
    public static func setExpected(_ votes: Int) async throws {
        try await Command.check(["corosync-quorumtool", "-e", String(votes)])
    }
}
