import Foundation
@testable import Reconciler
import Resources
import Testing

/// The generated LXC config, checked against golden files per ostype (privileged and unprivileged, cgroup v1 and v2)
/// and one for the features, devices and raw lines. Regenerate with PVECTL_UPDATE_GOLDEN=1 and review the diff.
@Suite("LXC config generation")
struct LxcConfigTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/lxc")
    static let ostypes = ["alpine", "archlinux", "centos", "debian", "devuan", "fedora", "gentoo", "nixos", "openeuler", "opensuse",
                          "ubuntu", "unmanaged"]

    /// A host like a Proxmox VE node with Debian's lxc package: every ostype but nixos and unmanaged ships its configs.
    static func host(_ layout: LxcHostFacts.CgroupLayout) -> LxcHostFacts {
        var shipped: Set<String> = ["common.conf", "userns.conf", "common.seccomp"]
        for ostype in ostypes where ostype != "nixos" && ostype != "unmanaged" {
            shipped.formUnion(["\(ostype).common.conf", "\(ostype).userns.conf"])
        }
        return LxcHostFacts(lxcMajorVersion: 6, shippedConfigs: shipped, cgroupLayout: layout, bridgeMTUs: ["vmbr0": 1500, "vmbr1": 9000],
                            devices: ["/dev/ttyUSB0": .init(isBlock: false, major: 188, minor: 0),
                                      "/dev/sdb": .init(isBlock: true, major: 8, minor: 16)],
                            cpus: [0, 1, 2, 3], commonSeccomp: "2\ndenylist\nreject_force_umount\n")
    }

    static func config(_ text: String) -> GuestConfig.Section { GuestConfig.parse(text, file: "/pve/lxc/200.conf", kind: .lxc).0.main }

    static func compare(_ name: String, _ generated: String) throws {
        let file = golden.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["PVECTL_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(at: golden, withIntermediateDirectories: true)
            try Data(generated.utf8).write(to: file)
        }
        let expected = try String(contentsOf: file, encoding: .utf8)
        #expect(generated == expected, "\(name) differs from its golden file")
    }

    @Test("per ostype: privileged and unprivileged, cgroup v1 and v2", arguments: ostypes)
    func perOstype(_ ostype: String) throws {
        var output = ""
        for unprivileged in [false, true] {
            for layout in [LxcHostFacts.CgroupLayout.v1, .v2] {
                let config = Self.config("""
                    arch: amd64
                    cores: 2
                    cpulimit: 1.5
                    cpuunits: 2048
                    hostname: ct-\(ostype)
                    memory: 1024
                    net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02,ip=192.0.2.20/24,gw=192.0.2.1,type=veth
                    ostype: \(ostype)
                    rootfs: local:200/subvol-200-disk-0.subvol,size=8G
                    swap: 512
                    unprivileged: \(unprivileged ? 1 : 0)

                    """)
                let generated = try LxcConfig.generate(vmid: 200, config: config, host: Self.host(layout))
                output += "## \(unprivileged ? "unprivileged" : "privileged"), cgroup \(layout.rawValue)\n" + generated.config
                output += generated.seccompRules.map { "## rules.seccomp\n" + $0 } ?? ""
            }
        }
        try Self.compare("\(ostype).config", output)
    }

    @Test("features, devices, console, entrypoint, host-managed NICs and raw lxc lines")
    func features() throws {
        var output = ""
        let cases: [(String, String)] = [
            ("keyctl, mknod, fuse, mount, nesting (unprivileged)", """
                arch: amd64
                features: keyctl=1,mknod=1,fuse=1,mount=nfs;cifs,nesting=1
                hostname: features
                ostype: debian
                rootfs: local:200/subvol-200-disk-0.subvol,size=8G
                unprivileged: 1

                """),
            ("devices, no console, entrypoint, env, host-managed NIC, NIC order, 32 GiB", """
                arch: amd64
                console: 0
                dev0: /dev/ttyUSB0
                dev1: /dev/sdb,deny-write=1
                entrypoint: /usr/bin/app
                env: A=1\u{0}B=2
                memory: 32768
                net10: name=eth10,bridge=vmbr1,hwaddr=BC:24:11:00:00:0A
                net2: name=eth2,bridge=vmbr1,mtu=1400,host-managed=1,ip=198.51.100.2/24,gw=198.51.100.1,ip6=2001:db8::2/64
                ostype: alpine
                rootfs: local:200/subvol-200-disk-0.subvol,size=8G
                tty: 4

                """),
            ("custom idmap, explicit profiles, a cpuset given by hand", """
                arch: arm64
                cores: 1
                features: nesting=1,keyctl=1
                ostype: ubuntu
                rootfs: local:200/subvol-200-disk-0.subvol,size=8G
                unprivileged: 1
                lxc.idmap: u 0 200000 65536
                lxc.idmap: g 0 200000 65536
                lxc.apparmor.profile: unconfined
                lxc.seccomp.profile: /etc/pve/custom.seccomp
                lxc.cgroup2.cpuset.cpus: 3

                """),
        ]
        for (title, text) in cases {
            for layout in [LxcHostFacts.CgroupLayout.v1, .v2] {
                let generated = try LxcConfig.generate(vmid: 200, config: Self.config(text), host: Self.host(layout))
                output += "## \(title), cgroup \(layout.rawValue)\n" + generated.config
                output += generated.seccompRules.map { "## rules.seccomp\n" + $0 } ?? ""
                output += generated.warnings.map { "## warning: \($0)\n" }.joined()
            }
        }
        try Self.compare("features.config", output)
    }

    @Test("refusals: no ostype, no rootfs, an MTU above the bridge's, an unknown device, SLAAC on a host-managed NIC, limits past 2^63")
    func refusals() {
        let base = "arch: amd64\nostype: debian\nrootfs: local:200/subvol-200-disk-0.subvol,size=8G\n"
        let host = Self.host(.v2)
        func error(_ text: String) -> String? {
            do {
                _ = try LxcConfig.generate(vmid: 200, config: Self.config(text), host: host)
                return nil
            } catch { return "\(error)" }
        }
        #expect(error("arch: amd64\nrootfs: local:200/subvol-200-disk-0.subvol,size=8G\n") == "missing 'ostype'")
        #expect(error("arch: amd64\nostype: debian\n") == "missing 'rootfs' configuration")
        #expect(error(base + "net0: name=eth0,bridge=vmbr0,mtu=9000\n") == "net0: MTU size '9000' is bigger than bridge MTU '1500'")
        #expect(error(base + "net0: name=eth0,bridge=vmbr7\n") == "net0: bridge 'vmbr7' does not exist")
        #expect(error(base + "dev0: /dev/nothing\n") == "dev0: /dev/nothing is not a device on this node")
        #expect(error(base + "net0: name=eth0,bridge=vmbr0,host-managed=1,ip6=auto\n")
                == "net0: SLAAC is not supported for host-managed network configuration")
        // Found by the fuzzer: a number past what a cgroup limit holds was a crash converting to Int.
        #expect(error(base + "memory: 99999999999999\n") == "memory 99999999999999 MiB is more than a cgroup limit can hold")
        #expect(error(base + "memory: 8796093022207\nswap: 8796093022207\n") == "memory plus swap is more than a cgroup limit can hold")
        #expect(error(base + "cpulimit: 1e300\n") == "cpulimit 1e300 is more than a cgroup limit can hold")
        #expect(error(base + "swap: nan\n") == "swap: 'nan' is not a non-negative number")
        #expect(error(base + "memory: 8796093022207\n") == nil)
        #expect(LxcConfig.cpuList([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8")
    }
}
