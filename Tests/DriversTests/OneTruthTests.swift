import Foundation
import Testing
import TestSupport

/// `pvectl validate` and `pvectl plan` run the same checks on desired state:
/// over a corpus of broken trees (one class of problem each), every
/// diagnostic the plan prints is printed by validate too, word for word, and
/// the class's own diagnostic is among them. Warnings count as well.
@Suite("One truth: validate raises every diagnostic plan raises", .serialized,
       .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct OneTruthTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    /// vmbr0 on eno1, the bridge every guest below uses (the same file the end-to-end tests apply).
    static let interfaces = CommandLineTests.interfaces

    static let storage = """
    dir: local
    \tpath /var/lib/vz
    \tcontent iso,vztmpl,backup,images,rootdir

    dir: store
    \tpath /srv/pvectl-one-truth
    \tcontent images

    lvmthin: local-lvm
    \tthinpool data
    \tvgname pve
    \tcontent rootdir,images

    dir: elsewhere
    \tpath /srv/pvectl-one-truth-other
    \tcontent images
    \tnodes pve2

    """

    static let vm = "memory: 512\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nscsi0: store:100/vm-100-disk-0.qcow2,size=1G\n"

    /// A class of problem: files that replace or add to the base tree, and a fragment of the diagnostic it must raise.
    struct Broken: CustomTestStringConvertible, Sendable {
        var name: String
        var files: [String: String]
        var expected: String
        var testDescription: String { name }
    }

    static let corpus: [Broken] = [
        Broken(name: "volume name of another storage type",
               files: ["nodes/pve1/lxc/200.conf": "hostname: ct\nrootfs: local-lvm:subvol-200-disk-0,size=8G\n"],
               expected: "unable to parse lvm volume name 'subvol-200-disk-0'"),
        Broken(name: "disk on a storage that does not exist",
               files: ["nodes/pve1/qemu-server/100.conf": vm.replacingOccurrences(of: "store:", with: "nosuch:")],
               expected: "storage 'nosuch' does not exist in storage.cfg"),
        Broken(name: "content the storage does not allow",
               files: ["nodes/pve1/lxc/201.conf": "hostname: ct\nrootfs: store:201/vm-201-disk-0.raw,size=1G\n"],
               expected: "does not allow content 'rootdir'"),
        Broken(name: "storage not on this node",
               files: ["nodes/pve1/qemu-server/100.conf": vm.replacingOccurrences(of: "store:", with: "elsewhere:")],
               expected: "is not available on node 'pve1'"),
        Broken(name: "size that is not a size",
               files: ["nodes/pve1/qemu-server/100.conf": vm.replacingOccurrences(of: "size=1G", with: "size=big")],
               expected: "size 'big' is not a size"),
        Broken(name: "the API's new-disk syntax in a file",
               files: ["nodes/pve1/qemu-server/100.conf": vm.replacingOccurrences(of: "store:100/vm-100-disk-0.qcow2,size=1G", with: "store:32")],
               expected: "only the API allocates"),
        Broken(name: "NIC on a bridge the interfaces file does not define",
               files: ["nodes/pve1/qemu-server/100.conf": vm.replacingOccurrences(of: "bridge=vmbr0", with: "bridge=vmbr9")],
               expected: "bridge 'vmbr9' is not defined in the interfaces file"),
        Broken(name: "the same VMID on two nodes",
               files: ["nodes/pve2/qemu-server/100.conf": "memory: 512\n"], expected: "duplicate VMID 100"),
        Broken(name: "unknown option", files: ["nodes/pve1/qemu-server/100.conf": vm + "frobnicate: 1\n"],
               expected: "unknown qemu option 'frobnicate'"),
        Broken(name: "value of the wrong type", files: ["nodes/pve1/qemu-server/100.conf": vm + "onboot: maybe\n"],
               expected: "type check ('boolean')"),
        Broken(name: "firewall rule naming a missing security group",
               files: ["firewall/100.fw": "[OPTIONS]\n\nenable: 1\n\n[RULES]\n\nGROUP nosuchgroup\n"], expected: "nosuchgroup"),
        Broken(name: "firewall ipset entry that is neither an address nor an alias",
               files: ["firewall/cluster.fw": "[OPTIONS]\n\nenable: 1\n\n[IPSET admins]\n\nnosuchalias\n"], expected: "nosuchalias"),
        Broken(name: "firewall flag spelled as the JSON schema would take it",
               files: ["firewall/100.fw": "[OPTIONS]\n\nenable: yes\n"], expected: "type check ('boolean') failed - got 'yes'"),
        Broken(name: "storage local at another path (a warning)",
               files: ["storage.cfg": storage.replacingOccurrences(of: "\tpath /var/lib/vz\n", with: "\tpath /srv/vz\n")],
               expected: "storage 'local' is always the directory /var/lib/vz"),
        Broken(name: "a bridge port used twice",
               files: ["interfaces": interfaces + "auto vmbr1\niface vmbr1 inet manual\n\tbridge-ports eno1\n\tbridge-stp off\n\tbridge-fd 0\n"],
               expected: "'eno1' is already used by 'vmbr0'"),
    ]

    /// `path:line:column: severity: message` lines.
    static func diagnostics(_ text: String) -> Set<String> {
        Set(text.split(separator: "\n").map(String.init).filter { $0.contains(": error: ") || $0.contains(": warning: ") })
    }

    @Test("every broken tree: plan's diagnostics are validate's", arguments: corpus)
    func sameDiagnostics(_ broken: Broken) throws {
        let namespace = try NetworkNamespace()
        let directory = try TemporaryDirectory()
        try namespace.addNIC("eno1")
        var files = ["interfaces": Self.interfaces, "root/storage.cfg": Self.storage, "root/nodes/pve1/qemu-server/100.conf": Self.vm]
        for (path, text) in broken.files { files[path == "interfaces" ? path : "root/" + path] = text }
        for (path, text) in files { try directory.write(path, text) }
        try FileManager.default.createDirectory(atPath: directory.path + "/vz", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory.path + "/run", withIntermediateDirectories: true)
        let common = ["--root", directory.path + "/root", "--interfaces", directory.path + "/interfaces", "--node", "pve1"]
        let validate = NetworkNamespace.capture([Self.binary, "validate"] + common, environment: ["NO_COLOR": "1"])
        let plan = namespace.execIsolated([Self.binary, "plan", "--state-dir", directory.path + "/state"] + common,
                                          binding: ["/var/lib/vz": directory.path + "/vz", "/run": directory.path + "/run"],
                                          environment: ["NO_COLOR": "1"])
        let validated = Self.diagnostics(validate.output)
        let planned = Self.diagnostics(plan.error)
        #expect(validated.contains { $0.contains(broken.expected) }, "validate misses '\(broken.expected)':\n\(validate.output)\(validate.error)")
        #expect(planned.contains { $0.contains(broken.expected) }, "plan misses '\(broken.expected)':\n\(plan.error)")
        #expect(planned.subtracting(validated).isEmpty, "only plan says:\n\(planned.subtracting(validated).sorted().joined(separator: "\n"))")
        let errors = validated.contains { $0.contains(": error: ") }
        #expect((validate.status == 1) == errors, "validate exits 1 exactly when it found an error")
        #expect(!errors || plan.status == 1, "a plan over a tree with errors fails too: \(plan.status)")
    }
}
