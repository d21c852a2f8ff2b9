import Foundation
@testable import Reconciler
import Resources
import Testing

@Suite("corosync.conf as the cluster manager writes it: create, add, remove, each checked and version-bumped")
struct ClusterMembershipTests {
    @Test("a new cluster: one node, its links with priorities, knet with secauth, votequorum, config_version 1")
    func newCluster() throws {
        let text = try ClusterMembership.newCluster(name: "prod", node: "pve1", links: [
            try ClusterMembership.Link(number: 0, parsing: "192.0.2.11,priority=15"),
            try ClusterMembership.Link(number: 1, parsing: "198.51.100.11"),
        ])
        let (config, problems) = CorosyncConfig.parse(text, file: "corosync.conf")
        #expect(problems.isEmpty && CorosyncValidator.validate(config, node: "pve1").isEmpty)
        #expect(config.totem?["cluster_name"] == "prod" && config.totem?["config_version"] == "1" && config.totem?["secauth"] == "on")
        #expect(config.nodes.map { [$0["name"], $0["nodeid"], $0["ring0_addr"], $0["ring1_addr"]] }
                == [["pve1", "1", "192.0.2.11", "198.51.100.11"]])
        #expect(text.contains("knet_link_priority: 15"))
        #expect(throws: ClusterMembership.Failure.self) { try ClusterMembership.newCluster(name: "no spaces", node: "pve1", links: []) }
        #expect(throws: ClusterMembership.Failure.self) { try ClusterMembership.Link(number: 0, parsing: "pve1.example,priority=1") }
        #expect(throws: ClusterMembership.Failure.self) { try ClusterMembership.Link(number: 0, parsing: "192.0.2.1,weight=3") }
    }

    @Test("add takes the next free id and bumps the version; a name twice, a taken id or missing links are refused; remove")
    func addAndRemove() throws {
        let created = try ClusterMembership.newCluster(name: "prod", node: "pve1", links: [ClusterMembership.Link(number: 0, address: "192.0.2.11")])
        let config = CorosyncConfig.parse(created, file: "corosync.conf").0
        let added = try ClusterMembership.adding(node: "pve2", links: [ClusterMembership.Link(number: 0, address: "192.0.2.12")], nodeid: nil,
                                                 votes: 1, to: config, standingOn: "pve1")
        let two = CorosyncConfig.parse(added, file: "corosync.conf").0
        #expect(two.totem?["config_version"] == "2" && two.nodes.map { $0["nodeid"] } == ["1", "2"])
        #expect(throws: ClusterMembership.Failure.self) {
            try ClusterMembership.adding(node: "pve2", links: [ClusterMembership.Link(number: 0, address: "192.0.2.13")], nodeid: nil, votes: 1,
                                         to: two, standingOn: "pve1")
        }
        #expect(throws: ClusterMembership.Failure.self) {
            try ClusterMembership.adding(node: "pve3", links: [ClusterMembership.Link(number: 0, address: "192.0.2.13")], nodeid: 2, votes: 1,
                                         to: two, standingOn: "pve1")
        }
        #expect(throws: ClusterMembership.Failure.self, "an address another node has") {
            try ClusterMembership.adding(node: "pve3", links: [ClusterMembership.Link(number: 0, address: "192.0.2.12")], nodeid: nil, votes: 1,
                                         to: two, standingOn: "pve1")
        }
        #expect(throws: ClusterMembership.Failure.self, "not on the links every node has") {
            try ClusterMembership.adding(node: "pve3", links: [ClusterMembership.Link(number: 1, address: "192.0.2.13")], nodeid: nil, votes: 1,
                                         to: two, standingOn: "pve1")
        }
        let removed = CorosyncConfig.parse(try ClusterMembership.removing(node: "pve2", from: two, standingOn: "pve1"), file: "c").0
        #expect(removed.totem?["config_version"] == "3" && removed.nodes.map { $0["name"] } == ["pve1"])
        #expect(throws: ClusterMembership.Failure.self) { try ClusterMembership.removing(node: "pve1", from: two, standingOn: "pve1") }
        #expect(throws: ClusterMembership.Failure.self) { try ClusterMembership.removing(node: "pve9", from: two, standingOn: "pve1") }
    }

    @Test("a QDevice as pvecm adds it: model net, TLS, one vote, ffsplit for two nodes; an odd count only forced (lms); removed again")
    func quorumDevice() throws {
        let one = CorosyncConfig.parse(try ClusterMembership.newCluster(name: "prod", node: "pve1",
                                                                        links: [ClusterMembership.Link(number: 0, address: "192.0.2.11")]),
                                       file: "corosync.conf").0
        let two = CorosyncConfig.parse(try ClusterMembership.adding(node: "pve2", links: [ClusterMembership.Link(number: 0, address: "192.0.2.12")],
                                                                   nodeid: nil, votes: 1, to: one, standingOn: "pve1"), file: "c").0
        let text = try ClusterMembership.addingQuorumDevice(host: "192.0.2.10", force: false, to: two, standingOn: "pve1")
        #expect(text.contains("quorum {\n  device {\n    model: net\n    net {\n      algorithm: ffsplit\n      host: 192.0.2.10\n"
                              + "      tls: on\n    }\n    votes: 1\n  }\n  provider: corosync_votequorum\n}"), "\(text)")
        let device = try #require(ClusterMembership.QuorumDevice(CorosyncConfig.parse(text, file: "c").0))
        #expect(device.model == "net" && device.host == "192.0.2.10" && device.algorithm == "ffsplit")
        #expect(CorosyncConfig.parse(text, file: "c").0.totem?["config_version"] == "3")
        #expect(throws: ClusterMembership.Failure.self, "configured already") {
            try ClusterMembership.addingQuorumDevice(host: "192.0.2.9", force: true, to: CorosyncConfig.parse(text, file: "c").0, standingOn: "pve1")
        }
        #expect(throws: ClusterMembership.Failure.self, "an odd number of nodes, not forced") {
            try ClusterMembership.addingQuorumDevice(host: "192.0.2.10", force: false, to: one, standingOn: "pve1")
        }
        let forced = try ClusterMembership.addingQuorumDevice(host: "192.0.2.10", force: true, to: one, standingOn: "pve1")
        #expect(ClusterMembership.QuorumDevice(CorosyncConfig.parse(forced, file: "c").0)?.algorithm == "lms")
        #expect(!forced.contains("votes: 1\n  }"), "lms takes corosync's default votes (nodes - 1): \(forced)")
        let removed = CorosyncConfig.parse(try ClusterMembership.removingQuorumDevice(from: CorosyncConfig.parse(text, file: "c").0,
                                                                                      standingOn: "pve1"), file: "c").0
        #expect(ClusterMembership.QuorumDevice(removed) == nil && removed.totem?["config_version"] == "4")
        #expect(removed.root.sections("quorum").first?["provider"] == "corosync_votequorum")
        #expect(throws: ClusterMembership.Failure.self) { try ClusterMembership.removingQuorumDevice(from: removed, standingOn: "pve1") }
    }
}
