import Resources
import Testing

@Suite("corosync-quorumtool's output, parsed for pvectl cluster --json")
struct QuorumStatusTests {
    @Test("status with -p: quorum and votequorum figures and the members with the local one")
    func status() {
        let text = """
        Quorum information
        ------------------
        Date:             Sun Dec  6 14:39:01 2026
        Quorum provider:  corosync_votequorum
        Nodes:            2
        Node ID:          1
        Ring ID:          1.d
        Quorate:          No

        Votequorum information
        ----------------------
        Expected votes:   3
        Highest expected: 3
        Total votes:      2
        Quorum:           2 Activity blocked
        Flags:            WaitForAll LastManStanding

        Membership information
        ----------------------
            Nodeid      Votes    Qdevice Name
                 1          1         NR node1 (local)
                 3          1         NR node3

        """
        let status = QuorumStatus.parse(text)
        #expect(status.quorate == false && status.nodes == 2 && status.nodeid == 1 && status.ringID == "1.d")
        #expect(status.expectedVotes == 3 && status.highestExpected == 3 && status.totalVotes == 2 && status.quorum == 2)
        #expect(status.flags == ["WaitForAll", "LastManStanding"] && status.provider == "corosync_votequorum")
        #expect(status.members == [QuorumStatus.Member(nodeid: 1, votes: 1, name: "node1", local: true),
                                   QuorumStatus.Member(nodeid: 3, votes: 1, name: "node3", local: false)])
    }

    @Test("hexadecimal ids and address names (-siH), and text it does not know, are read or skipped")
    func hexadecimal() {
        let status = QuorumStatus.parse("Node ID: 0x0000000a\nSomething new: 7\n\nMembership information\n----\n    Nodeid      Votes Name\n"
                                        + "0x0000000a          1 192.0.2.11 (local)\ngarbage\n")
        #expect(status.nodeid == 10 && status.members == [QuorumStatus.Member(nodeid: 10, votes: 1, name: "192.0.2.11", local: true)])
        #expect(QuorumStatus.parse("").members.isEmpty)
    }
}
