@testable import ClusterFS
import Foundation
import Synchronization
import Testing
import TestSupport

/// pmxcfs in cluster mode on three corosync nodes in namespaces (each daemon in its node's network namespace, its
/// mount in this one): writes replicated in one order, lock races, a cut node read-only while the majority writes,
/// the resync after healing, and an empty node receiving the whole tree.
@Suite("ClusterFS cluster mode: three pmxcfs on three corosync nodes", .serialized,
       .enabled(if: CorosyncCluster.unavailableReason == nil && PMXCFSProcess.unavailableReason == nil,
                Comment(rawValue: CorosyncCluster.unavailableReason ?? PMXCFSProcess.unavailableReason ?? "")))
struct ClusterModeTests {
    /// Seconds a lock lives unchanged before an unlock request releases it, in these tests (upstream: 120).
    static let lockExpiry = 3

    /// Seconds node 3's writers wait for their change to come back before EBUSY, in these tests (upstream: none, the
    /// original waits as long as it takes; ours: 60).
    static let writeTimeout = 5

    /// A daemon per node, its database first made in local mode holding the cluster's corosync.conf.
    static func node(_ cluster: CorosyncCluster, _ index: Int, directory: TemporaryDirectory? = nil,
                     arguments: [String] = []) throws -> PMXCFSProcess {
        try cluster.pmxcfs(index, directory: directory, arguments: ["--lock-expiry", "\(lockExpiry)"] + arguments)
    }

    /// Every file and directory under a mount: path, inode number and content (the tree as a node serves it).
    static func tree(_ daemon: PMXCFSProcess) -> [String: String] {
        var result: [String: String] = [:]
        let root = daemon.mountPoint
        guard let walker = FileManager.default.enumerator(atPath: root) else { return [:] }
        while let relative = walker.nextObject() as? String {
            let path = root + "/" + relative
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            switch info.st_mode & S_IFMT {
            case S_IFLNK:
                walker.skipDescendants()
            case S_IFDIR:
                result[relative] = "dir \(info.st_ino)"
            default:
                let content = FileManager.default.contents(atPath: path).map { "\($0.count) bytes, \(Array($0).hashValue)" } ?? "?"
                result[relative] = "file \(info.st_ino) \(content)"
            }
        }
        return result.filter { !$0.key.hasPrefix(".") }
    }

    static func put(_ daemon: PMXCFSProcess, _ relative: String, _ text: String) -> Int32 {
        let descriptor = open(daemon.path(relative), O_CREAT | O_WRONLY | O_TRUNC, 0o640)
        guard descriptor >= 0 else { return errno }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        return write(descriptor, bytes, bytes.count) == bytes.count ? 0 : errno
    }

    /// One IPC request to node's daemon, from a thread in the node's network namespace (libqb's sockets are abstract).
    static func ipc(_ cluster: CorosyncCluster, _ node: Int, _ daemon: PMXCFSProcess, _ request: IPCRequest,
                    _ body: [UInt8]) throws -> (Int32, [UInt8]) {
        let service = daemon.ipcName
        return try cluster.inNode(node) { try IPCClient(service: service).request(request, body: body) }
    }

    /// Writes over the start of an existing file (one change: no truncation).
    static func overwrite(_ daemon: PMXCFSProcess, _ relative: String, _ text: String) -> Int32 {
        let descriptor = open(daemon.path(relative), O_WRONLY)
        guard descriptor >= 0 else { return errno }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        return pwrite(descriptor, bytes, bytes.count, 0) == bytes.count ? 0 : errno
    }

    /// Writes `relative.new`, then renames it over `relative`.
    static func replace(_ daemon: PMXCFSProcess, _ relative: String, _ text: String) -> Int32 {
        let written = put(daemon, relative + ".new", text)
        guard written == 0 else { return written }
        return rename(daemon.path(relative + ".new"), daemon.path(relative)) == 0 ? 0 : errno
    }

    static func installed(_ cluster: CorosyncCluster, _ node: Int) -> String {
        (try? String(contentsOfFile: cluster.corosyncConfigPath(node), encoding: .utf8)) ?? ""
    }

    static func read(_ daemon: PMXCFSProcess, _ relative: String) -> String? {
        FileManager.default.contents(atPath: daemon.path(relative)).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test("writes, races, kill -9 mid-stream, a cut node read-only then resynced, an empty node given the whole tree")
    func cluster() throws {
        let cluster = try CorosyncCluster()
        #expect(waitFor(seconds: 60) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "a quorate corosync cluster")
        // Node 2 writes other nodes' changes to its database after an hour (default: a tenth of a second), to show when
        // what is durable; node 3's writers give up after `writeTimeout`.
        let options = [[], ["--persist-delay", "3600"], ["--write-timeout", "\(Self.writeTimeout)"]]
        let nodes = try (1...3).map { try Self.node(cluster, $0, arguments: options[$0 - 1]) }
        defer { nodes.forEach { $0.stop() } }
        // Synced: each node's own directories made through the cluster, on every node.
        #expect(waitFor(seconds: 60) {
            nodes.allSatisfy { daemon in (1...3).allSatisfy { FileManager.default.fileExists(atPath: daemon.path("nodes/node\($0)/qemu-server")) } }
        }, "every node's directories everywhere: \(nodes.map { (try? FileManager.default.contentsOfDirectory(atPath: $0.path("nodes"))) ?? [] })")

        // SIGTERM reaches the FUSE loop's thread alone: every other thread of the daemon blocks it.
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(nodes[0].processIdentifier)/task")) ?? []
        let takingSIGTERM = tasks.filter { task in
            guard task != "\(nodes[0].processIdentifier)",
                  let status = try? String(contentsOfFile: "/proc/\(nodes[0].processIdentifier)/task/\(task)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigBlk:") }),
                  let blocked = UInt64(line.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
            return blocked & (1 << (UInt64(SIGTERM) - 1)) == 0
        }
        #expect(tasks.count > 3 && takingSIGTERM.isEmpty, "threads that could take SIGTERM: \(takingSIGTERM) of \(tasks)")

        // .members: the cluster as corosync sees it, from every node.
        let members = Self.read(nodes[1], ".members") ?? ""
        #expect(members.contains("\"cluster\": { \"name\": \"\(cluster.prefix)\", \"version\": 1, \"nodes\": 3, \"quorate\": 1 }"), "\(members)")
        #expect(members.contains("\"nodename\": \"node2\""))
        for index in 1...3 {
            #expect(members.contains("\"node\(index)\": { \"id\": \(index), \"online\": 1, \"ip\": \"\(cluster.address(index))\"}"), "\(members)")
        }

        // The status channel: a key set on node 1 is read on node 2 under node 1's name; a cluster log entry of node 1's
        // is in every node's log.
        var setBody = [UInt8](repeating: 0, count: 256)
        setBody.replaceSubrange(0..<6, with: Array("nodeip".utf8))
        #expect(try Self.ipc(cluster, 1, nodes[0], .setStatus, setBody + Array("192.0.2.11".utf8)).0 == 0)
        var getBody = [UInt8](repeating: 0, count: 512)
        getBody.replaceSubrange(0..<6, with: Array("nodeip".utf8))
        getBody.replaceSubrange(256..<261, with: Array("node1".utf8))
        #expect(waitFor(seconds: 10) { (try? Self.ipc(cluster, 2, nodes[1], .getStatus, getBody))?.1 == Array("192.0.2.11".utf8) })
        let version = Self.read(nodes[1], ".version") ?? ""
        #expect(version.contains("\"node1\": {\n\"nodeip\": 0}") && !version.contains("\"clinfo\": 0,"),
                ".version: every node's status keys, the cluster view's version: \(version)")
        let ident = Array("root@pam".utf8) + [0], tag = Array("test".utf8) + [0]
        #expect(try Self.ipc(cluster, 1, nodes[0], .logClusterMessage,
                             [6, UInt8(ident.count), UInt8(tag.count)] + ident + tag + Array("hello cluster".utf8) + [0]).0 == 0)
        #expect(waitFor(seconds: 10) { nodes.allSatisfy { Self.read($0, ".clusterlog")?.contains("hello cluster") == true } })

        // Durable when: a change is in its writer's database before the writer is answered; another node keeps it in
        // memory until one of its own writers is answered (its database takes everything delivered before that), its
        // delay passes, or it stops. kill -9 loses what waited, and the restarted node takes it from the cluster.
        func stored(_ daemon: PMXCFSProcess, _ name: String) -> Bool {
            !NodeDatabase.rows(daemon.database, "SELECT inode FROM tree WHERE name = '\(name)'").isEmpty
        }
        #expect(Self.put(nodes[0], "durable-1", "one") == 0)
        #expect(stored(nodes[0], "durable-1"), "in the writer's database")
        #expect(waitFor(seconds: 10) { Self.read(nodes[1], "durable-1") == "one" })
        #expect(!stored(nodes[1], "durable-1"), "in node 2's memory only")
        #expect(Self.put(nodes[1], "durable-2", "two") == 0)
        #expect(stored(nodes[1], "durable-2") && stored(nodes[1], "durable-1"), "node 2's own change, and what came before it")
        #expect(Self.put(nodes[0], "durable-3", "three") == 0)
        #expect(waitFor(seconds: 10) { Self.read(nodes[1], "durable-3") == "three" })
        #expect(!stored(nodes[1], "durable-3"))
        #expect(nodes[1].stop() == 0)
        #expect(stored(nodes[1], "durable-3"), "written when the daemon stopped")
        try nodes[1].start()
        // Synced and quorate again (a write of its own answered): a change delivered before node 2 learned of quorum
        // would be refused there, and the resync that follows would write it into node 2's database.
        #expect(waitFor(seconds: 60) { Self.put(nodes[1], "durable-settled", "yes") == 0 })
        #expect(Self.put(nodes[0], "durable-4", "four") == 0)
        #expect(waitFor(seconds: 10) { Self.read(nodes[1], "durable-4") == "four" })
        nodes[1].crash()
        #expect(!stored(nodes[1], "durable-4"), "lost with the process")
        try nodes[1].start()
        #expect(waitFor(seconds: 60) { Self.read(nodes[1], "durable-4") == "four" }, "taken from the cluster")
        #expect(stored(nodes[1], "durable-4"), "and written with the tree it took")

        // A write on one node is read back on the others: at once, the writer returns after its change was applied
        // everywhere it was delivered (the others see it by the time they deliver it).
        #expect(Self.put(nodes[0], "storage.cfg", "dir: local\n\tpath /var/lib/vz\n") == 0)
        #expect(waitFor(seconds: 10) { nodes.allSatisfy { Self.read($0, "storage.cfg") == "dir: local\n\tpath /var/lib/vz\n" } })
        var latencies: [Double] = []
        for index in 0..<50 {
            let started = Date()
            #expect(Self.put(nodes[index % 3], "latency", "\(index)") == 0)
            let reader = nodes[(index + 1) % 3]
            _ = waitFor(seconds: 10) { Self.read(reader, "latency") == "\(index)" }
            latencies.append(Date().timeIntervalSince(started) * 1000)
        }
        latencies.sort()
        print("cluster mode: write on one node until read back on another, 50 writes: p50 \(String(format: "%.1f", latencies[25])) ms, "
              + "p99 \(String(format: "%.1f", latencies[49])) ms")

        // The same new VMID from three nodes at once: one config wins, the others get EEXIST.
        let vmids = Mutex<[Int32]>([])
        DispatchQueue.concurrentPerform(iterations: 3) { index in
            let result = Self.put(nodes[index], "nodes/node\(index + 1)/qemu-server/4242.conf", "memory: 512\n")
            vmids.withLock { $0.append(result) }
        }
        #expect(vmids.withLock { $0.sorted() } == [0, EEXIST, EEXIST])

        // The same file written from two nodes: identical everywhere, equal to one of the two writes.
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            for round in 0..<20 { _ = Self.put(nodes[index], "contended", "writer \(index) round \(round)\n") }
        }
        // Each node applies a change when it delivers it: the last one arrives everywhere within moments.
        #expect(waitFor(seconds: 10) { Set(nodes.map { Self.read($0, "contended") }).count == 1 },
                "\(nodes.map { Self.read($0, "contended") })")
        #expect(Self.read(nodes[0], "contended")?.hasSuffix("round 19\n") == true)

        var info = stat()
        // The kernel's caches on node 2 never serve what another node changed. Node 2 holds pages, attributes and names
        // (read twice, stat, a descriptor kept open, a name found missing); node 1 rewrites a file in place at the same
        // size, replaces one through tmp+rename, renames one away, removes one and creates the missing name. Once node 2
        // has acknowledged a write of its own (ordered after all of node 1's), everything reads as node 1 left it, at
        // once: the invalidation was part of applying each change there.
        let cached = ["inplace", "replaced", "moved", "removed"]
        for name in cached { #expect(Self.put(nodes[0], "cache-\(name)", "old \(name)\n") == 0) }
        #expect(waitFor(seconds: 10) { cached.allSatisfy { Self.read(nodes[1], "cache-\($0)") == "old \($0)\n" } })
        for name in cached {
            _ = Self.read(nodes[1], "cache-\(name)")
            #expect(stat(nodes[1].path("cache-\(name)"), &info) == 0)
        }
        let held = open(nodes[1].path("cache-inplace"), O_RDONLY)
        defer { close(held) }
        #expect(Self.read(nodes[1], "cache-created") == nil)
        let inPlace = open(nodes[0].path("cache-inplace"), O_WRONLY)
        #expect(inPlace >= 0 && pwrite(inPlace, "new", 3, 0) == 3)
        close(inPlace)
        #expect(Self.replace(nodes[0], "cache-replaced", "new replaced\n") == 0)
        #expect(rename(nodes[0].path("cache-moved"), nodes[0].path("cache-moved-away")) == 0)
        #expect(unlink(nodes[0].path("cache-removed")) == 0)
        #expect(Self.put(nodes[0], "cache-created", "new created\n") == 0)
        #expect(Self.put(nodes[1], "cache-barrier", "ordered after node 1's changes") == 0)
        #expect(Self.read(nodes[1], "cache-inplace") == "new inplace\n")
        var heldBytes = [UInt8](repeating: 0, count: 64)
        let heldCount = pread(held, &heldBytes, 64, 0)
        #expect(heldCount > 0 && String(decoding: heldBytes.prefix(heldCount), as: UTF8.self) == "new inplace\n", "through the open descriptor")
        #expect(Self.read(nodes[1], "cache-replaced") == "new replaced\n")
        #expect(!FileManager.default.fileExists(atPath: nodes[1].path("cache-moved")))
        #expect(Self.read(nodes[1], "cache-moved-away") == "old moved\n")
        #expect(!FileManager.default.fileExists(atPath: nodes[1].path("cache-removed")))
        #expect(Self.read(nodes[1], "cache-created") == "new created\n")

        // corosync.conf written into the tree reaches every node's corosync when its config_version is not lower; the
        // writing node reloads corosync, and the cluster stays quorate.
        // Written as the tools write it: a new file, renamed over the old one (one replicated change for the content).
        let bumped = cluster.configuration.replacingOccurrences(of: "config_version: 1", with: "config_version: 2")
        #expect(Self.replace(nodes[0], "corosync.conf", bumped) == 0)
        #expect(waitFor(seconds: 20) { (1...3).allSatisfy { Self.installed(cluster, $0).contains("config_version: 2") } },
                "installed on every node: \((1...3).map { Self.installed(cluster, $0).contains("config_version: 2") })")
        #expect(waitFor(seconds: 20) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "still quorate after the reload")
        #expect(waitFor(seconds: 10) { nodes.allSatisfy { Self.read($0, ".members")?.contains("\"version\": 2, \"nodes\": 3") == true } },
                ".members follows the new file (parsed once per version of it): \(Self.read(nodes[1], ".members") ?? "")")
        #expect(Self.replace(nodes[1], "corosync.conf", cluster.configuration) == 0)
        #expect(waitFor(seconds: 10) { Self.read(nodes[2], "corosync.conf") == cluster.configuration })
        #expect((1...3).allSatisfy { Self.installed(cluster, $0).contains("config_version: 2") }, "a lower config_version is not installed")
        #expect(Self.replace(nodes[1], "corosync.conf", bumped) == 0)


        // The same lock taken from three nodes at once: exactly one wins.
        let outcomes = Mutex<[Int32]>([])
        DispatchQueue.concurrentPerform(iterations: 3) { index in
            let result = mkdir(nodes[index].path("priv/lock/race"), 0o755) == 0 ? 0 : errno
            outcomes.withLock { $0.append(result) }
        }
        #expect(outcomes.withLock { $0.sorted() } == [0, EEXIST, EEXIST])
        // Each mkdir returned after its own node applied it; the others apply it as the message reaches them.
        #expect(waitFor(seconds: 10) { Set(nodes.map(Self.tree)).count == 1 }, "identical trees, inode numbers included")

        // Locks expire through the lowest node (node 1), judged by when it first saw the lock on its own clock: node 3's
        // request for a fresh lock of node 2's leaves it; a refresh only by its holder, and it starts the time again;
        // requested once older than the expiry, the lock goes on every node.
        let expiring = "priv/lock/expiring"
        #expect(mkdir(nodes[1].path(expiring), 0o755) == 0)
        #expect(waitFor(seconds: 10) { FileManager.default.fileExists(atPath: nodes[2].path(expiring)) })
        let unlockRequest = [timespec(tv_sec: 0, tv_nsec: 0), timespec(tv_sec: 0, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, nodes[2].path(expiring), unlockRequest, 0) == 0)
        #expect(!waitFor(seconds: 1) { !FileManager.default.fileExists(atPath: nodes[0].path(expiring)) }, "a fresh lock stays")
        #expect(utimensat(AT_FDCWD, nodes[2].path(expiring), nil, 0) == -1 && errno == EACCES, "only its holder refreshes a lock")
        #expect(utimensat(AT_FDCWD, nodes[1].path(expiring), nil, 0) == 0, "its holder does")
        let refreshed = Date()
        #expect(waitFor(seconds: 30) {
            _ = utimensat(AT_FDCWD, nodes[2].path(expiring), unlockRequest, 0)
            return waitFor(seconds: 0.5) { nodes.allSatisfy { !FileManager.default.fileExists(atPath: $0.path(expiring)) } }
        }, "an expired lock goes on request")
        #expect(Date().timeIntervalSince(refreshed) >= Double(Self.lockExpiry), "not before the expiry")

        // Changes that do not come back: node 3's corosync stops answering (node 3 cannot tell), and writes to twelve
        // files there and a create wait for their changes, then get EBUSY after the write timeout. Meanwhile the mount
        // goes on serving: a waiting change holds no libfuse worker (at most 10), the thread that applies it answers.
        // Once corosync runs again the cluster holds one tree (with those changes or without them: their outcome was
        // unknown to the writers, as with any timeout).
        let waiting = (0..<12).map { "nodes/node3/waiting-\($0)" }
        for name in waiting { #expect(Self.put(nodes[2], name, "before") == 0) }
        cluster.signal(3, SIGSTOP)
        do {
            defer { cluster.signal(3, SIGCONT) }
            let unanswered = Mutex<[(result: Int32, seconds: Double)]>([])
            let writers = (waiting + ["nodes/node3/unanswered"]).map { name in
                Thread {
                    let started = Date()
                    let result = name.hasSuffix("unanswered") ? Self.put(nodes[2], name, "x") : Self.overwrite(nodes[2], name, "after!")
                    unanswered.withLock { $0.append((result, Date().timeIntervalSince(started))) }
                }
            }
            writers.forEach { $0.start() }
            #expect(!waitFor(seconds: 1) { !unanswered.withLock { $0.isEmpty } }, "the changes wait")
            let askedAt = Date()
            #expect(Self.read(nodes[2], ".members")?.contains("\"nodename\": \"node3\"") == true)
            #expect(Date().timeIntervalSince(askedAt) < 2.5, "served meanwhile, in \(Date().timeIntervalSince(askedAt)) s")
            #expect(waitFor(seconds: 60) { unanswered.withLock { $0.count } == writers.count })
            for (result, seconds) in unanswered.withLock({ $0 }) {
                #expect(result == EBUSY && seconds >= Double(Self.writeTimeout) && seconds < Double(Self.writeTimeout) + 20,
                        "EBUSY after the write timeout: \(result) after \(seconds) s")
            }

            // SIGTERM while a change is in flight: the daemon ends cleanly (no answer is given once its FUSE session is
            // gone), and the writer gets an error, not a hang.
            let interrupted = Mutex<Int32?>(nil)
            let inFlight = Thread {
                let result = Self.put(nodes[2], "nodes/node3/in-flight", "x")
                interrupted.withLock { $0 = result }
            }
            inFlight.start()
            #expect(!waitFor(seconds: 1) { interrupted.withLock { $0 } != nil }, "the create waits for its change")
            #expect(nodes[2].stop() == 0, "pmxcfs exits cleanly with a change in flight")
            #expect(waitFor(seconds: 30) { interrupted.withLock { $0 } != nil }, "the writer is not left hanging")
            #expect(interrupted.withLock { $0 } != 0)
        }
        try nodes[2].start()
        #expect(waitFor(seconds: 60) { (1...3).allSatisfy { cluster.isQuorate($0) == true } }, "quorate again")
        #expect(waitFor(seconds: 60) { Set(nodes.map(Self.tree)).count == 1 }, "one tree again after corosync went on")

        // A cut node goes read-only; the majority keeps writing after the detection pause.
        try cluster.cut(3)
        #expect(waitFor(seconds: 30) { Self.put(nodes[2], "nodes/node3/cut-off", "x") == EACCES }, "the cut node refuses writes")
        #expect(stat(nodes[2].path("storage.cfg"), &info) == 0 && info.st_mode & 0o777 == 0o440, "read-only modes")
        #expect(Self.read(nodes[2], ".members")?.contains("\"quorate\": 0") == true)
        #expect(waitFor(seconds: 30) { Self.read(nodes[0], ".members")?.contains("\"node3\": { \"id\": 3, \"online\": 0") == true },
                "the majority sees node 3 offline: \(Self.read(nodes[0], ".members") ?? "")")
        #expect(waitFor(seconds: 30) { Self.put(nodes[0], "datacenter.cfg", "keyboard: en-us\n") == 0 }, "the majority writes")
        // The other majority node applies it when it delivers it (the writer waits for its own delivery, not for others').
        #expect(waitFor(seconds: 10) { Self.read(nodes[1], "datacenter.cfg") == "keyboard: en-us\n" })
        try cluster.heal(3)
        #expect(waitFor(seconds: 60) { Self.read(nodes[2], "datacenter.cfg") == "keyboard: en-us\n" }, "healed and resynced")
        #expect(waitFor(seconds: 30) { Set(nodes.map(Self.tree)).count == 1 }, "identical trees after the heal")
        #expect(waitFor(seconds: 30) { Self.put(nodes[2], "nodes/node3/back", "y") == 0 }, "writable again")

        // kill -9 of a node's pmxcfs in the middle of a write stream: every acknowledged write is on the survivors; the
        // restarted node (node 2, which had committed little of the stream: its delay is an hour) resyncs.
        let acknowledged = Mutex<[Int]>([])
        let writer = Thread {
            for index in 0..<400 where Self.put(nodes[0], "stream-\(index)", "\(index)") == 0 { acknowledged.withLock { $0.append(index) } }
        }
        writer.start()
        _ = waitFor(seconds: 10) { acknowledged.withLock { $0.count } > 50 }
        nodes[1].crash()
        _ = waitFor(seconds: 60) { writer.isFinished }
        // The writer waits for its own delivery only: node 3 may still be applying the last ones (under load).
        _ = waitFor(seconds: 30) { acknowledged.withLock { $0 }.allSatisfy { Self.read(nodes[2], "stream-\($0)") == "\($0)" } }
        for index in acknowledged.withLock({ $0 }) {
            #expect(Self.read(nodes[0], "stream-\(index)") == "\(index)" && Self.read(nodes[2], "stream-\(index)") == "\(index)")
        }
        try nodes[1].start()
        #expect(waitFor(seconds: 60) { Self.tree(nodes[1]) == Self.tree(nodes[0]) }, "the restarted node resynced")

        // kill -9 of a node's corosync in the middle of a write stream: every acknowledged write is on the survivors; when
        // corosync is back, that node's pmxcfs joins again by itself and resyncs.
        let acknowledgedAcrossCorosync = Mutex<[Int]>([])
        let stream = Thread {
            for index in 0..<300 where Self.put(nodes[0], "cs-\(index)", "\(index)") == 0 {
                acknowledgedAcrossCorosync.withLock { $0.append(index) }
            }
        }
        stream.start()
        _ = waitFor(seconds: 10) { acknowledgedAcrossCorosync.withLock { $0.count } > 30 }
        cluster.stop(2, kill: true)
        #expect(waitFor(seconds: 120) { stream.isFinished })
        _ = waitFor(seconds: 30) { acknowledgedAcrossCorosync.withLock { $0 }.allSatisfy { Self.read(nodes[2], "cs-\($0)") == "\($0)" } }
        for index in acknowledgedAcrossCorosync.withLock({ $0 }) {
            #expect(Self.read(nodes[0], "cs-\(index)") == "\(index)" && Self.read(nodes[2], "cs-\(index)") == "\(index)")
        }
        try cluster.start(2)
        #expect(waitFor(seconds: 90) { Self.tree(nodes[1]) == Self.tree(nodes[0]) }, "node 2 joined again and resynced")

        // An empty node joins: node 3 restarted on a new database receives the whole tree, a 1 MiB file included.
        #expect(Self.put(nodes[0], "big", String(repeating: "z", count: 1 << 20)) == 0)
        nodes[2].stop()
        let fresh = try Self.node(cluster, 3, directory: try TemporaryDirectory(prefix: "pmxcfs-fresh"))
        defer { fresh.stop() }
        #expect(waitFor(seconds: 60) { Self.tree(fresh) == Self.tree(nodes[0]) }, "the joiner holds the cluster's tree")
        #expect(Self.read(fresh, "big")?.count == 1 << 20)
        #expect(waitFor(seconds: 10) { (try? Self.ipc(cluster, 3, fresh, .getStatus, getBody))?.1 == Array("192.0.2.11".utf8) },
                "the joiner learns the others' status keys")
        #expect(waitFor(seconds: 10) { Self.read(fresh, ".clusterlog")?.contains("hello cluster") == true }, "and their log")
    }
}
