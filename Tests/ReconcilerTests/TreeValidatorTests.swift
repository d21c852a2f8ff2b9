import Foundation
import Testing
@testable import Reconciler
@testable import Resources

/// A desired-state tree in a fresh temporary directory, removed afterwards.
final class TemporaryTree {
    let root: URL

    init(_ files: [String: String]) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("pvectl-tree-\(UUID().uuidString)")
        for (path, text) in files {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: url)
        }
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    func validate(node: String = "pve1") -> [Diagnostic] {
        let state = DesiredState.load(root: root.path, interfaces: path("interfaces"), node: node)
        return TreeValidator.validate(state)
    }
}

let storageCfg = """
dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup

lvmthin: local-lvm
\tthinpool data
\tvgname pve
\tcontent rootdir,images

"""

let interfacesFile = """
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

@Suite("pvectl validate over a whole tree")
struct TreeValidatorTests {
    func messages(_ diagnostics: [Diagnostic]) -> [String] { diagnostics.map(\.description) }

    @Test("a clean tree has no problems")
    func cleanTree() throws {
        let tree = try TemporaryTree([
            "storage.cfg": storageCfg,
            "interfaces": interfacesFile,
            "nodes/pve1/qemu-server/100.conf":
                "cores: 2\nmemory: 2048\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nscsi0: local-lvm:vm-100-disk-0,size=32G\n",
            "nodes/pve1/lxc/200.conf": "hostname: ct1\nostype: debian\nrootfs: local-lvm:vm-200-disk-0,size=8G\nnet0: name=eth0,bridge=vmbr0,ip=dhcp\n",
        ])
        #expect(tree.validate().isEmpty)
    }

    @Test("every problem is reported with file, line and column, not just the first")
    func reportsEverything() throws {
        let tree = try TemporaryTree([
            "storage.cfg": storageCfg,
            "interfaces": interfacesFile,
            "nodes/pve1/qemu-server/100.conf": """
            cores: two
            scsihw: virtio-scsi-fast
            frobnicate: 1
            net0: virtio=BC:24:11:00:00:01,bridge=vmbr9
            scsi0: nosuch:vm-100-disk-0,size=32G
            scsi1: local:vm-100-disk-1,size=8G

            """,
            "nodes/pve2/lxc/100.conf": "hostname: ct1\nostype: debian\nrootfs: local-lvm:subvol-100-disk-0,size=8G\n",
            "firewall/100.fw": "[RULES]\n\nIN ACCEPT -dport 80\n",
        ])
        let found = messages(tree.validate())
        let conf = tree.path("nodes/pve1/qemu-server/100.conf")
        #expect(found.contains("\(conf):1:8: error: cores: type check ('integer') failed - got 'two'"))
        #expect(found.contains {
            $0.hasPrefix("\(conf):2:9: error: scsihw: value 'virtio-scsi-fast' is not one of: lsi, lsi53c810, virtio-scsi-pci")
        })
        #expect(found.contains("\(conf):3:1: error: unknown qemu option 'frobnicate'"))
        #expect(found.contains { $0.hasPrefix("\(conf):4:7: warning: net0: bridge 'vmbr9' is not defined in the interfaces file") })
        #expect(found.contains { $0.hasPrefix("\(conf):5:8: error: scsi0: storage 'nosuch' does not exist in storage.cfg") })
        #expect(found.contains { $0.hasPrefix("\(conf):6:8: error: scsi1: storage 'local' does not allow content 'images'") })
        #expect(found.contains {
            $0.contains("lxc/100.conf:1:1: error: duplicate VMID 100") || $0.contains("qemu-server/100.conf:1:1: error: duplicate VMID 100")
        })
        #expect(found.contains("\(tree.path("firewall/100.fw")):3:1: error: -dport requires -p (a protocol such as tcp or udp)"))
        #expect(found.count >= 8)
    }

    @Test("cross-file problems carry codes: a bridge or storage that does not exist, a volume its storage cannot hold, a VMID twice")
    func crossFileCodes() throws {
        let tree = try TemporaryTree([
            "storage.cfg": storageCfg,
            "interfaces": interfacesFile,
            "nodes/pve1/qemu-server/100.conf": """
            cores: 2
            net0: virtio=BC:24:11:00:00:01,bridge=vmbr9
            scsi0: nosuch:vm-100-disk-0,size=32G
            scsi1: local:vm-100-disk-1,size=8G

            """,
            "nodes/pve2/lxc/100.conf": "hostname: ct1\nostype: debian\nrootfs: local-lvm:subvol-100-disk-0,size=8G\n",
        ])
        let found = tree.validate()
        let conf = tree.path("nodes/pve1/qemu-server/100.conf")
        func codes(line: Int) -> Set<DiagnosticCode> { Set(found.filter { $0.location.file == conf && $0.location.line == line }.map(\.code)) }
        #expect(codes(line: 2) == [.reference])
        #expect(codes(line: 3) == [.reference])
        #expect(codes(line: 4) == [.volume])
        #expect(found.filter { $0.location.line == 1 }.map(\.code) == [.duplicate])
    }

    @Test("a file that cannot be parsed freezes its resource instead of reading as absent")
    func unparseableFreezes() throws {
        let tree = try TemporaryTree([
            "nodes/pve1/qemu-server/100.conf": "cores: 2\nthis line is not a config line\n",
            "storage.cfg": "dir: local\n\tpath /var/lib/vz\n  oops\n",
        ])
        let state = DesiredState.load(root: tree.root.path, interfaces: nil, node: "pve1")
        #expect(state.frozen.contains(ResourceID(kind: "qemu", name: "100")))
        #expect(state.guests.map(\.vmid) == [100])
        #expect(state.diagnostics.contains { $0.location.line == 2 && $0.code == .syntax })
    }

    @Test("storage problems: unknown type, missing required property, property of another type")
    func storageProblems() throws {
        let tree = try TemporaryTree([
            "storage.cfg": "dir: backup\n\tcontent backup\n\tvgname pve\n\nfancyfs: x\n\tpath /x\n\nnfs: nas\n\tserver 192.0.2.5\n\texport /srv\n\tpath /mnt/pve/nas\n\tcontent images,bogus\n",
        ])
        let found = messages(tree.validate())
        let file = tree.path("storage.cfg")
        #expect(found.contains("\(file):1:1: error: storage 'backup' (dir) is missing required property 'path'"))
        #expect(found.contains("\(file):3:2: error: unexpected property 'vgname' for storage type 'dir'"))
        #expect(found.contains { $0.hasPrefix("\(file):5:1: error: unknown storage type 'fancyfs'") })
        #expect(found.contains { $0.hasPrefix("\(file):12:10: error: content: value 'bogus' is not one of") })
    }

    @Test("interfaces problems: unknown option, bad value, bridge port used twice")
    func interfacesProblems() throws {
        let tree = try TemporaryTree([
            "interfaces": "auto vmbr0\niface vmbr0 inet static\n\taddress 192.0.2.300/24\n\tbridge-ports eno1\n\tbridge-stp maybe\n\tbridge-colour blue\n\nauto vmbr1\niface vmbr1 inet manual\n\tbridge-ports eno1\n",
        ])
        let found = messages(tree.validate())
        let file = tree.path("interfaces")
        #expect(found.contains("\(file):3:10: error: address: '192.0.2.300/24' is not an address or address/prefix"))
        #expect(found.contains { $0.hasPrefix("\(file):5:13: error: bridge-stp: value 'maybe' is not one of") })
        #expect(found.contains("\(file):6:2: error: unknown option 'bridge-colour' on interface 'vmbr0'"))
        #expect(found.contains("\(file):10:15: error: bridge-ports: 'eno1' is already used by 'vmbr0'"))
    }

    @Test("a staged interfaces.new is what gets validated")
    func stagedInterfaces() throws {
        let tree = try TemporaryTree(["interfaces": interfacesFile, "interfaces.new": "iface vmbr0 inet static\n\tmtu 12\n"])
        let found = messages(tree.validate())
        #expect(found.contains("\(tree.path("interfaces.new")):2:6: error: mtu: value '12' must be at least 68"))
    }

    @Test("the homelab example is valid and already canonical")
    func homelabExample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/homelab")
        let state = DesiredState.load(root: root.path, interfaces: root.appendingPathComponent("network/interfaces").path, node: "pve1")
        #expect(TreeValidator.validate(state).isEmpty)
        #expect(state.guests.count == 3)
        #expect(state.storage?.sections.map(\.type) == ["dir", "lvmthin"])
        for path in state.digests.keys.sorted() {
            guard let format = ConfigFormat.detect(path: path) else { continue }
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(format.canonicalize(text, file: path).canonical == text, "\(path) is not what Proxmox would write")
        }
    }
}
