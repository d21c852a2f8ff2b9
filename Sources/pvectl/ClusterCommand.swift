import ArgumentParser
import Drivers
import Foundation
import Reconciler
import Resources

/// The cluster manager, with pvecm's commands and output.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "The cluster manager (pvecm's status, nodes and expected).",
        discussion: """
        `status` prints the cluster's corosync.conf (name, config version,
        transport, secure auth) and corosync's quorum, votequorum and membership
        information, as `pvecm status` does; `nodes` the members, as `pvecm
        nodes`; `expected VOTES` sets the expected votes (`pvecm expected 1`
        makes a lone node quorate on purpose). `--json` for scripts.
        corosync.conf itself is desired state: edit /etc/pve/corosync.conf and
        `pvectl plan --only corosync` shows the change and whether corosync
        reloads it or must restart.

        Examples:
          pvectl cluster status
          pvectl cluster nodes --json
          pvectl cluster expected 1
        """,
        subcommands: [Status.self, Nodes.self, Expected.self]
    )

    static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
    }

    static func failing<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as ClusterManager.NotRunning {
            printError("error: \(error)")
            throw ExitCode(1)
        } catch let error as MissingExecutable {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The cluster's configuration, quorum and members (pvecm status).")

        @Option(name: .long, help: ArgumentHelp("Where the cluster's corosync.conf is.", valueName: "DIR"))
        var root: String = "/etc/pve"

        @Flag(name: .long, help: "Machine-readable JSON output.")
        var json = false

        struct Report: Encodable {
            struct Cluster: Encodable {
                var name: String?
                var configVersion: UInt64?
                var transport: String
                var secureAuth: String

                enum CodingKeys: String, CodingKey {
                    case name, transport
                    case configVersion = "config_version"
                    case secureAuth = "secure_auth"
                }
            }

            var cluster: Cluster?
            var quorum: QuorumStatus
        }

        func run() async throws {
            let text = try? String(contentsOfFile: root + "/corosync.conf", encoding: .utf8)
            let config = text.map { CorosyncConfig.parse($0, file: root + "/corosync.conf").0 }
            let cluster = config.map { config in
                Report.Cluster(name: config.totem?["cluster_name"], configVersion: config.totem?["config_version"].flatMap { UInt64($0) },
                               transport: config.totem?["transport"] ?? "knet", secureAuth: config.totem?["secauth"] ?? "on")
            }
            let (output, parsed) = try await ClusterCommand.failing { try await ClusterManager.status() }
            if json {
                printOut(try ClusterCommand.json(Report(cluster: cluster, quorum: parsed)))
                return
            }
            if let cluster {
                printOut("Cluster information\n-------------------\n"
                         + "Name:             \(cluster.name ?? "-")\n"
                         + "Config Version:   \(cluster.configVersion.map(String.init) ?? "-")\n"
                         + "Transport:        \(cluster.transport)\n"
                         + "Secure auth:      \(cluster.secureAuth)\n\n")
            } else {
                printError("note: \(root)/corosync.conf does not exist: this node's tree names no cluster")
            }
            printOut(output)
        }
    }

    struct Nodes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The cluster's members (pvecm nodes).")

        @Flag(name: .long, help: "Machine-readable JSON output.")
        var json = false

        func run() async throws {
            let (output, members) = try await ClusterCommand.failing { try await ClusterManager.nodes() }
            printOut(json ? try ClusterCommand.json(members) : output)
        }
    }

    struct Expected: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set the expected votes (pvecm expected).",
            discussion: "Lowering it below the votes of the nodes that are up makes a partition quorate: do it on one side only.")

        @Argument(help: ArgumentHelp("Expected votes (at least 1).", valueName: "VOTES"))
        var votes: Int

        func validate() throws {
            guard votes >= 1 else { throw ValidationError("VOTES \(votes): at least 1") }
        }

        func run() async throws {
            try await ClusterCommand.failing { try await ClusterManager.setExpected(votes) }
        }
    }
}
