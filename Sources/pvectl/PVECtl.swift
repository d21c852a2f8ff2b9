import ArgumentParser
import Foundation
import Reconciler
import Resources
import Synchronization

@main
struct PVECtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pvectl",
        abstract: "Declarative reconciler for Proxmox VE-style hosts.",
        discussion: """
        Desired state lives in /etc/pve (storage.cfg, guest .conf files, firewall
        .fw files) and /etc/network/interfaces, in Proxmox VE's own formats.
        """,
        subcommands: [Validate.self, Format.self, PlanCommand.self, ApplyCommand.self, RunCommand.self, StatusCommand.self, PushCommand.self,
                      ShowCommand.self,
                      LxcConfigCommand.self, LxcHookCommand.self, FirewallCommand.self, ClusterFSCommand.self,
                      ClusterCommand.self]
    )
}

/// Options every command that reads a desired-state tree shares.
private let announcedIPC = Mutex(false)

struct TreeOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Desired-state root: a plain directory or a mounted cluster file system.", valueName: "DIR"))
    var root: String = "/etc/pve"

    @Option(name: .long, help: ArgumentHelp("The node's network configuration (interfaces.new beside it is used when present).", valueName: "FILE"))
    var interfaces: String = "/etc/network/interfaces"

    @Option(name: .long, help: ArgumentHelp("Node name (default: short host name).", valueName: "NAME"))
    var node: String?

    @Option(name: .long, help: ArgumentHelp("When --root is a pmxcfs mount, read it through this IPC service.", valueName: "NAME"))
    var ipcService: String = "pve2"

    /// Plain files, or the pmxcfs IPC service when the root is its mount and it answers.
    var source: any TreeSource { Self.source(root: root, ipcService: ipcService, node: nodeName) }

    static func source(root: String, ipcService: String, node: String) -> any TreeSource {
        if let ipc = IPCTreeSource(root: root, service: ipcService, node: node) {
            // Said once per process: the loop loads the tree on every pass.
            announcedIPC.withLock { announced in
                if !announced { FileHandle.standardError.write(Data("reading \(root) through the pmxcfs IPC service \(ipcService)\n".utf8)) }
                announced = true
            }
            return ipc
        }
        return FileTreeSource()
    }

    var nodeName: String {
        if let node { return node }
        let host = ProcessInfo.processInfo.hostName
        return String(host.split(separator: ".").first ?? Substring(host))
    }

    /// - Parameter digests: whether to hash every input (a saved plan needs them; validate does not).
    func load(digests: Bool = true) throws -> DesiredState {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("--root \(root) is not a directory")
        }
        return DesiredState.load(root: root, interfaces: interfaces, node: nodeName, source: source, digests: digests)
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a whole desired-state tree and print every problem.",
        discussion: """
        Prints one line per problem as `path:line:column: error: message` and
        exits 0 when there is no error, 1 otherwise (warnings do not fail).

        Examples:
          pvectl validate
          pvectl validate --root examples/homelab --interfaces examples/homelab/network/interfaces --node pve1
        """
    )

    @OptionGroup var tree: TreeOptions

    @Flag(name: .long, help: "Print only errors, not warnings.")
    var quiet = false

    func run() throws {
        let state = try tree.load(digests: false)
        let diagnostics = TreeValidator.validate(state)
        var output = ""
        for diagnostic in diagnostics where !(quiet && diagnostic.severity == .warning) {
            output += diagnostic.description + "\n"
        }
        FileHandle.standardOutput.write(Data(output.utf8))
        let errors = diagnostics.filter { $0.severity == .error }.count
        let warnings = diagnostics.count - errors
        let files = state.filesRead
        FileHandle.standardError.write(Data(("\(errors) error\(errors == 1 ? "" : "s"), \(warnings) warning\(warnings == 1 ? "" : "s") "
                                             + "in \(files) file\(files == 1 ? "" : "s")\n").utf8))
        if errors > 0 { throw ExitCode(1) }
    }
}
