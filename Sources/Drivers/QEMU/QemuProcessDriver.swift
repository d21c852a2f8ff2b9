import Foundation
import Reconciler

/// VMs' QEMU processes where qemu-server keeps them: started from their
/// daemonizing command line (pid file and QMP socket in `/var/run/qemu-server`),
/// observed through the pid file and QMP, changed over QMP, stopped with an
/// ACPI power-down first and by force when the guest does not react in time.
public struct QemuProcessDriver: QemuDriver {
    public var runDirectory: String

    public init(runDirectory: String = "/var/run/qemu-server") {
        self.runDirectory = runDirectory
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public func pidFile(_ vmid: Int) -> String { "\(runDirectory)/\(vmid).pid" }
    public func qmpSocket(_ vmid: Int) -> String { "\(runDirectory)/\(vmid).qmp" }

    func pid(_ vmid: Int) -> Int32? {
        guard let text = try? String(contentsOfFile: pidFile(vmid), encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else { return nil }
        return pid
    }

    /// Whether `pid` is the live QEMU of VM `vmid`: not a zombie, and its
    /// command line names this VM's pid file (as qemu-server checks), so a
    /// stale pid file whose pid now belongs to another program or another
    /// VM's QEMU is never taken for this VM.
    static func isQemu(_ pid: Int32, vmid: Int) -> Bool {
        guard let stat = readProcFile("/proc/\(pid)/stat") else { return false }
        // After the parenthesised command name comes the state; Z is a zombie.
        if let close = stat.lastIndex(of: ")"), stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z") {
            return false
        }
        guard let program = processArguments(pid).first, program.hasSuffix("/kvm") || program.contains("qemu-system") else { return false }
        return Self.vmid(ofQemu: pid) == vmid
    }

    /// The VM a live QEMU runs, from the pid file its command line names (`-pidfile …/qemu-server/<vmid>.pid`).
    public static func vmid(ofQemu pid: Int32) -> Int? {
        let arguments = processArguments(pid)
        guard let value = zip(arguments, arguments.dropFirst()).first(where: { $0.0 == "-pidfile" })?.1,
              value.hasSuffix(".pid"), (value as NSString).deletingLastPathComponent.hasSuffix("/qemu-server") else { return nil }
        return Int((value as NSString).lastPathComponent.dropLast(4))
    }

    // MARK: QemuDriver

    /// Replaces the config file atomically, unless it changed since it was read: Proxmox's own temporary name
    /// (file_set_contents), which pmxcfs takes in a guest directory, then a rename.
    public func writeConfig(path: String, text: String, expectedDigest: String?) throws {
        try GuestHost.replaceConfig(path: path, text: text, expectedDigest: expectedDigest)
    }

    /// `kvm` and `tcg` are taken as given; `auto` uses KVM only when
    /// /dev/kvm is there and the CPU has hardware virtualization (vmx/svm):
    /// a nested /dev/kvm without it accepts QMP but cannot run guests.
    public func acceleration(setting: String) -> QemuAcceleration {
        switch setting {
        case "kvm": return QemuAcceleration(kvm: true, reason: "--qemu-accel kvm")
        case "tcg": return QemuAcceleration(kvm: false, reason: "--qemu-accel tcg")
        default:
            guard access("/dev/kvm", R_OK | W_OK) == 0 else {
                return QemuAcceleration(kvm: false, reason: "/dev/kvm is missing or not accessible")
            }
            let flags = (readProcFile("/proc/cpuinfo") ?? "").split(separator: "\n").first { $0.hasPrefix("flags") }.map {
                Set($0.split(separator: " ").map(String.init))
            } ?? []
            guard flags.contains("vmx") || flags.contains("svm") else {
                return QemuAcceleration(kvm: false, reason: "/dev/kvm exists but the CPU has no hardware virtualization "
                                        + "(no vmx/svm flag): it cannot run guests")
            }
            return QemuAcceleration(kvm: true, reason: "/dev/kvm and CPU virtualization present")
        }
    }

    public func hostProfile(node: String, acceleration: QemuAcceleration) -> QemuHostProfile {
        var profile = InstalledQemuHost.profile(nodeName: node)
        profile.kvmAvailable = acceleration.kvm
        return profile
    }

    public func runningVMIDs() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runDirectory)) ?? []
        return names.compactMap { name in
            guard name.hasSuffix(".pid"), let vmid = Int(name.dropLast(4)), let pid = pid(vmid), Self.isQemu(pid, vmid: vmid) else { return nil }
            return vmid
        }
    }

    public func observe(vmid: Int, taps: [String]) async -> ObservedVM {
        var observed = ObservedVM(state: .stopped)
        for tap in taps {
            if let master = GuestHost.master(of: tap) { observed.tapMasters[tap] = master }
        }
        guard let pid = pid(vmid) else { return observed }
        guard Self.isQemu(pid, vmid: vmid) else {
            observed.state = .crashed(pid: pid)
            return observed
        }
        guard let client = try? QMPClient(path: qmpSocket(vmid), timeout: 3) else {
            observed.state = .running(pid: pid, status: "not answering QMP")
            return observed
        }
        let status = ((try? client.execute("query-status")) as? [String: Any])?["status"] as? String ?? "unknown"
        observed.state = .running(pid: pid, status: status)
        observed.deviceIDs = try? peripheralIDs(client)
        return observed
    }

    public func start(vmid: Int, arguments: [String]) async throws -> Int32 {
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        if let pid = pid(vmid), Self.isQemu(pid, vmid: vmid) {
            // A powered-off guest held by -no-shutdown is replaced; a running one is not.
            let client = try? QMPClient(path: qmpSocket(vmid), timeout: 3)
            guard ((try? client?.execute("query-status")) as? [String: Any])?["status"] as? String == "shutdown" else {
                throw Failure(description: "VM \(vmid) is already running (pid \(pid))")
            }
            _ = try? client?.execute("quit")
            if !(await waitForExit(pid, vmid: vmid, seconds: 5)) { kill(pid, SIGKILL) }
            _ = await waitForExit(pid, vmid: vmid, seconds: 5)
        }
        cleanUp(vmid)
        await waitForTapsGone(vmid)
        // Machine layouts the command line reads from the run directory (no qemu-server here).
        for (flag, path) in zip(arguments, arguments.dropFirst()) where flag == "-readconfig" && path.hasPrefix("/var/run/qemu-server/") {
            let name = (path as NSString).lastPathComponent
            if let text = QemuMachineLayouts.file(named: name) {
                try Data(text.utf8).write(to: URL(fileURLWithPath: runDirectory + "/" + name), options: .atomic)
            }
        }
        let log = "\(runDirectory)/\(vmid).log"
        let child = try DetachedProcess.spawn(arguments, log: log)
        // With -daemonize the first process exits once the VM is set up.
        guard let status = await DetachedProcess.waitForExit(child, seconds: 120) else {
            kill(child, SIGKILL)
            _ = await DetachedProcess.waitForExit(child, seconds: 5)
            throw Failure(description: "QEMU for VM \(vmid) did not finish starting within 120 s")
        }
        guard status == 0 else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            throw Failure(description: "start failed: QEMU exited with status \(status)\(text.isEmpty ? "" : ": " + text)")
        }
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let pid = pid(vmid) {
                if Self.isQemu(pid, vmid: vmid), (try? QMPClient(path: qmpSocket(vmid), timeout: 2)) != nil { return pid }
                // Daemonized, then gone (killed, or crashed): no use waiting for its QMP socket.
                if kill(pid, 0) != 0 && errno == ESRCH {
                    throw Failure(description: "QEMU for VM \(vmid) (pid \(pid)) exited right after starting")
                }
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        throw Failure(description: "QEMU for VM \(vmid) did not answer on \(qmpSocket(vmid)) within 30 s")
    }

    public func stop(vmid: Int, timeout: Double) async throws -> String {
        guard let pid = pid(vmid), Self.isQemu(pid, vmid: vmid) else {
            cleanUp(vmid)
            return "was not running"
        }
        // With -no-shutdown a guest that powers off leaves QEMU in the
        // "shutdown" state (qemu-server's qmeventd then quits it): that
        // counts as the ACPI shutdown having worked.
        let client = try? QMPClient(path: qmpSocket(vmid), timeout: 3)
        _ = try? client?.execute("system_powerdown")
        let deadline = Date().addingTimeInterval(timeout)
        var poweredOff = false
        while Date() < deadline {
            if !Self.isQemu(pid, vmid: vmid) {
                poweredOff = true
                break
            }
            if let status = ((try? client?.execute("query-status")) as? [String: Any])?["status"] as? String, status == "shutdown" {
                _ = try? client?.execute("quit")
                poweredOff = await waitForExit(pid, vmid: vmid, seconds: 5)
                break
            }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        if poweredOff {
            cleanUp(vmid)
            await waitForTapsGone(vmid)
            await removeFirewallBridges(vmid)
            return "ACPI shutdown"
        }
        // QEMU's monitor serves one client at a time: the same connection says quit.
        _ = try? (client ?? QMPClient(path: qmpSocket(vmid), timeout: 3)).execute("quit")
        var how = "hard stop after \(Int(timeout)) s: quit"
        if !(await waitForExit(pid, vmid: vmid, seconds: 5)) {
            kill(pid, SIGKILL)
            how = "hard stop after \(Int(timeout)) s: SIGKILL"
            guard await waitForExit(pid, vmid: vmid, seconds: 5) else { throw Failure(description: "QEMU \(pid) of VM \(vmid) survives SIGKILL") }
        }
        cleanUp(vmid)
        await waitForTapsGone(vmid)
        await removeFirewallBridges(vmid)
        return how
    }

    public func perform(vmid: Int, _ step: QemuLiveStep) async throws {
        switch step {
        case .attachTap(let tap, let bridge, let tag):
            try await GuestHost.attach(device: tap, bridge: bridge, tag: tag)
            return
        default: break
        }
        let client = try QMPClient(path: qmpSocket(vmid), timeout: 10)
        switch step {
        case .qmp(let name, let arguments):
            try client.execute(name, arguments: try Self.object(arguments))
        case .qmpIgnoringFailure(let name, let arguments):
            _ = try? client.execute(name, arguments: try Self.object(arguments))
        case .monitor(let command):
            // An add whose object exists already was done by an earlier, interrupted apply.
            if try alreadyPresent(client, command) { return }
            let output = (try client.execute("human-monitor-command", arguments: ["command-line": command]) as? String ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            // drive_add answers OK; the other commands answer nothing unless they fail.
            guard output.isEmpty || output == "OK" else { throw Failure(description: "\(command): \(output)") }
        case .monitorIgnoringFailure(let command):
            _ = try? client.execute("human-monitor-command", arguments: ["command-line": command])
        case .unplug(let id):
            try unplug(client, id: id)
        case .setCPUs(let count):
            try setCPUs(client, count: count)
        case .attachTap:
            break
        }
    }

    // MARK: pieces

    static func object(_ json: String) throws -> [String: Any]? {
        guard json != "{}" else { return nil }
        guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
            throw Failure(description: "not a JSON object: \(json)")
        }
        return object
    }

    /// Whether the device, netdev, object or drive a monitor `*_add` names exists in QEMU.
    func alreadyPresent(_ client: QMPClient, _ command: String) throws -> Bool {
        let parts = command.split(separator: " ", maxSplits: 2).map(String.init)
        guard parts.count >= 2, let id = QemuArguments.options(parts.last!)["id"] else { return false }
        switch parts[0] {
        case "device_add":
            return try peripheralIDs(client).contains(id)
        case "object_add":
            let objects = try client.execute("qom-list", arguments: ["path": "/objects"]) as? [[String: Any]] ?? []
            return objects.contains { $0["name"] as? String == id }
        case "drive_add":
            let blocks = try client.execute("query-block") as? [[String: Any]] ?? []
            return blocks.contains { $0["device"] as? String == id }
        case "netdev_add":
            let network = try client.execute("human-monitor-command", arguments: ["command-line": "info network"]) as? String ?? ""
            return network.split(separator: "\n").contains { $0.contains("\(id): index=") }
        default:
            return false
        }
    }

    func peripheralIDs(_ client: QMPClient) throws -> Set<String> {
        let children = try client.execute("qom-list", arguments: ["path": "/machine/peripheral"]) as? [[String: Any]] ?? []
        return Set(children.compactMap { ($0["type"] as? String)?.hasPrefix("child<") == true ? $0["name"] as? String : nil })
    }

    /// device_del is a request: the guest has to release the device, which QEMU reports with DEVICE_DELETED.
    func unplug(_ client: QMPClient, id: String, seconds: Double = 60) throws {
        guard try peripheralIDs(client).contains(id) else { return }
        try client.execute("device_del", arguments: ["id": id])
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if client.waitForEvent("DEVICE_DELETED", seconds: 0.2, matching: { $0["device"] as? String == id }) { return }
            if !(try peripheralIDs(client).contains(id)) { return }
        }
        throw Failure(description: "device_del \(id): the guest did not release the device within \(Int(seconds)) s "
                      + "(no OS, or it refuses the unplug)")
    }

    /// Hot-plugs CPUs into the free slots QEMU lists, or unplugs the ones pvectl added (`cpuN`).
    func setCPUs(_ client: QMPClient, count: Int) throws {
        let slots = try client.execute("query-hotpluggable-cpus") as? [[String: Any]] ?? []
        let present = slots.filter { $0["qom-path"] != nil }
        if present.count < count {
            let free = slots.filter { $0["qom-path"] == nil }.sorted { a, b in
                let pa = a["props"] as? [String: Any] ?? [:], pb = b["props"] as? [String: Any] ?? [:]
                let ka = ["socket-id", "core-id", "thread-id"].map { (pa[$0] as? Int) ?? 0 }
                let kb = ["socket-id", "core-id", "thread-id"].map { (pb[$0] as? Int) ?? 0 }
                return ka.lexicographicallyPrecedes(kb)
            }
            for (offset, slot) in free.prefix(count - present.count).enumerated() {
                var arguments = slot["props"] as? [String: Any] ?? [:]
                arguments["driver"] = slot["type"]
                arguments["id"] = "cpu\(present.count + offset + 1)"
                try client.execute("device_add", arguments: arguments)
            }
        } else if present.count > count {
            let added = present.compactMap { ($0["qom-path"] as? String).flatMap { path -> (String, Int)? in
                guard path.hasPrefix("/machine/peripheral/cpu"), let n = Int(path.dropFirst("/machine/peripheral/cpu".count)) else { return nil }
                return ("cpu\(n)", n)
            } }.sorted { $0.1 > $1.1 }
            guard added.count >= present.count - count else {
                throw Failure(description: "only CPUs added at run time can be removed; restart to go below \(present.count - added.count)")
            }
            for (id, _) in added.prefix(present.count - count) { try unplug(client, id: id) }
        }
    }

    func waitForExit(_ pid: Int32, vmid: Int, seconds: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if !Self.isQemu(pid, vmid: vmid) { return true }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return !Self.isQemu(pid, vmid: vmid)
    }

    /// QEMU's taps go away with its last descriptor, which can be a moment
    /// after the process is gone; a start before that finds the name busy.
    func waitForTapsGone(_ vmid: Int, seconds: Double = 5) async {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
            if !names.contains(where: { $0.hasPrefix("tap\(vmid)i") }) { return }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    /// What pve-bridgedown does when a VM's taps go: its firewall bridges and
    /// their veth pairs (fwbr/fwpr/fwln) are removed with it.
    func removeFirewallBridges(_ vmid: Int) async {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? []
        let leftovers = names.filter { $0.hasPrefix("fwbr\(vmid)i") || $0.hasPrefix("fwpr\(vmid)p") }.sorted()
        guard !leftovers.isEmpty else { return }
        _ = try? await Command.run(["ip", "-force", "-batch", "-"], input: leftovers.map { "link del dev \($0)\n" }.joined())
    }

    func cleanUp(_ vmid: Int) {
        for suffix in ["pid", "qmp", "qga", "vnc"] { try? FileManager.default.removeItem(atPath: "\(runDirectory)/\(vmid).\(suffix)") }
    }
}

/// A daemon's launcher: posix_spawn in a new session with standard input from
/// /dev/null, output to a log file, default signal handling and no other
/// descriptor of this process (a daemon holding a pipe of ours would keep
/// whoever reads it waiting for end of file).
public enum DetachedProcess {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// glibc ≥ 2.34 has posix_spawn_file_actions_addclosefrom_np; Swift's Glibc module does not export it.
    static let closeFrom: CloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: CloseFrom.self) }

    public static func spawn(_ arguments: [String], log: String) throws -> pid_t {
        try launch(arguments, newSession: true) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o640)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
    }

    /// Runs a short command and returns its standard output, or nil when it
    /// cannot start or fails. Synchronous, without Foundation's Process
    /// (whose run loop needs a socket pair that fails in a fresh network namespace).
    public static func capture(_ arguments: [String]) -> String? {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return nil }
        defer { close(fds[0]) }
        let pid = try? launch(arguments, newSession: false) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        close(fds[1])
        guard let pid else { return nil }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fds[0], &chunk, chunk.count)
            if count > 0 { output += chunk[..<count]; continue }
            if count < 0 && errno == EINTR { continue }
            break
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        return status == 0 ? String(decoding: output, as: UTF8.self) : nil
    }

    /// posix_spawnp with the standard descriptors `setUp` arranges, every
    /// other descriptor closed, no blocked signals and default handlers (the
    /// caller's threads block some, and a mask is inherited across exec).
    static func launch(_ arguments: [String], newSession: Bool,
                       setUp: (inout posix_spawn_file_actions_t) -> Void) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        setUp(&actions)
        if let closeFrom {
            _ = closeFrom(&actions, 3)
        } else {
            // Older C libraries: close what is open now.
            for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
                if let fd = Int32(name), fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
            }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        // POSIX_SPAWN_SETSID (0x80): a daemon leaves our session and process group.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (newSession ? 0x80 : 0)))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, arguments[0], &actions, &attributes, &argv, environ)
        guard result == 0 else { throw QemuProcessDriver.Failure(description: "cannot start \(arguments[0]): \(String(cString: strerror(result)))") }
        return pid
    }

    /// The exit status (128+signal when killed), or nil if still running after `seconds`.
    public static func waitForExit(_ pid: pid_t, seconds: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            }
            if result == -1 && errno != EINTR { return -1 }
            if Date() > deadline { return nil }
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
    }
}
