import ArgumentParser
import ClusterFS
import Foundation

@main
struct PMXCFS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pmxcfs",
        abstract: "The cluster file system: /etc/pve served from memory, persisted in SQLite.",
        discussion: """
        Without --local, a database that holds corosync.conf runs in cluster
        mode: changes go through corosync (CPG) to every node in one order,
        need quorum, and the nodes resync on every membership change. Every
        change is committed to the database before the file system call
        returns.

        Examples:
          pmxcfs --local
          pmxcfs --local --foreground --mount /tmp/pve --db /tmp/config.db --run-dir /tmp/run --node pve1
        """
    )

    @Flag(name: [.short, .long], help: "Local mode: no corosync, always quorate.")
    var local = false

    @Flag(name: [.short, .long], help: "Stay in the foreground.")
    var foreground = false

    @Option(name: .long, help: ArgumentHelp("Mount point.", valueName: "DIR"))
    var mount: String = "/etc/pve"

    @Option(name: .long, help: ArgumentHelp("The SQLite database.", valueName: "FILE"))
    var db: String = "/var/lib/pve-cluster/config.db"

    @Option(name: .long, help: ArgumentHelp("Runtime directory (pid file).", valueName: "DIR"))
    var runDir: String = "/run/pve-cluster"

    @Option(name: .long, help: ArgumentHelp("This node's name (default: short host name).", valueName: "NAME"))
    var node: String?

    @Flag(name: [.short, .long], help: "FUSE debug output.")
    var debug = false

    @Option(name: .long, help: ArgumentHelp("Name of the libqb IPC service (upstream: pve2).", valueName: "NAME"))
    var ipcName: String = "pve2"

    @Option(name: .long, help: ArgumentHelp("Cluster mode: where corosync reads its configuration (the tree's corosync.conf "
                                            + "is installed there).", valueName: "FILE"))
    var corosyncConf: String = "/etc/corosync/corosync.conf"

    /// Seconds a lock lives unchanged before an unlock request releases it (upstream's fixed 120): tests shorten it.
    @Option(name: .long, help: .hidden)
    var lockExpiry: UInt32 = ClusterFileSystem.lockExpiry

    /// Seconds a writer waits for its change to come back before EBUSY (60): tests shorten it.
    @Option(name: .long, help: .hidden)
    var writeTimeout: Double = Replicator.defaultWriteTimeout

    /// Seconds another node's change may wait in memory before this node writes it to its database (0.1): tests
    /// lengthen it, to see what is durable when.
    @Option(name: .long, help: .hidden)
    var persistDelay: Double = Replicator.defaultPersistDelay

    func run() throws {
        // A blocked SIGTERM inherited from the parent would make the daemon unstoppable.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&stopSignals, signal) }
        pthread_sigmask(SIG_UNBLOCK, &stopSignals, nil)
        let nodeName = node ?? String(ProcessInfo.processInfo.hostName.split(separator: ".").first ?? "localhost")
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: db).deletingLastPathComponent().path, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        // One daemon per database: an exclusive lock held for the process's life.
        let lockPath = db + ".lock"
        let lockFD = open(lockPath, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            FileHandle.standardError.write(Data("pmxcfs: another instance is using \(db) (lock \(lockPath) is held)\n".utf8))
            throw ExitCode(1)
        }
        // Released last, after the final commit below: a daemon started next must find the database as this one left it.
        defer { close(lockFD) }
        let fileSystem: ClusterFileSystem
        do {
            // Not in local mode, a database without corosync.conf takes corosync's own (a node that joined a cluster).
            let imported = local ? nil : FileManager.default.contents(atPath: corosyncConf).map { Array($0) }
            fileSystem = try ClusterFileSystem(databasePath: db, node: nodeName, cluster: !local, lockExpiry: lockExpiry,
                                               importCorosyncConfig: imported)
        } catch {
            FileHandle.standardError.write(Data("pmxcfs: cannot load \(db): \(error)\n".utf8))
            throw ExitCode(1)
        }
        defer { IPCServer.stop() }
        let pidFile = runDir + "/pmxcfs.pid"
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        // Other nodes' changes still waiting for their commit go to the database before exit. Only that: leaving the
        // group would wait on corosync, which may be the very thing that hangs (SIGSTOPped, say).
        defer {
            if !fileSystem.persistDeferred() {
                FileHandle.standardError.write(Data("pmxcfs: could not write the last changes of other nodes to \(db)\n".utf8))
            }
        }
        do {
            // The pid file is written once mounted, after detaching, so it names the daemon.
            // Threads do not survive daemonizing (a fork): the IPC loop starts after it.
            try FUSEMount.serve(fileSystem, at: mount, daemonize: !foreground, debug: debug) {
                do {
                    try IPCServer.start(name: ipcName, fileSystem: fileSystem)
                } catch {
                    FileHandle.standardError.write(Data("pmxcfs: IPC service not available: \(error)\n".utf8))
                }
                if fileSystem.isClusterMode {
                    Self.joinCluster(fileSystem, corosyncConfig: corosyncConf, writeTimeout: writeTimeout, persistDelay: persistDelay)
                }
                try? Data("\(getpid())\n".utf8).write(to: URL(fileURLWithPath: pidFile))
            }
        } catch {
            FileHandle.standardError.write(Data("pmxcfs: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Joins corosync's process group, again every second until corosync answers (writes are refused until then).
    static func joinCluster(_ fileSystem: ClusterFileSystem, corosyncConfig: String, writeTimeout: TimeInterval, persistDelay: TimeInterval) {
        let log: @Sendable (String) -> Void = { FileHandle.standardError.write(Data("pmxcfs: \($0)\n".utf8)) }
        Thread.detachNewThread {
            var reported = false
            while true {
                do {
                    let replicator = try Replicator(fileSystem: fileSystem, corosyncConfig: corosyncConfig, writeTimeout: writeTimeout,
                                                    persistDelay: persistDelay, log: log)
                    fileSystem.attach(replicator)
                    log("cluster mode: joined \(Replicator.groupName) as node \(replicator.nodeID)")
                    return
                } catch {
                    if !reported { log("cluster mode: corosync does not answer yet (\(error)); trying every second") }
                    reported = true
                    sleep(1)
                }
            }
        }
    }
}
