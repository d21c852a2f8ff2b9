import Foundation
import Testing
import TestSupport

/// `pvectl lxc-config` through the binary on this machine: LXC's own version and shipped configs, this host's cgroup
/// layout, and the MTU of a bridge in a namespace the test creates.
@Suite("pvectl lxc-config on this host",
       .enabled(if: NetworkNamespace.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/bin/lxc-start"),
                "needs root, network namespaces and LXC (Debian package lxc; scripts/test installs it)"))
struct LxcConfigCommandTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    @Test("the generated config names this host's facts; an unknown container and a missing bridge are refused")
    func hostFacts() throws {
        let namespace = try NetworkNamespace()
        try namespace.run(["ip", "-n", namespace.name, "link", "add", "vmbr7", "type", "bridge"])
        try namespace.run(["ip", "-n", namespace.name, "link", "set", "vmbr7", "mtu", "1400"])
        let tree = try TemporaryDirectory(prefix: "pvectl-lxc-config")
        try tree.write("nodes/pve1/lxc/200.conf", """
            arch: amd64
            hostname: web
            memory: 256
            net0: name=eth0,bridge=vmbr7,hwaddr=BC:24:11:00:02:00,ip=192.0.2.30/24,type=veth
            ostype: debian
            rootfs: local:200/subvol-200-disk-0.subvol,size=1G
            unprivileged: 1

            """)
        try tree.write("nodes/pve1/lxc/201.conf",
                       "arch: amd64\nostype: debian\nrootfs: local:201/subvol-201-disk-0.subvol\nnet0: name=eth0,bridge=nope\n")
        let shown = try namespace.exec([Self.binary, "lxc-config", "200", "--root", tree.path, "--node", "pve1"])
        try #require(shown.status == 0, "\(shown.error)")
        #expect(shown.output.hasPrefix("arch: amd64\nhostname: web\n"), "the container's config first, as pct config shows it")
        #expect(shown.output.contains("lxc.include = /usr/share/lxc/config/debian.common.conf\n"), "Debian's lxc ships it")
        #expect(shown.output.contains("lxc.include = /usr/share/lxc/config/debian.userns.conf\n"))
        #expect(shown.output.contains("lxc.net.0.mtu = 1400\n"), "the bridge's MTU, read in the container's namespace")
        #expect(shown.output.contains("lxc.idmap = u 0 100000 65536\n"))
        // This machine's memory controller is cgroup v1 (a hybrid layout): lxc.cgroup.* is what LXC applies here.
        let v2 = (try? String(contentsOfFile: "/sys/fs/cgroup/cgroup.controllers", encoding: .utf8))?.contains("memory") == true
        #expect(shown.output.contains(v2 ? "lxc.cgroup2.memory.max = 268435456\n" : "lxc.cgroup.memory.limit_in_bytes = 268435456\n"))
        #expect(shown.output.contains("# /var/lib/lxc/200/rules.seccomp\n2\n"), "the rules extend LXC's common.seccomp")
        let forced = try namespace.exec([Self.binary, "lxc-config", "200", "--root", tree.path, "--node", "pve1", "--cgroup", "v2"])
        #expect(forced.output.contains("lxc.cgroup2.memory.high = 266338304\n"), "\(forced.error)")

        // No arch in the config: read from the root file system's /bin/sh (here an arm64 ELF header) on a dir storage.
        let storage = try TemporaryDirectory(prefix: "pvectl-lxc-storage")
        try tree.write("storage.cfg", "dir: scratch\n\tpath \(storage.path)\n\tcontent rootdir,images\n")
        try tree.write("nodes/pve1/lxc/202.conf", "ostype: debian\nrootfs: scratch:202/subvol-202-disk-0.subvol,size=1G\n")
        let shell = storage.url.appendingPathComponent("images/202/subvol-202-disk-0.subvol/bin/sh")
        try FileManager.default.createDirectory(at: shell.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0xb7, 0]).write(to: shell)
        let detected = try namespace.exec([Self.binary, "lxc-config", "202", "--root", tree.path, "--node", "pve1"])
        #expect(detected.output.contains("lxc.arch = arm64\n"), "\(detected.output)\(detected.error)")

        let unknown = try namespace.exec([Self.binary, "lxc-config", "999", "--root", tree.path, "--node", "pve1"])
        #expect(unknown.status != 0 && unknown.error.contains("no container 999 on node pve1"))
        let missingBridge = try namespace.exec([Self.binary, "lxc-config", "201", "--root", tree.path, "--node", "pve1"])
        #expect(missingBridge.status != 0 && missingBridge.error.contains("net0: bridge 'nope' does not exist"), "\(missingBridge.error)")
    }
}
