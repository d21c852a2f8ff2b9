import ClusterFS
import Foundation
import Reconciler

/// Each node's loop state on pmxcfs's status channel (its replicated key/value store, as Proxmox's daemons publish
/// theirs), so that one `pvectl status --cluster` on any node answers "has the cluster converged to commit X?".
public struct LoopPublisher: Sendable {
    public static let key = "pvectl/loop"

    /// What a node publishes after every pass: its loop's record and the push revision its tree held at that pass.
    public struct Report: Codable, Sendable {
        public var node: String
        public var loop: LoopRecord
        /// The commit (or content digest) of the last push, as /etc/pve/pvectl/push.json said at the last pass.
        public var pushed: String?
        public var publishedAt: Date

        public init(node: String, loop: LoopRecord, pushed: String?, publishedAt: Date) {
            self.node = node
            self.loop = loop
            self.pushed = pushed
            self.publishedAt = publishedAt
        }

        /// Every followed kind has had a pass, and each last pass ended with nothing left to do (converged or applied).
        public var converged: Bool {
            !loop.kinds.isEmpty && loop.passedEveryKind && loop.kinds.values.allSatisfy { ["converged", "applied"].contains($0.outcome) }
        }
    }

    public struct PublishError: Error, CustomStringConvertible {
        public var description: String
    }

    let service: String

    public init(service: String) { self.service = service }

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    /// Sets this node's key (the status channel takes values up to 32 KiB: long messages are cut).
    public func publish(_ report: Report) throws {
        var trimmed = report
        for (kind, record) in trimmed.loop.kinds where (record.message?.count ?? 0) > 512 {
            trimmed.loop.kinds[kind]?.message = String(record.message!.prefix(512)) + "…"
        }
        let status = try IPCClient(service: service).setStatus(Self.key, value: Array(try Self.encoder().encode(trimmed)))
        guard status == 0 else { throw PublishError(description: "set_status \(Self.key): \(String(cString: strerror(-status)))") }
    }

    /// Every node's report, by node name, from the status channel (nodes named by pmxcfs's .members).
    public func reports(nodes: [String]) -> [String: Report] {
        guard let client = try? IPCClient(service: service) else { return [:] }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        var reports: [String: Report] = [:]
        for node in nodes {
            let (status, payload) = client.status(Self.key, node: node)
            if status == 0, let report = try? decoder.decode(Report.self, from: Data(payload)) { reports[node] = report }
        }
        return reports
    }
}
