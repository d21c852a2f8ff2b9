import Foundation
import Testing
import TestSupport
@testable import Drivers

/// The storage kind on this host, through the pvectl binary: directory
/// storages, guest volumes made by qemu-img, btrfs on a loop device, and the
/// types this kernel cannot serve reported as unavailable.
@Suite("storage kind on the host", .enabled(if: getuid() == 0, "needs root (mount, losetup, qemu-img on root-owned paths)"))
struct StorageHostTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    struct Setup {
        let directory: TemporaryDirectory
        var root: String { directory.path + "/root" }

        init(storage: String, guests: [String: String] = [:]) throws {
            directory = try TemporaryDirectory(prefix: "pvectl-storage")
            try directory.write("root/storage.cfg", storage.replacingOccurrences(of: "@DIR@", with: directory.path))
            for (path, text) in guests { try directory.write("root/" + path, text.replacingOccurrences(of: "@DIR@", with: directory.path)) }
        }

        /// Runs pvectl against this root; `only` keeps the host's own `local` storage out of it.
        func pvectl(_ command: String, _ arguments: [String] = [], only: [String]) -> (status: Int32, output: String, error: String) {
            NetworkNamespace.capture([StorageHostTests.binary, command, "--root", root, "--node", "pve1",
                                      "--state-dir", directory.path + "/state"] + only.flatMap { ["--only", "storage/" + $0] } + arguments,
                                     environment: ["NO_COLOR": "1"])
        }

        func exists(_ relative: String) -> Bool { FileManager.default.fileExists(atPath: directory.path + "/" + relative) }
    }

    static func virtualSize(_ path: String) -> UInt64? {
        let info = NetworkNamespace.capture(["qemu-img", "info", "--output=json", path])
        guard info.status == 0, let object = try? JSONSerialization.jsonObject(with: Data(info.output.utf8)) as? [String: Any] else { return nil }
        return (object["virtual-size"] as? NSNumber)?.uint64Value
    }

    static let storage = """
    dir: images
    \tpath @DIR@/images-store
    \tcontent images,rootdir,iso,backup
    \tcontent-dirs iso=isos

    dir: off
    \tpath @DIR@/off
    \tdisable 1

    dir: elsewhere
    \tpath @DIR@/elsewhere
    \tnodes pve2,pve3

    dir: waits
    \tpath @DIR@/waits
    \tis_mountpoint yes

    dir: nobase
    \tpath @DIR@/nobase
    \tcreate-base-path 0

    """

    @Test("directory storages: activation, content directories, nodes/disable, is_mountpoint; then no changes")
    func directoryStorages() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "build pvectl first (swift build)")
        let setup = try Setup(storage: Self.storage)
        let only = ["images", "off", "elsewhere", "waits", "nobase"]
        let plan = setup.pvectl("plan", ["--detailed-exitcode"], only: only)
        #expect(plan.status == 1, "create-base-path 0 on a missing directory blocks: \(plan.output)\(plan.error)")
        #expect(plan.output.contains("storage/nobase (blocked)") && plan.output.contains("does not exist (create-base-path 0)"))
        #expect(plan.output.contains("storage/waits (unavailable)") && plan.output.contains("not active until something is mounted on"))
        #expect(plan.output.contains("+ storage/images (create)"))
        #expect(plan.output.contains("/images-store/isos"), "content-dirs override: \(plan.output)")
        #expect(!plan.output.contains("storage/off") && !plan.output.contains("storage/elsewhere"), "inactive storages have nothing to do")

        let without = only.filter { $0 != "nobase" }
        let apply = setup.pvectl("apply", ["--auto-approve"], only: without)
        #expect(apply.status == 0, "\(apply.output)\(apply.error)")
        for subdirectory in ["images", "private", "isos", "dump"] {
            #expect(setup.exists("images-store/\(subdirectory)"), "\(subdirectory)")
        }
        #expect(!setup.exists("images-store/template"), "iso lives in the content-dirs override")
        #expect(!setup.exists("off") && !setup.exists("elsewhere") && !setup.exists("waits"))
        let again = setup.pvectl("plan", ["--detailed-exitcode"], only: without)
        #expect(again.status == 0, "after apply, no changes: \(again.output)")

        let status = setup.pvectl("status", ["--json"], only: without)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [[String: Any]], "\(status.output)")
        let byName = Dictionary(uniqueKeysWithValues: rows.map { ($0["name"] as! String, $0) })
        #expect(byName["images"]?["active"] as? Bool == true)
        #expect((byName["images"]?["total"] as? NSNumber)?.uint64Value ?? 0 > 0)
        #expect(byName["images"]?["content"] as? [String] == ["backup", "images", "iso", "rootdir"])
        #expect(byName["off"]?["active"] as? Bool == false && byName["off"]?["reason"] as? String == "disabled")
        #expect((byName["elsewhere"]?["reason"] as? String)?.contains("not for this node") == true)
        #expect(byName["waits"]?["active"] as? Bool == false)
        let table = setup.pvectl("status", [], only: without)
        #expect(table.output.contains("Name") && table.output.contains("images") && table.output.contains("active"))
    }

    @Test("guest volumes: allocated with size and format, grown, a shrink refused at its file:line; nothing deleted")
    func guestVolumes() throws {
        let setup = try Setup(storage: "dir: vols\n\tpath @DIR@/vols\n\tcontent images,rootdir\n", guests: [
            "nodes/pve1/qemu-server/100.conf":
                "name: web\nscsi0: vols:100/vm-100-disk-0.qcow2,size=1G\nvirtio1: vols:100/vm-100-disk-1.raw,size=64M\nide2: none,media=cdrom\n",
            "nodes/pve1/lxc/200.conf":
                "hostname: ct\nrootfs: vols:200/vm-200-disk-0.raw,size=32M\nmp0: vols:200/subvol-200-disk-1.subvol,size=0,mp=/data\n",
            // Another node's guest is not this node's business.
            "nodes/pve2/qemu-server/300.conf": "scsi0: vols:300/vm-300-disk-0.qcow2,size=1G\n",
        ])
        let apply = setup.pvectl("apply", ["--auto-approve"], only: ["vols"])
        #expect(apply.status == 0, "\(apply.output)\(apply.error)")
        let images = setup.directory.path + "/vols/images"
        #expect(Self.virtualSize(images + "/100/vm-100-disk-0.qcow2") == 1 << 30)
        #expect(Self.virtualSize(images + "/100/vm-100-disk-1.raw") == 64 << 20)
        #expect(NetworkNamespace.capture(["e2fsck", "-n", images + "/200/vm-200-disk-0.raw"]).status == 0, "a container's raw volume carries ext4")
        #expect(setup.exists("vols/images/200/subvol-200-disk-1.subvol"))
        #expect(!setup.exists("vols/images/300"))
        #expect(setup.pvectl("plan", ["--detailed-exitcode"], only: ["vols"]).status == 0)

        // Grow one, shrink another: the shrink blocks the run and names its line.
        try setup.directory.write("root/nodes/pve1/qemu-server/100.conf",
                                  "name: web\nscsi0: vols:100/vm-100-disk-0.qcow2,size=2G\nvirtio1: vols:100/vm-100-disk-1.raw,size=32M\n")
        let refused = setup.pvectl("apply", ["--auto-approve"], only: ["vols"])
        #expect(refused.status == 1)
        #expect(refused.error.contains(setup.root
                    + "/nodes/pve1/qemu-server/100.conf:3:10: error: virtio1: size=32M is smaller than the volume's 64M"),
                "\(refused.error)")
        #expect(Self.virtualSize(images + "/100/vm-100-disk-0.qcow2") == 1 << 30, "nothing applied while a change is refused")
        #expect(Self.virtualSize(images + "/100/vm-100-disk-1.raw") == 64 << 20)

        try setup.directory.write("root/nodes/pve1/qemu-server/100.conf",
                                  "name: web\nscsi0: vols:100/vm-100-disk-0.qcow2,size=2G\nvirtio1: vols:100/vm-100-disk-1.raw,size=64M\n")
        try setup.directory.write("root/nodes/pve1/lxc/200.conf", "hostname: ct\nrootfs: vols:200/vm-200-disk-0.raw,size=48M\n")
        let grown = setup.pvectl("apply", ["--auto-approve"], only: ["vols"])
        #expect(grown.status == 0, "\(grown.output)\(grown.error)")
        #expect(Self.virtualSize(images + "/100/vm-100-disk-0.qcow2") == 2 << 30)
        let filesystem = NetworkNamespace.capture(["dumpe2fs", "-h", images + "/200/vm-200-disk-0.raw"])
        #expect(filesystem.output.contains("Block count:              49152") || filesystem.output.contains("Block count:              12288"),
                "ext4 grown with its volume: \(filesystem.output.split(separator: "\n").filter { $0.contains("Block") })")
        // mp0 left the config: its volume stays.
        #expect(setup.exists("vols/images/200/subvol-200-disk-1.subvol"))
        #expect(setup.pvectl("plan", ["--detailed-exitcode"], only: ["vols"]).status == 0)
    }

    @Test("volumes that cannot be allocated are refused with the reason")
    func refusedVolumes() throws {
        let setup = try Setup(storage: "dir: isos\n\tpath @DIR@/isos\n\tcontent iso\n\ndir: vols\n\tpath @DIR@/vols\n", guests: [
            "nodes/pve1/qemu-server/101.conf": "scsi0: isos:101/vm-101-disk-0.qcow2,size=1G\nscsi1: vols:102/vm-102-disk-0.raw,size=1G\nscsi2: vols:101/vm-101-disk-3.raw\nscsi3: nosuch:101/vm-101-disk-4.raw,size=1G\nscsi4: vols:8\n",
        ])
        let plan = setup.pvectl("plan", [], only: ["isos", "vols"])
        #expect(plan.status == 1)
        #expect(plan.output.contains("does not allow content 'images'"))
        #expect(plan.output.contains("belongs to guest 102, not 101"))
        #expect(plan.output.contains("no size= says how large"))
        #expect(plan.error.contains("storage 'nosuch' does not exist in storage.cfg"))
        #expect(plan.error.contains("asks for a new 8 GiB disk"))
    }

    @Test("types this kernel cannot serve are planned as unavailable, never silently skipped")
    func unavailableTypes() throws {
        let setup = try Setup(storage: """
        nfs: share
        \tserver 192.0.2.5
        \texport /srv/nfs
        \tpath @DIR@/mnt/share

        lvmthin: thin
        \tvgname pve
        \tthinpool data

        rbd: ceph
        \tpool rbd

        pbs: backup
        \tserver 192.0.2.9
        \tdatastore main

        """)
        let plan = setup.pvectl("plan", ["--detailed-exitcode"], only: ["share", "thin", "ceph", "backup"])
        #expect(plan.status == 0, "unavailable is not an error and not a change: \(plan.output)\(plan.error)")
        for name in ["share", "thin", "ceph", "backup"] {
            #expect(plan.output.contains("storage/\(name) (unavailable)"), "\(name): \(plan.output)")
        }
        #expect(plan.output.contains("4 unavailable on this node"))
    }

    @Test("btrfs on a loop device: subvolume layout for images; a btrfs storage elsewhere is refused",
          .enabled(if: FileManager.default.fileExists(atPath: "/dev/loop-control")
                       && FileManager.default.isExecutableFile(atPath: "/usr/sbin/mkfs.btrfs"),
                   "needs loop devices and btrfs-progs"))
    func btrfsOnLoop() throws {
        let setup = try Setup(storage: "btrfs: fast\n\tpath @DIR@/btrfs\n\tcontent images,rootdir\n\nbtrfs: wrong\n\tpath @DIR@/plain\n", guests: [
            "nodes/pve1/qemu-server/100.conf": "scsi0: fast:100/vm-100-disk-0.raw,size=16M\n",
        ])
        let image = setup.directory.path + "/btrfs.img"
        let mountPoint = setup.directory.path + "/btrfs"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: setup.directory.path + "/plain", withIntermediateDirectories: true)
        #expect(NetworkNamespace.capture(["truncate", "-s", "160M", image]).status == 0)
        let loop = NetworkNamespace.capture(["losetup", "--find", "--show", image])
        try #require(loop.status == 0, "losetup: \(loop.error)")
        let device = loop.output.trimmingCharacters(in: .whitespacesAndNewlines)
        defer {
            _ = NetworkNamespace.capture(["umount", mountPoint])
            _ = NetworkNamespace.capture(["losetup", "-d", device])
        }
        try #require(NetworkNamespace.capture(["mkfs.btrfs", "-q", device]).status == 0)
        try #require(NetworkNamespace.capture(["mount", device, mountPoint]).status == 0)

        let plan = setup.pvectl("plan", [], only: ["wrong"])
        #expect(plan.output.contains("storage/wrong (blocked)") && plan.output.contains("not on a btrfs file system"), "\(plan.output)")
        let apply = setup.pvectl("apply", ["--auto-approve"], only: ["fast"])
        #expect(apply.status == 0, "\(apply.output)\(apply.error)")
        let subvolume = mountPoint + "/images/100/vm-100-disk-0"
        #expect(NetworkNamespace.capture(["btrfs", "subvolume", "show", subvolume]).status == 0, "each image is a subvolume")
        #expect(Self.virtualSize(subvolume + "/disk.raw") == 16 << 20)
        #expect(setup.pvectl("plan", ["--detailed-exitcode"], only: ["fast"]).status == 0)
    }
}

/// A running VM's disk grows through QMP, as qemu-server does it: the real
/// qemu-system-x86_64 (paused, TCG) with the pid file and QMP socket where
/// qemu-server keeps them.
@Suite("storage kind: growing a running VM's disk",
       .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64"),
                "needs root and qemu-system-x86_64"))
struct RunningDiskResizeTests {
    @Test("size= grows the disk of a running VM with block_resize; QEMU sees the new size")
    func growRunningDisk() throws {
        let vmid = Int.random(in: 900_000...999_999)
        let setup = try StorageHostTests.Setup(storage: "dir: live\n\tpath @DIR@/live\n\tcontent images\n", guests: [
            "nodes/pve1/qemu-server/\(vmid).conf": "scsi0: live:\(vmid)/vm-\(vmid)-disk-0.qcow2,size=64M\n",
        ])
        #expect(setup.pvectl("apply", ["--auto-approve"], only: ["live"]).status == 0)
        let image = setup.directory.path + "/live/images/\(vmid)/vm-\(vmid)-disk-0.qcow2"
        let run = "/run/qemu-server"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        let pidFile = "\(run)/\(vmid).pid", socket = "\(run)/\(vmid).qmp"
        // A direct child with its output on /dev/null (not -daemonize: a daemon
        // would keep inherited pipe ends of concurrent captures open).
        let pid = try spawn("/usr/bin/qemu-system-x86_64", [
            "-machine", "q35", "-accel", "tcg", "-nodefaults", "-display", "none", "-S",
            "-pidfile", pidFile, "-qmp", "unix:\(socket),server=on,wait=off",
            "-device", "virtio-scsi-pci,id=scsihw0",
            "-drive", "file=\(image),if=none,id=drive-scsi0,format=qcow2",
            "-device", "scsi-hd,bus=scsihw0.0,drive=drive-scsi0,id=scsi0",
        ])
        defer {
            kill(pid, SIGKILL)
            _ = reap(pid)
            unlink(pidFile)
            unlink(socket)
        }
        var ready = false
        for _ in 0..<200 where !ready {
            ready = FileManager.default.fileExists(atPath: socket) && FileManager.default.fileExists(atPath: pidFile)
            if !ready { usleep(25_000) }
        }
        try #require(ready, "QEMU did not create its QMP socket within 5 s")
        try setup.directory.write("root/nodes/pve1/qemu-server/\(vmid).conf", "scsi0: live:\(vmid)/vm-\(vmid)-disk-0.qcow2,size=128M\n")
        let plan = setup.pvectl("plan", [], only: ["live"])
        #expect(plan.output.contains("size: 64M → 128M"), "\(plan.output)\(plan.error)")
        let apply = setup.pvectl("apply", ["--auto-approve"], only: ["live"])
        #expect(apply.status == 0, "\(apply.output)\(apply.error)")
        #expect(apply.output.contains("QMP block_resize drive-scsi0 134217728"), "\(apply.output)")

        let client = try QMPClient(path: socket)
        let devices = try #require(try client.execute("query-block") as? [[String: Any]])
        let drive = devices.first { $0["device"] as? String == "drive-scsi0" }
        let size = ((drive?["inserted"] as? [String: Any])?["image"] as? [String: Any])?["virtual-size"] as? NSNumber
        #expect(size?.uint64Value == 128 << 20, "QEMU's view: \(String(describing: drive))")
        #expect(setup.pvectl("plan", ["--detailed-exitcode"], only: ["live"]).status == 0)
        _ = try? client.execute("quit")
    }
}

/// The mount table is read whole: a host with many mounts (each `ip netns add`
/// is one) once lost everything past the first page, and with it the mounts
/// storages sit on.
@Suite("mount table", .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct MountTableTests {
    @Test("every line of a long /proc/self/mountinfo is seen")
    func longMountTable() throws {
        var namespaces: [NetworkNamespace] = []
        for _ in 0..<60 { namespaces.append(try NetworkNamespace(prefix: "pvmt")) }
        let expected = NetworkNamespace.capture(["cat", "/proc/self/mountinfo"]).output.split(separator: "\n").count
        let seen = HostStorageDriver.mounts()
        #expect(expected > 60)
        // cat is another process: the counts may differ by mounts made meanwhile, never by a page's worth.
        #expect(abs(seen.count - expected) < 5, "read \(seen.count) mounts, cat shows \(expected)")
        #expect(seen.contains { $0.target.hasSuffix(namespaces.last!.name) })
        namespaces.removeAll()
    }
}
