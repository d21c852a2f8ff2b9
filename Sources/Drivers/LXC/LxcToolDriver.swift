import Foundation
import Reconciler

/// Containers through LXC's own tools (`lxc-start`, `lxc-info`, `lxc-stop`, `lxc-attach`). Not liblxc in this process:
/// its start forks and keeps running code in the child, which a multi-threaded Swift process must not do.
///
/// A start writes `/var/lib/lxc/<vmid>/config` (the generated config, with pvectl as its pre-start and NIC hooks) and
/// `pvectl-start.json` (what the hooks need); the pre-start hook (`pvectl lxc-hook`, run by LXC in the monitor's own
/// mount namespace, see `LxcStartHook`) mounts the rootfs and mount points, populates an empty rootfs from its OS
/// template and runs the guest setup, so the mounts and loop devices go with the monitor when the container stops.
public struct LxcToolDriver: LxcDriver {
    public var lxcPath: String
    /// The executable LXC runs as the hooks (this pvectl).
    public var hookExecutable: String

    public init(lxcPath: String = "/var/lib/lxc", hookExecutable: String? = nil) {
        self.lxcPath = lxcPath
        self.hookExecutable = hookExecutable ?? Self.currentExecutable
    }

    static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public func hostFacts(bridges: [String], devicePaths: [String]) async throws -> LxcHostFacts {
        try await InstalledLxcHost.facts(bridges: bridges, devicePaths: devicePaths)
    }

    /// The cgroup directories of a container (`lxc/<vmid>`) in every hierarchy, and of its monitor.
    static func cgroupDirectories(vmid: Int) -> [String] {
        let base = "/sys/fs/cgroup"
        let layout = InstalledLxcHost.cgroupLayout
        let hierarchies = layout == .v2 ? [base]
            : ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).sorted().map { "\(base)/\($0)" }
        return hierarchies.flatMap { ["\($0)/lxc/\(vmid)/ns", "\($0)/lxc/\(vmid)", "\($0)/lxc.monitor/\(vmid)"] }
    }

    /// Where a container's limit cgroup file is.
    static func limitPath(vmid: Int, controller: String, file: String) -> String {
        controller.isEmpty ? "/sys/fs/cgroup/lxc/\(vmid)/\(file)" : "/sys/fs/cgroup/\(controller)/lxc/\(vmid)/\(file)"
    }

    func hasCgroup(_ vmid: Int) -> Bool {
        let probe = InstalledLxcHost.cgroupLayout == .v2 ? "/sys/fs/cgroup/lxc/\(vmid)" : "/sys/fs/cgroup/memory/lxc/\(vmid)"
        return FileManager.default.fileExists(atPath: probe)
    }

    public func runningContainers() async -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: lxcPath)) ?? []
        var running: [Int] = []
        for name in names {
            guard let vmid = Int(name), FileManager.default.fileExists(atPath: "\(lxcPath)/\(name)/config"), hasCgroup(vmid) else { continue }
            if await state(vmid) != .stopped { running.append(vmid) }
        }
        return running.sorted()
    }

    /// LXC's answer (`lxc-info`); a container without a cgroup is stopped without asking.
    func state(_ vmid: Int) async -> ContainerRunState {
        guard hasCgroup(vmid), FileManager.default.fileExists(atPath: "\(lxcPath)/\(vmid)/config") else { return .stopped }
        guard let result = try? await Command.run(["lxc-info", "-P", lxcPath, "-n", String(vmid), "-s", "-p"]), result.succeeded else {
            return .stopped
        }
        // `State:   RUNNING` and `PID:   1234`.
        var fields: [String: String] = [:]
        for line in result.output.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        let pid = fields["PID"].flatMap { Int32($0) }
        switch (fields["State"], pid) {
        case ("RUNNING"?, let pid?): return .running(initPID: pid)
        case ("FROZEN"?, let pid?), ("FREEZING"?, let pid?), ("THAWED"?, let pid?): return .frozen(initPID: pid)
        default: return .stopped
        }
    }

    public func observe(vmid: Int, limits: [String], nics: [String]) async -> ObservedContainer {
        var observed = ObservedContainer(state: await state(vmid))
        guard observed.state != .stopped else { return observed }
        for name in limits {
            let parts = name.split(separator: "/", maxSplits: 1).map(String.init)
            let path = parts.count == 2 ? Self.limitPath(vmid: vmid, controller: parts[0], file: parts[1])
                : Self.limitPath(vmid: vmid, controller: "", file: name)
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                observed.limits[name] = text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        for nic in nics {
            if let master = GuestHost.master(of: nic) { observed.nicMasters[nic] = master }
        }
        return observed
    }

    public func holdsData(_ rootfs: ContainerMount) -> Bool? {
        switch rootfs.type {
        case .directory, .bind: Self.holdsData(directory: rootfs.source)
        case .image, .block: nil
        }
    }

    /// Anything besides `lost+found` counts as data.
    static func holdsData(directory: String) -> Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).contains { $0 != "lost+found" }
    }

    public func architecture(_ rootfs: ContainerMount) -> String? {
        guard rootfs.type == .directory || rootfs.type == .bind else { return nil }
        return LxcGuestSetup.detectArch(HostContainerFiles(root: rootfs.source))
    }

    public func fileExists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// The config LXC runs: the generated one, with pvectl as the pre-start hook and as every NIC's up script (Proxmox's
    /// `lxcnetaddbr` is not on this host; the hook puts the host end on its bridge and VLAN the same way).
    func runtimeConfig(_ spec: ContainerStartSpec) -> String {
        var lines = spec.config.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // LXC runs hooks through /bin/sh -c: the path is quoted (it may hold spaces).
        let hook = "'" + hookExecutable.replacingOccurrences(of: "'", with: "'\\''") + "' lxc-hook"
        for index in lines.indices where lines[index].hasPrefix("lxc.net.") && lines[index].contains(".script.up = ") {
            lines[index] = String(lines[index].prefix { $0 != "=" }) + "= " + hook
        }
        if lines.last == "" { lines.removeLast() }
        lines.append("lxc.hook.pre-start = \(hook)")
        return lines.joined(separator: "\n") + "\n"
    }

    public func start(_ spec: ContainerStartSpec) async throws -> Int32 {
        guard Command.locate("lxc-start") != nil else { throw MissingExecutable(name: "lxc-start") }
        let vmid = spec.vmid
        let directory = "\(lxcPath)/\(vmid)"
        try FileManager.default.createDirectory(atPath: directory + "/rootfs", withIntermediateDirectories: true)
        try Data(runtimeConfig(spec).utf8).write(to: URL(fileURLWithPath: directory + "/config"))
        if let rules = spec.seccompRules { try Data(rules.utf8).write(to: URL(fileURLWithPath: directory + "/rules.seccomp")) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(spec).write(to: URL(fileURLWithPath: directory + "/" + LxcStartHook.specFile))
        // What a failed start left behind would stop this one ("Failed to create monitor cgroup"): empty cgroups go first,
        // as pve-container's pre-start does.
        for cgroup in Self.cgroupDirectories(vmid: vmid) { rmdir(cgroup) }
        if spec.unprivileged, let missing = Self.missingSubordinateIDs() { throw Failure(description: missing) }
        let log = directory + "/start.log"
        try? FileManager.default.removeItem(atPath: log)
        let result = try await Command.run(["lxc-start", "-P", lxcPath, "-n", String(vmid), "-d", "-o", log, "-l", "ERROR"])
        let state = await state(vmid)
        guard result.succeeded, let pid = state.initPID else {
            if let hookError = try? String(contentsOfFile: directory + "/" + LxcStartHook.errorFile, encoding: .utf8) {
                throw Failure(description: "lxc-start failed in the pre-start hook: \(hookError)")
            }
            // LXC's first errors say why; the last ones only that the start failed.
            let lines = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? result.error).split(separator: "\n")
            let errors = lines.filter { $0.contains(" ERROR ") }
            let reasons = (errors.isEmpty ? Array(lines.suffix(4)) : Array(errors.prefix(3)))
                .map { line in line.split(separator: " - ").last.map(String.init) ?? String(line) }
            throw Failure(description: "lxc-start failed: " + (reasons.isEmpty ? "exit status \(result.status)" : reasons.joined(separator: "; ")))
        }
        return pid
    }

    /// Why root cannot map 65536 ids from 100000 (the idmap every unprivileged container gets), nil when it can.
    static func missingSubordinateIDs() -> String? {
        for file in ["/etc/subuid", "/etc/subgid"] {
            let lines = ((try? String(contentsOfFile: file, encoding: .utf8)) ?? "").split(separator: "\n")
            let covered = lines.contains { line in
                let fields = line.split(separator: ":")
                guard fields.count == 3, fields[0] == "root", let start = Int(fields[1]), let count = Int(fields[2]) else { return false }
                return start <= 100_000 && start + count >= 165_536
            }
            if !covered { return "unprivileged containers need root:100000:65536 in \(file) (as on a Proxmox VE host)" }
        }
        return nil
    }

    public func stop(vmid: Int, timeout: Double) async throws -> String {
        guard await state(vmid) != .stopped else {
            for cgroup in Self.cgroupDirectories(vmid: vmid) { rmdir(cgroup) }
            return "already stopped"
        }
        let started = Date()
        let seconds = max(1, Int(timeout.rounded(.up)))
        let result = try await Command.run(["lxc-stop", "-P", lxcPath, "-n", String(vmid), "-t", String(seconds)])
        let elapsed = Date().timeIntervalSince(started)
        if await state(vmid) != .stopped {
            // lxc-stop gave up (its own timeout or an error): kill.
            _ = try await Command.run(["lxc-stop", "-P", lxcPath, "-n", String(vmid), "-k"])
            guard await state(vmid) == .stopped else {
                let reason = result.error.trimmingCharacters(in: .whitespacesAndNewlines)
                throw Failure(description: "lxc-stop could not stop container \(vmid): \(reason)")
            }
            return "hard stop"
        }
        for cgroup in Self.cgroupDirectories(vmid: vmid) { rmdir(cgroup) }
        return elapsed >= Double(seconds) - 0.5 ? "hard stop after \(seconds) s" : "clean shutdown in \(String(format: "%.1f", elapsed)) s"
    }

    public func perform(vmid: Int, _ step: LxcLiveStep) async throws {
        switch step {
        case .setLimit(let controller, let file, let value):
            let path = Self.limitPath(vmid: vmid, controller: controller, file: file)
            guard let handle = FileHandle(forWritingAtPath: path) else { throw Failure(description: "cannot open \(path)") }
            defer { try? handle.close() }
            do { try handle.write(contentsOf: Data(value.utf8)) } catch { throw Failure(description: "\(path): cannot write \(value): \(error)") }
        case .attachNIC(let nic):
            try await GuestHost.attach(device: nic.veth, bridge: nic.bridge, tag: nic.tag)
        case .removeNIC(let veth):
            if GuestHost.master(of: veth) != nil { try await Command.check(["ip", "link", "del", veth]) }
        case .addNIC(let nic):
            guard let pid = await state(vmid).initPID else { throw Failure(description: "container \(vmid) is not running") }
            // Proxmox's hot-plug: a veth pair, the host end on the bridge, the peer moved into the container and renamed.
            if GuestHost.master(of: nic.veth) != nil { try await Command.check(["ip", "link", "del", nic.veth]) }
            let peer = nic.veth + "p"
            var add = ["ip", "link", "add", nic.veth]
            if let mtu = nic.mtu { add += ["mtu", String(mtu)] }
            add += ["type", "veth", "peer", "name", peer]
            if let mtu = nic.mtu { add += ["mtu", String(mtu)] }
            if let hwaddr = nic.hwaddr { add += ["address", hwaddr] }
            try await Command.check(add)
            try? Data("1".utf8).write(to: URL(fileURLWithPath: "/proc/sys/net/ipv6/conf/\(nic.veth)/disable_ipv6"))
            try await GuestHost.attach(device: nic.veth, bridge: nic.bridge, tag: nic.tag)
            if nic.rate != nil { try await GuestHost.setRate(device: nic.veth, rate: nic.rate, ingress: await InstalledLxcHost.ingressPolicing) }
            try await Command.check(["ip", "link", "set", peer, "netns", String(pid)])
            try await inside(vmid, ["ip", "link", "set", peer, "name", nic.name])
            try await inside(vmid, ["ip", "link", "set", nic.name, "up"])
            try await address(vmid, nic)
        case .setAddresses(let nic):
            try await inside(vmid, ["ip", "address", "flush", "dev", nic.name])
            try await address(vmid, nic)
        case .addMountPoint(let mount, let unprivileged):
            guard let pid = await state(vmid).initPID else { throw Failure(description: "container \(vmid) is not running") }
            try await MountPointHotplug.insert(mount, initPID: pid, owner: unprivileged ? (100_000, 100_000) : nil,
                                               staging: "\(lxcPath)/\(vmid)/pvectl-staging-\(mount.key)")
        case .setRate(let nic):
            try await GuestHost.setRate(device: nic.veth, rate: nic.rate, ingress: await InstalledLxcHost.ingressPolicing)
        }
    }

    /// A command in the container's network namespace (the host's `ip`, the container's network).
    func inside(_ vmid: Int, _ command: [String]) async throws {
        try await Command.check(["lxc-attach", "-P", lxcPath, "-n", String(vmid), "-s", "NETWORK", "--"] + command)
    }

    func address(_ vmid: Int, _ nic: ContainerNIC) async throws {
        for address in nic.staticAddresses {
            try await inside(vmid, ["ip", "address", "add", address, "dev", nic.name])
        }
        if let gw = nic.gw, nic.ip?.contains("/") == true { try await inside(vmid, ["ip", "route", "replace", "default", "via", gw]) }
        if let gw6 = nic.gw6, nic.ip6?.contains("/") == true { try await inside(vmid, ["ip", "-6", "route", "replace", "default", "via", gw6]) }
    }

    public func writeConfig(path: String, text: String, expectedDigest: String?) throws {
        try GuestHost.replaceConfig(path: path, text: text, expectedDigest: expectedDigest)
    }
}
