import Drivers
import Foundation

@_silgen_name("setns") private func joinNamespace(_ fd: Int32, _ type: Int32) -> Int32

/// Corosync nodes on one machine (../shared/design/recipes/corosync-3-nodes.sh): each node a network namespace with
/// 192.0.2.1N on a veth to a bridge in a switch namespace, and its own corosync in a mount namespace with private
/// /run, /etc/corosync and /var/lib/corosync (libqb's sockets are abstract, so a client only needs the node's network
/// namespace; the data rings are in /dev/shm, shared). A 3 s token. Torn down when released.
public final class CorosyncCluster: @unchecked Sendable {
    // @unchecked: immutable after init, apart from the launcher pids guarded by `lock`.
    public let prefix: String
    public let directory: TemporaryDirectory
    public let count: Int
    private let lock = NSLock()
    private var launchers: [Int: pid_t] = [:]

    public static let unavailableReason: String? = {
        if let reason = NetworkNamespace.unavailableReason { return reason }
        for tool in ["/usr/sbin/corosync", "/usr/sbin/corosync-keygen", "/usr/sbin/corosync-quorumtool", "/usr/sbin/nft"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            return "needs \(tool) (packages corosync, nftables)"
        }
        return nil
    }()

    /// - Parameter start: configure and start corosync on every node; without, the namespaces and folders are ready and
    ///   corosync is for the test to set up (`startCommand`).
    public init(nodes: Int = 3, start: Bool = true) throws {
        count = nodes
        prefix = "pcs\(UUID().uuidString.prefix(6).lowercased())"
        directory = try TemporaryDirectory(prefix: "pvectl-corosync")
        try run(["ip", "netns", "add", "\(prefix)-sw"])
        try run(["ip", "-n", "\(prefix)-sw", "link", "add", "br0", "type", "bridge"])
        try run(["ip", "-n", "\(prefix)-sw", "link", "set", "br0", "up"])
        try run(["corosync-keygen", "-k", directory.path + "/authkey"])
        for node in 1...nodes {
            let ns = namespace(node)
            try run(["ip", "netns", "add", ns])
            try run(["ip", "-n", ns, "link", "set", "lo", "up"])
            try run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "sw\(node)", "netns", "\(prefix)-sw"])
            try run(["ip", "-n", "\(prefix)-sw", "link", "set", "sw\(node)", "master", "br0", "up"])
            try run(["ip", "-n", ns, "address", "add", address(node) + "/24", "dev", "eth0"])
            try run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            let base = directory.path + "/n\(node)"
            for sub in ["run", "lib", "etc"] { try FileManager.default.createDirectory(atPath: "\(base)/\(sub)", withIntermediateDirectories: true) }
            guard start else { continue }
            try FileManager.default.copyItem(atPath: directory.path + "/authkey", toPath: base + "/etc/authkey")
            chmod(base + "/etc/authkey", 0o400)
            try Data(configuration.utf8).write(to: URL(fileURLWithPath: base + "/etc/corosync.conf"))
            try self.start(node)
        }
    }

    deinit {
        for node in 1...count { stop(node) }
        for node in 1...count { _ = NetworkNamespace.capture(["ip", "netns", "del", namespace(node)]) }
        _ = NetworkNamespace.capture(["ip", "netns", "del", "\(prefix)-sw"])
    }

    public func namespace(_ node: Int) -> String { "\(prefix)-n\(node)" }
    /// The corosync.conf node's corosync reads (its /etc/corosync).
    public func corosyncConfigPath(_ node: Int) -> String { directory.path + "/n\(node)/etc/corosync.conf" }
    public func address(_ node: Int) -> String { "192.0.2.1\(node)" }

    public var configuration: String {
        var text = "logging {\n  to_syslog: no\n  to_stderr: yes\n  timestamp: hires\n}\n\nnodelist {\n"
        for node in 1...count {
            text += "  node {\n    name: node\(node)\n    nodeid: \(node)\n    quorum_votes: 1\n    ring0_addr: \(address(node))\n  }\n"
        }
        text += "}\n\nquorum {\n  provider: corosync_votequorum\n}\n\ntotem {\n  cluster_name: \(prefix)\n  config_version: 1\n"
        text += "  interface {\n    linknumber: 0\n  }\n  ip_version: ipv4-6\n  link_mode: passive\n  secauth: on\n"
        // A 3 s token: failure detection a few seconds, and no false one when tests load the machine.
        text += "  token: 3000\n  token_coefficient: 0\n  version: 2\n}\n"
        return text
    }

    /// Starts node's corosync in the foreground of its own mount namespace.
    public func start(_ node: Int) throws {
        let base = directory.path + "/n\(node)"
        let script = "mount --bind \(base)/run /run && mount --bind \(base)/etc /etc/corosync && mount --bind \(base)/lib /var/lib/corosync"
            + " && exec corosync -f"
        let pid = try DetachedProcess.spawn(["/usr/bin/env", "ip", "netns", "exec", namespace(node), "unshare", "-m", "--propagation", "private",
                                             "sh", "-c", script], log: base + "/corosync.log")
        lock.withLock { launchers[node] = pid }
    }

    /// A shell command that starts node's corosync as `start` does, detached, its launcher's pid in the node's folder:
    /// for a program under test that starts corosync itself (`pvectl cluster create --start-corosync`).
    public func startCommand(_ node: Int) -> String {
        let base = directory.path + "/n\(node)"
        let script = "mount --bind \(base)/run /run && mount --bind \(base)/etc /etc/corosync && mount --bind \(base)/lib /var/lib/corosync"
            + " && exec corosync -f"
        return "setsid ip netns exec \(namespace(node)) unshare -m --propagation private sh -c '\(script)' >> \(base)/corosync.log 2>&1 "
            + "< /dev/null & echo $! > \(base)/launcher.pid"
    }

    /// Stops node's corosync cleanly, or kills it (and removes the shared-memory rings a killed corosync leaves).
    public func stop(_ node: Int, kill force: Bool = false) {
        // Started by `start` (a child of this process), or by `startCommand` (its pid in a file).
        let child = lock.withLock { launchers.removeValue(forKey: node) }
        let pidFile = directory.path + "/n\(node)/launcher.pid"
        let recorded = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard let pid = child ?? recorded else { return }
        try? FileManager.default.removeItem(atPath: pidFile)
        func gone() -> Bool {
            guard child != nil else { return kill(pid, 0) != 0 }
            var status: Int32 = 0
            return waitpid(pid, &status, WNOHANG) == pid
        }
        var reaped = false
        if !force {
            _ = NetworkNamespace.capture(["ip", "netns", "exec", namespace(node), "corosync-cfgtool", "-H", "--force"])
            reaped = waitFor(seconds: 10, gone)
        }
        if !reaped {
            kill(pid, SIGKILL)
            if child != nil { _ = reap(pid) } else { _ = waitFor(seconds: 5) { kill(pid, 0) != 0 } }
        }
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []).filter {
            $0.hasPrefix("qb-") && $0.contains("-\(pid)-")
        }
        for name in leftovers {
            try? FileManager.default.removeItem(atPath: "/dev/shm/" + name)
        }
    }

    /// Sends `signal` to node's corosync: SIGSTOP makes it stop answering (its node's pmxcfs cannot tell), SIGCONT
    /// lets it go on.
    public func signal(_ node: Int, _ signal: Int32) {
        guard let pid = lock.withLock({ launchers[node] }) else { return }
        kill(pid, signal)
    }

    /// Drops all of node's cluster traffic (nftables in its namespace), or lets it through again.
    public func cut(_ node: Int) throws {
        let rules = """
        table inet cut {
          chain in { type filter hook input priority 0; policy accept; iifname "eth0" drop; }
          chain out { type filter hook output priority 0; policy accept; oifname "eth0" drop; }
        }
        """
        let result = NetworkNamespace.capture(["sh", "-c", "printf '%s\\n' \"$0\" | ip netns exec \(namespace(node)) nft -f -", rules])
        guard result.status == 0 else { throw NetworkNamespace.failure("nft: \(result.error)") }
    }

    public func heal(_ node: Int) throws { try run(["ip", "netns", "exec", namespace(node), "nft", "delete", "table", "inet", "cut"]) }

    /// corosync-quorumtool's view from node, nil when it does not answer.
    public func isQuorate(_ node: Int) -> Bool? {
        let result = NetworkNamespace.capture(["ip", "netns", "exec", namespace(node), "corosync-quorumtool", "-s"])
        guard result.output.contains("Quorate:") else { return nil }
        return result.output.split(separator: "\n").contains { $0.hasPrefix("Quorate:") && $0.hasSuffix("Yes") }
    }

    /// Runs `body` on a thread of its own inside node's network namespace (where corosync's IPC sockets are).
    public func inNode<T: Sendable>(_ node: Int, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        let path = "/run/netns/\(namespace(node))"
        let thread = Thread {
            defer { done.signal() }
            let fd = open(path, O_RDONLY)
            guard fd >= 0, joinNamespace(fd, 0x4000_0000) == 0 else {
                box.result = .failure(NetworkNamespace.failure("cannot enter \(path)"))
                return
            }
            close(fd)
            box.result = Result { try body() }
        }
        thread.start()
        done.wait()
        return try box.result!.get()
    }

    private func run(_ arguments: [String]) throws {
        let result = NetworkNamespace.capture(arguments)
        guard result.status == 0 else { throw NetworkNamespace.failure("\(arguments.joined(separator: " ")): \(result.error)") }
    }
}

extension CorosyncCluster {
    /// A pmxcfs for `index` in cluster mode: its database first made in local mode holding the cluster's corosync.conf,
    /// then the daemon in the node's network namespace (its mount in this one).
    public func pmxcfs(_ index: Int, directory: TemporaryDirectory? = nil, arguments: [String] = []) throws -> PMXCFSProcess {
        let daemon = try PMXCFSProcess(node: "node\(index)", directory: directory)
        try daemon.start()
        try Data(configuration.utf8).write(to: URL(fileURLWithPath: daemon.path("corosync.conf")))
        daemon.stop()
        daemon.local = false
        daemon.launcher = ["/usr/bin/nsenter", "--net=/run/netns/\(namespace(index))"]
        daemon.extraArguments = ["--corosync-conf", corosyncConfigPath(index)] + arguments
        try daemon.start()
        return daemon
    }
}

/// A result handed from a thread to the one waiting for it.
private final class ResultBox<T>: @unchecked Sendable {
    // @unchecked: written by one thread before a semaphore signal, read after the wait.
    var result: Result<T, any Error>?
}
