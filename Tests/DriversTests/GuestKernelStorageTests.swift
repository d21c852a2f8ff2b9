import Foundation
import Testing
import TestSupport

/// LVM, LVM-thin, NFS and CIFS need a kernel this host does not have
/// (device-mapper, the NFS server and clients, the CIFS client), so these run
/// in Debian's own kernel under QEMU through the project's harness
/// (scripts/kernel-vm), with a kernel NFS server and Samba on loopback.
enum GuestStorageRequirements {
    static var unavailableReason: String? {
        if getuid() != 0 { return "needs root" }
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64") {
            return "needs qemu-system-x86_64 (scripts/test installs it)"
        }
        for tool in ["/usr/sbin/lvcreate", "/usr/sbin/rpc.nfsd", "/usr/sbin/smbd", "/usr/sbin/mount.cifs", "/usr/sbin/mount.nfs"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            return "needs \(tool) (scripts/test installs lvm2, nfs-kernel-server, samba, cifs-utils)"
        }
        return nil
    }
}

@Suite("storage kind in a guest kernel (LVM, LVM-thin, NFS, CIFS)",
       .enabled(if: GuestStorageRequirements.unavailableReason == nil, Comment(rawValue: GuestStorageRequirements.unavailableReason ?? "")))
struct GuestKernelStorageTests {
    static let harness = Corpus.packageRoot.appendingPathComponent("scripts/kernel-vm/run").path
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    static let storage = """
    lvmthin: thin
    \tvgname pvt
    \tthinpool data
    \tcontent images,rootdir

    lvm: plainlvm
    \tvgname pvt
    \tcontent images

    nfs: nfsshare
    \tserver 127.0.0.1
    \texport /srv/nfs
    \tpath /mnt/pve/nfsshare
    \tcontent images,iso
    \toptions vers=3

    cifs: smb
    \tserver 127.0.0.1
    \tshare public
    \tpath /mnt/pve/smb
    \tcontent backup

    """

    /// Phase 2: NFS gone from the file, CIFS disabled, two volumes grown.
    static let storage2 = """
    lvmthin: thin
    \tvgname pvt
    \tthinpool data
    \tcontent images,rootdir

    lvm: plainlvm
    \tvgname pvt
    \tcontent images

    cifs: smb
    \tserver 127.0.0.1
    \tshare public
    \tpath /mnt/pve/smb
    \tcontent backup
    \tdisable 1

    """

    static let guestScript = #"""
    set -u
    out=/mnt/out
    P=@BINARY@
    export DM_DISABLE_UDEV=1
    for m in loop dm_mod dm_thin_pool nfsd nfs nfsv3 cifs; do modprobe $m || echo "no module $m"; done
    truncate -s 600M /tmp/pv.img
    dev=$(losetup -f --show /tmp/pv.img)
    # A volume group with a thin pool, everything deactivated: activation is pvectl's job.
    pvcreate -q $dev && vgcreate -q pvt $dev && lvcreate -q -L 200M -T pvt/data && lvcreate -q -L 8M -n other pvt && vgchange -q -an pvt
    # The kernel NFS server on loopback (v3 needs rpcbind and mountd).
    mkdir -p /srv/nfs /run/rpcbind /var/lib/nfs/rpc_pipefs
    rpcbind -w || echo "rpcbind failed"
    mount -t nfsd nfsd /proc/fs/nfsd
    echo "/srv/nfs 127.0.0.1(rw,no_root_squash,no_subtree_check,fsid=1)" > /etc/exports
    exportfs -ra
    rpc.mountd || echo "mountd failed"
    rpc.nfsd 2 || echo "nfsd failed"
    # Samba with a guest share.
    mkdir -p /srv/smb /run/samba /var/lib/samba/private /var/cache/samba /var/log/samba
    chmod 777 /srv/smb
    printf '[global]\n map to guest = Bad User\n guest account = nobody\n server min protocol = SMB2\n disable netbios = yes\n smb ports = 445\n log file = /tmp/smbd.log\n[public]\n path = /srv/smb\n guest ok = yes\n read only = no\n force user = root\n' > /tmp/smb.conf
    smbd -D -s /tmp/smb.conf || echo "smbd failed"
    for i in $(seq 50); do [ -e /run/samba/smbd.pid ] && break; sleep 0.1; done
    common="--root $out/root --node pve1 --state-dir /tmp/state --only storage/thin --only storage/plainlvm --only storage/nfsshare --only storage/smb"
    capture() {
      lvs --reportformat json -o lv_name,lv_attr,lv_size --units b --nosuffix > $out/$1-lvs.json 2>&1
      cat /proc/self/mountinfo > $out/$1-mounts.txt
    }
    "$P" apply --auto-approve $common > $out/apply1.log 2>&1; echo $? > $out/apply1.status
    "$P" plan --detailed-exitcode $common > $out/plan1.log 2>&1; echo $? > $out/plan1.status
    "$P" status --json --only storage --root $out/root --node pve1 --state-dir /tmp/state > $out/status1.json 2>$out/status1.err
    capture phase1
    qemu-img info --output=json /mnt/pve/nfsshare/images/100/vm-100-disk-2.qcow2 > $out/nfs-image.json 2>&1
    e2fsck -n /dev/mapper/pvt-vm--200--disk--0 > $out/fsck1.log 2>&1; echo $? > $out/fsck1.status
    touch /mnt/pve/smb/dump/written-through-cifs && ls /srv/smb/dump > $out/smb-server-side.txt 2>&1
    cp -r $out/phase2/. $out/root/
    "$P" apply --auto-approve $common > $out/apply2.log 2>&1; echo $? > $out/apply2.status
    "$P" plan --detailed-exitcode $common > $out/plan2.log 2>&1; echo $? > $out/plan2.status
    capture phase2
    dumpe2fs -h /dev/mapper/pvt-vm--200--disk--0 > $out/fs2.txt 2>&1
    ls /srv/nfs/images/100 > $out/nfs-after.txt 2>&1
    cp -r $out/phase3/. $out/root/
    "$P" apply --auto-approve $common > $out/apply3.log 2>&1; echo $? > $out/apply3.status
    capture phase3
    echo guest done
    """#

    struct LogicalVolume: Decodable {
        var lv_name: String
        var lv_attr: String
        var lv_size: String
    }

    static func volumes(_ text: String?) -> [String: LogicalVolume] {
        struct Report: Decodable {
            struct Entry: Decodable { var lv: [LogicalVolume] }
            var report: [Entry]
        }
        guard let text, let start = text.firstIndex(of: "{"),
              let report = try? JSONDecoder().decode(Report.self, from: Data(text[start...].utf8)) else { return [:] }
        return Dictionary(report.report.flatMap(\.lv).map { ($0.lv_name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    @Test("activation, allocation, growth, unmounting what pvectl mounted, and a refused shrink")
    func guestStorage() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "build pvectl first (swift build)")
        let out = try TemporaryDirectory(prefix: "pvectl-vm-storage")
        try out.write("root/storage.cfg", Self.storage)
        try out.write("root/nodes/pve1/qemu-server/100.conf",
            "scsi0: thin:vm-100-disk-0,size=64M\nscsi1: plainlvm:vm-100-disk-1,size=16M\nscsi2: nfsshare:100/vm-100-disk-2.qcow2,size=32M\n")
        try out.write("root/nodes/pve1/lxc/200.conf", "rootfs: thin:vm-200-disk-0,size=32M\n")
        try out.write("phase2/storage.cfg", Self.storage2)
        try out.write("phase2/nodes/pve1/qemu-server/100.conf", "scsi0: thin:vm-100-disk-0,size=96M\nscsi1: plainlvm:vm-100-disk-1,size=16M\n")
        try out.write("phase2/nodes/pve1/lxc/200.conf", "rootfs: thin:vm-200-disk-0,size=48M\n")
        try out.write("phase3/nodes/pve1/qemu-server/100.conf", "scsi0: thin:vm-100-disk-0,size=32M\nscsi1: plainlvm:vm-100-disk-1,size=16M\n")
        try out.write("guest.sh", Self.guestScript.replacingOccurrences(of: "@BINARY@", with: Self.binary.shellQuoted))
        let run = NetworkNamespace.capture([Self.harness, "test", out.path, out.path + "/guest.sh"])
        try #require(run.status == 0, "the guest run failed (\(run.status)): \(run.error)\n\(run.output)")
        func read(_ name: String) -> String { out.read(name)?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "missing" }

        // Phase 1: everything activated and allocated, then nothing left to do.
        #expect(read("apply1.status") == "0", "\(read("apply1.log"))")
        #expect(read("plan1.status") == "0", "\(read("plan1.log"))")
        let phase1 = Self.volumes(out.read("phase1-lvs.json"))
        #expect(phase1["data"]?.lv_attr.dropFirst(4).first == "a", "thin pool active: \(phase1)")
        #expect(phase1["other"]?.lv_attr.dropFirst(4).first == "a", "the plain LVM storage's volume group activated")
        #expect(phase1["vm-100-disk-0"]?.lv_size == String(64 << 20) && phase1["vm-100-disk-0"]?.lv_attr.first == "V", "thin volume")
        #expect(phase1["vm-100-disk-1"]?.lv_size == String(16 << 20) && phase1["vm-100-disk-1"]?.lv_attr.first == "-", "plain volume")
        #expect(phase1["vm-200-disk-0"]?.lv_size == String(32 << 20))
        #expect(read("fsck1.status") == "0", "the container's volume carries a clean ext4: \(read("fsck1.log"))")
        let mounts1 = read("phase1-mounts.txt")
        #expect(mounts1.contains("/mnt/pve/nfsshare") && mounts1.contains(" - nfs 127.0.0.1:/srv/nfs "), "\(mounts1)")
        #expect(mounts1.contains("/mnt/pve/smb") && mounts1.contains(" - cifs //127.0.0.1/public "))
        #expect(read("nfs-image.json").contains("\"virtual-size\": \(32 << 20)"), "qcow2 on the NFS share: \(read("nfs-image.json"))")
        #expect(read("smb-server-side.txt").contains("written-through-cifs"), "the CIFS mount reaches the server's share")
        let status = try #require(try JSONSerialization.jsonObject(with: Data(read("status1.json").utf8)) as? [[String: Any]],
                                  "\(read("status1.err"))")
        for name in ["thin", "plainlvm", "nfsshare", "smb"] {
            let row = status.first { $0["name"] as? String == name }
            #expect(row?["active"] as? Bool == true, "\(name): \(String(describing: row))")
            #expect((row?["total"] as? NSNumber)?.uint64Value ?? 0 > 0, "\(name) reports its size")
        }

        // Phase 2: NFS removed and CIFS disabled are unmounted (data untouched); volumes grow.
        #expect(read("apply2.status") == "0", "\(read("apply2.log"))")
        #expect(read("plan2.status") == "0", "\(read("plan2.log"))")
        let mounts2 = read("phase2-mounts.txt")
        #expect(!mounts2.contains("/mnt/pve/nfsshare") && !mounts2.contains("/mnt/pve/smb"), "\(mounts2)")
        #expect(read("nfs-after.txt").contains("vm-100-disk-2.qcow2"), "unmounting deletes nothing")
        let phase2 = Self.volumes(out.read("phase2-lvs.json"))
        #expect(phase2["vm-100-disk-0"]?.lv_size == String(96 << 20))
        #expect(phase2["vm-200-disk-0"]?.lv_size == String(48 << 20))
        #expect(read("fs2.txt").contains("Block count:              49152"), "ext4 grown with its volume")

        // Phase 3: a shrink is refused at its line, nothing changes.
        #expect(read("apply3.status") == "1")
        #expect(read("apply3.log")
                    .contains("/mnt/out/root/nodes/pve1/qemu-server/100.conf:1:8: error: scsi0: size=32M is smaller than the volume's 96M"),
                "\(read("apply3.log"))")
        #expect(Self.volumes(out.read("phase3-lvs.json"))["vm-100-disk-0"]?.lv_size == String(96 << 20))
    }
}
