import ClusterFS
import Foundation
import Synchronization

/// Follows a pmxcfs tree from outside: what other nodes change never reaches inotify on the FUSE mount, so the tree's
/// change counter is asked for over pmxcfs's IPC service every `interval` (one small request), and when it moved, every
/// entry's version: each path added, changed or removed is reported, and so is a change of quorum.
public final class ClusterTreeWatcher: @unchecked Sendable {
    // @unchecked: after init the thread alone uses `client` and its own state; `stopped` and `quorum` are atomic / locked.
    private var client: IPCClient
    private let service: String
    private let root: String
    private let interval: Double
    private let stopped = Atomic<Bool>(false)
    private let quorum = Mutex<Bool>(true)
    /// The tree as init found it: every change after init is reported, even one made before the thread first asks.
    private let baseline: (version: UInt64, entries: [String: UInt64]?)

    /// Connects to the service; nil when it does not answer.
    public init?(root: String, service: String, interval: Double = 0.2) {
        guard let client = try? IPCClient(service: service) else { return nil }
        self.client = client
        self.service = service
        self.root = root.hasSuffix("/") ? String(root.dropLast()) : root
        self.interval = interval
        guard let first = Self.poll(client, since: 0) else { return nil }
        quorum.withLock { $0 = first.quorate }
        baseline = (first.version, first.entries)
    }

    /// Whether the node last had quorum (writes taken), as pmxcfs says.
    public var isQuorate: Bool { quorum.withLock { $0 } }

    /// The counter, quorum and (when the counter moved) every entry's version.
    static func poll(_ client: IPCClient, since: UInt64) -> (version: UInt64, quorate: Bool, entries: [String: UInt64]?)? {
        var body = [UInt8](repeating: 0, count: 8)
        withUnsafeBytes(of: since.littleEndian) { body = Array($0) }
        let (status, payload) = client.request(.getTreeVersions, body: body)
        guard status == 0 else { return nil }
        var lines = String(decoding: payload, as: UTF8.self).split(separator: "\n")
        guard !lines.isEmpty else { return nil }
        let head = lines.removeFirst().split(separator: " ")
        guard head.count == 2, let version = UInt64(head[0]) else { return nil }
        guard version != since else { return (version, head[1] == "1", nil) }
        var entries: [String: UInt64] = [:]
        for line in lines {
            let fields = line.split(separator: " ", maxSplits: 1)
            if fields.count == 2, let entryVersion = UInt64(fields[0]) { entries[String(fields[1])] = entryVersion }
        }
        return (version, head[1] == "1", entries)
    }

    /// Starts the thread: `onChange` gets the absolute path of every entry that changed, `onQuorum` the new quorum.
    public func start(onChange: @escaping @Sendable (String) -> Void, onQuorum: @escaping @Sendable (Bool) -> Void) {
        let thread = Thread { [self] in
            var seen = baseline.entries == nil ? 0 : baseline.version
            var versions = baseline.entries ?? [:]
            var first = baseline.entries == nil
            while !stopped.load(ordering: .relaxed) {
                guard let answer = Self.poll(client, since: seen) else {
                    // No answer (pmxcfs restarting): quorum unknown counts as none; connect again next time.
                    let was = quorum.withLock { quorate in
                        defer { quorate = false }
                        return quorate
                    }
                    if was { onQuorum(false) }
                    if let fresh = try? IPCClient(service: service) { client = fresh }
                    seen = 0
                    usleep(UInt32(interval * 1_000_000))
                    continue
                }
                let changedQuorum = quorum.withLock { quorate in
                    defer { quorate = answer.quorate }
                    return quorate != answer.quorate
                }
                if changedQuorum && !first { onQuorum(answer.quorate) }
                if let entries = answer.entries {
                    if !first {
                        for (path, version) in entries where versions[path] != version { onChange(root + "/" + path) }
                        for path in versions.keys where entries[path] == nil { onChange(root + "/" + path) }
                    }
                    versions = entries
                }
                seen = answer.version
                first = false
                usleep(UInt32(interval * 1_000_000))
            }
        }
        thread.name = "pmxcfs tree watcher"
        thread.start()
    }

    public func stop() { stopped.store(true, ordering: .relaxed) }
}
