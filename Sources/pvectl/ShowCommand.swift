import ArgumentParser
import Drivers
import Foundation
import Reconciler
import Resources

/// `pvectl showcmd VMID`: the QEMU command line of a VM config, like `qm showcmd`.
struct ShowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "showcmd",
        abstract: "Print the QEMU command line of a VM config (like qm showcmd).",
        discussion: """
        The profile says which host the command is for: pve-11 (default) is
        Proxmox VE with QEMU 11.0, the reference of upstream's tests; installed
        is this machine (its QEMU binary and version, KVM, vhost-net, CPU vendor,
        bridges, PCI devices). The flags override single facts of the profile.
        Custom CPU models come from <root>/virtual-guest/cpu-models.conf.

        Examples:
          pvectl showcmd 100 --pretty
          pvectl showcmd 100 --root ./pve --node pve1 --profile installed
          pvectl showcmd 8006 --qemu-version 9.0.0 --host-cpu-vendor AuthenticAMD
        """
    )

    @Argument(help: "The VM's ID (several: one command line each, in order).") var vmids: [Int]
    @OptionGroup var tree: TreeOptions

    @Flag(name: .long, help: "One option per line, as qm showcmd --pretty.") var pretty = false

    enum Profile: String, ExpressibleByArgument, CaseIterable { case pve11 = "pve-11", installed }

    @Option(name: .long, help: ArgumentHelp("pve-11 or installed.", valueName: "PROFILE")) var profile: Profile = .pve11
    @Option(name: .long, help: ArgumentHelp("The QEMU version to generate for.", valueName: "X.Y[.Z]")) var qemuVersion: String?
    @Option(name: .long, help: ArgumentHelp("The host architecture (x86_64, aarch64).", valueName: "ARCH")) var hostArch: String?
    @Option(name: .long, help: ArgumentHelp("GenuineIntel or AuthenticAMD.", valueName: "VENDOR")) var hostCpuVendor: String?
    @Option(name: .long, help: ArgumentHelp("Host capabilities: amd-turin-9005 or JSON "
                                                + "{\"amd-sev\": {cbitpos, reduced-phys-bits, sev-support-es, sev-support-snp}}.",
                                            valueName: "KEY|JSON"))
    var hwCapabilities: String?

    func run() async throws {
        guard !vmids.isEmpty else { throw ValidationError("give a VMID") }
        let state = DesiredState.load(root: tree.root, interfaces: nil, node: tree.nodeName, source: tree.source)
        var host = profile == .installed ? InstalledQemuHost.profile(nodeName: tree.nodeName) : QemuHostProfile.pve11(arch: hostArch ?? "x86_64")
        if let hostArch, profile == .installed { host.arch = hostArch }
        if let qemuVersion {
            guard let version = QemuVersion(qemuVersion) else { throw ValidationError("--qemu-version \(qemuVersion): expected X.Y or X.Y.Z") }
            host.qemuVersion = version
        }
        if let hostCpuVendor { host.cpuVendor = hostCpuVendor }
        if let hwCapabilities { host.sev = try Self.sev(hwCapabilities) }
        let cpuModels = state.cpuModels
        var failed = false
        for vmid in vmids {
            guard let guest = state.guests.first(where: { $0.vmid == vmid && $0.kind == .qemu && $0.node == tree.nodeName }) else {
                printError("Configuration file 'nodes/\(tree.nodeName)/qemu-server/\(vmid).conf' does not exist")
                throw ExitCode(2)
            }
            let command = QemuCommandLine(vmid: vmid, config: guest.config, storage: state.storage, host: host, cpuModels: cpuModels)
            do {
                let (arguments, warnings) = try command.build()
                for warning in warnings { printError(warning) }
                printOut(QemuCommandLine.render(arguments, pretty: pretty))
            } catch {
                printError(vmids.count > 1 ? "\(vmid): \(error)" : "\(error)")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }

    /// `amd-turin-9005`, `default`, or the JSON of one host's capabilities.
    static func sev(_ value: String) throws -> (cbitpos: Int, reducedPhysBits: Int, es: Bool, snp: Bool)? {
        switch value.lowercased() {
        case "amd-turin-9005": return (51, 6, true, true)
        case "default": return nil
        default:
            guard let object = try? JSONSerialization.jsonObject(with: Data(value.utf8)) as? [String: Any],
                  let sev = object["amd-sev"] as? [String: Any] else {
                throw ValidationError("--hw-capabilities: expected amd-turin-9005, default or JSON with an \"amd-sev\" object")
            }
            guard (sev["sev-support"] as? Bool) == true else { return nil }
            return (sev["cbitpos"] as? Int ?? 0, sev["reduced-phys-bits"] as? Int ?? 0,
                    sev["sev-support-es"] as? Bool ?? false, sev["sev-support-snp"] as? Bool ?? false)
        }
    }
}
