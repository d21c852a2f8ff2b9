import Foundation
import Reconciler

/// This machine as the LXC config generation needs it: LXC's version and shipped configs, the cgroup layout, bridge
/// MTUs, device numbers, the CPUs containers may use, and the kernel's seccomp notification support.
public enum InstalledLxcHost {
    /// The facts for a container whose NICs name `bridges` and whose `devN` name `devicePaths`; LXC's absence is an
    /// error naming its package.
    public static func facts(bridges: [String], devicePaths: [String]) async throws -> LxcHostFacts {
        guard Command.locate("lxc-start") != nil else { throw MissingExecutable(name: "lxc-start") }
        let version = try await Command.check(["lxc-start", "--version"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let configDirectory = "/usr/share/lxc/config"
        let shipped = Set((try? FileManager.default.contentsOfDirectory(atPath: configDirectory)) ?? [])
        var mtus: [String: Int] = [:]
        for bridge in bridges {
            if let text = try? String(contentsOfFile: "/sys/class/net/\(bridge)/mtu", encoding: .utf8), let mtu = Int(text.trimmed) {
                mtus[bridge] = mtu
            }
        }
        var devices: [String: LxcHostFacts.Device] = [:]
        for path in devicePaths {
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFCHR || (info.st_mode & S_IFMT) == S_IFBLK else { continue }
            // glibc's major()/minor() are macros Swift does not import: Linux's dev_t split, spelled out.
            let device = UInt64(info.st_rdev)
            let major = UInt32(truncatingIfNeeded: ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff)))
            let minor = UInt32(truncatingIfNeeded: (device & 0xff) | ((device >> 12) & ~UInt64(0xff)))
            devices[path] = LxcHostFacts.Device(isBlock: (info.st_mode & S_IFMT) == S_IFBLK, major: major, minor: minor)
        }
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let kernel = release.split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        return LxcHostFacts(lxcMajorVersion: Int(version.prefix { $0.isNumber }) ?? 0, configDirectory: configDirectory,
                            shippedConfigs: shipped, cgroupLayout: cgroupLayout, bridgeMTUs: mtus, devices: devices, cpus: cpus,
                            commonSeccomp: try? String(contentsOfFile: configDirectory + "/common.seccomp", encoding: .utf8),
                            seccompNotify: kernel.count == 2 && (kernel[0], kernel[1]) >= (5, 3), ingressPolicing: await ingressPolicing)
    }

    /// act_police loaded, or loadable.
    static var ingressPolicing: Bool {
        get async {
            if FileManager.default.fileExists(atPath: "/sys/module/act_police") { return true }
            return (try? await Command.run(["modprobe", "--dry-run", "act_police"]))?.succeeded ?? false
        }
    }

    /// v2 when the unified hierarchy holds the memory controller (a pure cgroup v2 host), else v1.
    static var cgroupLayout: LxcHostFacts.CgroupLayout {
        let controllers = (try? String(contentsOfFile: "/sys/fs/cgroup/cgroup.controllers", encoding: .utf8)) ?? ""
        return controllers.split(separator: " ").contains { $0.trimmingCharacters(in: .whitespacesAndNewlines) == "memory" } ? .v2 : .v1
    }

    /// The CPUs of the `lxc` cpuset (or the root one), from whichever layout has them.
    static var cpus: [Int] {
        let candidates = ["/sys/fs/cgroup/cpuset/lxc/cpuset.effective_cpus", "/sys/fs/cgroup/cpuset/cpuset.effective_cpus",
                          "/sys/fs/cgroup/lxc/cpuset.cpus.effective", "/sys/fs/cgroup/cpuset.cpus.effective"]
        for path in candidates {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8), !text.trimmed.isEmpty else { continue }
            return text.trimmed.split(separator: ",").flatMap { part -> [Int] in
                let bounds = part.split(separator: "-").compactMap { Int($0) }
                return bounds.count == 2 ? Array(bounds[0]...bounds[1]) : bounds
            }
        }
        return []
    }
}

extension String {
    fileprivate var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
