import Drivers
import Foundation
import Testing
import TestSupport

/// `pvectl cluster create / add / join / delnode` for real: three nodes in namespaces, each with our pmxcfs started
/// in local mode; corosync is set up and started by the commands (through --start-corosync, which starts it in the
/// node's namespaces), pmxcfs restarted out of local mode by them.
@Suite("pvectl cluster: create, add/join, delnode on three nodes", .serialized,
       .enabled(if: CorosyncCluster.unavailableReason == nil && PMXCFSProcess.unavailableReason == nil,
                Comment(rawValue: CorosyncCluster.unavailableReason ?? PMXCFSProcess.unavailableReason ?? "")))
struct ClusterManagerTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    @Test("create on node 1, add+join nodes 2 and 3 (their trees replaced, kept aside), status and nodes, delnode of a node turned off")
    func membership() throws {
        let cluster = try CorosyncCluster(start: false)
        let daemons = try (1...3).map { index -> PMXCFSProcess in
            let daemon = try PMXCFSProcess(node: "node\(index)")
            daemon.launcher = ["/usr/bin/nsenter", "--net=/run/netns/\(cluster.namespace(index))"]
            daemon.extraArguments = ["--corosync-conf", cluster.corosyncConfigPath(index)]
            try daemon.start()
            return daemon
        }
        // The commands restart pmxcfs: what runs at the end is named by its pid file.
        func stopDaemon(_ index: Int) {
            let pidFile = daemons[index - 1].directory.path + "/run/pmxcfs.pid"
            let text = try? String(contentsOfFile: pidFile, encoding: .utf8)
            if let pid = text.flatMap({ pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
                kill(pid, SIGTERM)
                _ = waitFor(seconds: 10) { kill(pid, 0) != 0 }
            }
            _ = waitFor(seconds: 10) { !daemons[index - 1].isMounted }
        }
        defer { for index in 1...3 { stopDaemon(index) } }
        let scratch = try TemporaryDirectory(prefix: "pvectl-cluster-manager")
        func pvectl(_ index: Int, _ arguments: [String]) -> (status: Int32, output: String, error: String) {
            let daemon = daemons[index - 1]
            // In the node's network namespace only (ip netns exec would give it a mount namespace of its own, and the
            // pmxcfs it restarts would mount there, out of this test's sight).
            return NetworkNamespace.capture(["nsenter", "--net=/run/netns/\(cluster.namespace(index))", Self.binary, "cluster"] + arguments
                                            + ["--root", daemon.mountPoint, "--node", "node\(index)",
                                               "--pmxcfs-pid-file", daemon.directory.path + "/run/pmxcfs.pid",
                                               "--start-corosync", cluster.startCommand(index)])
        }
        func members(_ index: Int) -> String { (try? String(contentsOfFile: daemons[index - 1].path(".members"), encoding: .utf8)) ?? "" }
        func read(_ index: Int, _ relative: String) -> String? { try? String(contentsOfFile: daemons[index - 1].path(relative), encoding: .utf8) }

        try Data("dir: local\n\tpath /var/lib/vz\n".utf8).write(to: URL(fileURLWithPath: daemons[0].path("storage.cfg")))
        try Data("keyboard: de\n".utf8).write(to: URL(fileURLWithPath: daemons[1].path("datacenter.cfg")))

        let create = pvectl(1, ["create", "e2e", "--link0", "192.0.2.11"])
        try #require(create.status == 0, "\(create)")
        #expect(waitFor(seconds: 30) { members(1).contains("\"name\": \"e2e\"") && members(1).contains("\"quorate\": 1") }, "\(members(1))")
        #expect(read(1, "storage.cfg") == "dir: local\n\tpath /var/lib/vz\n", "the creating node keeps its tree")
        #expect(FileManager.default.fileExists(atPath: daemons[0].path("priv/authkey.key")))

        // Node 3 has a guest: it may not join until it is moved away (as pvecm add refuses).
        try Data("memory: 64\n".utf8).write(to: URL(fileURLWithPath: daemons[2].path("nodes/node3/qemu-server/999.conf")))
        for (member, joining) in [(1, 2), (2, 3)] {
            let bundle = scratch.path + "/node\(joining).join"
            let add = pvectl(member, ["add", "node\(joining)", "--link0", "192.0.2.1\(joining)", "--out", bundle])
            #expect(add.status == 0, "\(add)")
            if joining == 3 {
                let refused = pvectl(3, ["join", bundle])
                #expect(refused.status == 1 && refused.error.contains("this node has guests (999.conf)"), "\(refused)")
                try FileManager.default.removeItem(atPath: daemons[2].path("nodes/node3/qemu-server/999.conf"))
            }
            let join = pvectl(joining, ["join", bundle])
            #expect(join.status == 0, "\(join)")
            #expect(waitFor(seconds: 60) {
                read(joining, "storage.cfg") == "dir: local\n\tpath /var/lib/vz\n" && members(joining).contains("\"quorate\": 1")
            }, "node \(joining) has the cluster's tree: \(members(joining))")
        }
        #expect(read(2, "datacenter.cfg") == nil, "a joining node's own tree is replaced by the cluster's")
        let kept = (try? FileManager.default.contentsOfDirectory(atPath: daemons[1].directory.path)) ?? []
        #expect(kept.contains { $0.contains(".before-join-") }, "and kept aside: \(kept)")
        #expect(waitFor(seconds: 30) {
            (1...3).allSatisfy { index in (1...3).allSatisfy { members(index).contains("\"node\($0)\": { \"id\": \($0), \"online\": 1") } }
        }, "every node sees three: \(members(1))")
        let nodes = NetworkNamespace.capture(["ip", "netns", "exec", cluster.namespace(3), Self.binary, "cluster", "nodes"])
        #expect(nodes.output.contains("node1") && nodes.output.contains("node2") && nodes.output.contains("node3 (local)"), "\(nodes)")

        // A change on node 3 reaches node 1 (the joined node writes through the cluster).
        try Data("keyboard: fr\n".utf8).write(to: URL(fileURLWithPath: daemons[2].path("datacenter.cfg")))
        #expect(waitFor(seconds: 10) { read(1, "datacenter.cfg") == "keyboard: fr\n" })

        // Node 3 turned off for good, then removed: the other two keep quorum.
        stopDaemon(3)
        cluster.stop(3)
        #expect(pvectl(1, ["delnode", "node1"]).status == 1, "the node you stand on is refused")
        let delnode = pvectl(1, ["delnode", "node3"])
        #expect(delnode.status == 0, "\(delnode)")
        #expect(waitFor(seconds: 30) { !(read(2, "corosync.conf") ?? "node3").contains("node3") && members(2).contains("\"quorate\": 1") },
                "\(members(2))")
        let status = NetworkNamespace.capture(["ip", "netns", "exec", cluster.namespace(2), Self.binary, "cluster", "status", "--json"])
        #expect(status.output.contains("\"expected_votes\" : 2") && status.output.contains("\"quorate\" : true"), "\(status)")
    }

    @Test("examples/cluster/three-nodes: the README's walkthrough runs to the end and leaves nothing behind")
    func walkthrough() throws {
        let script = Corpus.packageRoot.appendingPathComponent("examples/cluster/three-nodes").path
        let run = NetworkNamespace.capture([script], environment: ["PVECTL_BIN": Self.binary, "PMXCFS_BIN": PMXCFSProcess.binary, "NO_COLOR": "1"])
        #expect(run.status == 0, "\(run.output)\n\(run.error)")
        for expected in ["Cluster demo created", "node3 joined cluster demo", "Quorate:          Yes", "Push complete",
                         "node2 created", "and started VM 100", "3 of 3 nodes converged to", "node2: writes refused (no quorum)", "quorum lost",
                         "2 of 3 nodes converged to", "node2 still runs VM 100 as it was", "node2 started VM 101", "VM 100 runs on as it was",
                         "removed node3", "two nodes left, quorate", "QNetd signed the certificate of cluster demo",
                         "corosync-qdevice runs on node1",
                         "corosync/qdevice: corosync-qdevice runs", "Flags:            Quorate Qdevice", "node1: quorate with 2 of 3 votes",
                         "node2 back: two nodes and a QDevice, quorate", "corosync/qdevice: corosync-qdevice stopped",
                         "two nodes again, no QDevice", "the host is as it was"] {
            #expect(run.output.contains(expected), "missing '\(expected)':\n\(run.output)\n\(run.error)")
        }
        #expect(!run.output.contains("FAILED"), "\(run.output)")
        let namespaces = NetworkNamespace.capture(["ip", "netns", "list"]).output
        #expect(!namespaces.contains("pv3-"), "\(namespaces)")
        let processes = NetworkNamespace.capture(["pgrep", "-f", "pvectl-cluster\\.|corosync-qnetd|corosync-qdevice"]).output
        #expect(processes.isEmpty, "nothing of it still runs: \(processes)")
    }
}
