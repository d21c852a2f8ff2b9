import CSQLite
import Foundation
import Synchronization
import Testing
import TestSupport
@testable import ClusterFS

/// A clock tests can move.
final class TestClock: Sendable {
    let seconds = Mutex<UInt32>(1_700_000_000)
    func advance(_ by: UInt32) { seconds.withLock { $0 += by } }
    var now: @Sendable () -> UInt32 { { self.seconds.withLock { $0 } } }
}

func write(_ fs: ClusterFileSystem, _ path: String, _ text: String) -> Int32 {
    let created = fs.create(path)
    if created != 0 && created != -EEXIST { return created }
    _ = fs.truncate(path, size: 0)
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBytes { fs.write(path, bytes: $0, offset: 0) } == Int32(bytes.count) ? 0 : -EIO
}

func content(_ fs: ClusterFileSystem, _ path: String) -> String? {
    let (result, bytes) = fs.read(path, size: 1 << 21, offset: 0)
    return result == 0 ? String(decoding: bytes, as: UTF8.self) : nil
}

@Suite("ClusterFS semantics on a real SQLite database (no mount)")
struct ClusterFileSystemTests {
    @Test("a new database starts at version 1; inodes are the version at creation; every change persists")
    func versionsAndPersistence() throws {
        let directory = try TemporaryDirectory()
        let db = directory.path + "/config.db"
        do {
            let fs = try ClusterFileSystem(databasePath: db, node: "pve1")
            // nodes, nodes/pve1, its 4 subdirectories, priv, priv/lock: 8 entries.
            #expect(fs.currentVersion == 9)
            #expect(fs.getattr("/nodes").1?.inode == 2)
            #expect(write(fs, "/storage.cfg", "dir: local\n\tpath /var/lib/vz\n") == 0)
            #expect(fs.mkdir("/firewall") == 0)
            #expect(fs.rename("/storage.cfg", "/firewall/moved.cfg") == 0)
        }
        let reopened = try ClusterFileSystem(databasePath: db, node: "pve1")
        #expect(content(reopened, "/firewall/moved.cfg") == "dir: local\n\tpath /var/lib/vz\n")
        #expect(reopened.getattr("/storage.cfg").0 == -ENOENT)
        var info = stat()
        #expect(stat(db, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        // Made with 2 KiB pages (see Database.init): the page size sits in the file's header, bytes 16-17.
        let header = try #require(FileHandle(forReadingAtPath: db)).readData(ofLength: 18)
        #expect(header.count == 18 && Int(header[16]) << 8 | Int(header[17]) == 2048)
    }

    @Test("a read right after a change of a small file bypasses the page cache until the kernel has its attributes again")
    func readAfterChange() throws {
        let directory = try TemporaryDirectory()
        let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "pve1")
        #expect(write(fs, "/small.cfg", String(repeating: "x", count: 512)) == 0)
        #expect(write(fs, "/paged.cfg", String(repeating: "x", count: 4096)) == 0)
        let small = try #require(fs.getattr("/small.cfg").1?.nodeID)
        let paged = try #require(fs.getattr("/paged.cfg").1?.nodeID)
        // Written: the kernel holds the size as unknown and a partial last page as not up to date.
        #expect(fs.readBypassesPageCache(node: small) == true)
        // Whole pages are up to date after the write: the cache answers.
        #expect(fs.readBypassesPageCache(node: paged) == false)
        // GETATTR gave the kernel the attributes: cached reads from now on, until the next change.
        #expect(fs.getattr(node: small).0 == 0)
        #expect(fs.readBypassesPageCache(node: small) == false)
        #expect(fs.rename("/small.cfg", "/moved.cfg") == 0)
        #expect(fs.readBypassesPageCache(node: small) == true)
        let root = try #require(fs.getattr("/").1?.nodeID)
        #expect(fs.lookup(parent: root, name: "moved.cfg").result == 0)
        #expect(fs.readBypassesPageCache(node: small) == false)
        #expect(fs.unlink("/moved.cfg") == 0)
        #expect(fs.readBypassesPageCache(node: small) == nil)
    }

    @Test("UNLINK and RMDIR by the parent's node id: the path form's answers, persisted, the vmlist kept")
    func removeByNodeID() throws {
        let directory = try TemporaryDirectory()
        let db = directory.path + "/config.db"
        do {
            let fs = try ClusterFileSystem(databasePath: db, node: "pve1")
            let root = ClusterFileSystem.rootNodeID
            #expect(fs.mkdir("/firewall") == 0)
            #expect(write(fs, "/firewall/cluster.fw", "[OPTIONS]\n") == 0)
            #expect(write(fs, "/nodes/pve1/qemu-server/100.conf", "memory: 512\n") == 0)
            let firewall = try #require(fs.getattr("/firewall").1?.nodeID)
            let guests = try #require(fs.getattr("/nodes/pve1/qemu-server").1?.nodeID)
            #expect(fs.remove(parent: root, name: "firewall", directory: true) == -ENOTEMPTY)
            #expect(fs.remove(parent: root, name: "firewall", directory: false) == -EISDIR)
            #expect(fs.remove(parent: firewall, name: "cluster.fw", directory: true) == -ENOTDIR)
            #expect(fs.remove(parent: firewall, name: "missing.fw", directory: false) == -ENOENT)
            #expect(fs.remove(parent: root, name: ".members", directory: false) == -EACCES, "a status file, through the path form")
            #expect(fs.remove(parent: firewall, name: "cluster.fw", directory: false) == 0)
            #expect(fs.remove(parent: root, name: "firewall", directory: true) == 0)
            #expect(fs.remove(parent: firewall, name: "cluster.fw", directory: false) == -ESTALE, "the directory is gone")
            #expect(content(fs, "/.vmlist")?.contains("\"100\"") == true)
            #expect(fs.remove(parent: guests, name: "100.conf", directory: false) == 0)
            // Names no kernel gives (another node's change is refused before it gets here too).
            #expect(fs.create("/pri\u{0}x") == -EINVAL && fs.mkdir("/..") == -EINVAL)
            #expect(fs.create("/a.cfg") == 0 && fs.rename("/a.cfg", "/.") == -EINVAL)
            #expect(content(fs, "/.vmlist")?.contains("\"100\"") == false, "the guest left the vmlist")
        }
        let reopened = try ClusterFileSystem(databasePath: db, node: "pve1")
        #expect(reopened.getattr("/firewall").0 == -ENOENT)
        #expect(reopened.getattr("/nodes/pve1/qemu-server/100.conf").0 == -ENOENT)
    }

    @Test("a corrupt tree is refused at startup: a missing parent; directories that are each other's parent",
          arguments: [["INSERT INTO tree VALUES (999, 12345, 999, 0, 0, 8, 'orphan', x'00')"],
                      ["INSERT INTO tree VALUES (998, 999, 998, 0, 0, 4, 'a', NULL)",
                       "INSERT INTO tree VALUES (999, 998, 999, 0, 0, 4, 'b', NULL)"]])
    func corruptTree(rows: [String]) throws {
        let directory = try TemporaryDirectory()
        let db = directory.path + "/config.db"
        _ = try ClusterFileSystem(databasePath: db, node: "pve1")
        var handle: OpaquePointer?
        #expect(sqlite3_open(db, &handle) == SQLITE_OK)
        for row in rows { #expect(sqlite3_exec(handle, row, nil, nil, nil) == SQLITE_OK) }
        sqlite3_close(handle)
        #expect(throws: ClusterFileSystem.StartupError.self) { try ClusterFileSystem(databasePath: db, node: "pve1") }
    }

    @Test("ownership root:www-data; priv/ is private; chmod and chown only to what is implied")
    func ownershipAndModes() throws {
        let directory = try TemporaryDirectory()
        let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "pve1")
        #expect(write(fs, "/user.cfg", "user:root@pam:1:0:::::\n") == 0)
        #expect(write(fs, "/priv/shadow.cfg", "secret\n") == 0)
        #expect(fs.getattr("/user.cfg").1?.mode == 0o640)
        #expect(fs.getattr("/user.cfg").1?.uid == 0)
        #expect(fs.getattr("/user.cfg").1?.gid == fs.wwwDataGID)
        #expect(fs.getattr("/priv").1?.mode == 0o700)
        #expect(fs.getattr("/priv/shadow.cfg").1?.mode == 0o600)
        #expect(fs.getattr("/nodes/pve1/priv").1?.mode == 0o700)
        #expect(fs.getattr("/nodes").1?.mode == 0o755)
        #expect(fs.chmod("/user.cfg", mode: 0o640) == 0)
        #expect(fs.chmod("/user.cfg", mode: 0o644) == -EPERM)
        #expect(fs.chown("/user.cfg", uid: 0, gid: fs.wwwDataGID) == 0)
        #expect(fs.chown("/user.cfg", uid: 1000, gid: UInt32.max) == -EPERM)
        #expect(fs.chown("/user.cfg", uid: UInt32.max, gid: 0) == -EPERM)
    }

    @Test("files are limited to 1 MiB")
    func sizeLimit() throws {
        let directory = try TemporaryDirectory()
        let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "pve1")
        #expect(fs.create("/big") == 0)
        let chunk = [UInt8](repeating: 0x41, count: 4096)
        let ok = chunk.withUnsafeBytes { fs.write("/big", bytes: $0, offset: ClusterFileSystem.maxFileSize - 4096) }
        #expect(ok == 4096)
        let tooBig = chunk.withUnsafeBytes { fs.write("/big", bytes: $0, offset: ClusterFileSystem.maxFileSize - 4095) }
        #expect(tooBig == -EFBIG)
        #expect(fs.truncate("/big", size: ClusterFileSystem.maxFileSize + 1) == -EFBIG)
    }

    @Test("rename: keeps the inode; refuses root, specials, lock directories, non-empty directories")
    func renameRules() throws {
        let directory = try TemporaryDirectory()
        let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "pve1")
        #expect(write(fs, "/a.tmp.123", "x") == 0)
        let inode = fs.getattr("/a.tmp.123").1?.inode
        #expect(write(fs, "/a", "old") == 0)
        #expect(fs.rename("/a.tmp.123", "/a") == 0)
        #expect(fs.getattr("/a").1?.inode == inode)
        #expect(content(fs, "/a") == "x")
        #expect(fs.rename("/a", "/.version") == -EACCES)
        #expect(fs.rename("/local", "/x") == -EACCES)
        #expect(fs.mkdir("/priv/lock/file-storage_cfg") == 0)
        #expect(fs.rename("/priv/lock/file-storage_cfg", "/priv/lock/other") == -EACCES)
        #expect(fs.rename("/nodes", "/elsewhere") == -EACCES)
        #expect(fs.mkdir("/empty") == 0)
        #expect(fs.mkdir("/full") == 0)
        #expect(write(fs, "/full/f", "x") == 0)
        #expect(fs.rename("/empty", "/full") == -ENOTEMPTY)
        #expect(fs.rename("/a", "/full") == -EISDIR)
    }

    @Test("names are bytes: one name precomposed and decomposed is two files, as on every Linux file system and in the original")
    func namesAreBytes() throws {
        let directory = try TemporaryDirectory()
        let database = directory.path + "/config.db"
        let precomposed = "/caf\u{E9}.cfg", decomposed = "/cafe\u{301}.cfg"
        // Swift's String calls these two equal (canonical equivalence); the kernel and the original do not.
        #expect(precomposed == decomposed && Array(precomposed.utf8) != Array(decomposed.utf8))
        do {
            let fs = try ClusterFileSystem(databasePath: database, node: "pve1")
            #expect(fs.create(precomposed) == 0)
            #expect(fs.create(decomposed) == 0)
            #expect(write(fs, precomposed, "one") == 0)
            #expect(write(fs, decomposed, "two") == 0)
            #expect(content(fs, precomposed) == "one")
            #expect(fs.rename(decomposed, "/other.cfg") == 0)
            #expect(content(fs, precomposed) == "one")
            #expect(fs.rename("/other.cfg", decomposed) == 0)
        }
        let reopened = try ClusterFileSystem(databasePath: database, node: "pve1")
        let names = reopened.readdir("/").1.filter { $0.hasSuffix(".cfg") }.map { Array($0.utf8) }
        #expect(Set(names) == [Array(precomposed.dropFirst().utf8), Array(decomposed.dropFirst().utf8)])
        #expect(content(reopened, decomposed) == "two")
        #expect(reopened.unlink(precomposed) == 0)
        #expect(content(reopened, decomposed) == "two")
        #expect(reopened.getattr(precomposed).0 == -ENOENT)
    }

    @Test("locks are directories under priv/lock, released on request only after 120 s")
    func locks() throws {
        let directory = try TemporaryDirectory()
        let clock = TestClock()
        let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "pve1", clock: clock.now)
        #expect(fs.mkdir("/priv/lock/ha_agent_pve1_lock") == 0)
        #expect(fs.mkdir("/priv/lock/ha_agent_pve1_lock") == -EEXIST)
        #expect(fs.create("/priv/lock/plain-file") == -EACCES, "priv/lock holds lock directories only")
        clock.advance(100)
        #expect(fs.utimens("/priv/lock/ha_agent_pve1_lock", mtime: 0) == 0)
        #expect(fs.getattr("/priv/lock/ha_agent_pve1_lock").0 == 0, "a fresh lock must stay")
        // A refresh moves the expiry.
        #expect(fs.utimens("/priv/lock/ha_agent_pve1_lock", mtime: nil) == 0)
        clock.advance(119)
        #expect(fs.utimens("/priv/lock/ha_agent_pve1_lock", mtime: 0) == 0)
        #expect(fs.getattr("/priv/lock/ha_agent_pve1_lock").0 == 0)
        clock.advance(2)
        #expect(fs.utimens("/priv/lock/ha_agent_pve1_lock", mtime: 0) == 0)
        #expect(fs.getattr("/priv/lock/ha_agent_pve1_lock").0 == -ENOENT, "an expired lock goes on request")
        #expect(fs.mkdir("/priv/lock/ha_agent_pve1_lock") == 0)
        // Two locks whose names differ in their bytes only (precomposed, decomposed) keep a clock each.
        let precomposed = "/priv/lock/caf\u{E9}", decomposed = "/priv/lock/cafe\u{301}"
        #expect(fs.mkdir(precomposed) == 0 && fs.mkdir(decomposed) == 0)
        clock.advance(121)
        #expect(fs.utimens(precomposed, mtime: 0) == 0 && fs.utimens(decomposed, mtime: 0) == 0)
        #expect(fs.getattr(precomposed).0 == -ENOENT && fs.getattr(decomposed).0 == -ENOENT, "both expired")
    }

    @Test("VMIDs are unique across nodes and types; moving a guest between nodes is allowed")
    func uniqueVMIDs() throws {
        let directory = try TemporaryDirectory()
        let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "pve1")
        #expect(fs.mkdir("/nodes/pve2") == 0)
        #expect(fs.mkdir("/nodes/pve2/qemu-server") == 0)
        #expect(fs.mkdir("/nodes/pve2/lxc") == 0)
        #expect(write(fs, "/nodes/pve1/qemu-server/100.conf", "cores: 1\n") == 0)
        #expect(fs.create("/nodes/pve2/qemu-server/100.conf") == -EEXIST)
        #expect(fs.create("/nodes/pve1/lxc/100.conf") == -EEXIST)
        #expect(write(fs, "/nodes/pve1/qemu-server/100.conf", "cores: 2\n") == 0)
        #expect(fs.rename("/nodes/pve1/qemu-server/100.conf", "/nodes/pve2/qemu-server/100.conf") == 0)
        #expect(fs.rename("/nodes/pve2/qemu-server/100.conf", "/nodes/pve2/lxc/100.conf") == -EEXIST)
        #expect(write(fs, "/nodes/pve1/qemu-server/100.conf.tmp.42", "ok") == 0, "non-config names are not guests")
    }

    @Test("status files: .vmlist, .version, .members, .clusterlog, .debug byte for byte as the original writes them")
    func statusFiles() throws {
        let directory = try TemporaryDirectory()
        let clock = TestClock()
        let fs = try ClusterFileSystem(databasePath: directory.path + "/config.db", node: "pve1", clock: clock.now)
        #expect(content(fs, "/.vmlist") == "{\n\"version\": 1\n\n}\n")
        // The helper creates, truncates and writes: three registrations each.
        #expect(write(fs, "/nodes/pve1/qemu-server/100.conf", "cores: 1\n") == 0)
        #expect(write(fs, "/nodes/pve1/lxc/200.conf", "hostname: ct\n") == 0)
        #expect(write(fs, "/storage.cfg", "dir: local\n") == 0)
        #expect(content(fs, "/.vmlist") == """
            {
            "version": 7,
            "ids": {
            "100": { "node": "pve1", "type": "qemu", "version": 3 },
            "200": { "node": "pve1", "type": "lxc", "version": 6 }}

            }

            """)
        #expect(fs.unlink("/nodes/pve1/lxc/200.conf") == 0)
        #expect(content(fs, "/.vmlist")?.hasPrefix("{\n\"version\": 8,\n") == true)
        #expect(content(fs, "/.vmlist")?.contains("\"200\"") == false)

        let version = try #require(content(fs, "/.version"))
        #expect(version.hasPrefix("{\n\"starttime\": 1700000000,\n\"clinfo\": 0,\n\"vmlist\": 8,\n\"corosync.conf\": 1,\n"))
        #expect(version.contains("\n\"storage.cfg\": 4,\n"), "created, truncated, written: 1 + 3")
        #expect(version.contains("\n\"user.cfg\": 1,\n"))
        #expect(version.hasSuffix("\"mapping/usb.cfg\": 1,\n\"kvstore\": {\n\"pve1\": {\n}\n}\n}\n"))
        fs.setStatus(name: "nodeip", value: Array("192.0.2.10".utf8))
        fs.setStatus(name: "nodeip", value: Array("192.0.2.11".utf8))
        #expect(content(fs, "/.version")?.hasSuffix("\"kvstore\": {\n\"pve1\": {\n\"nodeip\": 1}\n}\n}\n") == true)
        #expect(try JSONSerialization.jsonObject(with: Data(content(fs, "/.version")!.utf8)) is [String: Any])

        #expect(content(fs, "/.members") == "{\n\"nodename\": \"pve1\",\n\"version\": 0\n}\n")
        fs.log(priority: 5, ident: "root@pam", tag: "test", pid: 42, message: "say \"hi\"")
        let log = try #require(content(fs, "/.clusterlog"))
        #expect(log == """
            {
            "data": [
            {"uid": 2, "time": 1700000000, "pri": 5, "tag": "test", "pid": 42, "node": "pve1", "user": "root@pam", "msg": "say \\"hi\\""},
            {"uid": 1, "time": 1700000000, "pri": 6, "tag": "cluster", "pid": \(getpid()), \
            "node": "pve1", "user": "root", "msg": "starting cluster log"}
            ]
            }

            """)
        #expect(String(decoding: fs.clusterLog(maximum: 50, user: "root@pam"), as: UTF8.self).contains("starting") == false)
        #expect(String(decoding: fs.clusterLog(maximum: 0, user: ""), as: UTF8.self) == "{\n\"data\": [\n]\n}\n")
        #expect(content(fs, "/.debug") == "0\n")
        let one = Array("1\n".utf8)
        #expect(one.withUnsafeBytes { fs.write("/.debug", bytes: $0, offset: 0) } == 2)
        #expect(content(fs, "/.debug") == "1\n")
        #expect(fs.create("/.vmlist") == -EACCES)
        #expect(fs.readlink("/qemu-server").1 == "nodes/pve1/qemu-server")
        #expect(fs.readdir("/").1.contains(".vmlist"))
    }
}
