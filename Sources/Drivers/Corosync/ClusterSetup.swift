import Foundation
import Reconciler
import Resources

/// Creating a cluster and joining nodes, as `pvecm create` / `pvecm add` do: corosync's key and configuration written,
/// corosync started, and the node's pmxcfs restarted out of local mode (it then reads the cluster's tree).
public struct ClusterSetup: Sendable {
    /// The cluster file system's root (/etc/pve).
    public var root: String
    /// This node's name.
    public var node: String
    /// The running pmxcfs's pid file: its command line says where corosync's files go and how to start it again.
    public var pmxcfsPidFile: String
    /// How corosync is started: a shell command, or nil for `systemctl restart corosync` under systemd, else `corosync`.
    public var startCorosync: String?

    public init(root: String, node: String, pmxcfsPidFile: String, startCorosync: String?) {
        self.root = root
        self.node = node
        self.pmxcfsPidFile = pmxcfsPidFile
        self.startCorosync = startCorosync
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// What a joining node needs, handed over by the operator (it holds the cluster's key: keep it like one).
    public struct JoinBundle: Codable, Sendable {
        public var cluster: String
        public var node: String
        public var config: String
        public var authkey: String

        public func encoded() throws -> String { try JSONEncoder().encode(self).base64EncodedString() + "\n" }

        public static func decode(_ text: String) throws -> JoinBundle {
            guard let data = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  let bundle = try? JSONDecoder().decode(JoinBundle.self, from: data) else {
                throw Failure(description: "not a join bundle made by `pvectl cluster add`")
            }
            return bundle
        }
    }

    /// The running pmxcfs: pid and command line.
    func pmxcfs() throws -> (pid: pid_t, arguments: [String]) {
        guard let text = try? String(contentsOfFile: pmxcfsPidFile, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, 0) == 0,
              let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
            throw Failure(description: "pmxcfs is not running (no live pid in \(pmxcfsPidFile))")
        }
        let arguments = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        // A pid file left by a pmxcfs that died may name another process by now: that one is not ours to stop.
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? arguments.first ?? ""
        guard (executable as NSString).lastPathComponent.hasPrefix("pmxcfs") else {
            throw Failure(description: "\(pmxcfsPidFile) names pid \(pid), which is \(executable), not pmxcfs")
        }
        return (pid, arguments)
    }

    static func option(_ name: String, in arguments: [String]) -> String? {
        if let index = arguments.firstIndex(of: name), index + 1 < arguments.count { return arguments[index + 1] }
        return arguments.first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
    }

    /// Where corosync reads its configuration (pmxcfs's `--corosync-conf`); its key lives beside it.
    func corosyncFiles(_ arguments: [String]) -> (config: String, authkey: String) {
        let config = Self.option("--corosync-conf", in: arguments) ?? "/etc/corosync/corosync.conf"
        return (config, (config as NSString).deletingLastPathComponent + "/authkey")
    }

    /// Written atomically; outside pmxcfs (which sets its own modes) with `mode`.
    func write(_ data: Data, to path: String, mode: mode_t) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try PushTarget(root: "/").writeAtomically(data, to: path)
        if !path.hasPrefix(root + "/") { chmod(path, mode) }
    }

    /// Starts corosync and waits (bounded) until it answers.
    func startCorosync(progress: (String) -> Void) async throws {
        if let command = startCorosync {
            try await Command.check(["/bin/sh", "-c", command])
        } else if HostCorosyncDriver.underSystemd {
            try await Command.check(["systemctl", "restart", "corosync"])
        } else {
            try await Command.check(["corosync"])
        }
        for _ in 0..<300 {
            if let result = try? await Command.run(["corosync-quorumtool", "-s"]), result.output.contains("Quorum information") {
                progress("corosync runs")
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure(description: "corosync did not answer within 30 s")
    }

    /// Stops pmxcfs (SIGTERM, waits for it), runs `between`, and starts it again without --local; waits until its tree
    /// is mounted in cluster mode.
    func restartPmxcfs(_ running: (pid: pid_t, arguments: [String]), between: () throws -> Void, progress: (String) -> Void) async throws {
        kill(running.pid, SIGTERM)
        for _ in 0..<300 where Self.isAlive(running.pid) { try await Task.sleep(for: .milliseconds(100)) }
        guard !Self.isAlive(running.pid) else { throw Failure(description: "pmxcfs (pid \(running.pid)) did not stop within 30 s") }
        // Its mount goes with it; one left behind (a daemon that could not unmount) is taken away before the restart.
        let mountPoint = Self.option("--mount", in: running.arguments) ?? root
        for _ in 0..<100 where Self.isMounted(mountPoint) { try await Task.sleep(for: .milliseconds(100)) }
        if Self.isMounted(mountPoint) { _ = try? await Command.run(["umount", "-l", mountPoint]) }
        // What it says before it detaches (or all of it in the foreground) is kept in its run directory.
        let log = (Self.option("--run-dir", in: running.arguments) ?? "/run/pve-cluster") + "/pmxcfs-restart.log"
        do {
            try between()
        } catch {
            // /etc/pve must not stay away: pmxcfs comes back as it was.
            _ = try? DetachedProcess.spawn(running.arguments, log: log)
            throw error
        }
        let arguments = running.arguments.filter { $0 != "--local" && $0 != "-l" }
        _ = try DetachedProcess.spawn(arguments, log: log)
        for _ in 0..<300 {
            if let members = try? String(contentsOfFile: root + "/.members", encoding: .utf8), members.contains("\"cluster\"") {
                progress("pmxcfs runs in cluster mode")
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let said = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").suffix(5).joined(separator: "; ") ?? ""
        throw Failure(description: "pmxcfs did not come back in cluster mode within 30 s (\(log): \(said))")
    }

    /// Whether something is mounted exactly at `path` (this process's mount table, its escapes undone).
    static func isMounted(_ path: String) -> Bool {
        HostStorageDriver.mounts().contains { $0.target == path }
    }

    /// Running, not a zombie its parent has yet to reap.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return true }
        return !stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// `pvecm create`: a new cluster of this node.
    public func create(name: String, links: [ClusterMembership.Link], nodeid: Int, votes: Int, progress: (String) -> Void) async throws {
        guard !FileManager.default.fileExists(atPath: root + "/corosync.conf") else {
            throw Failure(description: "\(root)/corosync.conf exists: this node is in a cluster already")
        }
        let running = try pmxcfs()
        let files = corosyncFiles(running.arguments)
        if FileManager.default.fileExists(atPath: files.authkey) {
            throw Failure(description: "\(files.authkey) exists: corosync is set up on this node already")
        }
        let config = try ClusterMembership.newCluster(name: name, node: node, links: links, nodeid: nodeid, votes: votes)
        try await Command.check(["corosync-keygen", "-k", files.authkey])
        guard let key = FileManager.default.contents(atPath: files.authkey) else { throw Failure(description: "cannot read \(files.authkey)") }
        try write(key, to: root + "/priv/authkey.key", mode: 0o600)
        try write(Data(config.utf8), to: root + "/corosync.conf", mode: 0o640)
        try write(Data(config.utf8), to: files.config, mode: 0o644)
        progress("wrote \(root)/corosync.conf and \(files.config); the cluster's key is \(files.authkey) (and \(root)/priv/authkey.key)")
        try await startCorosync(progress: progress)
        try await restartPmxcfs(running, between: {}, progress: progress)
    }

    /// The cluster's corosync.conf from the tree; `missing` says what to do when there is none.
    func clusterConfig(missing: String = "not a cluster") throws -> CorosyncConfig {
        guard let text = try? String(contentsOfFile: root + "/corosync.conf", encoding: .utf8) else {
            throw Failure(description: "\(root)/corosync.conf does not exist: \(missing)")
        }
        return CorosyncConfig.parse(text, file: root + "/corosync.conf").0
    }

    /// `pvecm add`, the member's half: the node written into the nodelist (replicated, reloaded by corosync everywhere),
    /// and the bundle the new node joins with.
    public func add(node newNode: String, links: [ClusterMembership.Link], nodeid: Int?, votes: Int,
                    progress: (String) -> Void) throws -> JoinBundle {
        let config = try clusterConfig(missing: "create the cluster first")
        guard let key = FileManager.default.contents(atPath: root + "/priv/authkey.key") else {
            throw Failure(description: "\(root)/priv/authkey.key is missing: the cluster's key is needed to join")
        }
        let updated = try ClusterMembership.adding(node: newNode, links: links, nodeid: nodeid, votes: votes, to: config, standingOn: node)
        try write(Data(updated.utf8), to: root + "/corosync.conf", mode: 0o640)
        progress("added \(newNode) to \(root)/corosync.conf")
        return JoinBundle(cluster: config.totem?["cluster_name"] ?? "", node: newNode, config: updated, authkey: key.base64EncodedString())
    }

    /// `pvecm add`, the new node's half: its own tree's database kept aside, corosync's key and configuration written,
    /// corosync started, pmxcfs started out of local mode on an empty database: it takes the cluster's tree.
    public func join(_ bundle: JoinBundle, progress: (String) -> Void) async throws {
        guard bundle.node == node else { throw Failure(description: "the bundle is for node \(bundle.node), this is \(node)") }
        guard !FileManager.default.fileExists(atPath: root + "/corosync.conf") else {
            throw Failure(description: "\(root)/corosync.conf exists: this node is in a cluster already")
        }
        guard let key = Data(base64Encoded: bundle.authkey) else { throw Failure(description: "the bundle's key is damaged") }
        // As pvecm add: a node with guests does not join (their configs would leave /etc/pve, their VMIDs become free).
        let guests = ["qemu-server", "lxc"].flatMap { kind in
            ((try? FileManager.default.contentsOfDirectory(atPath: "\(root)/nodes/\(node)/\(kind)")) ?? []).filter { $0.hasSuffix(".conf") }
        }
        guard guests.isEmpty else {
            throw Failure(description: "this node has guests (\(guests.sorted().joined(separator: ", "))): move or remove them before joining")
        }
        let running = try pmxcfs()
        let files = corosyncFiles(running.arguments)
        try write(key, to: files.authkey, mode: 0o400)
        try write(Data(bundle.config.utf8), to: files.config, mode: 0o644)
        try await startCorosync(progress: progress)
        let database = Self.option("--db", in: running.arguments) ?? "/var/lib/pve-cluster/config.db"
        let backup = database + ".before-join-\(Int(Date().timeIntervalSince1970))"
        try await restartPmxcfs(running, between: {
            // Its own tree goes aside (as pvecm keeps a backup), whole: the database and its write-ahead log.
            try FileManager.default.moveItem(atPath: database, toPath: backup)
            for suffix in ["-wal", "-shm"] where FileManager.default.fileExists(atPath: database + suffix) {
                try FileManager.default.moveItem(atPath: database + suffix, toPath: backup + suffix)
            }
        }, progress: progress)
        progress("this node's tree before joining is kept in \(backup)")
        try await waitForClusterTree()
        progress("the cluster's tree is here")
    }

    /// Mounted in cluster mode is not yet synced: the tree arrives from the members a moment later, and until then
    /// this node's tree is the corosync.conf pmxcfs imported from the bundle alone. The cluster's tree always holds
    /// another node's directory (every member's pmxcfs makes its own), which an imported tree never does; the tree comes
    /// in one transaction, so the rest (the key in priv) is there with it. As pvecm add waits for quorum, join returns
    /// only then: a command run next on this node (`cluster add`, `pvectl run`) reads the cluster's files.
    func waitForClusterTree() async throws {
        try await HostCorosyncDriver.poll(seconds: 60, "the cluster's tree (\(root)/nodes to hold another node; see corosync-quorumtool -s "
                                          + "and pmxcfs's log)") {
            ((try? FileManager.default.contentsOfDirectory(atPath: root + "/nodes")) ?? []).contains { $0 != node }
        }
    }

    /// `pvecm delnode`: the node out of the nodelist (it should be off for good).
    public func delnode(_ name: String, progress: (String) -> Void) throws {
        let config = try clusterConfig()
        let updated = try ClusterMembership.removing(node: name, from: config, standingOn: node)
        try write(Data(updated.utf8), to: root + "/corosync.conf", mode: 0o640)
        progress("removed \(name) from \(root)/corosync.conf; its files stay in \(root)/nodes/\(name) until you remove them")
    }

    /// `pvecm qdevice setup`: the QNetd server's CA fetched (its database made if it has none), this node's client
    /// certificate requested, signed by the QNetd server and imported; the CA and the client certificate kept in
    /// `priv/qdevice` (every node's corosync kind imports them from there), the device written into corosync.conf
    /// (replicated, reloaded), and this node's corosync-qdevice started. `qnetdCommand` runs a shell on the QNetd host, the
    /// script on its standard input (default: ssh as root, by key and with its host key known, as pvecm needs too after
    /// its ssh-copy-id). This node's certificate database, when it has one, is replaced only with `force`, as pvecm does.
    public func qdeviceSetup(address: String, qnetdCommand: String?, force: Bool, progress: (String) -> Void) async throws {
        let config = try clusterConfig()
        let updated = try ClusterMembership.addingQuorumDevice(host: address, force: force, to: config, standingOn: node)
        guard let cluster = config.totem?["cluster_name"], ClusterMembership.isValidClusterName(cluster) else {
            throw Failure(description: "\(root)/corosync.conf names no usable cluster_name")
        }
        for tool in ["corosync-qdevice", "corosync-qdevice-net-certutil"] where Command.locate(tool) == nil { throw MissingExecutable(name: tool) }
        if FileManager.default.fileExists(atPath: HostCorosyncDriver.qdeviceDatabase) && !force {
            throw Failure(description: "\(HostCorosyncDriver.qdeviceDatabase) exists (a QDevice was set up here before): --force replaces it")
        }
        let remote = qnetdCommand ?? "ssh -o BatchMode=yes -o ConnectTimeout=10 root@\(address)"
        let qnetdDatabase = "/etc/corosync/qnetd/nssdb"
        let authority = try await onQnetd(remote, """
            set -e
            [ -f \(qnetdDatabase)/qnetd-cacert.crt ] || corosync-qnetd-certutil -i >/dev/null
            """, returning: "\(qnetdDatabase)/qnetd-cacert.crt")
        progress("QNetd at \(address): its CA fetched")

        // This node's loop leaves the QDevice alone meanwhile (it waits for this lock).
        try await HostCorosyncDriver.exclusively {
            var template = Array((FileManager.default.temporaryDirectory.path + "/pvectl-qdevice.XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else { throw Failure(description: "cannot make a private scratch directory") }
            let scratch = String(cString: made)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            try authority.write(to: URL(fileURLWithPath: scratch + "/qnetd-cacert.crt"))
            let database = HostCorosyncDriver.qdeviceDatabase
            try? FileManager.default.removeItem(atPath: database)
            try await Command.check(["corosync-qdevice-net-certutil", "-i", "-c", scratch + "/qnetd-cacert.crt"])
            try await Command.check(["corosync-qdevice-net-certutil", "-r", "-n", cluster])
            guard let request = FileManager.default.contents(atPath: database + "/qdevice-net-node.crq") else {
                throw Failure(description: "\(database)/qdevice-net-node.crq was not made")
            }
            let signed = try await onQnetd(remote, """
                set -e
                scratch=$(mktemp -d)
                trap 'rm -rf "$scratch"' EXIT
                base64 -d > "$scratch/qdevice-net-node.crq" <<'REQUEST'
                \(request.base64EncodedString(options: [.lineLength76Characters, .endLineWithLineFeed]))
                REQUEST
                corosync-qnetd-certutil -s -c "$scratch/qdevice-net-node.crq" -n \(cluster) >/dev/null
                """, returning: "\(qnetdDatabase)/cluster-\(cluster).crt")
            progress("QNetd signed the certificate of cluster \(cluster)")
            try signed.write(to: URL(fileURLWithPath: scratch + "/cluster-\(cluster).crt"))
            // The tool goes on (and exits 0) when its pk12util fails: the file it should have made tells.
            let imported = try await Command.run(["corosync-qdevice-net-certutil", "-M", "-c", scratch + "/cluster-\(cluster).crt"])
            guard imported.succeeded, let client = FileManager.default.contents(atPath: database + "/" + HostCorosyncDriver.clientCertificate) else {
                let said = (imported.output + imported.error).trimmingCharacters(in: .whitespacesAndNewlines)
                throw Failure(description: "\(database)/\(HostCorosyncDriver.clientCertificate) was not made: \(said)")
            }
            let shared = root + "/priv/qdevice"
            try write(authority, to: shared + "/" + HostCorosyncDriver.qnetdCertificate, mode: 0o600)
            try write(client, to: shared + "/" + HostCorosyncDriver.clientCertificate, mode: 0o600)
            try write(Data(updated.utf8), to: root + "/corosync.conf", mode: 0o640)
            progress("added the quorum device (QNetd \(address)) to \(root)/corosync.conf; its certificates are in \(shared)")
            do {
                try await HostCorosyncDriver(root: root).startHoldingLock(host: address)
            } catch {
                throw Failure(description: "the device is configured (corosync.conf, \(shared)) but corosync-qdevice did not start here: \(error); "
                              + "every node's pvectl run (or pvectl apply --only corosync) tries again")
            }
        }
        progress("corosync-qdevice runs on \(node); every other node starts its own at its next pvectl run pass (or pvectl apply --only corosync)")
    }

    /// `pvecm qdevice remove`: the device out of corosync.conf, this node's corosync-qdevice stopped, the shared
    /// certificates removed (every other node's corosync kind stops its own).
    public func qdeviceRemove(progress: (String) -> Void) async throws {
        let config = try clusterConfig()
        let updated = try ClusterMembership.removingQuorumDevice(from: config, standingOn: node)
        try write(Data(updated.utf8), to: root + "/corosync.conf", mode: 0o640)
        progress("removed the quorum device from \(root)/corosync.conf")
        // The shared certificates go whatever happens next: the device is out of the configuration already.
        defer { try? FileManager.default.removeItem(atPath: root + "/priv/qdevice") }
        try await HostCorosyncDriver.exclusively {
            await HostCorosyncDriver.waitForDeviceGone()
            try await HostCorosyncDriver(root: root).stopHoldingLock()
        }
        progress("corosync-qdevice stopped on \(node); the other nodes stop theirs at their next pvectl run pass")
    }

    /// Runs `script` in a shell on the QNetd host, then returns the file `returning` there (certificates are binary: they
    /// come back in base64 after a marker line, whatever the tools printed before).
    func onQnetd(_ remote: String, _ script: String, returning file: String) async throws -> Data {
        let marker = "----- pvectl: \(file) -----"
        let result = try await Command.run(["/bin/sh", "-c", remote + " sh -s"], input: script + "\necho '\(marker)'\nbase64 -w0 \(file)\n")
        let encoded = result.output.range(of: marker + "\n").map { result.output[$0.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines) }
        guard result.succeeded, let data = encoded.flatMap({ Data(base64Encoded: $0) }), !data.isEmpty else {
            let said = (result.error.isEmpty ? result.output : result.error).trimmingCharacters(in: .whitespacesAndNewlines)
            throw Failure(description: "on the QNetd host (\(remote)): exit \(result.status): \(said)")
        }
        return data
    }
}
