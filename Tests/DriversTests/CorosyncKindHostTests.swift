import Drivers
import Foundation
import Testing
import TestSupport

/// The corosync kind against real corosync: three nodes in namespaces, pvectl in node 1's (its /etc/corosync bound
/// to that node's, as the node has it).
@Suite("corosync kind: corosync.conf planned, installed and reloaded on a real three-node corosync",
       .enabled(if: CorosyncCluster.unavailableReason == nil, Comment(rawValue: CorosyncCluster.unavailableReason ?? "")))
struct CorosyncKindHostTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    @Test("a token change is planned as a reload, applied (the running corosync takes it), then nothing; splits are refused at file:line")
    func reloadAndRefusals() throws {
        let cluster = try CorosyncCluster()
        #expect(waitFor(seconds: 60) { cluster.isQuorate(1) == true }, "corosync on node 1 becomes quorate")
        let root = try TemporaryDirectory(prefix: "pvectl-corosync-root")
        let etc = (cluster.corosyncConfigPath(1) as NSString).deletingLastPathComponent
        func pvectl(_ command: String, _ arguments: [String], node: String = "node1") -> (status: Int32, output: String, error: String) {
            NetworkNamespace.capture(["ip", "netns", "exec", cluster.namespace(1), "unshare", "-m", "sh", "-c",
                                      "mount --bind \(etc.shellQuoted) /etc/corosync && exec \"$0\" \"$@\"", Self.binary, command,
                                      "--root", root.path, "--node", node, "--interfaces", root.path + "/interfaces",
                                      "--state-dir", root.path + "/state", "--only", "corosync"] + arguments,
                                     environment: ["NO_COLOR": "1"])
        }
        func cmap(_ key: String) -> String {
            NetworkNamespace.capture(["ip", "netns", "exec", cluster.namespace(1), "corosync-cmapctl", "-g", key]).output
                .split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
        }
        #expect(cmap("totem.config_version") == "1")

        let changed = cluster.configuration.replacingOccurrences(of: "config_version: 1", with: "config_version: 2")
            .replacingOccurrences(of: "token: 3000", with: "token: 4000")
        try root.write("corosync.conf", changed)
        let plan = pvectl("plan", ["--detailed-exitcode"])
        #expect(plan.status == 2, "\(plan)")
        for expected in ["~ corosync/config (update)", "totem.token: 3000 → 4000  [reload]"] {
            #expect(plan.output.contains(expected), "missing '\(expected)': \(plan.output)")
        }
        let json = pvectl("plan", ["--json"]).output
        #expect(json.contains("install /etc/corosync/corosync.conf (config_version 2)") && json.contains("corosync-cfgtool -R"), "\(json)")
        let apply = pvectl("apply", ["--auto-approve"])
        #expect(apply.status == 0, "\(apply)")
        #expect(waitFor(seconds: 10) { cmap("totem.config_version") == "2" && cmap("totem.token") == "4000" },
                "the running corosync took it: \(cmap("totem.config_version")) \(cmap("totem.token"))")
        #expect((try? String(contentsOfFile: cluster.corosyncConfigPath(1), encoding: .utf8)) == changed)
        #expect(pvectl("plan", ["--detailed-exitcode"]).status == 0, "converged")

        // Not bumped: refused at config_version's line, nothing installed.
        try root.write("corosync.conf", changed.replacingOccurrences(of: "token: 4000", with: "token: 5000"))
        let unbumped = pvectl("apply", ["--auto-approve"])
        let versionLine = changed.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains("config_version") }! + 1
        #expect(unbumped.status == 1, "\(unbumped)")
        #expect(unbumped.error.contains("\(root.path)/corosync.conf:\(versionLine):") && unbumped.error.contains("config_version 2 is not above"),
                "\(unbumped.error)")
        #expect(cmap("totem.token") == "4000")

        // A link address node 1 does not have, and a nodelist without the node itself.
        try root.write("corosync.conf", changed.replacingOccurrences(of: "config_version: 2", with: "config_version: 3")
            .replacingOccurrences(of: "ring0_addr: 192.0.2.11", with: "ring0_addr: 198.51.100.11"))
        let foreign = pvectl("plan", [])
        #expect(foreign.status == 1 && foreign.error.contains("ring0_addr 198.51.100.11 is not an address of this node (node1)"), "\(foreign)")
        try root.write("corosync.conf", changed.replacingOccurrences(of: "config_version: 2", with: "config_version: 3"))
        let removed = pvectl("plan", [], node: "node4")
        #expect(removed.status == 1 && removed.error.contains("this node (node4) is not in the nodelist"), "\(removed)")
        #expect(cmap("totem.config_version") == "2")
    }

    @Test("pvectl cluster status, nodes and expected on the real cluster, as pvecm shows them; a cut node made quorate on purpose")
    func clusterCommands() throws {
        let cluster = try CorosyncCluster()
        #expect(waitFor(seconds: 60) { cluster.isQuorate(1) == true && cluster.isQuorate(3) == true }, "quorate")
        let root = try TemporaryDirectory(prefix: "pvectl-cluster-root")
        try root.write("corosync.conf", cluster.configuration)
        func pvectl(_ node: Int, _ arguments: [String]) -> (status: Int32, output: String, error: String) {
            NetworkNamespace.capture(["ip", "netns", "exec", cluster.namespace(node), Self.binary, "cluster"] + arguments)
        }
        let status = pvectl(1, ["status", "--root", root.path])
        #expect(status.status == 0, "\(status)")
        for expected in ["Cluster information", "Name:             \(cluster.prefix)", "Config Version:   1", "Transport:        knet",
                         "Secure auth:      on", "Quorate:          Yes", "Expected votes:   3", "0x00000001          1 192.0.2.11 (local)"] {
            #expect(status.output.contains(expected), "missing '\(expected)': \(status.output)")
        }
        // Nodes 1 and 3 quorate need not mean node 2 is in their membership yet: waited for.
        var nodes = pvectl(2, ["nodes", "--json"])
        var members: [[String: Any]] = []
        #expect(waitFor(seconds: 60) {
            nodes = pvectl(2, ["nodes", "--json"])
            members = (try? JSONSerialization.jsonObject(with: Data(nodes.output.utf8))) as? [[String: Any]] ?? []
            return members.map { $0["name"] as? String } == ["node1", "node2", "node3"]
        }, "\(nodes)")
        #expect(members.filter { $0["local"] as? Bool == true }.map { $0["nodeid"] as? Int } == [2])

        try cluster.cut(3)
        #expect(waitFor(seconds: 60) { cluster.isQuorate(3) == false }, "the cut node loses quorum")
        let lonely = pvectl(3, ["status", "--json"])
        #expect(lonely.output.contains("\"quorate\" : false"), "\(lonely)")
        #expect(pvectl(3, ["expected", "1"]).status == 0)
        #expect(waitFor(seconds: 10) { cluster.isQuorate(3) == true }, "expected 1 makes it quorate")
        try cluster.heal(3)
        #expect(pvectl(1, ["expected", "0"]).status != 0, "at least 1 vote")
    }
}
