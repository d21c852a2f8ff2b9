@testable import ClusterFS
import Foundation
import Synchronization
import Testing
import TestSupport

/// The file system as a deterministic state machine, the footing of cluster mode: the same operations with the same
/// stamps give the same tree everywhere (inode numbers included), operations survive their wire encoding, and a node
/// can take another's whole tree in one transaction.
@Suite("ClusterFS replicas: operations, stamps, snapshots")
struct ReplicaTests {
    final class Replica: Sendable {
        let directory: TemporaryDirectory
        let fs: ClusterFileSystem

        init(node: String = "node1") throws {
            directory = try TemporaryDirectory(prefix: "pvectl-replica")
            fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: node, clock: { 1_700_000_000 })
        }

        func reopened() throws -> ClusterFileSystem {
            try ClusterFileSystem(databasePath: directory.path + "/config.db", node: fs.node, clock: { 1_700_000_000 })
        }

        func text(_ path: String) -> String? {
            let (result, attributes) = fs.getattr(path)
            guard result == 0, let attributes else { return nil }
            return String(decoding: fs.read(path, size: attributes.size, offset: 0).1, as: UTF8.self)
        }
    }

    static let operations: [(TreeOperation, Stamp)] = [
        (.mkdir("/nodes/node2"), Stamp(writer: 2, time: 1_700_000_010)),
        (.mkdir("/nodes/node2/qemu-server"), Stamp(writer: 2, time: 1_700_000_011)),
        (.create("/nodes/node2/qemu-server/100.conf.tmp.7"), Stamp(writer: 2, time: 1_700_000_012)),
        (.write("/nodes/node2/qemu-server/100.conf.tmp.7", offset: 0, data: Array("memory: 512\n".utf8)), Stamp(writer: 2, time: 1_700_000_013)),
        (.rename("/nodes/node2/qemu-server/100.conf.tmp.7", to: "/nodes/node2/qemu-server/100.conf"), Stamp(writer: 2, time: 1_700_000_014)),
        (.create("/storage.cfg"), Stamp(writer: 1, time: 1_700_000_015)),
        (.write("/storage.cfg", offset: 0, data: Array("dir: local\n\tpath /var/lib/vz\n".utf8)), Stamp(writer: 1, time: 1_700_000_016)),
        (.truncate("/storage.cfg", size: 10), Stamp(writer: 3, time: 1_700_000_017)),
        (.mkdir("/priv/lock/file-storage"), Stamp(writer: 3, time: 1_700_000_018)),
        (.mkdir("/priv/lock/file-storage"), Stamp(writer: 1, time: 1_700_000_019)),
        (.unlock("/priv/lock/file-storage", digest: [UInt8](repeating: 7, count: 32)), Stamp(writer: 1, time: 1_700_000_200)),
        (.create("/nodes/node1/lxc/100.conf"), Stamp(writer: 1, time: 1_700_000_201)),
        (.unlink("/storage.cfg"), Stamp(writer: 2, time: 1_700_000_202)),
    ]

    @Test("the same operations with the same stamps give the same tree and the same answers on two replicas")
    func deterministic() throws {
        let first = try Replica(), second = try Replica()
        let answers = Self.operations.map { first.fs.apply($0.0, stamp: $0.1) }
        #expect(Self.operations.map { second.fs.apply($0.0, stamp: $0.1) } == answers)
        #expect(answers[9] == -EEXIST, "the second mkdir of a lock loses")
        #expect(answers[11] == -EEXIST, "VMID 100 is node2's VM already")
        #expect(first.fs.snapshot() == second.fs.snapshot())
        #expect(first.fs.snapshot().digest == second.fs.snapshot().digest)
        #expect(try first.reopened().snapshot() == first.fs.snapshot(), "the database holds what memory holds")
        #expect(first.text("/nodes/node2/qemu-server/100.conf") == "memory: 512\n")
        let lock = "/priv/lock/file-storage"
        #expect(first.fs.getattr(lock).0 == 0, "an unlock for another entry (digest) leaves the lock")
        let digest = try #require(first.fs.lockDigest(lock))
        #expect(second.fs.lockDigest(lock) == digest, "a lock's digest is the same on every replica")
        for replica in [first, second] {
            #expect(replica.fs.apply(.unlock(lock, digest: digest), stamp: Stamp(writer: 1, time: 1_700_000_300)) == 0)
        }
        #expect(first.fs.getattr(lock).0 == -ENOENT, "the unlock the lowest node sent releases the lock on every replica")
        #expect(first.fs.snapshot() == second.fs.snapshot())
        let row = try #require(first.fs.snapshot().rows.first { $0.name == "100.conf" })
        #expect(row.writer == 2 && row.mtime == 1_700_000_014, "the writer and time are the stamp's")
    }

    @Test("operations survive their encoding; short, unknown, oversized or trailing bytes are errors, never traps")
    func encoding() throws {
        for (operation, _) in Self.operations {
            let bytes = operation.encoded()
            #expect(try TreeOperation(decoding: bytes) == operation)
            for count in 0..<bytes.count {
                #expect(throws: TreeOperation.DecodeError.self) { try TreeOperation(decoding: Array(bytes.prefix(count))) }
            }
            #expect(throws: TreeOperation.DecodeError.self) { try TreeOperation(decoding: bytes + [0]) }
        }
        #expect(try TreeOperation(decoding: TreeOperation.mtime("/a", nil).encoded()) == .mtime("/a", nil))
        #expect(throws: TreeOperation.DecodeError.self) { try TreeOperation(decoding: [99]) }
        #expect(throws: TreeOperation.DecodeError.self) { try TreeOperation(decoding: [3, 255, 255, 255, 255]) }
        // Names no kernel hands a mount: a NUL byte (found by the wire fuzzer: SQLite kept "pri" of "pri\0…", and the
        // database read back had two entries of one name), "." or "..".
        for path in ["/pri\u{0}x", "/a/../b", "/./a", "/..", "/a/."] {
            #expect(throws: TreeOperation.DecodeError.self) { try TreeOperation(decoding: TreeOperation.create(path).encoded()) }
            #expect(throws: TreeOperation.DecodeError.self) { try TreeOperation(decoding: TreeOperation.rename("/a", to: path).encoded()) }
        }
        #expect(try TreeOperation(decoding: TreeOperation.create("/a..b/.c").encoded()) == .create("/a..b/.c"))
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let noise = (0..<Int.random(in: 0...40, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = try? TreeOperation(decoding: noise)
        }
    }

    @Test("another node's change notifies the kernel only about node ids it holds: looked up and not forgotten, or the root")
    func notifiesOnlyHeldNodes() throws {
        let replica = try Replica()
        let fs = replica.fs
        fs.enterClusterMode()
        let notified = Mutex<[CacheInvalidation]>([])
        fs.invalidateKernelCache = { stale in notified.withLock { $0.append(stale) } }
        func change(_ operation: TreeOperation) -> [CacheInvalidation] {
            notified.withLock { $0.removeAll() }
            #expect(fs.apply(operation, stamp: Stamp(writer: 2, time: 1_700_000_100), seenByKernel: false) >= 0)
            return notified.withLock { $0 }
        }
        #expect(change(.create("/a.conf")) == [CacheInvalidation(attributes: [ClusterFileSystem.rootNodeID], contents: [])])
        let node = try #require(fs.getattr("/a.conf").1?.nodeID)
        #expect(change(.write("/a.conf", offset: 0, data: Array("x".utf8))).isEmpty, "never looked up: nothing to tell the kernel")
        fs.kernelNodes.learned(node)
        fs.kernelNodes.learned(node)
        #expect(change(.write("/a.conf", offset: 0, data: Array("y".utf8))) == [CacheInvalidation(attributes: [node], contents: [node])])
        fs.kernelNodes.forgot(node, count: 1)
        #expect(!change(.write("/a.conf", offset: 0, data: Array("z".utf8))).isEmpty, "one of two lookups is still held")
        fs.kernelNodes.forgot(node, count: 1)
        #expect(!fs.kernelNodes.holds(node))
        #expect(change(.write("/a.conf", offset: 0, data: Array("w".utf8))).isEmpty)
    }

    @Test("corosync.conf's config_version is read with Unix or Windows line endings, the first one in the file")
    func corosyncConfigVersion() {
        let unix = "totem {\n  version: 2\n  config_version: 7\n}\nnodelist {\n  config_version: 9\n}\n"
        #expect(Replicator.configVersion(Array(unix.utf8)) == 7)
        #expect(Replicator.configVersion(Array(unix.replacingOccurrences(of: "\n", with: "\r\n").utf8)) == 7)
        #expect(Replicator.configVersion(Array("totem {\n}\n".utf8)) == nil)
    }

    @Test("a lagging replica takes another's whole tree in one transaction: memory, database and guest list")
    func takeSnapshot() throws {
        let leader = try Replica(), lagging = try Replica()
        for (operation, stamp) in Self.operations { _ = leader.fs.apply(operation, stamp: stamp) }
        _ = lagging.fs.apply(.create("/only-here"), stamp: Stamp(writer: 3, time: 1_700_000_001))
        let snapshot = leader.fs.snapshot()
        try lagging.fs.replace(with: snapshot)
        #expect(lagging.fs.snapshot() == snapshot)
        #expect(lagging.text("/only-here") == nil)
        #expect(lagging.text("/nodes/node2/qemu-server/100.conf") == "memory: 512\n")
        #expect(String(decoding: lagging.fs.statusFile(".vmlist"), as: UTF8.self).contains("\"100\""), "the guest list follows")
        #expect(try lagging.reopened().snapshot() == snapshot)
        // The next operation lands on the same inode number on both.
        let next = (TreeOperation.create("/after"), Stamp(writer: 1, time: 1_700_000_300))
        #expect(leader.fs.apply(next.0, stamp: next.1) == lagging.fs.apply(next.0, stamp: next.1))
        #expect(leader.fs.snapshot().digest == lagging.fs.snapshot().digest)

        var broken = snapshot
        broken.rows.append(TreeSnapshot.Row(inode: 9999, parent: 4242, version: 1, writer: 1, mtime: 1, type: 8, name: "orphan", data: []))
        #expect(throws: ClusterFileSystem.StartupError.self) { try lagging.fs.replace(with: broken) }
        #expect(lagging.fs.snapshot().digest == leader.fs.snapshot().digest, "a refused snapshot changes nothing")
    }

    /// `operations` applied in batches of four, each persisted at once or left waiting; the answers.
    static func applyInBatches(_ replica: Replica, persistNow: Bool) -> [Int32] {
        var answers: [Int32] = []
        for start in stride(from: 0, to: operations.count, by: 4) {
            let chunk = operations[start..<min(start + 4, operations.count)]
            let (results, persisted) = replica.fs.apply(batch: chunk.map { .init($0.0, stamp: $0.1, seenByKernel: false) },
                                                        persistNow: persistNow)
            #expect(persisted)
            answers += results
        }
        return answers
    }

    @Test("changes delivered together: one transaction, the answers and the tree of applying them one by one, durable")
    func batch() throws {
        let single = try Replica(), batched = try Replica()
        let answers = Self.operations.map { single.fs.apply($0.0, stamp: $0.1, seenByKernel: false) }
        #expect(Self.applyInBatches(batched, persistNow: true) == answers,
                "refusals (EEXIST) inside a batch are answered and the batch still commits")
        #expect(batched.fs.snapshot() == single.fs.snapshot())
        #expect(try batched.reopened().snapshot() == batched.fs.snapshot(), "the database holds what memory holds")
    }

    @Test("changes left waiting reach the database together, each entry's last state once; the database stays a prefix")
    func deferredPersistence() throws {
        let single = try Replica(), deferred = try Replica()
        let answers = Self.operations.map { single.fs.apply($0.0, stamp: $0.1, seenByKernel: false) }
        let before = try deferred.reopened().snapshot()
        #expect(Self.applyInBatches(deferred, persistNow: false) == answers)
        #expect(deferred.fs.snapshot() == single.fs.snapshot(), "memory holds every change at once")
        #expect(try deferred.reopened().snapshot() == before, "the database none of them yet")
        #expect(deferred.fs.persistDeferred())
        #expect(try deferred.reopened().snapshot() == single.fs.snapshot(), "then all of them")
        #expect(try deferred.reopened().snapshot().digest == single.fs.snapshot().digest)

        // A change persisted at once (a writer here waits for it) takes what waits before it along.
        let stamp = Stamp(writer: 2, time: 1_700_000_300)
        let waiting: [ClusterFileSystem.DeliveredChange] = [.init(.create("/later.cfg"), stamp: stamp, seenByKernel: false),
                                                            .init(.write("/later.cfg", offset: 0, data: [1, 2]), stamp: stamp, seenByKernel: false)]
        #expect(deferred.fs.apply(batch: waiting, persistNow: false) == ([0, 2], true))
        #expect(try deferred.reopened().getattr("/later.cfg").0 == -ENOENT)
        #expect(deferred.fs.apply(batch: [.init(.create("/mine.cfg"), stamp: stamp, seenByKernel: true)], persistNow: true) == ([0], true))
        #expect(try deferred.reopened().snapshot() == deferred.fs.snapshot())
        // So does a change applied alone (local mode's path).
        #expect(deferred.fs.apply(batch: [.init(.unlink("/later.cfg"), stamp: stamp, seenByKernel: false)], persistNow: false).persisted)
        #expect(deferred.fs.apply(.mkdir("/alone"), stamp: stamp) == 0)
        #expect(try deferred.reopened().snapshot() == deferred.fs.snapshot())
    }

    @Test("changes the database cannot take (its disk is full) stay in memory and wait; their writers get EIO",
          .enabled(if: getuid() == 0, "mounting a small tmpfs needs root"))
    func batchOnFullDisk() throws {
        let directory = try TemporaryDirectory(prefix: "pvectl-full-batch")
        let disk = directory.path + "/disk"
        try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: true)
        guard mount("tmpfs", disk, "tmpfs", 0, "size=2m") == 0 else {
            Issue.record("cannot mount a tmpfs: \(String(cString: strerror(errno)))")
            return
        }
        defer { umount2(disk, Int32(MNT_DETACH)) }
        let stamp = Stamp(writer: 2, time: 1_700_000_100)
        let fs = try ClusterFileSystem(databasePath: disk + "/config.db", node: "node1", clock: { 1_700_000_000 })
        #expect(fs.apply(.create("/kept.cfg"), stamp: stamp, seenByKernel: false) == 0)
        let before = fs.snapshot()
        // The rest of the disk taken, so that the batch's commit (its WAL frames) finds no room.
        #expect(FileManager.default.createFile(atPath: disk + "/filler", contents: nil))
        let filler = try #require(FileHandle(forWritingAtPath: disk + "/filler"))
        let chunk = Data(count: 64 * 1024)
        while (try? filler.write(contentsOf: chunk)) != nil {}
        try filler.close()
        let big = [UInt8](repeating: 7, count: 512 * 1024)
        let batch: [ClusterFileSystem.DeliveredChange] = [
            .init(.create("/a.cfg"), stamp: stamp, seenByKernel: false),
            .init(.write("/a.cfg", offset: 0, data: big), stamp: stamp, seenByKernel: false),
            .init(.create("/b.cfg"), stamp: stamp, seenByKernel: false),
            .init(.write("/b.cfg", offset: 0, data: big), stamp: stamp, seenByKernel: false),
        ]
        let (results, persisted) = fs.apply(batch: batch, persistNow: true)
        #expect(!persisted)
        #expect(results == [-EIO, -EIO, -EIO, -EIO], "not known durable here")
        let reference = try Replica()
        for change in [(TreeOperation.create("/kept.cfg"), stamp)] + batch.map({ ($0.operation, $0.stamp) }) {
            _ = reference.fs.apply(change.0, stamp: change.1, seenByKernel: false)
        }
        #expect(fs.snapshot() == reference.fs.snapshot(), "memory holds the tree as the cluster applied it")
        #expect(try ClusterFileSystem(databasePath: disk + "/config.db", node: "node1", clock: { 1_700_000_000 }).snapshot() == before,
                "the database the tree before the batch, whole")
        #expect(fs.apply(.create("/refused.cfg"), stamp: stamp, seenByKernel: false) == -EIO, "a change alone cannot overtake them")
        try FileManager.default.removeItem(atPath: disk + "/filler")
        #expect(fs.persistDeferred(), "with room again, what waited is written")
        let reopened = try ClusterFileSystem(databasePath: disk + "/config.db", node: "node1", clock: { 1_700_000_000 })
        #expect(reopened.snapshot() == fs.snapshot())
        #expect(fs.apply(.create("/after.cfg"), stamp: stamp, seenByKernel: false) == 0, "and changes go on")
    }
}
