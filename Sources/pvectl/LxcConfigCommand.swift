import ArgumentParser
import Drivers
import Foundation
import Reconciler
import Resources

/// `pvectl lxc-config VMID`: a container's config (as `pct config` shows it) and the LXC config pvectl generates for
/// it on this node, without starting anything.
struct LxcConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lxc-config",
        abstract: "Print a container's config and the LXC config generated for it (like pct config, plus /var/lib/lxc/VMID/config).",
        discussion: """
        The LXC config is generated as pve-container's update_lxc_config writes
        it, for this node: LXC's version and shipped configs, the cgroup layout
        (lxc.cgroup2.* on a cgroup v2 host, lxc.cgroup.* on a v1 or hybrid one),
        the MTU of each NIC's bridge, the numbers of passed-through devices and
        the CPUs containers may use. --cgroup overrides the layout.

        Examples:
          pvectl lxc-config 200
          pvectl lxc-config 200 --root ./pve --node pve1 --cgroup v2
        """
    )

    @Argument(help: "The container's ID.") var vmid: Int
    @OptionGroup var tree: TreeOptions

    @Option(name: .long, help: ArgumentHelp("Generate for this cgroup layout instead of this node's.", valueName: "v1|v2"))
    var cgroup: String?

    func validate() throws {
        if let cgroup, LxcHostFacts.CgroupLayout(rawValue: cgroup) == nil { throw ValidationError("--cgroup \(cgroup): expected v1 or v2") }
    }

    func run() async throws {
        let state = DesiredState.load(root: tree.root, interfaces: nil, node: tree.nodeName, source: tree.source)
        guard let guest = state.localGuests.first(where: { $0.kind == .lxc && $0.vmid == vmid }) else {
            throw ValidationError("no container \(vmid) on node \(tree.nodeName) under \(tree.root)")
        }
        for problem in state.diagnostics where problem.location.file == guest.path { printError(problem.description) }
        let config = guest.config.main
        let nics = config.entries.filter { $0.key.hasPrefix("net") && Int($0.key.dropFirst(3)) != nil }.map { PropertyString(parsing: $0.value) }
        let devices = config.entries.filter { $0.key.hasPrefix("dev") && Int($0.key.dropFirst(3)) != nil }
            .compactMap { PropertyString(parsing: $0.value).bareValue ?? PropertyString(parsing: $0.value)["path"] }
        var facts = try await InstalledLxcHost.facts(bridges: nics.compactMap { $0["bridge"] }, devicePaths: devices)
        if let cgroup, let layout = LxcHostFacts.CgroupLayout(rawValue: cgroup) { facts.cgroupLayout = layout }
        // Without `arch`, the architecture is read from the root file system's /bin/sh when it is a directory here.
        var arch = "amd64"
        if config.entry("arch") == nil, let storageFile = state.storage {
            let storages = StorageDesiredState.storagesByID(StorageDesiredState.storages(from: storageFile, node: tree.nodeName).storages)
            let rootfs = StorageDesiredState.volumes(of: guest, storages: storages).volumes.first { $0.key == "rootfs" }
            if let rootfs, let detected = LxcGuestSetup.detectArch(HostContainerFiles(root: rootfs.hostPath)) { arch = detected }
        }
        let generated = try LxcConfig.generate(vmid: vmid, config: config, host: facts, arch: arch)
        for warning in generated.warnings { printError("warning: \(warning)") }
        printOut(config.entries.map { "\($0.key): \($0.value)\n" }.joined())
        printOut("\n# /var/lib/lxc/\(vmid)/config\n" + generated.config)
        if let rules = generated.seccompRules { printOut("\n# /var/lib/lxc/\(vmid)/rules.seccomp\n" + rules) }
    }
}

/// `pvectl lxc-hook`: what LXC runs as the pre-start hook and NIC up script of a container pvectl started.
struct LxcHookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lxc-hook", abstract: "Run by LXC while it starts a container pvectl configured (not for people).", shouldDisplay: false)

    @Argument(parsing: .allUnrecognized) var arguments: [String] = []

    func run() async throws {
        do {
            try await LxcStartHook.run(arguments: arguments, environment: ProcessInfo.processInfo.environment)
        } catch {
            printError("pvectl lxc-hook: \(error)")
            throw ExitCode(1)
        }
    }
}
