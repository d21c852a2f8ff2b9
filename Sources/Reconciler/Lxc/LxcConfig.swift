import Foundation
import Resources

/// What the generated LXC config depends on besides the container's own config: facts about this host, gathered by the
/// driver (`InstalledLxcHost`), so that generating stays pure and a test can pin every one of them.
public struct LxcHostFacts: Sendable, Hashable {
    public enum CgroupLayout: String, Sendable, Hashable {
        /// cgroup v1 controllers (`lxc.cgroup.*`), as on a hybrid host such as this one.
        case v1
        /// The unified hierarchy (`lxc.cgroup2.*`), as Proxmox VE 8 writes for its hosts.
        case v2
    }

    public struct Device: Sendable, Hashable {
        public var isBlock: Bool
        public var major: UInt32
        public var minor: UInt32

        public init(isBlock: Bool, major: UInt32, minor: UInt32) {
            self.isBlock = isBlock
            self.major = major
            self.minor = minor
        }
    }

    public var lxcMajorVersion: Int
    /// Where LXC's shipped configs live (`/usr/share/lxc/config`).
    public var configDirectory: String
    /// The file names there (`debian.common.conf`, `userns.conf`, ...): an ostype without its own falls back to common.
    public var shippedConfigs: Set<String>
    public var cgroupLayout: CgroupLayout
    /// MTU of each bridge a NIC may name.
    public var bridgeMTUs: [String: Int]
    /// Device numbers of the paths `devN` passes through.
    public var devices: [String: Device]
    /// CPUs containers may use (the cpuset of the `lxc` cgroup).
    public var cpus: [Int]
    /// `common.seccomp`, which an unprivileged container's own rules extend.
    public var commonSeccomp: String?
    /// Whether the kernel can trap mknod to userspace (5.3 and later).
    public var seccompNotify: Bool
    /// Whether tc can police a device's ingress (`act_police`), for a NIC's `rate` in the container's direction out.
    public var ingressPolicing: Bool

    public init(lxcMajorVersion: Int = 5, configDirectory: String = "/usr/share/lxc/config", shippedConfigs: Set<String>,
                cgroupLayout: CgroupLayout, bridgeMTUs: [String: Int] = [:], devices: [String: Device] = [:], cpus: [Int] = [],
                commonSeccomp: String? = nil, seccompNotify: Bool = true, ingressPolicing: Bool = true) {
        self.lxcMajorVersion = lxcMajorVersion
        self.configDirectory = configDirectory
        self.shippedConfigs = shippedConfigs
        self.cgroupLayout = cgroupLayout
        self.bridgeMTUs = bridgeMTUs
        self.devices = devices
        self.cpus = cpus
        self.commonSeccomp = commonSeccomp
        self.seccompNotify = seccompNotify
        self.ingressPolicing = ingressPolicing
    }
}

/// `/var/lib/lxc/<vmid>/config` from a container config, in the order and with the keys pve-container's
/// `update_lxc_config` writes, for either cgroup layout.
public struct LxcConfig: Sendable, Hashable {
    /// The LXC config text.
    public var config: String
    /// `rules.seccomp` beside it, when the container needs its own seccomp rules.
    public var seccompRules: String?
    public var warnings: [String]

    public struct GenerationError: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// `directory` is the container's LXC directory (`/var/lib/lxc/<vmid>`); `arch` the detected architecture when the
    /// config has none.
    public static func generate(vmid: Int, config: GuestConfig.Section, host: LxcHostFacts, directory: String? = nil,
                                arch detectedArch: String = "amd64") throws -> LxcConfig {
        let directory = directory ?? "/var/lib/lxc/\(vmid)"
        var warnings: [String] = []
        func value(_ key: String) -> String? { config.entry(key)?.value }
        let raw = config.entries.filter(\.isRawLXC)
        func hasRaw(_ key: String) -> Bool { raw.contains { $0.key == key } }

        var text = ""
        func line(_ key: String, _ value: CustomStringConvertible) { text += "\(key) = \(value)\n" }
        if host.lxcMajorVersion >= 4 {
            line("lxc.cgroup.relative", 0)
            line("lxc.cgroup.dir.monitor", "lxc.monitor/\(vmid)")
            line("lxc.cgroup.dir.container", "lxc/\(vmid)")
            line("lxc.cgroup.dir.container.inner", "ns")
        }
        line("lxc.arch", value("arch") ?? detectedArch)

        let customIDMap = hasRaw("lxc.idmap")
        let unprivileged = value("unprivileged") == "1" || customIDMap
        guard let ostype = value("ostype") else { throw GenerationError("missing 'ostype'") }
        func include(_ specific: String, _ fallback: String) -> String {
            host.configDirectory + "/" + (host.shippedConfigs.contains(specific) ? specific : fallback)
        }
        line("lxc.include", include("\(ostype).common.conf", "common.conf"))
        if unprivileged { line("lxc.include", include("\(ostype).userns.conf", "userns.conf")) }

        let features = Dictionary(PropertyString(parsing: value("features") ?? "").entries.compactMap { entry in
            entry.key.map { ($0, entry.value) }
        }, uniquingKeysWith: { _, last in last })
        func feature(_ name: String) -> Bool { features[name].map { $0 == "1" } ?? false }

        // seccomp: privileged containers keep the default the includes load; a configured profile wins.
        var seccompRules: String?
        if hasRaw("lxc.seccomp.profile") {
            let overridden = ["keyctl", "mknod"].filter(feature)
            if !overridden.isEmpty {
                warnings.append("explicitly configured lxc.seccomp.profile overrides the following settings: "
                                + overridden.joined(separator: ", "))
            }
        } else if unprivileged {
            var rules: [String: [String]] = [
                "keyctl": ["errno 38"],
                // btrfs ioctls misbehave in user namespaces (snapshots that cannot be listed or deleted).
                "ioctl": ["errno 1 [1,0x9400,SCMP_CMP_MASKED_EQ,0xff00]"],
                // AF_ALG sockets stay closed.
                "socket": ["errno 97 [0,38,SCMP_CMP_EQ]"],
            ]
            var extra = ""
            if feature("keyctl") { rules["keyctl"] = nil }
            if feature("mknod") {
                guard host.seccompNotify else { throw GenerationError("'mknod' feature requested, but the kernel is older than 5.3") }
                extra += "lxc.seccomp.notify.proxy = unix:/run/pve-lxc-syscalld/socket\n"
                extra += "lxc.seccomp.notify.cookie = \(vmid)\n"
                rules["mknod"] = ["notify [1,8192,SCMP_CMP_MASKED_EQ,61440]", "notify [1,24576,SCMP_CMP_MASKED_EQ,61440]"]
                rules["mknodat"] = ["notify [2,8192,SCMP_CMP_MASKED_EQ,61440]", "notify [2,24576,SCMP_CMP_MASKED_EQ,61440]"]
            }
            let ruleText = rules.keys.sorted().flatMap { call in rules[call]!.map { "\(call) \($0)" } }.joined(separator: "\n") + "\n"
            text += extra
            if ruleText != "\n" {
                if extra.isEmpty && ruleText == "keyctl errno 38\n" {
                    line("lxc.seccomp.profile", host.configDirectory + "/pve-userns.seccomp")
                } else {
                    seccompRules = (host.commonSeccomp ?? "") + ruleText
                    line("lxc.seccomp.profile", directory + "/rules.seccomp")
                }
            }
        }

        // AppArmor: LXC generates the profile; the raw lines open what the features need.
        var profileUses: [String] = []
        var apparmor = "lxc.apparmor.profile = generated\nlxc.apparmor.raw = allow mqueue,\n"
        if feature("fuse") { profileUses.append("features:fuse") }
        if feature("nesting") {
            profileUses.append("features:nesting")
            apparmor += "lxc.apparmor.allow_nesting = 1\nlxc.apparmor.raw = allow userns,\n"
        } else {
            apparmor += "lxc.apparmor.raw = deny mount -> /proc/,\nlxc.apparmor.raw = deny mount -> /sys/,\n"
        }
        if let mount = features["mount"] {
            profileUses.append("features:mount")
            for fileSystem in StorageVolumes.splitList(mount) { apparmor += "lxc.apparmor.raw = mount fstype=\(fileSystem),\n" }
        }
        if hasRaw("lxc.apparmor.profile") {
            if !profileUses.isEmpty {
                warnings.append("explicitly configured lxc.apparmor.profile overrides the following settings: "
                                + profileUses.joined(separator: ", "))
            }
        } else {
            text += apparmor
        }
        if feature("fuse") {
            line("lxc.apparmor.raw", "mount fstype=fuse,")
            line("lxc.mount.entry", "/dev/fuse dev/fuse none bind,create=file 0 0")
        }
        if unprivileged && !feature("force_rw_sys") { line("lxc.mount.auto", "sys:mixed") }
        let entrypoint = value("entrypoint")
        if let entrypoint, entrypoint != "/sbin/init" { line("lxc.mount.entry", "shm dev/shm tmpfs rw,nosuid,nodev,create=dir 0 0") }

        let cgroup = host.cgroupLayout == .v2 ? "lxc.cgroup2" : "lxc.cgroup"
        let devices = config.entries.compactMap { entry -> (Int, PropertyString)? in
            guard entry.key.hasPrefix("dev"), let index = Int(entry.key.dropFirst(3)) else { return nil }
            return (index, PropertyString(parsing: entry.value))
        }.sorted { $0.0 < $1.0 }
        for (index, device) in devices {
            guard let path = device["path"] ?? device.bareValue else {
                throw GenerationError("Path is not defined for passthrough device dev\(index)")
            }
            guard let numbers = host.devices[path] else { throw GenerationError("dev\(index): \(path) is not a device on this node") }
            let type = numbers.isBlock ? "b" : "c"
            let denyWrite = device["deny-write"] == "1"
            line("\(cgroup).devices.allow", "\(type) \(numbers.major):\(numbers.minor) \(denyWrite ? "r" : "rw")")
            if denyWrite { line("\(cgroup).devices.deny", "\(type) \(numbers.major):\(numbers.minor) w") }
        }

        // Mounts made for the container stay in the monitor's namespace otherwise, and loop devices would not detach.
        line("lxc.monitor.unshare", 1)
        if unprivileged && !customIDMap {
            line("lxc.idmap", "u 0 100000 65536")
            line("lxc.idmap", "g 0 100000 65536")
        }
        if value("console") == "0" {
            line("lxc.console.path", "none")
            line("\(cgroup).devices.deny", "c 5:1 rwm")
        }
        line("lxc.tty.max", value("tty") ?? "2")
        // Some init scripts expect a Linux terminal (TurnKey's).
        line("lxc.environment", "TERM=linux")
        line("lxc.uts.name", value("hostname") ?? "CT\(vmid)")

        let limits: LxcLimits
        do {
            limits = try LxcLimits(value)
        } catch {
            throw GenerationError(error.description)
        }
        switch host.cgroupLayout {
        case .v2:
            line("lxc.cgroup2.memory.max", limits.memoryBytes)
            line("lxc.cgroup2.memory.high", limits.memoryHighBytes)
            line("lxc.cgroup2.memory.swap.max", limits.swapBytes)
            if let quota = limits.cpuQuota { line("lxc.cgroup2.cpu.max", "\(quota) 100000") }
            if let cpuunits = limits.cpuunits { line("lxc.cgroup2.cpu.weight", min(cpuunits, 10_000)) }
        case .v1:
            line("lxc.cgroup.memory.limit_in_bytes", limits.memoryBytes)
            line("lxc.cgroup.memory.memsw.limit_in_bytes", limits.memoryAndSwapBytes)
            if let quota = limits.cpuQuota {
                line("lxc.cgroup.cpu.cfs_period_us", 100_000)
                line("lxc.cgroup.cpu.cfs_quota_us", quota)
            }
            line("lxc.cgroup.cpu.shares", max(limits.cpuunits ?? 1024, 2))
        }

        guard value("rootfs") != nil else { throw GenerationError("missing 'rootfs' configuration") }
        line("lxc.rootfs.path", directory + "/rootfs")
        if let entrypoint { line("lxc.init.cmd", entrypoint) }

        // NICs in the order upstream sorts the keys (as strings: net10 before net2).
        let nics = config.entries.filter { $0.key.hasPrefix("net") && Int($0.key.dropFirst(3)) != nil }
            .sorted { $0.key < $1.key }
        for entry in nics {
            let index = entry.key.dropFirst(3)
            let nic = PropertyString(parsing: entry.value)
            line("lxc.net.\(index).type", "veth")
            line("lxc.net.\(index).veth.pair", "veth\(vmid)i\(index)")
            if let hwaddr = nic["hwaddr"] { line("lxc.net.\(index).hwaddr", hwaddr) }
            if let name = nic["name"] { line("lxc.net.\(index).name", name) }
            let bridge = nic["bridge"] ?? ""
            guard let bridgeMTU = host.bridgeMTUs[bridge] else { throw GenerationError("\(entry.key): bridge '\(bridge)' does not exist") }
            let mtu = nic["mtu"].flatMap { Int($0) } ?? bridgeMTU
            guard mtu <= bridgeMTU else { throw GenerationError("\(entry.key): MTU size '\(mtu)' is bigger than bridge MTU '\(bridgeMTU)'") }
            line("lxc.net.\(index).mtu", mtu)
            if host.lxcMajorVersion >= 4 { line("lxc.net.\(index).script.up", "/usr/share/lxc/lxcnetaddbr") }
            if nic["link_down"] != "1" && nic["host-managed"] == "1" {
                if let ip = nic["ip"], ip != "dhcp" && ip != "manual" { line("lxc.net.\(index).ipv4.address", ip) }
                if let gw = nic["gw"] { line("lxc.net.\(index).ipv4.gateway", gw) }
                if let ip6 = nic["ip6"] {
                    guard ip6 != "auto" else { throw GenerationError("\(entry.key): SLAAC is not supported for host-managed network configuration") }
                    if ip6 != "dhcp" && ip6 != "manual" { line("lxc.net.\(index).ipv6.address", ip6) }
                }
                if let gw6 = nic["gw6"] { line("lxc.net.\(index).ipv6.gateway", gw6) }
                line("lxc.net.\(index).flags", "up")
            }
        }
        if let environment = value("env") {
            for variable in environment.split(separator: "\0") where !variable.isEmpty { line("lxc.environment.runtime", variable) }
        }

        var hadCpuset = false
        for entry in raw {
            if entry.key == "lxc.cgroup2.cpuset.cpus" || entry.key == "lxc.cgroup.cpuset.cpus" { hadCpuset = true }
            line(entry.key, entry.value)
        }
        if !hadCpuset, let cores = value("cores").flatMap({ Int($0) }), cores > 0, !host.cpus.isEmpty {
            // Upstream drops random CPUs until `cores` remain; here the choice is rotated by VMID, so containers spread
            // over the CPUs and the same config always gives the same set (a plan does not change on its own).
            let sorted = host.cpus.sorted()
            let chosen = cores >= sorted.count ? sorted
                : (0..<cores).map { sorted[(vmid + $0) % sorted.count] }.sorted()
            line("\(cgroup).cpuset.cpus", Self.cpuList(chosen))
        }
        return LxcConfig(config: text, seccompRules: seccompRules, warnings: warnings)
    }

    /// `0-2,5`: runs of consecutive CPUs as ranges.
    static func cpuList(_ cpus: [Int]) -> String {
        var parts: [String] = []
        var index = 0
        while index < cpus.count {
            var end = index
            while end + 1 < cpus.count && cpus[end + 1] == cpus[end] + 1 { end += 1 }
            parts.append(end == index ? "\(cpus[index])" : "\(cpus[index])-\(cpus[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }
}
