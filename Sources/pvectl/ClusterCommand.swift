import ArgumentParser
import Drivers
import Foundation
import Reconciler
import Resources

/// The cluster manager, with pvecm's commands and output.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "The cluster manager (pvecm's create, add/join, delnode, status, nodes, expected).",
        discussion: """
        `create NAME --link0 ADDRESS[,priority=N]` makes this node a cluster:
        corosync's key (corosync-keygen) and configuration, in /etc/pve and where
        pmxcfs's --corosync-conf says, corosync started, pmxcfs restarted out of
        local mode. `add NODE --link0 ADDRESS --out FILE`, on a member, puts a
        node into the nodelist (replicated; corosync reloads it everywhere) and
        writes the join bundle (it holds the cluster's key: move it like one);
        `join FILE` on the new node starts corosync with it and restarts pmxcfs
        on an empty database, keeping its own tree's database aside, so it takes
        the cluster's tree. `delnode NODE` removes a node (powered off for good)
        from the nodelist. corosync is started with --start-corosync COMMAND,
        else `systemctl restart corosync` under systemd, else `corosync`.

        `status` prints the cluster's corosync.conf (name, config version,
        transport, secure auth) and corosync's quorum, votequorum and membership
        information, as `pvecm status` does; `nodes` the members, as `pvecm
        nodes`; `expected VOTES` sets the expected votes (`pvecm expected 1`
        makes a lone node quorate on purpose). `--json` for scripts.
        corosync.conf itself is desired state: edit /etc/pve/corosync.conf and
        `pvectl plan --only corosync` shows the change and whether corosync
        reloads it or must restart.

        Examples:
          pvectl cluster create prod --link0 192.0.2.11
          pvectl cluster add pve2 --link0 192.0.2.12 --out pve2.join   (on pve1)
          pvectl cluster join pve2.join                                (on pve2)
          pvectl cluster status
          pvectl cluster nodes --json
          pvectl cluster delnode pve3
          pvectl cluster expected 1
          pvectl cluster qdevice setup 192.0.2.10
        """,
        subcommands: [Create.self, Add.self, Join.self, Delnode.self, Status.self, Nodes.self, Expected.self, Qdevice.self]
    )

    /// What the membership commands share.
    struct SetupOptions: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("The cluster file system's root.", valueName: "DIR"))
        var root: String = "/etc/pve"

        @Option(name: .long, help: ArgumentHelp("This node's name (default: short host name).", valueName: "NAME"))
        var node: String?

        @Option(name: .customLong("pmxcfs-pid-file"), help: ArgumentHelp("The running pmxcfs's pid file.", valueName: "FILE"))
        var pmxcfsPidFile: String = "/run/pve-cluster/pmxcfs.pid"

        @Option(name: .customLong("start-corosync"),
                help: ArgumentHelp("Shell command that starts corosync (default: systemctl restart corosync, or corosync).",
                                   valueName: "COMMAND"))
        var startCorosync: String?

        var setup: ClusterSetup {
            let host = ProcessInfo.processInfo.hostName
            return ClusterSetup(root: root, node: node ?? String(host.split(separator: ".").first ?? Substring(host)),
                                pmxcfsPidFile: pmxcfsPidFile, startCorosync: startCorosync)
        }
    }

    /// `--link0 ADDRESS[,priority=N]` ... `--link7`.
    struct LinkOptions: ParsableArguments {
        @Option(name: .customLong("link0"), help: ArgumentHelp("This node's address on link 0 (and priority=N).", valueName: "ADDRESS"))
        var link0: String?
        @Option(name: .customLong("link1"), help: .hidden) var link1: String?
        @Option(name: .customLong("link2"), help: .hidden) var link2: String?
        @Option(name: .customLong("link3"), help: .hidden) var link3: String?
        @Option(name: .customLong("link4"), help: .hidden) var link4: String?
        @Option(name: .customLong("link5"), help: .hidden) var link5: String?
        @Option(name: .customLong("link6"), help: .hidden) var link6: String?
        @Option(name: .customLong("link7"), help: .hidden) var link7: String?

        var links: [ClusterMembership.Link] {
            get throws {
                try [link0, link1, link2, link3, link4, link5, link6, link7].enumerated().compactMap { number, text in
                    try text.map { try ClusterMembership.Link(number: number, parsing: $0) }
                }
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make this node a new cluster (pvecm create).")
        @Argument(help: ArgumentHelp("The cluster's name (1-15 letters, digits, '-').", valueName: "NAME")) var name: String
        @OptionGroup var options: SetupOptions
        @OptionGroup var links: LinkOptions
        @Option(name: .long, help: "This node's id.") var nodeid: Int = 1
        @Option(name: .long, help: "This node's votes.") var votes: Int = 1

        func run() async throws {
            try await ClusterCommand.failing {
                try await options.setup.create(name: name, links: try links.links, nodeid: nodeid, votes: votes) { printOut($0 + "\n") }
                printOut("Cluster \(name) created. Add a node: pvectl cluster add NODE --link0 ADDRESS --out FILE, then on it: "
                         + "pvectl cluster join FILE\n")
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put a node into the cluster and write its join bundle (on a member).")
        @Argument(help: ArgumentHelp("The new node's name.", valueName: "NODE")) var newNode: String
        @OptionGroup var options: SetupOptions
        @OptionGroup var links: LinkOptions
        @Option(name: .long, help: "The new node's id (default: the next free one).") var nodeid: Int?
        @Option(name: .long, help: "The new node's votes.") var votes: Int = 1
        @Option(name: .long, help: ArgumentHelp("Where to write the join bundle (mode 0600).", valueName: "FILE")) var out: String

        func run() async throws {
            try await ClusterCommand.failing {
                // The bundle's file is made first (root alone reads it: it holds the key): the nodelist changes only then.
                let descriptor = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                guard descriptor >= 0, fchmod(descriptor, 0o600) == 0 else { throw ClusterSetup.Failure(description: "\(out): cannot create") }
                defer { close(descriptor) }
                let bundle = try options.setup.add(node: newNode, links: try links.links, nodeid: nodeid, votes: votes) { printOut($0 + "\n") }
                let text = Array(try bundle.encoded().utf8)
                guard write(descriptor, text, text.count) == text.count else { throw ClusterSetup.Failure(description: "\(out): cannot write") }
                printOut("note: the cluster waits for \(newNode) to join (its vote counts from now on)\n")
                printOut("Join bundle for \(newNode) in \(out) (it holds the cluster's key). On \(newNode): pvectl cluster join \(out)\n")
            }
        }
    }

    struct Join: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Join the cluster with a bundle from `pvectl cluster add` (on the new node).")
        @Argument(help: ArgumentHelp("The join bundle.", valueName: "FILE")) var bundle: String
        @OptionGroup var options: SetupOptions

        func run() async throws {
            try await ClusterCommand.failing {
                guard let text = try? String(contentsOfFile: bundle, encoding: .utf8) else {
                    throw ClusterSetup.Failure(description: "cannot read \(bundle)")
                }
                let decoded = try ClusterSetup.JoinBundle.decode(text)
                try await options.setup.join(decoded) { printOut($0 + "\n") }
                printOut("\(decoded.node) joined cluster \(decoded.cluster).\n")
            }
        }
    }

    struct Delnode: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a node from the cluster (pvecm delnode; power it off first).")
        @Argument(help: ArgumentHelp("The node to remove.", valueName: "NODE")) var name: String
        @OptionGroup var options: SetupOptions

        func run() async throws {
            try await ClusterCommand.failing { try options.setup.delnode(name) { printOut($0 + "\n") } }
        }
    }

    struct Qdevice: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A QDevice (corosync-qnetd) as an extra vote (pvecm qdevice setup/remove).",
            discussion: """
            `setup ADDRESS` reaches the QNetd host with ssh as root (key login and host key set up first, as pvecm needs) or
            --qnetd-command, initialises its database if it has none, has it sign this cluster's certificate, keeps the
            certificates in /etc/pve/priv/qdevice, adds `quorum { device { model: net ... } }` to corosync.conf and starts
            corosync-qdevice here. Every other node's `pvectl run` (or `pvectl apply --only corosync`) imports the
            certificates and starts its own: the device is desired state like the rest of corosync.conf. An odd number
            of nodes needs --force (algorithm lms instead of ffsplit), as does replacing this node's QDevice database.
            `remove` takes it out again.
            """,
            subcommands: [Setup.self, Remove.self])

        struct Setup: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add a QDevice at ADDRESS (the host running corosync-qnetd).")
            @Argument(help: ArgumentHelp("The QNetd server's address.", valueName: "ADDRESS")) var address: String
            @OptionGroup var options: SetupOptions
            @Option(name: .customLong("qnetd-command"),
                    help: ArgumentHelp("Command that runs a shell on the QNetd host, reading its script from standard input "
                                       + "(default: ssh -o BatchMode=yes -o ConnectTimeout=10 root@ADDRESS).", valueName: "COMMAND"))
            var qnetdCommand: String?
            @Flag(name: .long, help: "Set it up for an odd number of nodes too (algorithm lms); replace this node's QDevice database.")
            var force = false

            func validate() throws {
                let hostName = !address.isEmpty && address.allSatisfy { $0.isLetter || $0.isNumber || "-.".contains($0) }
                guard IPAddress.parse(address) != nil || hostName else { throw ValidationError("ADDRESS \(address): an IP address or a host name") }
            }

            func run() async throws {
                try await ClusterCommand.failing {
                    try await options.setup.qdeviceSetup(address: address, qnetdCommand: qnetdCommand, force: force) { printOut($0 + "\n") }
                }
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove the QDevice.")
            @OptionGroup var options: SetupOptions

            func run() async throws {
                try await ClusterCommand.failing { try await options.setup.qdeviceRemove { printOut($0 + "\n") } }
            }
        }
    }

    static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
    }

    /// Runs a cluster operation; what it refuses or fails at is said as an error (exit 1), not a trace.
    @discardableResult
    static func failing<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error where isSaid(error) {
            printError("error: \(error)")
            throw ExitCode(1)
        }
    }

    /// The failures the cluster commands say in a line (anything else is a bug, and shows as such).
    static func isSaid(_ error: any Error) -> Bool {
        error is ClusterManager.NotRunning || error is MissingExecutable || error is ClusterSetup.Failure
            || error is ClusterMembership.Failure || error is CommandError || error is HostCorosyncDriver.Failure
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

extension StatusCommand {
    /// One row per node of the cluster: its loop, last pass, the push revision it last saw and whether it converged.
    struct ClusterRow: Encodable {
        var node: String
        var loop: String
        var lastPassAt: Date?
        var pushed: String?
        var converged: Bool
        var detail: String

        enum CodingKeys: String, CodingKey {
            case node, loop, pushed, converged, detail
            case lastPassAt = "last_pass_at"
        }
    }

    func clusterStatus() throws {
        let root = options.tree.root
        guard let data = FileManager.default.contents(atPath: root + "/.members"),
              let members = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ValidationError("\(root) is not a pmxcfs mount (no .members): --cluster needs the cluster file system")
        }
        let nodes = ((members["nodelist"] as? [String: Any])?.keys.sorted()) ?? [members["nodename"] as? String].compactMap { $0 }
        let record: PushRecord? = (try? PushTarget(root: root).record()) ?? nil
        let current: String? = record.map { $0.revision.commit ?? $0.revision.digest }
        let reports = LoopPublisher(service: options.tree.ipcService).reports(nodes: nodes)
        let rows = nodes.map { node -> ClusterRow in
            guard let report = reports[node] else {
                return ClusterRow(node: node, loop: "-", lastPassAt: nil, pushed: nil, converged: false, detail: "no pvectl run publishes here")
            }
            let kinds = report.loop.kinds
            let outcomes = Set(kinds.values.map(\.outcome))
            let failing = kinds.values.contains { $0.failures > 0 }
            var loop = "Watching"
            if report.loop.stoppedAt != nil {
                loop = "Stopped"
            } else if outcomes.contains("held") {
                loop = "Held"
            } else if failing {
                loop = "Degraded"
            } else if outcomes.contains("blocked") {
                loop = "Blocked"
            }
            let waiting = report.loop.kindsAwaitingFirstPass.map { "\($0): first pass to come" }
            let detail = (kinds.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.outcome)" } + waiting).joined(separator: ", ")
            let converged = report.converged && (current == nil || report.pushed == current) && report.loop.stoppedAt == nil
            let lastPass: Date? = kinds.values.map { $0.lastPassAt }.max()
            return ClusterRow(node: node, loop: loop, lastPassAt: lastPass, pushed: report.pushed,
                              converged: converged, detail: detail)
        }
        if options.json {
            struct Report: Encodable {
                var pushed: String?
                var nodes: [ClusterRow]
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .iso8601
            printOut(String(decoding: try encoder.encode(Report(pushed: current, nodes: rows)), as: UTF8.self) + "\n")
            return
        }
        let formatter = ISO8601DateFormatter()
        if let revision = record?.revision { printOut("Pushed: \(revision.summary)\n\n") }
        let width = max(6, (rows.map { $0.node.count }.max() ?? 0) + 2)
        printOut("NODE".padding(toLength: width, withPad: " ", startingAt: 0) + "LOOP      LAST PASS             PUSHED        CONVERGED  DETAIL\n")
        for row in rows {
            printOut(row.node.padding(toLength: width, withPad: " ", startingAt: 0) + row.loop.padding(toLength: 10, withPad: " ", startingAt: 0)
                     + (row.lastPassAt.map { formatter.string(from: $0) } ?? "-").padding(toLength: 22, withPad: " ", startingAt: 0)
                     + (row.pushed.map { String($0.prefix(12)) } ?? "-").padding(toLength: 14, withPad: " ", startingAt: 0)
                     + (row.converged ? "yes" : "no").padding(toLength: 11, withPad: " ", startingAt: 0) + row.detail + "\n")
        }
        let done = rows.filter { $0.converged }.count
        printOut("\n\(done) of \(rows.count) node\(rows.count == 1 ? "" : "s") converged" + (current.map { " to \($0.prefix(12))" } ?? "") + ".\n")
    }
}
