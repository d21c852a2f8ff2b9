import Drivers
import Foundation

/// A pmxcfs daemon in the foreground on private paths, for tests that mount
/// the real FUSE file system. Stopped (and the mount cleared) when released.
public final class PMXCFSProcess: @unchecked Sendable {
    // @unchecked: the process handle is only touched by the owning test.
    public let directory: TemporaryDirectory
    public let mountPoint: String
    public let database: String
    public let node: String
    /// A service name of its own, so daemons of parallel tests do not meet.
    public let ipcName = "pvt-\(UUID().uuidString.prefix(8).lowercased())"
    private var pid: pid_t = 0
    /// Local mode (`--local`); off, a database holding corosync.conf runs in cluster mode.
    public var local = true
    /// Run through this (e.g. `nsenter --net=…`, to reach a node's corosync), the daemon's arguments appended.
    public var launcher: [String] = []
    /// More options for the daemon (`--corosync-conf FILE`).
    public var extraArguments: [String] = []

    public static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pmxcfs").path

    /// FUSE needs root and /dev/fuse.
    public static let unavailableReason: String? = {
        if getuid() != 0 { return "FUSE mounts need root" }
        if access("/dev/fuse", R_OK | W_OK) != 0 { return "/dev/fuse is missing" }
        return nil
    }()

    public init(node: String = "pve1", directory: TemporaryDirectory? = nil) throws {
        self.directory = try directory ?? TemporaryDirectory(prefix: "pmxcfs")
        mountPoint = self.directory.path + "/mnt"
        database = self.directory.path + "/config.db"
        self.node = node
    }

    public var arguments: [String] {
        (local ? ["--local"] : []) + ["--foreground", "--mount", mountPoint, "--db", database, "--run-dir", directory.path + "/run", "--node", node,
         "--ipc-name", ipcName] + extraArguments
    }

    /// Starts the daemon and waits (bounded) until the mount is there.
    public func start() throws {
        pid = launcher.isEmpty ? try spawn(Self.binary, arguments)
            : try DetachedProcess.spawn(launcher + [Self.binary] + arguments, log: directory.path + "/pmxcfs.log")
        guard waitFor(seconds: 15, { self.isMounted }) else {
            kill(pid, SIGKILL)
            _ = reap(pid)
            throw Failure(description: "pmxcfs did not mount \(mountPoint) within 15 s")
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public var processIdentifier: pid_t { pid }
    public var isRunning: Bool { pid != 0 && kill(pid, 0) == 0 }

    /// Whether a FUSE file system is mounted exactly at `mountPoint`.
    public var isMounted: Bool {
        // Read to the end: String(contentsOfFile:) returns one page of a /proc file,
        // and with the other tests' namespaces the mount table is longer than that.
        guard let handle = FileHandle(forReadingAtPath: "/proc/self/mountinfo"),
              let data = try? handle.readToEnd() else { return false }
        try? handle.close()
        let table = String(decoding: data, as: UTF8.self)
        return table.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 && fields[4] == Substring(mountPoint) && line.contains("fuse")
        }
    }

    /// SIGTERM, then waits for the process to exit and the mount to go; returns the daemon's exit status (128 + the
    /// signal if one ended it).
    @discardableResult
    public func stop() -> Int32? {
        guard pid != 0 else { return nil }
        kill(pid, SIGTERM)
        let status = reap(pid)
        pid = 0
        _ = waitFor(seconds: 10) { !self.isMounted }
        return status
    }

    /// kill -9: the mount is left dead; clear it as an operator would.
    public func crash() {
        guard pid != 0 else { return }
        kill(pid, SIGKILL)
        _ = reap(pid)
        pid = 0
        clearMount()
    }

    func clearMount() {
        if isMounted { _ = NetworkNamespace.run(["umount", "-l", mountPoint]) }
    }

    deinit {
        stop()
        clearMount()
    }

    /// Path inside the mount.
    public func path(_ relative: String) -> String { mountPoint + "/" + relative }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
public func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// Starts a program the way the QEMU driver starts daemons (its own session,
/// default signals, no inherited descriptors, output to /dev/null); waits are
/// explicit with `reap`, so nothing depends on a run loop.
public func spawn(_ path: String, _ arguments: [String]) throws -> pid_t {
    try DetachedProcess.spawn([path] + arguments, log: "/dev/null")
}

/// Waits for a child to exit and returns its exit status (128+signal when killed).
public func reap(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
}
