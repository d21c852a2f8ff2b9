import Foundation
import Testing
import TestSupport

/// The pvectl binary as an operator runs it, inside a fresh namespace.
@Suite("pvectl plan/apply/status end to end",
       .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct CommandLineTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    static let interfaces = """
    auto lo
    iface lo inet loopback

    iface eno1 inet manual

    auto vmbr0
    iface vmbr0 inet static
    \taddress 192.0.2.10/24
    \tgateway 192.0.2.1
    \tbridge-ports eno1
    \tbridge-stp off
    \tbridge-fd 0

    """

    struct Setup {
        let namespace: NetworkNamespace
        let directory: TemporaryDirectory

        init() throws {
            namespace = try NetworkNamespace()
            directory = try TemporaryDirectory()
            try namespace.addNIC("eno1")
            try directory.write("interfaces", CommandLineTests.interfaces)
            try FileManager.default.createDirectory(atPath: directory.path + "/root", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: directory.path + "/vz", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: directory.path + "/run", withIntermediateDirectories: true)
        }

        /// Runs pvectl in the namespace with the shared options. The `local`
        /// storage (/var/lib/vz) is this test's own directory: another test
        /// creating the host's would change this test's plan between plan and apply. /run is its own too: a QEMU another
        /// test runs (its pid file in /run/qemu-server) would otherwise be planned for a stop here.
        func pvectl(_ command: String, _ arguments: [String] = []) throws -> (status: Int32, output: String, error: String) {
            namespace.execIsolated([CommandLineTests.binary, command, "--root", directory.path + "/root",
                                    "--interfaces", directory.path + "/interfaces", "--state-dir", directory.path + "/state",
                                    "--node", "pve1"] + arguments,
                                   binding: ["/var/lib/vz": directory.path + "/vz", "/run": directory.path + "/run"],
                                   environment: ["NO_COLOR": "1"])
        }
    }

    @Test("plan → apply → converged, with Terraform's exit codes")
    func lifecycle() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "build pvectl first (swift build)")
        let setup = try Setup()
        let plan = try setup.pvectl("plan", ["--detailed-exitcode"])
        #expect(plan.status == 2, "\(plan)")
        #expect(plan.output.contains("+ network/vmbr0 (create)"))
        #expect(plan.output.contains("+ address: 192.0.2.10/24  [live]  line 8"))

        // Not a terminal and no --auto-approve: refuse, change nothing.
        let refused = try setup.pvectl("apply")
        #expect(refused.status == 1)
        #expect(refused.error.contains("--auto-approve"))
        #expect(try setup.namespace.link("vmbr0") == nil)

        let apply = try setup.pvectl("apply", ["--auto-approve"])
        #expect(apply.status == 0, "\(apply)")
        #expect(apply.output.contains("Apply complete"))
        let again = try setup.pvectl("plan", ["--detailed-exitcode"])
        #expect(again.status == 0, "\(again)")
        #expect(again.output.contains("No changes."))

        let status = try setup.pvectl("status", ["--json"])
        #expect(status.status == 0)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [[String: Any]])
        #expect(rows.first { $0["id"] as? String == "network/vmbr0" }?["condition"] as? String == "Ready")
    }

    @Test("what pvectl does not manage, or cannot run for want of a tool, is said so, never 'matches'")
    func unmanagedAndMissing() throws {
        let setup = try Setup()
        // A PATH with the tools the namespace setup needs, but no nft: the firewall says nft is not installed.
        try setup.directory.write("root/firewall/cluster.fw", "[OPTIONS]\n\nenable: 1\n")
        let bin = setup.directory.path + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        for tool in ["ip", "unshare", "sh", "mount", "sysctl"] {
            let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map { "\($0)/\(tool)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
            try FileManager.default.createSymbolicLink(atPath: "\(bin)/\(tool)", withDestinationPath: try #require(found, "\(tool) on this machine"))
        }
        let firewall = setup.namespace.execIsolated([Self.binary, "plan", "--only", "firewall", "--root", setup.directory.path + "/root",
                                                     "--interfaces", setup.directory.path + "/interfaces", "--state-dir",
                                                     setup.directory.path + "/state", "--node", "pve1"],
                                                    binding: ["/run": setup.directory.path + "/run"], environment: ["NO_COLOR": "1", "PATH": bin])
        #expect(firewall.output.contains("? firewall/ruleset (unavailable)"), "\(firewall)")
        #expect(firewall.output.contains("nft is not installed (Debian package nftables)"), "\(firewall)")
        #expect(!firewall.output.contains("matches"))

        // Without LXC, a container that should run is unavailable, with the package named.
        try setup.directory.write("root/nodes/pve1/lxc/200.conf", "hostname: ns1\nmemory: 512\nonboot: 1\nostype: debian\nrootfs: /srv/ns1\n")
        let containers = setup.namespace.execIsolated([Self.binary, "plan", "--only", "lxc", "--root", setup.directory.path + "/root",
                                                       "--interfaces", setup.directory.path + "/interfaces", "--state-dir",
                                                       setup.directory.path + "/state", "--node", "pve1", "--detailed-exitcode"],
                                                      binding: ["/run": setup.directory.path + "/run"], environment: ["NO_COLOR": "1", "PATH": bin])
        #expect(containers.status == 0, "\(containers)")
        #expect(containers.output.contains("? lxc/200 (unavailable)"), "\(containers.output)")
        #expect(containers.output.contains("cannot start (onboot: 1): lxc-start is not installed (Debian package lxc)"), "\(containers.output)")
        #expect(!containers.output.contains("matches"))
    }

    @Test("a saved plan is refused once an input changed")
    func stalePlan() throws {
        let setup = try Setup()
        let planFile = setup.directory.path + "/net.plan"
        #expect(try setup.pvectl("plan", ["--out", planFile]).status == 0)
        let saved = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: planFile))) as? [String: Any])
        #expect((saved["inputs"] as? [String: String])?.keys.contains(setup.directory.path + "/interfaces") == true)
        try setup.directory.write("interfaces", Self.interfaces.replacingOccurrences(of: "192.0.2.10", with: "192.0.2.11"))
        let apply = try setup.pvectl("apply", [planFile])
        #expect(apply.status == 1)
        #expect(apply.error.contains("out of date"))
        #expect(try setup.namespace.link("vmbr0") == nil)

        // The system moving under a saved plan is refused too, naming what moved.
        #expect(try setup.pvectl("plan", ["--out", planFile]).status == 0)
        try setup.namespace.run(["ip", "-n", setup.namespace.name, "link", "add", "vmbr0", "type", "bridge"])
        let drifted = try setup.pvectl("apply", [planFile])
        #expect(drifted.status == 1)
        #expect(drifted.error.contains("the system changed: network/vmbr0 (planned create, now update)"), "\(drifted)")

        // Every input a plan reads is in its digests: an edited cpu-models.conf refuses a saved plan too.
        try setup.directory.write("root/virtual-guest/cpu-models.conf", "cpu-model: fast\n\treported-model kvm64\n")
        #expect(try setup.pvectl("plan", ["--out", planFile]).status == 0)
        try setup.directory.write("root/virtual-guest/cpu-models.conf", "cpu-model: fast\n\treported-model qemu64\n")
        let edited = try setup.pvectl("apply", [planFile])
        #expect(edited.status == 1)
        #expect(edited.error.contains("virtual-guest/cpu-models.conf changed"), "\(edited)")

        // A fresh plan applies.
        #expect(try setup.pvectl("plan", ["--out", planFile]).status == 0)
        let ok = try setup.pvectl("apply", [planFile])
        #expect(ok.status == 0, "\(ok)")
        let addresses = try setup.namespace.exec(["ip", "-json", "address", "show", "vmbr0"])
        #expect(addresses.output.contains("\"192.0.2.11\""), "\(addresses)")
    }

    @Test("interfaces.new is planned when staged and moved into place by apply")
    func stagedFile() throws {
        let setup = try Setup()
        #expect(try setup.pvectl("apply", ["--auto-approve"]).status == 0)
        try setup.directory.write("interfaces.new", Self.interfaces.replacingOccurrences(of: "\tbridge-fd 0\n", with: "\tbridge-fd 0\n\tmtu 1400\n"))
        let plan = try setup.pvectl("plan")
        #expect(plan.output.contains("~ mtu: 1500 → 1400  [live]"))
        let apply = try setup.pvectl("apply", ["--auto-approve"])
        #expect(apply.status == 0, "\(apply)")
        #expect(!FileManager.default.fileExists(atPath: setup.directory.path + "/interfaces.new"))
        #expect(setup.directory.read("interfaces")?.contains("mtu 1400") == true)
        #expect(try setup.namespace.link("vmbr0")?["mtu"] as? Int == 1400)
    }

    @Test("an interfaces file with errors freezes the network and exits 1")
    func brokenFile() throws {
        let setup = try Setup()
        try setup.directory.write("interfaces", "auto vmbr0\niface vmbr0 inet static\n\tbridge-ports eno1\n\tmtu big\n")
        let plan = try setup.pvectl("plan")
        #expect(plan.status == 1)
        #expect(plan.error.contains("interfaces:4:6: error: mtu: type check ('integer') failed - got 'big'"))
        let apply = try setup.pvectl("apply", ["--auto-approve"])
        #expect(apply.status == 1)
        #expect(try setup.namespace.link("vmbr0") == nil)
    }
}
