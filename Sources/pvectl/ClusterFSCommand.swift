import ArgumentParser
import ClusterFS
import Foundation

/// Talks to a running pmxcfs over its IPC service, as Proxmox's tools do.
struct ClusterFSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cfs",
        abstract: "Read from a running pmxcfs through its IPC service.",
        discussion: """
        Examples:
          pvectl cfs get storage.cfg
          pvectl cfs info vmlist
          pvectl cfs log "hello from pvectl"
        """,
        subcommands: [Get.self, Info.self, Log.self]
    )

    struct ServiceOption: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("IPC service name.", valueName: "NAME"))
        var service: String = "pve2"

        func client() throws -> IPCClient {
            do { return try IPCClient(service: service) } catch {
                throw ValidationError("\(error) (is pmxcfs running?)")
            }
        }
    }

    static func finish(_ result: (Int32, [UInt8]), what: String) throws {
        guard result.0 == 0 else {
            FileHandle.standardError.write(Data("pvectl: \(what): \(String(cString: strerror(-result.0)))\n".utf8))
            throw ExitCode(1)
        }
        FileHandle.standardOutput.write(Data(result.1))
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a file of the tree (GET_CONFIG).")
        @OptionGroup var service: ServiceOption
        @Argument(help: "Path relative to /etc/pve.") var path: String
        func run() throws { try ClusterFSCommand.finish(try service.client().config(path), what: path) }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print version, members, vmlist or clusterlog as JSON.")
        @OptionGroup var service: ServiceOption
        @Argument(help: "version, members, vmlist or clusterlog") var what: String
        func run() throws {
            let client = try service.client()
            switch what {
            case "version": try ClusterFSCommand.finish(client.request(.getFSVersion), what: what)
            case "members": try ClusterFSCommand.finish(client.request(.getClusterInfo), what: what)
            case "vmlist": try ClusterFSCommand.finish(client.request(.getGuestList), what: what)
            case "clusterlog":
                try ClusterFSCommand.finish(client.request(.getClusterLog, body: [UInt8](repeating: 0, count: 16) + Array("root@pam".utf8) + [0]),
                                            what: what)
            default: throw ValidationError("expected version, members, vmlist or clusterlog")
            }
        }
    }

    struct Log: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a message to the cluster log (LOG_CLUSTER_MSG).")
        @OptionGroup var service: ServiceOption
        @Option(help: "Tag.") var tag = "pvectl"
        @Argument(help: "The message.") var message: String
        func run() throws {
            let ident = Array("root@pam".utf8) + [0]
            let tagBytes = Array(tag.utf8) + [0]
            let body = [UInt8(6), UInt8(ident.count), UInt8(tagBytes.count)] + ident + tagBytes + Array(message.utf8) + [0]
            try ClusterFSCommand.finish(try service.client().request(.logClusterMessage, body: body), what: "log")
        }
    }
}
