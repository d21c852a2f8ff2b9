import Foundation
import Reconciler

/// The `installed` QEMU host profile: what this machine really has — the
/// QEMU binary and its version, the architecture and CPU vendor, KVM and
/// vhost-net, the iSCSI initiator name, bridge MTUs and PCI devices.
public enum InstalledQemuHost {
    public static func profile(nodeName: String) -> QemuHostProfile {
        var uts = utsname()
        uname(&uts)
        let machine = withUnsafeBytes(of: &uts.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let arch = machine == "arm64" ? "aarch64" : machine
        let binary = ["/usr/bin/kvm", "/usr/bin/qemu-system-\(arch)"].first { FileManager.default.isExecutableFile(atPath: $0) }
            ?? "/usr/bin/qemu-system-\(arch)"
        var profile = QemuHostProfile(
            qemuVersion: version(of: binary) ?? QemuVersion(0, 0), arch: arch, cpuVendor: cpuVendor() ?? "GenuineIntel",
            nodeName: nodeName, iscsiInitiator: iscsiInitiator(), kvmAvailable: FileManager.default.fileExists(atPath: "/dev/kvm"),
            vhostNet: FileManager.default.fileExists(atPath: "/dev/vhost-net"), cpuCount: ProcessInfo.processInfo.activeProcessorCount,
            bridgeMTU: bridgeMTUs()) { target in
                target == arch ? binary : "/usr/bin/qemu-system-\(target)"
            }
        if !FileManager.default.isExecutableFile(atPath: binary) {
            let package = "qemu-system-\(arch == "x86_64" ? "x86" : arch)"
            profile.missingQEMU = "\((binary as NSString).lastPathComponent) is not installed (Debian package \(package))"
        }
        profile.pciDevices = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/bus/pci/devices"))?.sorted() ?? []
        profile.isCharacterDevice = { path in
            var info = stat()
            return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFCHR
        }
        profile.proxmoxQEMU = versionText(of: binary).contains("pve")
        if !FileManager.default.fileExists(atPath: profile.bootSplash ?? "") { profile.bootSplash = nil }
        profile.bridgeScripts = FileManager.default.isExecutableFile(atPath: "/usr/libexec/qemu-server/pve-bridge")
        if !FileManager.default.fileExists(atPath: profile.machineConfigDirectory + "/pve-q35-4.0.cfg") {
            // QemuProcessDriver writes the layouts there before a start.
            profile.machineConfigDirectory = "/var/run/qemu-server"
        }
        return profile
    }

    /// `QEMU emulator version 7.2.22 (Debian ...)` → 7.2.22.
    static func version(of binary: String) -> QemuVersion? {
        let text = versionText(of: binary)
        guard let range = text.range(of: "version ") else { return nil }
        let word = text[range.upperBound...].prefix { $0.isNumber || $0 == "." }
        return QemuVersion(String(word))
    }

    static func versionText(of binary: String) -> String {
        DetachedProcess.capture([binary, "--version"]) ?? ""
    }

    static func cpuVendor() -> String? {
        guard let text = readProcFile("/proc/cpuinfo") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("vendor_id") {
            return line.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    static func iscsiInitiator() -> String? {
        guard let text = try? String(contentsOfFile: "/etc/iscsi/initiatorname.iscsi", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("InitiatorName=") { return String(trimmed.dropFirst("InitiatorName=".count)) }
        }
        return nil
    }

    static func bridgeMTUs() -> [String: Int] {
        var result: [String: Int] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/net")) ?? [] {
            guard FileManager.default.fileExists(atPath: "/sys/class/net/\(name)/bridge"),
                  let text = try? String(contentsOfFile: "/sys/class/net/\(name)/mtu", encoding: .utf8),
                  let mtu = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { continue }
            result[name] = mtu
        }
        return result
    }
}
