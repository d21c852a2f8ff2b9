import Drivers
import Foundation
import Testing
import TestSupport

/// A VM under pvectl, inside its own network namespace (its taps on a real
/// bridge) and with its own /run/qemu-server (a private bind mount, so other
/// tests' VMs are not this node's): the real QEMU under TCG, observed and
/// changed over QMP.
final class QemuTestNode: @unchecked Sendable {
    // @unchecked: immutable after init; deinit kills what the test started.
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path
    let namespace: NetworkNamespace
    let directory: TemporaryDirectory
    let vmid: Int

    /// The desired-state root: a directory here, or a pmxcfs mount.
    let root: String

    init(storage: Bool = true, root: String? = nil) throws {
        namespace = try NetworkNamespace(prefix: "pvq")
        directory = try TemporaryDirectory(prefix: "pvectl-qemu")
        vmid = Int.random(in: 900_000...999_999)
        self.root = root ?? directory.path + "/root"
        try namespace.run(["ip", "-n", namespace.name, "link", "add", "vmbr0", "type", "bridge"])
        try namespace.run(["ip", "-n", namespace.name, "link", "set", "vmbr0", "up"])
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory.path + "/local", withIntermediateDirectories: true)
        if storage { try directory.write("root/storage.cfg", "dir: vmstore\n\tpath \(directory.path)/vz\n\tcontent images,iso\n") }
    }

    deinit {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: runDirectory)) ?? [] where name.hasSuffix(".pid") {
            if let text = try? String(contentsOfFile: runDirectory + "/" + name, encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 {
                kill(pid, SIGKILL)
            }
        }
    }

    /// This node's /run: VM pid files and QMP sockets in qemu-server/, and
    /// qmeventd.sock, where its VMs send their events.
    var runRoot: String { directory.path + "/run" }
    var runDirectory: String { runRoot + "/qemu-server" }
    var configPath: String { "\(root)/nodes/localhost/qemu-server/\(vmid).conf" }
    var config: String { (try? String(contentsOfFile: configPath, encoding: .utf8)) ?? "" }
    func write(_ text: String) throws {
        try FileManager.default.createDirectory(atPath: (configPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: configPath))
    }
    var qmpSocket: String { "\(runDirectory)/\(vmid).qmp" }

    var pid: Int32? { pid(of: vmid) }

    /// The pid in a VM's pid file (the process may be gone).
    func pid(of vmid: Int) -> Int32? {
        (try? String(contentsOfFile: "\(runDirectory)/\(vmid).pid", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// pvectl inside the namespace, with this node's run directory on /run/qemu-server
    /// and its own `local` storage on /var/lib/vz.
    func pvectl(_ command: String, _ arguments: [String] = [], only: [String]? = nil) -> (status: Int32, output: String, error: String) {
        let selectors = (only ?? ["qemu/\(vmid)"]).flatMap { ["--only", $0] }
        return namespace.execIsolated([Self.binary, command, "--root", root, "--node", "localhost", "--state-dir", directory.path + "/state",
                                       "--qemu-accel", "tcg"] + selectors + arguments,
                                      binding: ["/run": runRoot, "/var/lib/vz": directory.path + "/local"])
    }

    /// `pvectl run` for this VM in the background, isolated like `pvectl`; its log in run.log.
    func startLoop(only: String) throws -> pid_t {
        try DetachedProcess.spawn(["/usr/bin/env"] + namespace.isolated(
            [Self.binary, "run", "--root", root, "--node", "localhost", "--state-dir", directory.path + "/state",
             "--qemu-accel", "tcg", "--only", only, "--resync", "3600"],
            binding: ["/run": runRoot, "/var/lib/vz": directory.path + "/local"]), log: directory.path + "/run.log")
    }

    /// One QMP command against the VM, off the cooperative pool.
    func qmp(_ command: String, _ arguments: [String: any Sendable]? = nil) async throws -> String {
        let socket = qmpSocket
        return try await offPool {
            let client = try QMPClient(path: socket, timeout: 10)
            let result = try client.execute(command, arguments: arguments)
            return String(decoding: try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys, .fragmentsAllowed]), as: UTF8.self)
        }
    }

    func devices() async throws -> Set<String> {
        let text = try await qmp("qom-list", ["path": "/machine/peripheral"])
        let list = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] ?? []
        return Set(list.compactMap { ($0["type"] as? String)?.hasPrefix("child<") == true ? $0["name"] as? String : nil })
    }

    func master(_ device: String) throws -> String? {
        try namespace.link(device)?["master"] as? String
    }
}

@Suite("QEMU kind: lifecycle, hot-plug and pending changes with the real QEMU", .serialized,
       .enabled(if: NetworkNamespace.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64"),
                "needs root, network namespaces and qemu-system-x86_64"))
struct QemuLifecycleTests {
    @Test("start from the config, write back generated values, hot-plug, pending, --restart, kill -9, template")
    func lifecycle() async throws {
        let node = try QemuTestNode()
        let vmid = node.vmid
        try node.write("""
        name: probe
        memory: 256
        balloon: 128
        onboot: 1
        startup: down=1
        vmgenid: 1
        net0: virtio,bridge=vmbr0
        virtio0: vmstore:\(vmid)/vm-\(vmid)-disk-0.qcow2,size=32M
        ide2: none,media=cdrom
        scsihw: virtio-scsi-single

        """)
        let plan = node.pvectl("plan", only: ["storage", "qemu/\(vmid)"])
        #expect(plan.status == 0, "\(plan.error)")
        #expect(plan.output.contains("+ qemu/\(vmid) (create)"), "\(plan.output)")
        #expect(plan.output.contains("TCG"), "the node-level acceleration is stated: \(plan.output)")
        let apply = node.pvectl("apply", ["--auto-approve"], only: ["storage", "qemu/\(vmid)"])
        try #require(apply.status == 0, "\(apply.output)\n\(apply.error)")
        // Generated once: MAC, SMBIOS UUID and vmgenid are in the file now.
        let written = node.config
        #expect(written.contains("net0: virtio=BC:24:11:"), "\(written)")
        #expect(written.contains("smbios1: uuid="), "\(written)")
        #expect(!written.contains("vmgenid: 1\n"), "\(written)")
        let noChange = node.pvectl("plan", ["--detailed-exitcode"])
        #expect(noChange.status == 0, "generated values are not drift: \(noChange.output)")
        let firstPID = try #require(node.pid)
        #expect(try await node.qmp("query-status").contains("\"running\""))
        let devices = try await node.devices()
        #expect(devices.isSuperset(of: ["net0", "virtio0", "balloon0"]), "\(devices)")
        #expect(try node.master("tap\(vmid)i0") == "vmbr0")

        // Live: a NIC, a disk, the balloon, a link; pending: the machine type.
        try FileManager.default.createDirectory(atPath: node.directory.path + "/vz/images/\(vmid)", withIntermediateDirectories: true)
        try node.directory.write("vz/template/iso/install.iso", String(repeating: "iso9660 ", count: 4096))
        try node.write(node.config.replacingOccurrences(of: "balloon: 128", with: "balloon: 192")
            .replacingOccurrences(of: "ide2: none,media=cdrom", with: "ide2: vmstore:iso/install.iso,media=cdrom")
            .replacingOccurrences(of: "disk-0.qcow2,size=32M", with: "disk-0.qcow2,iops=200,mbps=10,size=32M")
            + "net1: e1000,bridge=vmbr0,link_down=1\nvirtio1: vmstore:\(vmid)/vm-\(vmid)-disk-1.qcow2,size=16M\nmachine: pc-i440fx-7.1\n"
            + "scsi0: vmstore:\(vmid)/vm-\(vmid)-disk-2.qcow2,iothread=1,size=16M\n")
        let edit = node.pvectl("plan", ["--detailed-exitcode"], only: ["storage", "qemu/\(vmid)"])
        #expect(edit.status == 2)
        #expect(edit.output.contains("machine:") && edit.output.contains("[restart]"), "\(edit.output)")
        #expect(edit.output.contains("net1:") && edit.output.contains("[live]"), "\(edit.output)")
        // As if an earlier apply was interrupted after net1's backend: this one finishes the job.
        _ = try await node.qmp("human-monitor-command", ["command-line": "netdev_add type=tap,id=net1,ifname=tap\(vmid)i1,script=no,downscript=no"])
        let hotplug = node.pvectl("apply", ["--auto-approve"], only: ["storage", "qemu/\(vmid)"])
        try #require(hotplug.status == 0, "\(hotplug.output)\n\(hotplug.error)")
        #expect(node.pid == firstPID, "a live change does not restart the VM")
        let after = try await node.devices()
        #expect(after.isSuperset(of: ["net1", "virtio1", "scsi0", "virtioscsi0"]), "\(after)")
        #expect(try node.master("tap\(vmid)i1") == "vmbr0")
        let blocks = try await node.qmp("query-block")
        #expect(blocks.contains("install.iso"), "the CD-ROM's new medium is inserted")
        #expect(blocks.contains("\"bps\":10485760") && blocks.contains("\"iops\":200"), "virtio0's limits are set live: \(blocks)")
        let pending = node.pvectl("plan", ["--detailed-exitcode"])
        #expect(pending.status == 0, "only pending changes: exit 0 (\(pending.output))")
        #expect(pending.output.contains("pending"), "\(pending.output)")
        #expect(pending.output.contains("machine:"), "\(pending.output)")

        // --restart applies the pending change with a new QEMU.
        let restart = node.pvectl("apply", ["--auto-approve", "--restart"])
        try #require(restart.status == 0, "\(restart.output)\n\(restart.error)")
        let secondPID = try #require(node.pid)
        #expect(secondPID != firstPID)
        #expect(node.pvectl("plan", ["--detailed-exitcode"]).status == 0)
        #expect(try await node.qmp("query-status").contains("\"running\""))

        // Devices removed behind pvectl's back are drift; a tap off its bridge too.
        try node.namespace.run(["ip", "-n", node.namespace.name, "link", "set", "tap\(vmid)i0", "nomaster"])
        let drift = node.pvectl("plan", ["--detailed-exitcode"])
        #expect(drift.status == 2 && drift.output.contains("on no bridge"), "\(drift.output)")
        #expect(node.pvectl("apply", ["--auto-approve"]).status == 0)
        #expect(try node.master("tap\(vmid)i0") == "vmbr0")

        // kill -9: the next reconcile notices and starts it again.
        kill(secondPID, SIGKILL)
        #expect(waitFor(seconds: 10) { kill(secondPID, 0) != 0 })
        let crashed = node.pvectl("plan", ["--detailed-exitcode"])
        #expect(crashed.status == 2 && crashed.output.contains("is gone"), "\(crashed.output)")
        let again = node.pvectl("apply", ["--auto-approve"])
        try #require(again.status == 0, "\(again.output)\n\(again.error)")
        let thirdPID = try #require(node.pid)
        #expect(thirdPID != secondPID)

        // template: 1 → not running (SeaBIOS without an OS ignores ACPI: hard stop after down=1).
        try node.write(node.config + "template: 1\n")
        let stop = node.pvectl("apply", ["--auto-approve"])
        #expect(stop.status == 0, "\(stop.output)\n\(stop.error)")
        #expect(stop.output.contains("hard stop"), "\(stop.output)")
        #expect(waitFor(seconds: 10) { kill(thirdPID, 0) != 0 })
        #expect(node.pvectl("plan", ["--detailed-exitcode"]).status == 0)
    }

    @Test("a firewalled NIC: the VM's tap goes behind its firewall bridge in the same apply; a stop removes the firewall bridge")
    func firewalledNIC() async throws {
        let node = try QemuTestNode(storage: false)
        let vmid = node.vmid
        try node.directory.write("root/firewall/cluster.fw", "[OPTIONS]\nenable: 1\n")
        try node.directory.write("root/firewall/\(vmid).fw", "[OPTIONS]\nenable: 1\n\n[RULES]\nIN ACCEPT -p tcp -dport 22\n")
        try node.write("memory: 128\nonboot: 1\nstartup: down=1\nnet0: virtio,bridge=vmbr0,firewall=1\n")
        let only = ["qemu/\(vmid)", "firewall"]
        let apply = node.pvectl("apply", ["--auto-approve"], only: only)
        try #require(apply.status == 0, "\(apply.output)\n\(apply.error)")
        #expect(try node.master("tap\(vmid)i0") == "fwbr\(vmid)i0")
        #expect(try node.master("fwpr\(vmid)p0") == "vmbr0")
        #expect(node.pvectl("plan", ["--detailed-exitcode"], only: only).status == 0, "the firewall bridge is not drift for the QEMU kind")
        try node.write(node.config + "template: 1\n")
        #expect(node.pvectl("apply", ["--auto-approve"], only: only).status == 0)
        #expect(try node.namespace.link("fwbr\(vmid)i0") == nil, "pve-bridgedown's clean-up")
        #expect(node.pvectl("plan", ["--detailed-exitcode"], only: only).status == 0)
    }

    @Test("the config lives on a pmxcfs mount: generated values are written back through it",
          .enabled(if: PMXCFSProcess.unavailableReason == nil, Comment(rawValue: PMXCFSProcess.unavailableReason ?? "")))
    func writeBackThroughClusterFS() async throws {
        let cfs = try PMXCFSProcess(node: "localhost")
        try cfs.start()
        defer { cfs.stop() }
        let node = try QemuTestNode(storage: false, root: cfs.mountPoint)
        try node.write("memory: 128\nonboot: 1\nstartup: down=1\nnet0: virtio,bridge=vmbr0\n")
        let apply = node.pvectl("apply", ["--auto-approve"])
        try #require(apply.status == 0, "\(apply.output)\n\(apply.error)")
        let written = node.config
        #expect(written.contains("smbios1: uuid=") && written.contains("net0: virtio=BC:24:11:"), "\(written)")
        #expect(node.pvectl("plan", ["--detailed-exitcode"]).status == 0)
        try node.write(node.config + "template: 1\n")
        #expect(node.pvectl("apply", ["--auto-approve"]).status == 0)
    }

    @Test("pushed from git: apply starts the VM and writes back its MAC and uuid; the same commit pushed again writes nothing",
          .enabled(if: PMXCFSProcess.unavailableReason == nil && Command.locate("git") != nil,
                   Comment(rawValue: PMXCFSProcess.unavailableReason ?? "git is not installed")))
    func pushKeepsWhatApplyWrote() async throws {
        let cfs = try PMXCFSProcess(node: "localhost")
        try cfs.start()
        defer { cfs.stop() }
        let node = try QemuTestNode(storage: false, root: cfs.mountPoint)
        let repository = try TestRepository()
        let config = "memory: 128\nonboot: 1\nstartup: down=1\nnet0: virtio,bridge=vmbr0\n"
        try repository.commit("a small VM", ["nodes/localhost/qemu-server/\(node.vmid).conf": config])
        let push = node.pvectl("push", [repository.path, "--auto-approve"])
        try #require(push.status == 0, "\(push.output)\n\(push.error)")
        #expect(push.output.contains("+ qemu/\(node.vmid)"), "the node plan shows the VM to start: \(push.output)")
        #expect(node.config == config)
        let apply = node.pvectl("apply", ["--auto-approve"])
        try #require(apply.status == 0, "\(apply.output)\n\(apply.error)")
        let written = node.config
        #expect(written.contains("smbios1: uuid=") && written.contains("net0: virtio=BC:24:11:"), "\(written)")

        // The same commit again: the system's values are kept, so nothing to write and nothing to plan.
        let again = node.pvectl("push", [repository.path, "--auto-approve"])
        #expect(again.status == 0 && again.output.contains("Nothing to push"), "\(again.output)\n\(again.error)")
        #expect(node.config == written)
        #expect(node.pvectl("plan", ["--detailed-exitcode"]).status == 0)
        #expect(node.pvectl("push", [repository.path, "--check"]).status == 0, "no perpetual diff")
        // A change in the repository is merged around them: the MAC and uuid stay, the memory changes.
        try repository.commit("more memory", ["nodes/localhost/qemu-server/\(node.vmid).conf": config.replacingOccurrences(of: "128", with: "192")])
        let change = node.pvectl("push", [repository.path, "--auto-approve"])
        #expect(change.status == 0 && change.output.contains("kept from \(cfs.mountPoint): net0 macaddr, smbios1"), "\(change.output)")
        let generated = written.split(separator: "\n").filter { $0.hasPrefix("net0:") || $0.hasPrefix("smbios1:") || $0.hasPrefix("vmgenid:") }
        #expect(node.config.contains("memory: 192\n") && generated.allSatisfy { node.config.contains($0 + "\n") }, "\(node.config)")
        #expect(node.pvectl("push", [repository.path, "--check"]).status == 0)
    }

    @Test("onboot and startup order on a full run; a removed config stops its VM; a broken config freezes it")
    func ordering() async throws {
        let node = try QemuTestNode(storage: false)
        let first = node.vmid, second = node.vmid + 1, idle = node.vmid + 2
        let base = "memory: 128\nstartup: order=%d,up=1,down=1\n"
        try node.directory.write("root/nodes/localhost/qemu-server/\(first).conf", String(format: base, 2) + "onboot: 1\n")
        // q35 needs the machine layouts qemu-server ships; without it they are written next to the VM's files.
        try node.directory.write("root/nodes/localhost/qemu-server/\(second).conf", String(format: base, 1) + "onboot: 1\nmachine: q35\n")
        try node.directory.write("root/nodes/localhost/qemu-server/\(idle).conf", "memory: 128\n")
        let apply = node.pvectl("apply", ["--auto-approve"], only: ["qemu"])
        try #require(apply.status == 0, "\(apply.output)\n\(apply.error)")
        let lines = apply.output.split(separator: "\n").filter { $0.contains("started") }
        #expect(lines.count == 2)
        #expect(lines.first?.contains("qemu/\(second)") == true, "order=1 starts first: \(lines)")
        #expect(!FileManager.default.fileExists(atPath: "\(node.runDirectory)/\(idle).pid"), "no onboot: left stopped")
        #expect(node.pvectl("plan", ["--detailed-exitcode"], only: ["qemu"]).status == 0)

        // A stale pid file whose pid is another VM's QEMU is not a running VM
        // (else the QEMU of VM `second` would be stopped as an orphan).
        let secondPID = try String(contentsOfFile: "\(node.runDirectory)/\(second).pid", encoding: .utf8)
        try Data(secondPID.utf8).write(to: URL(fileURLWithPath: "\(node.runDirectory)/\(node.vmid + 5).pid"))
        let stale = node.pvectl("plan", ["--detailed-exitcode"], only: ["qemu"])
        #expect(stale.status == 0, "\(stale.output)")

        // A config that cannot be parsed freezes its VM: it keeps running.
        let path = "root/nodes/localhost/qemu-server/\(first).conf"
        let good = node.directory.read(path) ?? ""
        try node.directory.write(path, good + "this is not a key value line\n")
        let frozen = node.pvectl("plan", [], only: ["qemu"])
        #expect(frozen.status == 1 && frozen.output.contains("! qemu/\(first)"), "\(frozen.output)\n\(frozen.error)")
        #expect(frozen.error.contains("\(first).conf:"), "the error names the file: \(frozen.error)")

        // Removing a config stops its VM.
        try FileManager.default.removeItem(atPath: node.directory.path + "/" + path)
        let removed = node.pvectl("apply", ["--auto-approve"], only: ["qemu"])
        #expect(removed.status == 0, "\(removed.output)\n\(removed.error)")
        #expect(removed.output.contains("no config for VM \(first)"), "\(removed.output)")
        #expect(!FileManager.default.fileExists(atPath: "\(node.runDirectory)/\(first).pid"))
        #expect(FileManager.default.fileExists(atPath: "\(node.runDirectory)/\(second).pid"))
    }

    @Test("pvectl run: starts VMs; a QEMU killed with -9 is started again at once (its event connection closing, its tap going); hot-plugs an edit; stops on template")
    func loop() async throws {
        let node = try QemuTestNode(storage: false)
        let plain = node.vmid + 1
        try node.write("memory: 128\nonboot: 1\nstartup: down=1\nnet0: virtio,bridge=vmbr0\n")
        try node.directory.write("root/nodes/localhost/qemu-server/\(plain).conf", "memory: 128\nonboot: 1\nstartup: down=1\n")
        let loop = try node.startLoop(only: "qemu")
        defer {
            kill(loop, SIGKILL)
            _ = reap(loop)
        }
        let log = { node.directory.read("run.log") ?? "" }
        func pid(_ vmid: Int) -> Int32? { node.pid(of: vmid).flatMap { kill($0, 0) == 0 ? $0 : nil } }
        // "started" is logged once QEMU answers on QMP: the start is complete.
        #expect(waitFor(seconds: 60) { log().contains("qemu/\(node.vmid): started") && log().contains("qemu/\(plain): started") },
                "started by the first pass: \(log())")
        #expect(waitFor(seconds: 30) { node.config.contains("net0: virtio=BC:24:11:") }, "generated values written back: \(log())")

        // No NIC, and the resync an hour away: only its event connection closing tells.
        let plainFirst = try #require(pid(plain))
        #expect(waitFor(seconds: 30) { log().contains("following the events of QEMU pid \(plainFirst)") }, "\(log())")
        kill(plainFirst, SIGKILL)
        #expect(waitFor(seconds: 60) { pid(plain).map { $0 != plainFirst } == true
                    && log().contains("qemu/\(plain): started (pid \(pid(plain) ?? 0))") },
                "restarted: \(log())")
        #expect(waitFor(seconds: 10) { log().contains("QEMU pid \(plainFirst) closed its event connection") }, "\(log())")

        let first = try #require(pid(node.vmid))
        kill(first, SIGKILL)
        #expect(waitFor(seconds: 60) { pid(node.vmid).map { $0 != first } == true
                    && log().contains("qemu/\(node.vmid): started (pid \(pid(node.vmid) ?? 0))") },
                "restarted: \(log())")
        let second = try #require(pid(node.vmid))

        try node.write(node.config + "net1: virtio,bridge=vmbr0\n")
        #expect(waitFor(seconds: 60) { (try? node.master("tap\(node.vmid)i1")) == "vmbr0" }, "NIC hot-plugged after the edit: \(log())")
        #expect(pid(node.vmid) == second, "a live change, no restart")

        try node.write(node.config + "template: 1\n")
        #expect(waitFor(seconds: 60) { kill(second, 0) != 0 }, "stopped: \(log())")
        kill(loop, SIGTERM)
        #expect(waitFor(seconds: 30) { log().contains("stopped") }, "\(log())")
    }
}

final class SerialConsole: @unchecked Sendable {
    // @unchecked: used from one test at a time, each call off the cooperative pool.
    private let socket: Int32
    private var buffer: [UInt8] = []
    private(set) var lines: [String] = []

    init(path: String) throws {
        socket = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            close(socket)
            throw QMPClient.Failure("cannot connect to \(path)")
        }
    }

    deinit { close(socket) }

    /// Reads until a line satisfies `condition` or `seconds` pass; returns that line.
    func waitForLine(seconds: Double, _ condition: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 200) > 0 else { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = recv(socket, &chunk, chunk.count, 0)
            guard count > 0 else { return nil }
            buffer += chunk[..<count]
            while let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                buffer.removeSubrange(...newline)
                lines.append(line)
                if condition(line) { return line }
            }
        }
        return nil
    }

    /// The guest's status line as numbers: nics, disks, cpus, memkb.
    static func facts(_ line: String) -> [String: Int] {
        var result: [String: Int] = [:]
        for word in line.split(separator: " ") {
            let parts = word.split(separator: "=")
            if parts.count == 2, let value = Int(parts[1]) { result[String(parts[0])] = value }
        }
        return result
    }
}

@Suite("QEMU kind: a tiny Linux guest sees hot-plugged devices and shuts down cleanly", .serialized,
       .enabled(if: NetworkNamespace.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64"),
                "needs root, network namespaces and qemu-system-x86_64"))
struct QemuGuestTests {
    static let tinyGuest = Corpus.packageRoot.appendingPathComponent("scripts/kernel-vm/tiny-guest").path

    @Test("NIC, disk, CPU and memory hot-plugged by apply arrive in the guest; a NIC and a disk unplug are released, a CPU unplug waits (TCG); stop is an ACPI shutdown")
    func guestSeesHotplug() async throws {
        let built = NetworkNamespace.capture([Self.tinyGuest])
        try #require(built.status == 0, "tiny-guest: \(built.error)")
        let paths = built.output.split(separator: "\n").map(String.init)
        try #require(paths.count == 2)
        // Quoted in `args` (split as shell words): the checkout's path may hold spaces or quotes.
        func word(_ path: String) -> String { path.contains("'") ? "\"\(path)\"" : "'\(path)'" }
        let node = try QemuTestNode()
        let vmid = node.vmid
        try node.write("""
        name: tiny
        memory: 1024
        numa: 1
        cores: 2
        vcpus: 1
        hotplug: network,disk,cpu,memory
        onboot: 1
        startup: down=180
        serial0: socket
        net0: virtio,bridge=vmbr0
        args: -kernel \(word(paths[0])) -initrd \(word(paths[1])) -append 'console=ttyS0 panic=-1 memhp_default_state=online'

        """)
        let start = node.pvectl("apply", ["--auto-approve"])
        try #require(start.status == 0, "\(start.output)\n\(start.error)")
        let console = try SerialConsole(path: "\(node.runDirectory)/\(vmid).serial0")
        let booted = try await offPool { console.waitForLine(seconds: 400) { $0.hasPrefix("GUEST nics=") } }
        let bootFacts = SerialConsole.facts(try #require(booted, "the guest did not boot: \(console.lines.suffix(20))"))
        #expect(bootFacts["nics"] == 1 && bootFacts["disks"] == 0 && bootFacts["cpus"] == 1, "\(booted ?? "")")
        let bootMemory = bootFacts["memkb"] ?? 0

        try FileManager.default.createDirectory(atPath: node.directory.path + "/vz/images/\(vmid)", withIntermediateDirectories: true)
        try node.write(node.config.replacingOccurrences(of: "vcpus: 1", with: "vcpus: 2")
            .replacingOccurrences(of: "memory: 1024", with: "memory: 1536")
            + "net1: virtio,bridge=vmbr0\nvirtio0: vmstore:\(vmid)/vm-\(vmid)-disk-0.qcow2,size=16M\n")
        let hotplug = node.pvectl("apply", ["--auto-approve"], only: ["storage", "qemu/\(vmid)"])
        try #require(hotplug.status == 0, "\(hotplug.output)\n\(hotplug.error)")
        let grown = try await offPool {
            console.waitForLine(seconds: 300) { line in
                let facts = SerialConsole.facts(line)
                return facts["nics"] == 2 && facts["disks"] == 1 && facts["cpus"] == 2 && (facts["memkb"] ?? 0) > bootMemory + 400_000
            }
        }
        #expect(grown != nil, "the guest did not see all hot-plugged devices: \(console.lines.suffix(5))")

        // The balloon target: the guest's driver gives 256 MiB back.
        try node.write(node.config + "balloon: 1280\n")
        let balloon = node.pvectl("apply", ["--auto-approve"])
        #expect(balloon.status == 0, "\(balloon.output)\n\(balloon.error)")
        var actual = 0
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline {
            let reply = try await node.qmp("query-balloon")
            actual = ((try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any])?["actual"] as? Int) ?? 0
            if actual > 0 && actual <= 1300 << 20 { break }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        #expect(actual > 0 && actual <= 1300 << 20, "balloon actual \(actual >> 20) MiB")

        // Unplug: the guest releases the NIC and the disk (device_del completes); fewer vCPUs
        // wait for a restart under TCG, where QEMU 7.2 dies when a guest releases one.
        try node.write(node.config.replacingOccurrences(of: "net1: ", with: "#net1: ").replacingOccurrences(of: "virtio0: ", with: "#virtio0: ")
            .replacingOccurrences(of: "vcpus: 2", with: "vcpus: 1"))
        let unplug = node.pvectl("apply", ["--auto-approve"])
        #expect(unplug.status == 0, "\(unplug.output)\n\(unplug.error)")
        #expect(unplug.output.contains("vcpus: 2 → 1 (removing vCPUs crashes QEMU under TCG (emulation))  [restart]"), "\(unplug.output)")
        let shrunk = try await offPool { console.waitForLine(seconds: 300) { line in
            let facts = SerialConsole.facts(line)
            return facts["nics"] == 1 && facts["disks"] == 0
        } }
        #expect(shrunk != nil, "\(console.lines.suffix(5))")
        let remaining = try await node.devices()
        #expect(!remaining.contains("net1") && !remaining.contains("virtio0"), "\(remaining)")

        // Stop: the guest gets the ACPI power button and powers off.
        try node.write(node.config + "template: 1\n")
        let stop = node.pvectl("apply", ["--auto-approve"])
        #expect(stop.status == 0, "\(stop.output)\n\(stop.error)")
        #expect(stop.output.contains("stopped (ACPI shutdown)"), "\(stop.output)")
        _ = try await offPool { console.waitForLine(seconds: 30) { $0.contains("powering off") } }
        // The guest's own word that it saw the button is missing in about one full CI run in two (the ACPI shutdown itself
        // is confirmed above every time): after a vCPU hot-plug under TCG the guest sometimes goes down without printing it.
        // Known and intermittent until the guest can leave its evidence somewhere that outlives it; the shutdown is not.
        withKnownIssue("the tiny guest's power-button line is lost now and then under TCG after a vCPU hot-plug", isIntermittent: true) {
            #expect(console.lines.contains { $0.contains("GUEST acpi power button") }, "\(console.lines.suffix(5))")
        }
    }
}
