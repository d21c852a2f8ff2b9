@testable import ClusterFS
import Foundation
import Testing
import TestSupport

/// The original's periodic verification (hourly there): a tree that diverged without any membership change (here: a
/// change applied on one replica alone, behind replication's back) is found by comparing digests at one place in the
/// delivery order, and that node leaves, rejoins and takes the majority's tree, although its version is the highest.
/// Three replicators in this process, each connected to its own node's corosync (from a thread in that node's network
/// namespace), each with a file system of its own (no mount needed).
@Suite("ClusterFS cluster mode: the periodic verification repairs a diverged node", .serialized,
       .enabled(if: CorosyncCluster.unavailableReason == nil, Comment(rawValue: CorosyncCluster.unavailableReason ?? "")))
struct VerificationTests {
    final class Node: Sendable {
        let directory: TemporaryDirectory
        let fs: ClusterFileSystem
        let replicator: Replicator

        init(_ cluster: CorosyncCluster, _ index: Int) throws {
            let directory = try TemporaryDirectory(prefix: "pvectl-verify")
            let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "node\(index)")
            fs.enterClusterMode()
            self.directory = directory
            self.fs = fs
            replicator = try cluster.inNode(index) { try Replicator(fileSystem: fs, corosyncConfig: nil) }
            fs.attach(replicator)
        }

        var digest: String { fs.snapshot().digest }
        func has(_ path: String) -> Bool { fs.getattr(path).0 == 0 }
    }

    @Test("a node whose tree differs at a verification rejoins and takes the majority's tree; the others keep theirs")
    func verification() throws {
        let cluster = try CorosyncCluster()
        #expect(waitFor(seconds: 60) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "a quorate corosync cluster")
        let nodes = try (1...3).map { try Node(cluster, $0) }
        defer { nodes.forEach { $0.replicator.stop() } }
        try #require(waitFor(seconds: 60) { nodes.allSatisfy { $0.replicator.isSynced } && Set(nodes.map(\.digest)).count == 1 },
                     "synced, one tree")
        #expect(nodes[0].replicator.submit(.create("/storage.cfg"), throughMount: false) == 0)
        #expect(waitFor(seconds: 10) { nodes.allSatisfy { $0.has("/storage.cfg") } && Set(nodes.map(\.digest)).count == 1 })

        // Node 3 diverges behind replication's back: a change applied there alone (its version is now the highest).
        #expect(nodes[2].fs.apply(.create("/diverged"), stamp: Stamp(writer: 3, time: UInt32(time(nil)))) == 0)
        let syncsBefore = nodes[2].replicator.completedSyncs
        nodes[0].replicator.requestVerification()
        #expect(waitFor(seconds: 60) { nodes[2].replicator.completedSyncs > syncsBefore && !nodes[2].has("/diverged") },
                "node 3 rejoined and took the cluster's tree")
        #expect(waitFor(seconds: 30) { nodes.allSatisfy { $0.replicator.isSynced } && Set(nodes.map(\.digest)).count == 1 },
                "one tree again")
        #expect(nodes.allSatisfy { !$0.has("/diverged") && $0.has("/storage.cfg") }, "the majority's tree, not the diverged one")

        // A verification of equal trees changes nothing (watched for a while: a resync would follow within moments).
        let syncs = nodes.map(\.replicator.completedSyncs)
        nodes[1].replicator.requestVerification()
        #expect(nodes[1].replicator.submit(.create("/after"), throughMount: false) == 0)
        #expect(waitFor(seconds: 10) { nodes.allSatisfy { $0.has("/after") } })
        #expect(!waitFor(seconds: 3) { nodes.map(\.replicator.completedSyncs) != syncs }, "no node left to resync")
    }
}
