@testable import ClusterFS
import Foundation
import Synchronization
import Testing
import TestSupport

/// The corosync client wrappers against three real corosync nodes in namespaces: CPG's total order and membership,
/// and quorum followed as a node is cut off and healed.
@Suite("corosync: CPG and quorum through the system-library wrappers, three real nodes", .serialized,
       .enabled(if: CorosyncCluster.unavailableReason == nil, Comment(rawValue: CorosyncCluster.unavailableReason ?? "")))
struct CorosyncTests {
    /// What one node's group and quorum tracker reported.
    final class Observed: Sendable {
        let messages = Mutex<[String]>([])
        let members = Mutex<[GroupMember]>([])
        let quorate = Mutex<Bool?>(nil)
    }

    final class Node: Sendable {
        let observed = Observed()
        let group: ProcessGroup
        let quorum: QuorumTracker
        var messages: [String] { observed.messages.withLock { $0 } }
        var memberCount: Int { observed.members.withLock { $0.count } }

        init(_ cluster: CorosyncCluster, _ node: Int) throws {
            let observed = self.observed
            (group, quorum) = try cluster.inNode(node) {
                let group = try ProcessGroup(name: "pvectl_test") { event in
                    switch event {
                    case .message(let from, let data):
                        observed.messages.withLock { $0.append("\(from.nodeID):" + String(decoding: data, as: UTF8.self)) }
                    case .membership(let list, _, _): observed.members.withLock { $0 = list }
                    case .dispatched: break
                    }
                }
                let quorum = try QuorumTracker { isQuorate, _ in observed.quorate.withLock { $0 = isQuorate } }
                return (group, quorum)
            }
        }

        func stop() {
            group.stop()
            quorum.stop()
        }
    }

    @Test("three senders, one total order on every node; a cut node loses quorum, the others keep it, healing brings it back")
    func totalOrderAndQuorum() throws {
        let cluster = try CorosyncCluster()
        #expect(waitFor(seconds: 60) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "the three nodes form a quorate cluster")
        let nodes = try (1...3).map { try Node(cluster, $0) }
        defer { nodes.forEach { $0.stop() } }
        #expect(waitFor(seconds: 30) { nodes.allSatisfy { $0.memberCount == 3 } }, "every group sees three members")
        #expect(nodes.map(\.group.localNodeID) == [1, 2, 3])

        let perSender = 300
        DispatchQueue.concurrentPerform(iterations: 3) { index in
            for message in 0..<perSender { try? nodes[index].group.multicast(Array("m\(message)".utf8)) }
        }
        #expect(waitFor(seconds: 60) { nodes.allSatisfy { $0.messages.count == 3 * perSender } },
                "\(nodes.map { $0.messages.count })")
        let orders = nodes.map(\.messages)
        #expect(orders[0] == orders[1] && orders[1] == orders[2], "one total order")
        for sender in 1...3 {
            let own = orders[0].filter { $0.hasPrefix("\(sender):") }
            #expect(own == (0..<perSender).map { "\(sender):m\($0)" }, "each sender's messages in its own order")
        }

        #expect(nodes.allSatisfy { $0.quorum.isQuorate })
        try cluster.cut(3)
        #expect(waitFor(seconds: 30) { !nodes[2].quorum.isQuorate }, "the cut node loses quorum")
        #expect(nodes[0].quorum.isQuorate && nodes[1].quorum.isQuorate, "the majority keeps it")
        #expect(waitFor(seconds: 30) { nodes[0].memberCount == 2 }, "the majority's group lost the cut node")
        try cluster.heal(3)
        #expect(waitFor(seconds: 60) { nodes[2].quorum.isQuorate && nodes[0].memberCount == 3 },
                "healed: quorate again, back in the group")
    }
}
