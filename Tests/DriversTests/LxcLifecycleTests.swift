@testable import Drivers
import Foundation
import Reconciler
import Testing
import TestSupport

/// Containers under the pvectl binary with the real LXC: each test node is a network namespace of its own (a bridge,
/// and a peer namespace on it that pings the containers), with private /var/lib/lxc and /var/lib/vz and the cgroup
/// hierarchies mounted again inside it (LXC needs them; `ip netns exec` hides them behind a fresh /sys).
final class LxcTestNode: @unchecked Sendable {
    // @unchecked: immutable after init; deinit stops what the test started.
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path
    let namespace: NetworkNamespace
    let peer: NetworkNamespace
    let directory: TemporaryDirectory
    /// Container ids, unique per test: the cgroup hierarchies are the host's.
    let vmids: [Int]

    init(containers: Int = 1) throws {
        namespace = try NetworkNamespace(prefix: "pvl")
        peer = try NetworkNamespace(prefix: "pvlp")
        directory = try TemporaryDirectory(prefix: "pvectl-lxc")
        let first = Int.random(in: 90_000...99_000) * 10
        vmids = (0..<containers).map { first + $0 }
        let node = namespace.name
        try namespace.run(["ip", "-n", node, "link", "add", "vmbr0", "type", "bridge"])
        try namespace.run(["ip", "-n", node, "link", "set", "vmbr0", "up"])
        try namespace.run(["ip", "-n", node, "link", "add", "peer0", "type", "veth", "peer", "name", "eth0", "netns", peer.name])
        try namespace.run(["ip", "-n", node, "link", "set", "peer0", "master", "vmbr0", "up"])
        try peer.run(["ip", "-n", peer.name, "address", "add", "192.0.2.2/24", "dev", "eth0"])
        try peer.run(["ip", "-n", peer.name, "link", "set", "eth0", "up"])
        for path in ["lxc", "local", "run", "vz/template/cache", "root/nodes/localhost/lxc", "state"] {
            try FileManager.default.createDirectory(atPath: directory.path + "/" + path, withIntermediateDirectories: true)
        }
        try directory.write("root/storage.cfg", "dir: ctstore\n\tpath \(directory.path)/vz\n\tcontent rootdir,vztmpl,images\n")
        try Self.buildBusyboxTemplate(at: directory.path + "/vz/template/cache/busybox.tar.gz", scratch: directory.path + "/scratch")
    }

    deinit {
        for vmid in vmids {
            _ = run(["lxc-stop", "-P", "/var/lib/lxc", "-n", String(vmid), "-k"])
            for cgroup in Self.cgroupDirectories(vmid) { rmdir(cgroup) }
        }
    }

    static func cgroupDirectories(_ vmid: Int) -> [String] {
        let hierarchies = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).map { "/sys/fs/cgroup/\($0)" }
        return hierarchies.flatMap { ["\($0)/lxc/\(vmid)/ns", "\($0)/lxc/\(vmid)", "\($0)/lxc.monitor/\(vmid)"] }
    }

    /// A busybox root file system as an OS template archive: the binary, its applets, an init and an inittab.
    static func buildBusyboxTemplate(at archive: String, scratch: String) throws {
        let fm = FileManager.default
        for path in ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
            try fm.createDirectory(atPath: scratch + "/" + path, withIntermediateDirectories: true)
        }
        try fm.copyItem(atPath: "/bin/busybox", toPath: scratch + "/bin/busybox")
        let applets = NetworkNamespace.capture(["/bin/busybox", "--list"]).output.split(separator: "\n").map(String.init)
        for applet in applets where applet != "busybox" {
            try fm.createSymbolicLink(atPath: scratch + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try fm.createSymbolicLink(atPath: scratch + "/sbin/init", withDestinationPath: "../bin/busybox")
        try Data("::sysinit:/bin/true\n::respawn:/bin/sleep 1000000\n".utf8).write(to: URL(fileURLWithPath: scratch + "/etc/inittab"))
        let tar = NetworkNamespace.capture(["tar", "-C", scratch, "-czf", archive, "."])
        guard tar.status == 0 else { throw TemplateError(description: "tar: \(tar.error)") }
        try fm.removeItem(atPath: scratch)
    }

    struct TemplateError: Error, CustomStringConvertible {
        var description: String
    }

    /// A Debian 12 minbase root file system as an OS template, made once per machine with debootstrap from the configured
    /// mirror and kept in /var/cache/pvectl-tests (never in the repository).
    static func debianTemplate() throws -> String {
        let cache = "/var/cache/pvectl-tests"
        let archive = cache + "/debian-12-minbase.tar.gz"
        if FileManager.default.fileExists(atPath: archive) { return archive }
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let scratch = cache + "/debootstrap-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let bootstrap = NetworkNamespace.capture(["debootstrap", "--variant=minbase", "--include=ifupdown,iproute2,sysvinit-core,iputils-ping",
                                                  "bookworm", scratch])
        guard bootstrap.status == 0 else { throw TemplateError(description: "debootstrap: \(bootstrap.output.suffix(2000))\(bootstrap.error)") }
        let tar = NetworkNamespace.capture(["tar", "-C", scratch, "-czf", archive + ".part", "."])
        guard tar.status == 0, rename(archive + ".part", archive) == 0 else { throw TemplateError(description: "tar: \(tar.error)") }
        return archive
    }

    /// Mounts the host's cgroup hierarchies again, as they are, inside a fresh /sys (shell commands).
    static let cgroupRemount: String = {
        let mounts = ((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").split(separator: "\n")
        var script = ""
        var hybrid = false
        for line in mounts {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " "), right = halves[1].split(separator: " ")
            guard left.count > 4, right.count > 2 else { continue }
            let target = String(left[4]), type = String(right[0])
            guard target.hasPrefix("/sys/fs/cgroup") else { continue }
            switch type {
            case "tmpfs" where target == "/sys/fs/cgroup":
                hybrid = true
            case "cgroup":
                let options = right[2].split(separator: ",").filter { $0 != "rw" && $0 != "ro" }
                let list = options.contains { $0.hasPrefix("name=") } && options.count == 1 ? "none," + options[0] : options.joined(separator: ",")
                script += "mkdir -p \(target) && mount -t cgroup -o \(list) cgroup \(target) && "
            case "cgroup2":
                script += "mkdir -p \(target) && mount -t cgroup2 cgroup2 \(target) && "
            default:
                break
            }
        }
        return (hybrid ? "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup && " : "") + script
    }()

    /// A command in the node's namespace with its private directories and cgroups.
    func command(_ arguments: [String]) -> [String] {
        // /run/lxc holds the monitor's FIFO (per LXC path): each node has its own, as its own lxc-monitord.
        let binds = ["/var/lib/lxc": directory.path + "/lxc", "/var/lib/vz": directory.path + "/local", "/run/lxc": directory.path + "/run"]
        var script = ""
        // A fresh machine has no /run/lxc until LXC first runs (nor /var/lib/vz without Proxmox): made as LXC would.
        for target in binds.keys.sorted() {
            script += "mkdir -p \(target.shellQuoted) && mount --bind \(binds[target]!.shellQuoted) \(target.shellQuoted) && "
        }
        return ["ip", "netns", "exec", namespace.name, "unshare", "-m", "sh", "-c", script + Self.cgroupRemount + "exec \"$0\" \"$@\""]
            + arguments
    }

    @discardableResult
    func run(_ arguments: [String]) -> (status: Int32, output: String, error: String) {
        NetworkNamespace.capture(command(arguments))
    }

    var options: [String] {
        ["--root", directory.path + "/root", "--node", "localhost", "--state-dir", directory.path + "/state", "--interfaces", "/nonexistent"]
    }

    func pvectl(_ subcommand: String, _ arguments: [String] = []) -> (status: Int32, output: String, error: String) {
        run([Self.binary, subcommand] + options + arguments)
    }

    func apply(_ only: [String]) -> (status: Int32, output: String, error: String) {
        pvectl("apply", ["--auto-approve", "--only", "storage"] + only.flatMap { ["--only", $0] })
    }

    func configPath(_ vmid: Int) -> String { directory.path + "/root/nodes/localhost/lxc/\(vmid).conf" }
    func config(_ vmid: Int) -> String { (try? String(contentsOfFile: configPath(vmid), encoding: .utf8)) ?? "" }
    func write(_ vmid: Int, _ text: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: configPath(vmid))) }

    /// The init pid LXC reports for a running container, nil otherwise.
    func initPID(_ vmid: Int) -> Int32? {
        let info = run(["lxc-info", "-P", "/var/lib/lxc", "-n", String(vmid), "-s", "-p"]).output
        guard info.contains("RUNNING") else { return nil }
        return info.split(separator: "\n").first { $0.hasPrefix("PID:") }.flatMap { Int32($0.dropFirst(4).trimmingCharacters(in: .whitespaces)) }
    }

    func ping(_ address: String) -> Bool {
        (try? peer.exec(["ping", "-c", "1", "-W", "1", address]))?.status == 0
    }

    func links() -> [String] {
        ((try? namespace.exec(["ip", "-o", "link", "show"]))?.output ?? "").split(separator: "\n").compactMap { line in
            line.split(separator: ":").dropFirst().first.map { $0.trimmingCharacters(in: .whitespaces).split(separator: "@")[0] }.map(String.init)
        }
    }

    static func container(_ vmid: Int, address: String, extra: String = "") -> String {
        """
        #pvectl ostemplate=ctstore:vztmpl/busybox.tar.gz
        hostname: ct\(vmid)
        memory: 128
        swap: 0
        net0: name=eth0,bridge=vmbr0,host-managed=1,ip=\(address)/24
        onboot: 1
        ostype: unmanaged
        startup: down=2
        \(extra)
        """
    }
}

@Suite("LXC kind: containers started, changed live and stopped by the pvectl binary with the real LXC", .serialized,
       .enabled(if: NetworkNamespace.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/bin/lxc-start")
                    && FileManager.default.isExecutableFile(atPath: "/bin/busybox"),
                "needs root, network namespaces, LXC (package lxc) and busybox (busybox-static)"))
struct LxcLifecycleTests {
    @Test("privileged: populated from a template, reachable, memory and NICs changed live, restarted by the loop, stopped clean")
    func privileged() async throws {
        let node = try LxcTestNode()
        let vmid = node.vmids[0]
        try node.write(vmid, LxcTestNode.container(vmid, address: "192.0.2.21",
                                                   extra: "rootfs: ctstore:\(vmid)/subvol-\(vmid)-disk-0.subvol,size=0\n"))
        let planned = node.pvectl("plan", ["--json", "--only", "storage", "--only", "lxc/\(vmid)"])
        #expect(planned.output.contains("populate the empty rootfs from ctstore:vztmpl/busybox.tar.gz"), "\(planned.output)")
        // A start that fails in the pre-start hook (a mount point whose host directory is missing) says why; once the
        // directory exists, the next start works (nothing of the failed one is in the way).
        let missing = node.directory.path + "/not-yet"
        try node.write(vmid, node.config(vmid) + "mp1: \(missing),mp=/mnt/later\n")
        let failed = node.apply(["lxc/\(vmid)"])
        #expect(failed.status != 0)
        #expect((failed.output + failed.error).contains("pre-start hook: mp1: \(missing) does not exist"), "\(failed.output)\(failed.error)")
        #expect(node.initPID(vmid) == nil)
        try FileManager.default.createDirectory(atPath: missing, withIntermediateDirectories: true)
        let replanned = node.pvectl("plan", ["--json", "--only", "lxc/\(vmid)"])
        #expect(!replanned.output.contains("populate"), "populated once, by the failed start: \(replanned.output)")

        let applied = node.apply(["lxc/\(vmid)"])
        #expect(applied.status == 0, "\(applied.output)\(applied.error)")
        let first = try #require(node.initPID(vmid), "running: \(applied.output)\(applied.error)")
        #expect(waitFor(seconds: 10) { node.ping("192.0.2.21") }, "reachable from the peer namespace")
        #expect(node.config(vmid).contains("hwaddr=BC:24:11:"), "the generated MAC is written back")
        let rootfs = node.directory.path + "/vz/images/\(vmid)/subvol-\(vmid)-disk-0.subvol"
        #expect(FileManager.default.fileExists(atPath: rootfs + "/bin/busybox"))
        let plan = node.pvectl("plan", ["--only", "lxc/\(vmid)"])
        #expect(plan.output.contains("No changes"), "\(plan.output)\(plan.error)")

        // Memory lowered live: written to the limit cgroup and enforced on a process inside.
        // The hog is the OOM killer's first choice (oom_score_adj 1000): under 32 MiB it, not the container's init, is killed.
        let hog = ["lxc-attach", "-P", "/var/lib/lxc", "-n", String(vmid), "--",
                   "sh", "-c", "echo 1000 > /proc/self/oom_score_adj; a=$(head -c 48000000 /dev/zero | tr '\\0' x); echo ${#a}"]
        #expect(node.run(hog).output.contains("48000000"), "48 MB fit in 128 MiB")
        try node.write(vmid, node.config(vmid).replacingOccurrences(of: "memory: 128", with: "memory: 32"))
        let lowered = node.apply(["lxc/\(vmid)"])
        #expect(lowered.output.contains("set memory.limit_in_bytes to 33554432 in the limit cgroup"), "\(lowered.output)\(lowered.error)")
        let limit = try String(contentsOfFile: "/sys/fs/cgroup/memory/lxc/\(vmid)/memory.limit_in_bytes", encoding: .utf8)
        #expect(limit.trimmingCharacters(in: .whitespacesAndNewlines) == "33554432")
        #expect(!node.run(hog).output.contains("48000000"), "48 MB do not fit in 32 MiB")
        #expect(node.initPID(vmid) == first, "a live change, no restart")

        // A NIC hot-plugged with a rate limit (an htb class on its host end), then removed; net0 limited live.
        try node.write(vmid, node.config(vmid) + "net1: name=eth1,bridge=vmbr0,ip=192.0.2.22/24,rate=3\n")
        let added = node.apply(["lxc/\(vmid)"])
        #expect(added.status == 0, "\(added.output)\(added.error)")
        #expect(waitFor(seconds: 10) { node.ping("192.0.2.22") }, "the hot-plugged NIC answers: \(added.output)")
        let classes = { (device: String) in (try? node.namespace.exec(["tc", "class", "show", "dev", device]))?.output ?? "" }
        #expect(classes("veth\(vmid)i1").contains("rate 25165Kbit"), "3 MB/s: \(classes("veth\(vmid)i1"))")
        try node.write(vmid, node.config(vmid).replacingOccurrences(of: "ip=192.0.2.21/24,", with: "ip=192.0.2.21/24,rate=1,"))
        let limited = node.apply(["lxc/\(vmid)"])
        #expect(limited.output.contains("limit veth\(vmid)i0 to 1.0 MB/s"), "\(limited.output)\(limited.error)")
        #expect(classes("veth\(vmid)i0").contains("rate 8388Kbit"), "1 MB/s: \(classes("veth\(vmid)i0"))")
        try node.write(vmid, node.config(vmid).split(separator: "\n").filter { !$0.hasPrefix("net1:") }.joined(separator: "\n") + "\n")
        let removed = node.apply(["lxc/\(vmid)"])
        #expect(removed.output.contains("remove veth\(vmid)i1"), "\(removed.output)\(removed.error)")
        #expect(!node.links().contains("veth\(vmid)i1"))
        #expect(node.initPID(vmid) == first)

        // A mount point hot-plugged: a host directory, read-only, in the running container.
        let shared = node.directory.path + "/shared"
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        try Data("hello from the host\n".utf8).write(to: URL(fileURLWithPath: shared + "/marker"))
        try node.write(vmid, node.config(vmid) + "mp0: \(shared),mp=/mnt/shared,ro=1\n")
        let mounted = node.apply(["lxc/\(vmid)"])
        #expect(mounted.output.contains("mount \(shared) on /mnt/shared in the running container (read-only)"), "\(mounted.output)\(mounted.error)")
        let inside = ["lxc-attach", "-P", "/var/lib/lxc", "-n", String(vmid), "--"]
        #expect(node.run(inside + ["cat", "/mnt/shared/marker"]).output == "hello from the host\n")
        #expect(node.run(inside + ["touch", "/mnt/shared/written"]).status != 0, "read-only")
        #expect(node.initPID(vmid) == first, "hot-plugged, no restart")

        // The loop starts it again when its init is killed (LXC's monitor reports the stop).
        let loop = try DetachedProcess.spawn(["/usr/bin/env"] + node.command([LxcTestNode.binary, "run"] + node.options
                                                                             + ["--only", "lxc/\(vmid)", "--resync", "3600", "--verbose"]),
                                             log: node.directory.path + "/run.log")
        defer {
            kill(loop, SIGKILL)
            _ = reap(loop)
        }
        let log = { node.directory.read("run.log") ?? "" }
        #expect(waitFor(seconds: 30) { log().contains("following container events") && log().contains("nothing to do") }, "\(log())")
        kill(first, SIGKILL)
        #expect(waitFor(seconds: 30) { node.initPID(vmid).map { $0 != first } == true }, "restarted by the loop: \(log())")
        #expect(log().contains("container \(vmid): STOPPED"), "by LXC's event, not the resync: \(log())")
        #expect(waitFor(seconds: 10) { node.ping("192.0.2.21") })
        kill(loop, SIGTERM)
        #expect(waitFor(seconds: 30) { log().contains("stopped") }, "\(log())")

        // template: 1 stops it; nothing is left behind.
        try node.write(vmid, node.config(vmid) + "template: 1\n")
        let stopped = node.apply(["lxc/\(vmid)"])
        #expect(stopped.output.contains("lxc/\(vmid): stopped"), "\(stopped.output)\(stopped.error)")
        #expect(node.initPID(vmid) == nil)
        #expect(!node.links().contains { $0.hasPrefix("veth\(vmid)") })
        #expect(LxcTestNode.cgroupDirectories(vmid).allSatisfy { !FileManager.default.fileExists(atPath: $0) })
        #expect(!((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").contains(rootfs))
    }

    static var subordinateIDs: Bool {
        ["/etc/subuid", "/etc/subgid"].allSatisfy { file in
            ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n").contains("root:100000:65536")
        }
    }

    @Test("unprivileged on a raw image: loop-mounted, populated inside its user namespace (files owned by 100000), no loop device left",
          .enabled(if: subordinateIDs, "needs root:100000:65536 in /etc/subuid and /etc/subgid (scripts/test adds it)"))
    func unprivileged() async throws {
        let node = try LxcTestNode()
        let vmid = node.vmids[0]
        try node.write(vmid, LxcTestNode.container(vmid, address: "192.0.2.31", extra: """
        rootfs: ctstore:\(vmid)/vm-\(vmid)-disk-0.raw,size=64M
        unprivileged: 1

        """))
        let applied = node.apply(["lxc/\(vmid)"])
        #expect(applied.status == 0, "\(applied.output)\(applied.error)")
        #expect(node.initPID(vmid) != nil, "\(applied.output)\(applied.error)")
        #expect(waitFor(seconds: 10) { node.ping("192.0.2.31") }, "reachable from the peer namespace")
        let image = node.directory.path + "/vz/images/\(vmid)/vm-\(vmid)-disk-0.raw"
        let scratch = node.directory.path + "/inspect"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)

        #expect(node.apply(["lxc/\(vmid)"]).output.contains("No changes"))

        // A second raw image hot-plugged as a mount point: allocated with ext4, loop-mounted on the host, moved in.
        try node.write(vmid, node.config(vmid) + "mp0: ctstore:\(vmid)/vm-\(vmid)-disk-1.raw,mp=/data,size=16M\n")
        let mounted = node.apply(["lxc/\(vmid)"])
        #expect(mounted.status == 0, "\(mounted.output)\(mounted.error)")
        let inside = ["lxc-attach", "-P", "/var/lib/lxc", "-n", String(vmid), "--"]
        #expect(node.run(inside + ["sh", "-c", "grep ' /data ' /proc/mounts"]).output.contains("ext4"), "\(mounted.output)")
        let data = node.directory.path + "/vz/images/\(vmid)/vm-\(vmid)-disk-1.raw"

        try node.write(vmid, node.config(vmid) + "template: 1\n")
        let stopped = node.apply(["lxc/\(vmid)"])
        #expect(stopped.output.contains("lxc/\(vmid): stopped"), "\(stopped.output)\(stopped.error)")
        #expect(NetworkNamespace.capture(["losetup", "-j", image]).output.isEmpty, "the loop device went with the container")
        #expect(NetworkNamespace.capture(["losetup", "-j", data]).output.isEmpty, "the hot-plugged one too")

        // The image holds the template's files, owned by the container's root (100000 on the host).
        #expect(NetworkNamespace.capture(["mount", "-o", "loop,ro", image, scratch]).status == 0)
        defer { _ = NetworkNamespace.capture(["umount", scratch]) }
        var info = stat()
        #expect(stat(scratch + "/bin/busybox", &info) == 0 && info.st_uid == 100_000 && info.st_gid == 100_000)
    }

    @Test("Debian (debootstrap, cached on this machine): boots with the network, hostname, hosts and DNS its config says",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/debootstrap"), "needs debootstrap"))
    func debian() async throws {
        let node = try LxcTestNode()
        let vmid = node.vmids[0]
        try FileManager.default.copyItem(atPath: try LxcTestNode.debianTemplate(),
                                         toPath: node.directory.path + "/vz/template/cache/debian-12-minbase.tar.gz")
        try node.write(vmid, """
        #pvectl ostemplate=ctstore:vztmpl/debian-12-minbase.tar.gz
        hostname: deb\(vmid)
        memory: 256
        nameserver: 192.0.2.53
        net0: name=eth0,bridge=vmbr0,gw=192.0.2.1,ip=192.0.2.41/24,ip6=2001:db8::41/64
        onboot: 1
        ostype: debian
        rootfs: ctstore:\(vmid)/subvol-\(vmid)-disk-0.subvol,size=0
        searchdomain: example.test
        startup: down=10

        """)
        let applied = node.apply(["lxc/\(vmid)"])
        #expect(applied.status == 0, "\(applied.output)\(applied.error)")
        #expect(node.initPID(vmid) != nil, "\(applied.output)\(applied.error)")
        // ifupdown inside the container brings eth0 up from the file the guest setup wrote.
        #expect(waitFor(seconds: 30) { node.ping("192.0.2.41") }, "eth0 up inside the container")
        let attach = ["lxc-attach", "-P", "/var/lib/lxc", "-n", String(vmid), "--"]
        #expect(node.run(attach + ["hostname"]).output.trimmingCharacters(in: .whitespacesAndNewlines) == "deb\(vmid)")
        let rootfs = node.directory.path + "/vz/images/\(vmid)/subvol-\(vmid)-disk-0.subvol"
        let hosts = (try? String(contentsOfFile: rootfs + "/etc/hosts", encoding: .utf8)) ?? ""
        #expect(hosts.contains("192.0.2.41 deb\(vmid).example.test deb\(vmid)"), "\(hosts)")
        let resolv = (try? String(contentsOfFile: rootfs + "/etc/resolv.conf", encoding: .utf8)) ?? ""
        #expect(resolv.contains("nameserver 192.0.2.53") && resolv.contains("search example.test"), "\(resolv)")
        let addresses = node.run(attach + ["ip", "-o", "address", "show", "dev", "eth0"]).output
        #expect(addresses.contains("192.0.2.41/24") && addresses.contains("2001:db8::41/64"), "\(addresses)")
        #expect(node.run(attach + ["ip", "route", "show", "default"]).output.contains("via 192.0.2.1"))

        try node.write(vmid, node.config(vmid) + "template: 1\n")
        let stopped = node.apply(["lxc/\(vmid)"])
        #expect(stopped.output.contains("lxc/\(vmid): stopped (clean shutdown"), "sysvinit powers off on SIGPWR: \(stopped.output)")
    }

    @Test("LXC's monitor lines become events for the container they name")
    func monitorLines() {
        #expect(LxcEventListener.parse("'200' changed state to [STOPPED]") == .init(vmid: 200, state: "STOPPED"))
        #expect(LxcEventListener.parse("'201' exited with status [0]") == .init(vmid: 201, state: "EXITED"))
        #expect(LxcEventListener.parse("'web' changed state to [RUNNING]") == nil)
        #expect(LxcEventListener.parse("garbage") == nil)
    }
}

@Suite("LXC driver: the config LXC runs")
struct LxcRuntimeConfigTests {
    @Test("pvectl is the pre-start hook and every NIC's up script, its path quoted for LXC's shell (spaces, quotes)")
    func hooksQuoted() {
        let driver = LxcToolDriver(lxcPath: "/var/lib/lxc", hookExecutable: "/tmp/ci clone/it's/pvectl")
        let spec = ContainerStartSpec(vmid: 200, config: "lxc.net.0.type = veth\nlxc.net.0.script.up = /usr/share/lxc/lxcnetaddbr\n",
                                      seccompRules: nil, mounts: [], nics: [], guestConfig: "", template: nil, templateVolume: nil,
                                      unprivileged: false)
        let hook = "'/tmp/ci clone/it'\\''s/pvectl' lxc-hook"
        #expect(driver.runtimeConfig(spec) == """
        lxc.net.0.type = veth
        lxc.net.0.script.up = \(hook)
        lxc.hook.pre-start = \(hook)

        """)
    }
}
