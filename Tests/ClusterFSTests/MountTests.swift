import Foundation
import Testing
import TestSupport

/// setxattr(2) from <sys/xattr.h>, which Glibc's module does not export.
@_silgen_name("setxattr")
func c_setxattr(_ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, _ value: UnsafeRawPointer, _ size: Int, _ flags: Int32) -> Int32

func writeFile(_ path: String, _ text: String) -> Int32 {
    let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o640)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count ? 0 : errno
}

func readFile(_ path: String) -> String? {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
}

@Suite("pmxcfs mounted with real FUSE",
       .enabled(if: PMXCFSProcess.unavailableReason == nil, Comment(rawValue: PMXCFSProcess.unavailableReason ?? "")))
struct MountTests {
    @Test("the tree through the kernel: ownership, modes, symlinks, refused operations, errno values")
    func posixSemantics() throws {
        #expect(FileManager.default.isExecutableFile(atPath: PMXCFSProcess.binary), "build pmxcfs first (swift build)")
        let daemon = try PMXCFSProcess()
        try daemon.start()
        #expect(writeFile(daemon.path("storage.cfg"), "dir: local\n\tpath /var/lib/vz\n") == 0)
        #expect(readFile(daemon.path("storage.cfg")) == "dir: local\n\tpath /var/lib/vz\n")
        var info = stat()
        #expect(stat(daemon.path("storage.cfg"), &info) == 0)
        #expect(info.st_uid == 0)
        #expect(info.st_gid == (getgrnam("www-data")?.pointee.gr_gid ?? 33))
        #expect(info.st_mode & 0o777 == 0o640)
        #expect(stat(daemon.path("priv"), &info) == 0 && info.st_mode & 0o777 == 0o700)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: daemon.path("local"))) == "nodes/pve1")
        #expect(writeFile(daemon.path("qemu-server/100.conf"), "cores: 2\n") == 0)
        #expect(readFile(daemon.path("nodes/pve1/qemu-server/100.conf")) == "cores: 2\n")

        #expect(symlink("x", daemon.path("link")) == -1 && errno == ENOSYS)
        #expect(link(daemon.path("storage.cfg"), daemon.path("hard")) == -1 && errno == EPERM)
        #expect(c_setxattr(daemon.path("storage.cfg"), "user.x", "1", 1, 0) == -1 && (errno == ENOTSUP || errno == EOPNOTSUPP))
        #expect(chmod(daemon.path("storage.cfg"), 0o644) == -1 && errno == EPERM)
        #expect(chmod(daemon.path("storage.cfg"), 0o640) == 0)
        #expect(mkdir(daemon.path("nodes/pve2"), 0o755) == 0)
        #expect(mkdir(daemon.path("nodes/pve2/qemu-server"), 0o755) == 0)
        #expect(open(daemon.path("nodes/pve2/qemu-server/100.conf"), O_CREAT | O_WRONLY, 0o640) == -1 && errno == EEXIST)
        #expect(rename(daemon.path("nodes/pve1/qemu-server/100.conf"), daemon.path("nodes/pve2/qemu-server/100.conf")) == 0)
        #expect(mkdir(daemon.path("priv/lock/storage-local"), 0o755) == 0)
        #expect(mkdir(daemon.path("priv/lock/storage-local"), 0o755) == -1 && errno == EEXIST)
        #expect(rename(daemon.path("priv/lock/storage-local"), daemon.path("priv/lock/x")) == -1 && errno == EACCES)

        // The tools' atomic write: NAME.tmp.PID, then rename onto NAME.
        #expect(writeFile(daemon.path("user.cfg.tmp.42"), "user:root@pam:1:0:::::\n") == 0)
        #expect(rename(daemon.path("user.cfg.tmp.42"), daemon.path("user.cfg")) == 0)
        #expect(readFile(daemon.path("user.cfg")) == "user:root@pam:1:0:::::\n")

        // A rewrite is seen at once, though the page cache is kept.
        #expect(writeFile(daemon.path("storage.cfg"), "dir: other\n") == 0)
        #expect(readFile(daemon.path("storage.cfg")) == "dir: other\n")

        let big = [UInt8](repeating: 0x41, count: (1 << 20) + 1)
        let fd = open(daemon.path("big"), O_CREAT | O_WRONLY, 0o640)
        #expect(fd >= 0)
        let written = big.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let writeErrno = errno
        close(fd)
        #expect(written == -1 && writeErrno == EFBIG || written == 1 << 20)

        let vmlist = try #require(readFile(daemon.path(".vmlist")))
        #expect(vmlist.contains("\"pve2\""))
        #expect(writeFile(daemon.path(".vmlist"), "x") != 0)

        // Status files are generated per read: never stale, though regular
        // files keep the kernel's caches.
        var before = stat()
        #expect(stat(daemon.path(".vmlist"), &before) == 0)
        #expect(writeFile(daemon.path("qemu-server/4242.conf"), "cores: 1\n") == 0)
        let grown = try #require(readFile(daemon.path(".vmlist")))
        #expect(grown.contains("\"4242\""))
        var after = stat()
        #expect(stat(daemon.path(".vmlist"), &after) == 0)
        #expect(after.st_size == grown.utf8.count && after.st_size > before.st_size)
        #expect(unlink(daemon.path("qemu-server/4242.conf")) == 0)
        #expect(readFile(daemon.path(".vmlist"))?.contains("\"4242\"") == false)
        // Lock directories are looked up every time (they expire without a call).
        #expect(rmdir(daemon.path("priv/lock/storage-local")) == 0)
        #expect(mkdir(daemon.path("priv/lock/storage-local"), 0o755) == 0)
        let names = try FileManager.default.contentsOfDirectory(atPath: daemon.path("priv/lock"))
        #expect(names == ["storage-local"])

        // Names are bytes: one name precomposed and decomposed is two files. A name that is not UTF-8 is refused (it
        // would be decoded into another one).
        #expect(writeFile(daemon.path("caf\u{E9}"), "one") == 0 && writeFile(daemon.path("cafe\u{301}"), "two") == 0)
        #expect(readFile(daemon.path("caf\u{E9}")) == "one" && readFile(daemon.path("cafe\u{301}")) == "two")
        let notUTF8 = Array(daemon.path("caf").utf8CString.dropLast()).map(UInt8.init(bitPattern:)) + [0xE9, 0]
        let refused = notUTF8.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_CREAT | O_WRONLY, 0o640) }
        }
        #expect(refused == -1 && errno == EILSEQ)
        #expect(notUTF8.withUnsafeBufferPointer { bytes in bytes.withMemoryRebound(to: CChar.self) { access($0.baseAddress!, F_OK) } } == -1
                && errno == ENOENT)
    }

    @Test("reads right after a write (direct) and later ones (page cache) see every change, of any size and offset")
    func readsAcrossCacheModes() throws {
        let daemon = try PMXCFSProcess()
        try daemon.start()
        let path = daemon.path("mixed.cfg")
        var expected: [UInt8] = []
        func check(_ step: String) {
            let bytes = FileManager.default.contents(atPath: path).map(Array.init)
            #expect(bytes == expected, "\(step): \(bytes?.count ?? -1) bytes read, \(expected.count) expected")
        }
        func pwrite(_ data: [UInt8], at offset: Int, truncate: Bool = false) {
            let fd = open(path, O_CREAT | O_WRONLY | (truncate ? O_TRUNC : 0), 0o640)
            #expect(fd >= 0)
            #expect(data.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) } == data.count)
            close(fd)
            if truncate { expected = [] }
            if expected.count < offset + data.count { expected += [UInt8](repeating: 0, count: offset + data.count - expected.count) }
            expected.replaceSubrange(offset..<(offset + data.count), with: data)
        }
        for (round, size) in [512, 4096, 5000, 100, 8192, 3].enumerated() {
            let fill = UInt8(ascii: "a") + UInt8(round)
            pwrite([UInt8](repeating: fill, count: size), at: 0, truncate: true)
            check("written \(size) bytes, read at once")
            check("read again")
            var info = stat()
            #expect(stat(path, &info) == 0 && info.st_size == expected.count)
            check("read after stat")
            check("read from the cache")
            pwrite(Array("middle".utf8), at: size / 2)
            check("changed in the middle")
            #expect(stat(path, &info) == 0 && info.st_size == expected.count)
            pwrite(Array("end".utf8), at: expected.count)
            check("grown at the end")
            #expect(stat(path, &info) == 0 && info.st_size == expected.count)
            check("grown, after stat")
        }
    }

    @Test("SIGTERM unmounts cleanly; the data is there after a restart; a second instance refuses the same database")
    func lifecycle() throws {
        let daemon = try PMXCFSProcess()
        try daemon.start()
        #expect(writeFile(daemon.path("datacenter.cfg"), "keyboard: de\n") == 0)
        let second = try spawn(PMXCFSProcess.binary, daemon.arguments.map { $0 == daemon.mountPoint ? daemon.mountPoint + "2" : $0 })
        #expect(reap(second) == 1)
        daemon.stop()
        #expect(!daemon.isMounted)
        #expect(!daemon.isRunning)
        let again = try PMXCFSProcess(directory: daemon.directory)
        try again.start()
        #expect(readFile(again.path("datacenter.cfg")) == "keyboard: de\n")
    }

    @Test("kill -9 during a write storm loses no acknowledged write")
    func durability() throws {
        let daemon = try PMXCFSProcess()
        try daemon.start()
        // The writer records a file as acknowledged once close() returned.
        var acknowledged: [String: String] = [:]
        let deadline = Date().addingTimeInterval(1.0)
        var index = 0
        while Date() < deadline {
            let name = "storm-\(index).cfg"
            let text = String(repeating: "line \(index)\n", count: 1 + index % 50)
            if writeFile(daemon.path(name), text) == 0 { acknowledged[name] = text }
            index += 1
        }
        // Keep writing in the background while the daemon is killed.
        let storm = try spawn("/bin/sh", ["-c", "i=0; while :; do echo $i > \(daemon.path("bg-$i.cfg")) || exit 0; i=$((i+1)); done"])
        usleep(200_000)
        daemon.crash()
        _ = reap(storm)
        #expect(acknowledged.count > 50, "only \(acknowledged.count) writes went through")

        let restarted = try PMXCFSProcess(directory: daemon.directory)
        try restarted.start()
        var lost: [String] = []
        for (name, text) in acknowledged where readFile(restarted.path(name)) != text { lost.append(name) }
        #expect(lost.isEmpty, "lost acknowledged writes: \(lost.sorted().prefix(10))")
        // The database is consistent: every entry loads and the tree lists.
        #expect((try? FileManager.default.contentsOfDirectory(atPath: restarted.mountPoint).count) ?? 0 > acknowledged.count)
    }
}

@Suite("pvectl reads its desired state from a pmxcfs mount",
       .enabled(if: PMXCFSProcess.unavailableReason == nil, Comment(rawValue: PMXCFSProcess.unavailableReason ?? "")))
struct DesiredStateThroughMountTests {
    @Test("the homelab tree copied into /etc/pve validates the same as from a plain directory")
    func homelabThroughMount() throws {
        let daemon = try PMXCFSProcess()
        try daemon.start()
        let example = Corpus.packageRoot.appendingPathComponent("examples/homelab").path
        let copies = [("storage.cfg", "storage.cfg"), ("datacenter.cfg", "datacenter.cfg"), ("user.cfg", "user.cfg"),
                      ("firewall/cluster.fw", "firewall/cluster.fw"), ("firewall/100.fw", "firewall/100.fw"),
                      ("nodes/pve1/host.fw", "nodes/pve1/host.fw"),
                      ("nodes/pve1/qemu-server/100.conf", "qemu-server/100.conf"),
                      ("nodes/pve1/qemu-server/101.conf", "qemu-server/101.conf"), ("nodes/pve1/lxc/200.conf", "lxc/200.conf")]
        #expect(mkdir(daemon.path("firewall"), 0o755) == 0)
        for (source, target) in copies {
            let text = try #require(readFile(example + "/" + source))
            #expect(writeFile(daemon.path(target), text) == 0, "\(target)")
        }
        let pvectl = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path
        // Through the IPC service (the daemon's own), and through the mount as plain files.
        for service in [daemon.ipcName, "pvt-not-running"] {
            let result = NetworkNamespace.capture([pvectl, "validate", "--root", daemon.mountPoint, "--ipc-service", service,
                                                   "--interfaces", example + "/network/interfaces", "--node", "pve1"])
            #expect(result.status == 0, "\(result.output)\(result.error)")
            #expect(result.error.contains("0 errors, 0 warnings in 10 files"), "\(result.error)")
            #expect(result.error.contains("through the pmxcfs IPC service") == (service == daemon.ipcName))
        }
        // A broken guest config in the mount is reported with its mount path.
        #expect(writeFile(daemon.path("qemu-server/102.conf"), "cores: many\n") == 0)
        let broken = NetworkNamespace.capture([pvectl, "validate", "--root", daemon.mountPoint, "--ipc-service", daemon.ipcName, "--node", "pve1"])
        #expect(broken.status == 1)
        #expect(broken.output.contains(daemon.mountPoint + "/nodes/pve1/qemu-server/102.conf:1:8: error: cores"))
    }
}
