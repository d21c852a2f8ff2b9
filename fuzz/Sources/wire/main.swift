import ClusterFS
import Foundation
import FuzzSupport

// A replicated change as the wire carries it (ClusterFS's TreeOperation): any bytes decode to an operation or a clear
// error, never a trap; a decoded operation encodes back to itself; applied as another node's change to a real tree on
// SQLite it never traps either, and every 256 inputs the database read back from disk equals the tree in memory.
// A tree in a scratch directory removed at exit, started afresh every 8192 changes (a long run's tree would only grow).
let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-wire-\(getpid())").path
try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
atexit { try? FileManager.default.removeItem(atPath: scratch) }
nonisolated(unsafe) var applied = 0
nonisolated(unsafe) var database = ""
nonisolated(unsafe) var tree = freshTree()

func freshTree() -> ClusterFileSystem {
    database = scratch + "/config-\(applied).db"
    let tree = try! ClusterFileSystem(databasePath: database, node: "fuzz")
    tree.enterClusterMode()
    return tree
}

FuzzSupport.main { data, size in
    guard let operation = try? TreeOperation(decoding: Array(UnsafeBufferPointer(start: data, count: size))) else { return }
    precondition((try? TreeOperation(decoding: operation.encoded())) == operation, "an operation does not survive its own encoding")
    _ = tree.apply(operation, stamp: Stamp(writer: 2, time: 1_700_000_000), seenByKernel: false)
    applied += 1
    if applied % 256 == 0 {
        let reopened = try! ClusterFileSystem(databasePath: database, node: "fuzz")
        precondition(reopened.snapshot().digest == tree.snapshot().digest, "the database read back differs from the tree in memory")
    }
    if applied % 8192 == 0 {
        let old = database
        tree = freshTree()
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: old + suffix) }
    }
}
