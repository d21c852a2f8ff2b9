import Foundation
import Reconciler
import Resources

/// What LXC runs as pvectl while it starts a container (`pvectl lxc-hook`), as pve-container's pre-start hook and
/// `lxcnetaddbr` do: in the monitor's own mount namespace (`lxc.monitor.unshare`), so what it mounts goes when the
/// container stops.
public enum LxcStartHook {
    /// The start spec beside the LXC config.
    public static let specFile = "pvectl-start.json"
    /// Why the last hook failed, for the start's error message (LXC's log only says that the hook failed).
    public static let errorFile = "pvectl-hook.error"

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// `arguments` as LXC passes them: `NAME lxc pre-start`, or `NAME net up veth DEVICE` for a NIC's up script.
    public static func run(arguments: [String], environment: [String: String]) async throws {
        guard let configFile = environment["LXC_CONFIG_FILE"] else {
            throw Failure(description: "lxc-hook: run by LXC only (LXC_CONFIG_FILE is not set)")
        }
        let directory = (configFile as NSString).deletingLastPathComponent
        try? FileManager.default.removeItem(atPath: directory + "/" + errorFile)
        do {
            let spec = try JSONDecoder().decode(ContainerStartSpec.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/" + specFile)))
            switch Array(arguments.dropFirst()) {
            case ["lxc", "pre-start"]:
                try await preStart(spec, rootfs: environment["LXC_ROOTFS_PATH"] ?? directory + "/rootfs")
            case let words where words.count >= 4 && words[0] == "net" && words[1] == "up":
                guard let nic = spec.nics.first(where: { $0.veth == words[3] }) else {
                    throw Failure(description: "no NIC of container \(spec.vmid) has the host end \(words[3])")
                }
                try? Data("1".utf8).write(to: URL(fileURLWithPath: "/proc/sys/net/ipv6/conf/\(nic.veth)/disable_ipv6"))
                try await GuestHost.attach(device: nic.veth, bridge: nic.bridge, tag: nic.tag)
                if nic.rate != nil {
                    try await GuestHost.setRate(device: nic.veth, rate: nic.rate, ingress: await InstalledLxcHost.ingressPolicing)
                }
            default:
                break
            }
        } catch {
            try? Data("\(error)".utf8).write(to: URL(fileURLWithPath: directory + "/" + errorFile))
            throw error
        }
    }

    static func preStart(_ spec: ContainerStartSpec, rootfs: String) async throws {
        guard let root = spec.mounts.first, root.path == "/" else { throw Failure(description: "the start spec has no rootfs") }
        try await mount(root, at: rootfs)
        if !LxcToolDriver.holdsData(directory: rootfs) {
            guard let template = spec.template else {
                throw Failure(description: "the rootfs \(root.source) is empty and the config names no OS template")
            }
            try await populate(rootfs, from: template, unprivileged: spec.unprivileged)
        }
        let owner: (uid: uid_t, gid: gid_t)? = spec.unprivileged ? (100_000, 100_000) : nil
        let files = HostContainerFiles(root: rootfs, owner: owner)
        for mountPoint in spec.mounts.dropFirst() {
            try files.makeDirectory(mountPoint.path, mode: 0o755)
            guard let target = files.hostPath(of: mountPoint.path) else {
                throw Failure(description: "\(mountPoint.key): \(mountPoint.path) cannot be resolved inside the container")
            }
            try await mount(mountPoint, at: target)
        }
        let (config, _) = GuestConfig.parse(spec.guestConfig, file: "lxc/\(spec.vmid).conf", kind: .lxc)
        let resolv = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        var nameservers: [String] = []
        var searchDomains: [String] = []
        for line in resolv.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            if words.first == "nameserver", words.count > 1, nameservers.count < 3 { nameservers.append(words[1]) }
            if words.first == "search" { searchDomains = Array(words.dropFirst()) }
        }
        let setup = try LxcGuestSetup(config: config.main, files: files)
        try setup.preStart(LxcGuestSetup.Environment(nameservers: nameservers, searchDomains: searchDomains,
                                                     days: Int(Date().timeIntervalSince1970 / 86_400)))
    }

    static func mount(_ mount: ContainerMount, at target: String) async throws {
        switch mount.type {
        case .directory, .bind:
            guard FileManager.default.fileExists(atPath: mount.source) else {
                throw Failure(description: "\(mount.key): \(mount.source) does not exist")
            }
            try await Command.check(["mount", "--bind", mount.source, target])
            if mount.readOnly { try await Command.check(["mount", "-o", "remount,bind,ro", target]) }
        case .image:
            try await Command.check(["mount", "-o", mount.readOnly ? "loop,ro" : "loop", mount.source, target])
        case .block:
            try await Command.check(["mount"] + (mount.readOnly ? ["-o", "ro"] : []) + [mount.source, target])
        }
    }

    /// Extracts an OS template as `pct create` does (devices left to LXC); for an unprivileged container inside its
    /// user namespace, so every file is owned by the mapped ids (root is 100000 on the host).
    static func populate(_ rootfs: String, from template: String, unprivileged: Bool) async throws {
        guard FileManager.default.fileExists(atPath: template) else { throw Failure(description: "the OS template \(template) is missing") }
        // tar runs the decompressor the suffix names: a missing one is named, not a tar error.
        let decompressors = [".zst": "zstd", ".xz": "xz", ".bz2": "bzip2", ".gz": "gzip"]
        if let tool = decompressors.first(where: { template.hasSuffix($0.key) })?.value, Command.locate(tool) == nil {
            throw MissingExecutable(name: tool)
        }
        let tar = ["tar", "-xpf", template, "-C", rootfs, "--numeric-owner", "--anchored", "--exclude", "./dev/*"]
        if unprivileged {
            guard chown(rootfs, 100_000, 100_000) == 0 else { throw Failure(description: "cannot give \(rootfs) to uid 100000") }
            try await Command.check(["lxc-usernsexec", "-m", "u:0:100000:65536", "-m", "g:0:100000:65536", "--"] + tar)
        } else {
            try await Command.check(tar)
        }
    }
}
