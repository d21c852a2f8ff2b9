@testable import ClusterFS
import Foundation
import Synchronization
import Testing
import TestSupport

/// A Jepsen-style run on three pmxcfs nodes: a client per node creates files, overwrites shared ones through
/// tmp+rename, renames and races for locks, while a nemesis cuts, heals, SIGSTOPs and kills nodes (pmxcfs, corosync)
/// at random for a bounded time. Every operation is recorded (ok / failed / unknown); after the final heal a checker
/// proves that every acknowledged write is on every node, that each shared file's values fit one total order (real
/// time included), that no two clients held a lock at once, that versions only grew, that each node's SQLite equals
/// what it serves, and that the final trees are identical.
/// The seed is printed; PVECTL_NEMESIS_SEED replays the schedule, PVECTL_NEMESIS_SECONDS lengthens the run.
@Suite("ClusterFS under faults: a Jepsen-style run with a checker", .serialized,
       .enabled(if: CorosyncCluster.unavailableReason == nil && PMXCFSProcess.unavailableReason == nil,
                Comment(rawValue: CorosyncCluster.unavailableReason ?? PMXCFSProcess.unavailableReason ?? "")))
struct NemesisTests {
    enum Outcome: Sendable, Equatable {
        case ok, failed(Int32), unknown(Int32)

        /// Errors the file system decides from the ordered state (nothing changed anywhere) are failures; any other
        /// (EACCES at delivery without quorum, EBUSY after a timeout, a dead mount) leaves the change possible.
        init(_ result: Int32) {
            if result == 0 {
                self = .ok
            } else if [EEXIST, ENOENT, ENOTEMPTY, ENOTDIR, EISDIR, EINVAL].contains(result) {
                self = .failed(result)
            } else {
                self = .unknown(result)
            }
        }

        var label: String {
            switch self {
            case .ok: "ok"
            case .failed: "failed"
            case .unknown: "unknown"
            }
        }
    }

    enum Kind: String, Sendable { case create, rename, overwrite, lock, unlock }

    struct Record: Sendable {
        var client: Int
        var kind: Kind
        var name: String
        var target: String = ""
        var value: String = ""
        var start: Double
        var end: Double
        var outcome: Outcome
    }

    struct Observation: Sendable {
        var node: Int
        var file: String
        var value: String?
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// SplitMix64: a small seeded generator, so a schedule can be replayed.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// The shared record of a run.
    final class History: Sendable {
        let records = Mutex<[Record]>([])
        let observations = Mutex<[Observation]>([])
        let versions = Mutex<[Int: [UInt64]]>([:])
        let stop = Atomic<Bool>(false)
    }

    /// One client: works through a descriptor of its node's mount root (a dead, lazily unmounted mount answers
    /// ENOTCONN instead of letting writes fall through to the directory beneath), reopened once the node is back.
    final class Client: @unchecked Sendable {
        // @unchecked: used by its own thread only.
        let index: Int
        let daemon: PMXCFSProcess
        let history: History
        var random: Seeded
        var root: Int32 = -1
        var created: [(name: String, value: String)] = []
        var held: [Int] = []
        var sequence = 0

        init(index: Int, daemon: PMXCFSProcess, history: History, seed: UInt64) {
            self.index = index
            self.daemon = daemon
            self.history = history
            random = Seeded(state: seed)
        }

        func mounted() -> Bool {
            if root >= 0 { return true }
            let descriptor = open(daemon.mountPoint, O_RDONLY | O_DIRECTORY)
            guard descriptor >= 0 else { return false }
            // Mounted: the root's device differs from the directory's beneath (the test's scratch directory).
            var mounted = stat(), beneath = stat()
            guard fstat(descriptor, &mounted) == 0, stat(daemon.directory.path, &beneath) == 0, mounted.st_dev != beneath.st_dev else {
                close(descriptor)
                return false
            }
            root = descriptor
            return true
        }

        /// The outcome of a call; a dead mount is let go.
        func result(_ succeeded: Bool) -> Int32 {
            if succeeded { return 0 }
            let error = errno
            if error == ENOTCONN || error == ECONNABORTED || error == ENODEV {
                close(root)
                root = -1
            }
            return error
        }

        func put(_ name: String, _ value: String, exclusive: Bool) -> Int32 {
            let descriptor = openat(root, name, O_CREAT | O_WRONLY | (exclusive ? O_EXCL : O_TRUNC), 0o640)
            guard descriptor >= 0 else { return result(false) }
            let bytes = Array(value.utf8)
            let written = write(descriptor, bytes, bytes.count)
            let error = written == bytes.count ? 0 : (written < 0 ? result(false) : EIO)
            close(descriptor)
            return error
        }

        func record(_ kind: Kind, _ name: String, target: String = "", value: String = "", start: Double, _ code: Int32) {
            history.records.withLock {
                $0.append(Record(client: index, kind: kind, name: name, target: target, value: value, start: start, end: NemesisTests.now(),
                                 outcome: Outcome(code)))
            }
        }

        func run() {
            while !history.stop.load(ordering: .relaxed) {
                guard mounted() else {
                    usleep(50_000)
                    continue
                }
                sequence += 1
                let roll = random.next() % 100
                let start = NemesisTests.now()
                if let lock = held.first, roll < 30 {
                    held.removeFirst()
                    record(.unlock, "priv/lock/L\(lock)", start: start, result(unlinkat(root, "priv/lock/L\(lock)", AT_REMOVEDIR) == 0))
                } else if roll < 35 {
                    let name = "own/c\(index)-\(sequence)", value = "created by \(index) as \(sequence)"
                    let code = put(name, value, exclusive: true)
                    record(.create, name, value: value, start: start, code)
                    if code == 0 { created.append((name, value)) }
                } else if roll < 45, !created.isEmpty {
                    let (name, value) = created.remove(at: Int(random.next() % UInt64(created.count)))
                    let target = name.replacingOccurrences(of: "/c", with: "/r")
                    record(.rename, name, target: target, value: value, start: start, result(renameat(root, name, root, target) == 0))
                } else if roll < 75 {
                    let file = "shared-\(random.next() % 3)", value = "\(index)/\(sequence)"
                    let temporary = "\(file).tmp.\(index)"
                    let written = put(temporary, value, exclusive: false)
                    // Nothing reaches the shared file unless the rename was sent.
                    let code = written == 0 ? result(renameat(root, temporary, root, file) == 0) : ENOENT
                    record(.overwrite, file, value: value, start: start, code)
                } else if roll < 85 {
                    let lock = Int(random.next() % 2)
                    guard !held.contains(lock) else { continue }
                    let code = result(mkdirat(root, "priv/lock/L\(lock)", 0o755) == 0)
                    record(.lock, "priv/lock/L\(lock)", start: start, code)
                    if code == 0 { held.append(lock) }
                } else {
                    let file = "shared-\(random.next() % 3)"
                    let descriptor = openat(root, file, O_RDONLY)
                    if descriptor < 0 {
                        if result(false) == ENOENT { history.observations.withLock { $0.append(Observation(node: index, file: file, value: nil)) } }
                        continue
                    }
                    var buffer = [UInt8](repeating: 0, count: 128)
                    let count = read(descriptor, &buffer, 128)
                    close(descriptor)
                    if count >= 0 {
                        let value = String(decoding: buffer.prefix(count), as: UTF8.self)
                        history.observations.withLock { $0.append(Observation(node: index, file: file, value: value)) }
                    }
                }
                usleep(2_000)
            }
            if root >= 0 { close(root) }
        }
    }

    @Test("clients on every node against cuts, SIGSTOPs and kills: every acknowledged write everywhere, one order, 0 anomalies")
    func nemesis() throws {
        let seed = ProcessInfo.processInfo.environment["PVECTL_NEMESIS_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...UInt64.max)
        let seconds = ProcessInfo.processInfo.environment["PVECTL_NEMESIS_SECONDS"].flatMap { Double($0) } ?? 40
        print("nemesis: seed \(seed) (PVECTL_NEMESIS_SEED=\(seed) replays the schedule), \(Int(seconds)) s of faults")
        let cluster = try CorosyncCluster()
        #expect(waitFor(seconds: 60) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "a quorate corosync cluster")
        let nodes = try (1...3).map { try ClusterModeTests.node(cluster, $0) }
        defer { nodes.forEach { $0.stop() } }
        try #require(waitFor(seconds: 60) {
            nodes.allSatisfy { daemon in (1...3).allSatisfy { FileManager.default.fileExists(atPath: daemon.path("nodes/node\($0)")) } }
        }, "synced")
        #expect(mkdir(nodes[0].path("own"), 0o755) == 0)
        #expect(waitFor(seconds: 10) { nodes.allSatisfy { FileManager.default.fileExists(atPath: $0.path("own")) } })

        let history = History()
        let clients = (0..<3).map { Client(index: $0, daemon: nodes[$0], history: history, seed: seed &+ UInt64($0) &+ 1) }
        let threads = clients.map { client in Thread { client.run() } }
        threads.forEach { $0.start() }
        let sampler = Thread {
            while !history.stop.load(ordering: .relaxed) {
                for (index, daemon) in nodes.enumerated() {
                    if let version = NodeDatabase.version(daemon.database) { history.versions.withLock { $0[index, default: []].append(version) } }
                }
                usleep(250_000)
            }
        }
        sampler.start()

        // The nemesis: one fault at a time on a random node, held for a random while, then undone.
        var random = Seeded(state: seed)
        var faults: [String: Int] = [:]
        let end = Self.now() + seconds
        func hold(_ low: Double, _ high: Double) { usleep(UInt32((low + Double(random.next() % 1000) / 1000 * (high - low)) * 1e6)) }
        while Self.now() < end {
            hold(0.5, 2.5)
            let node = Int(random.next() % 3)
            switch random.next() % 10 {
            case 0..<4:
                try cluster.cut(node + 1)
                faults["cut", default: 0] += 1
                hold(2, 6)
                try cluster.heal(node + 1)
            case 4..<7:
                kill(nodes[node].processIdentifier, SIGSTOP)
                faults["SIGSTOP pmxcfs", default: 0] += 1
                hold(1, 4)
                kill(nodes[node].processIdentifier, SIGCONT)
            case 7..<9:
                nodes[node].crash()
                faults["kill -9 pmxcfs", default: 0] += 1
                hold(0.5, 2)
                try nodes[node].start()
            default:
                cluster.stop(node + 1, kill: true)
                faults["kill -9 corosync", default: 0] += 1
                hold(0.5, 2)
                try cluster.start(node + 1)
            }
        }

        // Every fault above was undone: the clients stop (those waiting for the cluster finish once it is whole), and
        // the nodes converge.
        history.stop.store(true, ordering: .relaxed)
        #expect(waitFor(seconds: 90) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "quorate again")
        #expect(waitFor(seconds: 90) { threads.allSatisfy(\.isFinished) && sampler.isFinished }, "clients finished")
        #expect(waitFor(seconds: 120) { Set(nodes.map(ClusterModeTests.tree)).count == 1 }, "identical final trees")

        let records = history.records.withLock { $0 }
        let anomalies = Self.check(records: records, observations: history.observations.withLock { $0 },
                                   versions: history.versions.withLock { $0 }, nodes: nodes)
        let counts = Dictionary(grouping: records, by: \.outcome.label).mapValues(\.count)
        let faultList = faults.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("nemesis: \(records.count) operations (ok \(counts["ok"] ?? 0), failed \(counts["failed"] ?? 0), unknown \(counts["unknown"] ?? 0)), "
              + "\(faults.values.reduce(0, +)) faults (\(faultList)), "
              + "anomalies: \(anomalies.count)")
        #expect(anomalies.isEmpty, "seed \(seed): \(anomalies.prefix(20))")
        #expect((counts["ok"] ?? 0) > 100, "the clients made progress under faults")
    }

    /// The checker; returns what it found wrong.
    static func check(records: [Record], observations: [Observation], versions: [Int: [UInt64]], nodes: [PMXCFSProcess]) -> [String] {
        var anomalies: [String] = []
        let finals = nodes.map(ClusterModeTests.tree)
        let reference = finals[0]
        func content(_ name: String) -> String? { ClusterModeTests.read(nodes[0], name) }

        // 1. Own files: an acknowledged create is on every node, where its acknowledged or possible rename put it.
        let renames = Dictionary(grouping: records.filter { $0.kind == .rename }, by: \.name)
        for create in records where create.kind == .create {
            let moved = renames[create.name]?.first
            let at = [create.name, moved?.target].compactMap { $0 }.filter { content($0) == create.value }
            switch (create.outcome, moved?.outcome) {
            case (.ok, .some(.ok)) where at != [moved!.target]:
                anomalies.append("\(create.name): renamed (acknowledged) but found at \(at)")
            case (.ok, .some(.failed)) where at != [create.name], (.ok, .none) where at != [create.name]:
                anomalies.append("\(create.name): acknowledged but found at \(at)")
            case (.ok, .some(.unknown)) where at.count != 1:
                anomalies.append("\(create.name): acknowledged, rename unknown, found at \(at)")
            case (.failed, _) where !at.isEmpty:
                anomalies.append("\(create.name): failed but present")
            default: break
            }
        }
        let attempted = Set(records.filter { $0.kind == .create }.map(\.name) + records.filter { $0.kind == .rename }.map(\.target))
        for path in reference.keys where path.hasPrefix("own/") && !attempted.contains(path) {
            anomalies.append("\(path): on the nodes but never written")
        }

        // 2. Shared files: one total order of values, consistent with every node's observations and with real time.
        for file in ["shared-0", "shared-1", "shared-2"] {
            anomalies += orderAnomalies(file: file, writes: records.filter { $0.kind == .overwrite && $0.name == file },
                                        observations: observations.filter { $0.file == file }, final: content(file))
        }

        // 3. Locks: no acknowledged acquisition while another client surely held the same lock.
        for lock in ["priv/lock/L0", "priv/lock/L1"] {
            let taken = records.filter { $0.kind == .lock && $0.name == lock && $0.outcome == .ok }
            let releases = records.filter { $0.kind == .unlock && $0.name == lock }
            for holder in taken {
                let release = releases.filter { $0.client == holder.client && $0.start >= holder.end }.map(\.start).min() ?? .infinity
                for other in taken where other.client != holder.client && other.start > holder.end && other.end < release {
                    anomalies.append("\(lock): taken by client \(other.client) while client \(holder.client) held it")
                }
            }
        }

        // 4. Versions only grow on every node (restarts and resyncs included).
        for (node, seen) in versions {
            for (earlier, later) in zip(seen, seen.dropFirst()) where later < earlier {
                anomalies.append("node \(node + 1): version went from \(earlier) back to \(later)")
            }
        }

        // 5. Every node serves what its database holds, and all serve the same tree.
        for (index, daemon) in nodes.enumerated() {
            // Other nodes' changes reach a database within a tenth of a second (the writer's before it was answered).
            if !waitFor(seconds: 10, { NodeDatabase.tree(daemon.database) == finals[index] }) {
                anomalies.append("node \(index + 1): its database differs from its tree")
            }
            if finals[index] != reference { anomalies.append("node \(index + 1): final tree differs from node 1's") }
        }
        return anomalies
    }

    /// One shared file's history: every value read was (possibly) written, no node reads a value again after a newer
    /// one, the nodes' reads and the acknowledged writes' real-time order fit one total order, and the final value is
    /// last in it.
    static func orderAnomalies(file: String, writes: [Record], observations: [Observation], final: String?) -> [String] {
        var anomalies: [String] = []
        let possible = Set(writes.filter { $0.outcome.label != "failed" }.map(\.value))
        var edges: [String: Set<String>] = [:]
        for node in Set(observations.map(\.node)).sorted() {
            var sequence: [String] = []
            for observation in observations where observation.node == node {
                guard let value = observation.value else { continue }
                if !possible.contains(value) { anomalies.append("\(file): node \(node + 1) read \(value), never (possibly) written") }
                if sequence.last != value {
                    if sequence.contains(value) { anomalies.append("\(file): node \(node + 1) read \(value) again after a newer value") }
                    sequence.append(value)
                }
            }
            for (earlier, later) in zip(sequence, sequence.dropFirst()) { edges[earlier, default: []].insert(later) }
        }
        let acknowledged = writes.filter { $0.outcome == .ok }
        for first in acknowledged {
            for second in acknowledged where first.end < second.start { edges[first.value, default: []].insert(second.value) }
        }
        if let final {
            if !possible.contains(final) { anomalies.append("\(file): final value \(final) never (possibly) written") }
            if let after = edges[final], !after.isEmpty {
                anomalies.append("\(file): final value \(final) is followed by \(after.sorted().prefix(3))")
            }
        } else if !acknowledged.isEmpty {
            anomalies.append("\(file): missing at the end although written")
        }
        if hasCycle(edges) { anomalies.append("\(file): the values observed and acknowledged fit no single order") }
        return anomalies
    }

    static func hasCycle(_ edges: [String: Set<String>]) -> Bool {
        var state: [String: Int] = [:]
        func visit(_ node: String) -> Bool {
            if state[node] == 1 { return true }
            if state[node] == 2 { return false }
            state[node] = 1
            for next in edges[node] ?? [] where visit(next) { return true }
            state[node] = 2
            return false
        }
        return edges.keys.contains { visit($0) }
    }
}

/// The checker of the Jepsen-style run, on made-up histories: it finds what it is there to find.
@Suite("ClusterFS under faults: the checker finds anomalies")
struct NemesisCheckerTests {
    typealias Record = NemesisTests.Record
    typealias Observation = NemesisTests.Observation

    static func write(_ value: String, _ start: Double, _ end: Double, _ outcome: NemesisTests.Outcome = .ok) -> Record {
        Record(client: 0, kind: .overwrite, name: "f", value: value, start: start, end: end, outcome: outcome)
    }

    @Test("a clean history passes; a phantom value, a value read again, a real-time inversion and a stale final do not")
    func anomalies() {
        let writes = [Self.write("a", 0, 1), Self.write("b", 2, 3), Self.write("c", 4, 5, .unknown(EBUSY)), Self.write("x", 6, 7, .failed(ENOENT))]
        let reads = [Observation(node: 0, file: "f", value: "a"), Observation(node: 0, file: "f", value: "b"),
                     Observation(node: 1, file: "f", value: "b")]
        #expect(NemesisTests.orderAnomalies(file: "f", writes: writes, observations: reads, final: "b").isEmpty)
        #expect(NemesisTests.orderAnomalies(file: "f", writes: writes, observations: reads, final: "c").isEmpty, "an unknown write may win")
        #expect(NemesisTests.orderAnomalies(file: "f", writes: writes, observations: reads + [Observation(node: 1, file: "f", value: "x")],
                                            final: "b").contains { $0.contains("never (possibly) written") }, "a failed write's value")
        #expect(NemesisTests.orderAnomalies(file: "f", writes: writes, observations: reads + [Observation(node: 0, file: "f", value: "a")],
                                            final: "b").contains { $0.contains("again after a newer value") })
        #expect(NemesisTests.orderAnomalies(file: "f", writes: writes, observations: [Observation(node: 2, file: "f", value: "b"),
                                                                                      Observation(node: 2, file: "f", value: "a")],
                                            final: "b").contains { $0.contains("fit no single order") }, "b after a, acknowledged in turn")
        #expect(NemesisTests.orderAnomalies(file: "f", writes: writes, observations: reads, final: "a").contains { $0.contains("is followed by") })
        #expect(NemesisTests.orderAnomalies(file: "f", writes: writes, observations: reads, final: nil).contains { $0.contains("missing") })
    }
}
