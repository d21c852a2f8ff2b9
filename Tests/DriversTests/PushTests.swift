import Drivers
import Foundation
import Testing
import TestSupport

/// A git repository the test builds, commit by commit (real git).
final class TestRepository: @unchecked Sendable {
    // @unchecked: the directory is immutable after init.
    let directory: TemporaryDirectory
    var path: String { directory.path }

    init() throws {
        directory = try TemporaryDirectory(prefix: "pvectl-repo")
        try git(["init", "-q", "-b", "main"])
    }

    @discardableResult
    func git(_ arguments: [String]) throws -> String {
        let result = NetworkNamespace.capture(["git", "-C", path] + arguments,
                                              environment: ["GIT_AUTHOR_NAME": "Ada Admin", "GIT_AUTHOR_EMAIL": "ada@example.org",
                                                            "GIT_COMMITTER_NAME": "Ada Admin", "GIT_COMMITTER_EMAIL": "ada@example.org"])
        guard result.status == 0 else { throw PushTests.Failure(description: "git \(arguments): \(result.error)") }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Writes the files (nil removes one) and commits them; returns the commit id.
    @discardableResult
    func commit(_ message: String, _ files: [String: String?]) throws -> String {
        for (relative, text) in files {
            if let text {
                try directory.write(relative, text)
            } else {
                try FileManager.default.removeItem(atPath: path + "/" + relative)
            }
        }
        try git(["add", "-A"])
        try git(["commit", "-q", "--allow-empty", "-m", message])
        return try git(["rev-parse", "HEAD"])
    }
}

@Suite("pvectl push: git repositories into a real pmxcfs mount", .serialized,
       .enabled(if: PMXCFSProcess.unavailableReason == nil && Command.locate("git") != nil,
                Comment(rawValue: PMXCFSProcess.unavailableReason ?? "git is not installed")))
struct PushTests {
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// A pmxcfs mount (local mode), a scratch directory for the node's interfaces and state, and pvectl against them.
    final class Target {
        let cfs: PMXCFSProcess
        let scratch: TemporaryDirectory

        init(pmxcfsArguments: [String] = []) throws {
            cfs = try PMXCFSProcess(node: "pve1")
            cfs.extraArguments = pmxcfsArguments
            try cfs.start()
            scratch = try TemporaryDirectory(prefix: "pvectl-push")
            try scratch.write("network/interfaces", "auto lo\niface lo inet loopback\n")
        }

        deinit { cfs.stop() }

        var root: String { cfs.mountPoint }
        var common: [String] {
            ["--to", root, "--node", "pve1", "--interfaces", scratch.path + "/network/interfaces", "--state-dir", scratch.path + "/state"]
        }

        func push(_ arguments: [String]) -> (status: Int32, output: String, error: String) {
            NetworkNamespace.capture([PushTests.binary, "push"] + arguments + common, environment: ["NO_COLOR": "1"])
        }

        func read(_ relative: String) -> String? { try? String(contentsOfFile: root + "/" + relative, encoding: .utf8) }

        func write(_ relative: String, _ text: String) throws {
            try FileManager.default.createDirectory(atPath: ((root + "/" + relative) as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: root + "/" + relative))
        }

        /// `pvectl status --json` rows (in a fresh network namespace: status reads the kernel's view too).
        func status() throws -> [[String: Any]] {
            let namespace = try NetworkNamespace()
            let result = try namespace.exec([PushTests.binary, "status", "--json", "--root", root, "--node", "pve1", "--interfaces",
                                             scratch.path + "/network/interfaces", "--state-dir", scratch.path + "/state"])
            return (try? JSONSerialization.jsonObject(with: Data(result.output.utf8))) as? [[String: Any]] ?? []
        }
    }

    static let storage = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n"
    static let guest = "nodes/pve1/qemu-server/100.conf"

    @Test("diff and node plan first, then written atomically with the revision recorded; again: nothing; drift, --check, errors, prune")
    func pushIntoClusterFS() throws {
        let target = try Target()
        let repository = try TestRepository()
        let first = try repository.commit("web and storage", [
            "storage.cfg": Self.storage, Self.guest: "name: web\nmemory: 512\n", "README.md": "how we run pve\n",
            "nodes/pve1/network/interfaces": "auto lo\niface lo inet loopback\n\nauto vmbr0\niface vmbr0 inet manual\n\tbridge-ports none\n",
        ])

        let dryRun = target.push([repository.path, "--dry-run"])
        #expect(dryRun.status == 0, "\(dryRun)")
        for expected in ["Source: \(repository.path) @ \(first.prefix(12)) \"web and storage\" (Ada Admin <ada@example.org>",
                         "+ storage.cfg (new file)", "+++ \(target.root)/storage.cfg", "+\tpath /var/lib/vz", "+ \(Self.guest) (new file)",
                         "Push: 3 to write, 0 to delete, 0 unchanged.", "not pushed: README.md", "Plan of the pushed tree on this node (pve1):",
                         "+ network/vmbr0"] {
            #expect(dryRun.output.contains(expected), "missing '\(expected)':\n\(dryRun.output)")
        }
        #expect(target.read("storage.cfg") == nil, "a dry run writes nothing")
        let noTerminal = target.push([repository.path])
        #expect(noTerminal.status == 1 && noTerminal.error.contains("pass --auto-approve"), "\(noTerminal)")

        let push = target.push([repository.path, "--auto-approve"])
        #expect(push.status == 0, "\(push)")
        #expect(push.output.contains("wrote \(target.root)/storage.cfg"), "\(push.output)")
        #expect(target.read("storage.cfg") == Self.storage)
        #expect(target.read(Self.guest) == "name: web\nmemory: 512\n")
        #expect(target.read("README.md") == nil)
        let record = try #require(target.read("pvectl/push.json"))
        #expect(record.contains(first) && record.contains("\"subject\" : \"web and storage\""), "\(record)")
        // The node's network file is staged where `pvectl apply` installs it from.
        #expect(target.scratch.read("network/interfaces.new")?.contains("auto vmbr0") == true)
        #expect(push.output.contains("staged \(target.scratch.path)/network/interfaces.new"), "\(push.output)")

        let again = target.push([repository.path, "--auto-approve"])
        #expect(again.status == 0 && again.output.contains("Nothing to push"), "\(again)")
        #expect(target.push([repository.path, "--check"]).status == 0)

        // A hand edit: drift in status, --check exits 2.
        try target.write("storage.cfg", Self.storage + "\ndir: scratch\n\tpath /srv\n")
        #expect(target.push([repository.path, "--check"]).status == 2)
        let rows = try target.status()
        #expect(rows.first { $0["id"] as? String == "push" }?["condition"] as? String == "Drifted", "\(rows)")
        #expect(rows.first { $0["id"] as? String == "push/storage.cfg" }?["message"] as? String == "changed by hand", "\(rows)")

        // A commit that does not validate: errors at the repository's file:line:col, nothing written.
        try repository.commit("too much", [Self.guest: "name: web\nmemory: lots\n"])
        let broken = target.push([repository.path, "--auto-approve"])
        #expect(broken.status == 1, "\(broken)")
        #expect(broken.error.contains("\(repository.path)/\(Self.guest):2:9: error: memory"), "\(broken.error)")
        #expect(broken.error.contains("nothing pushed"), "\(broken.error)")
        #expect(target.read(Self.guest) == "name: web\nmemory: 512\n")

        // Prune: the guest the repository drops goes only with --prune; a config no push wrote stays.
        try target.write("nodes/pve1/qemu-server/102.conf", "memory: 64\n")
        try repository.commit("drop web", [Self.guest: nil])
        let keep = target.push([repository.path, "--auto-approve"])
        #expect(keep.status == 0 && target.read(Self.guest) != nil, "\(keep)")
        let prune = target.push([repository.path, "--auto-approve", "--prune"])
        #expect(prune.status == 0, "\(prune)")
        #expect(prune.output.contains("- \(Self.guest) (deleted: an earlier push wrote it"), "\(prune.output)")
        #expect(prune.output.contains("nodes/pve1/qemu-server/102.conf stays: not in the source, and no push wrote it"), "\(prune.output)")
        #expect(target.read(Self.guest) == nil && target.read("nodes/pve1/qemu-server/102.conf") == "memory: 64\n")
    }

    @Test("examples/gitops: the three-node repository previews with no problem on each node, as a directory and at a ref")
    func gitopsExample() throws {
        let repository = Corpus.packageRoot.appendingPathComponent("examples/gitops/repository").path
        let copy = try TestRepository()
        for name in try FileManager.default.subpathsOfDirectory(atPath: repository) {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: repository + "/" + name, isDirectory: &isDirectory), !isDirectory.boolValue {
                try copy.directory.write(name, try String(contentsOfFile: repository + "/" + name, encoding: .utf8))
            }
        }
        let commit = try copy.commit("the example", [:])
        for node in ["pve1", "pve2", "pve3"] {
            let target = try TemporaryDirectory(prefix: "pvectl-gitops")
            for source in [[repository], [copy.path, "--ref", commit]] {
                let preview = NetworkNamespace.capture([Self.binary, "push"] + source + ["--dry-run", "--to", target.path, "--node", node,
                                                                                         "--interfaces", target.path + "/interfaces",
                                                                                         "--state-dir", target.path + "/state"])
                #expect(preview.status == 0, "\(node): \(preview)")
                #expect(preview.output.contains("Push: 9 to write"), "\(node): \(preview.output)")
                #expect(!preview.error.contains("error") && !preview.error.contains("warning"), "\(node): \(preview.error)")
            }
        }
    }

    @Test("two pushes at once never interleave: the lock serializes them and the second plans on the first's result")
    func concurrentPushes() throws {
        let target = try Target()
        let a = try TestRepository()
        let b = try TestRepository()
        let count = 40
        func tree(_ letter: String) -> [String: String?] {
            Dictionary(uniqueKeysWithValues: (0..<count).map { ("nodes/pve1/qemu-server/\(100 + $0).conf", "name: \(letter)-\($0)\nmemory: 64\n") })
        }
        let commits = [try a.commit("all a", tree("a")), try b.commit("all b", tree("b"))]
        let logs = [target.scratch.path + "/a.log", target.scratch.path + "/b.log"]
        let pids = try [a, b].enumerated().map { index, repository in
            try DetachedProcess.spawn([Self.binary, "push", repository.path, "--auto-approve"] + target.common, log: logs[index])
        }
        let statuses = pids.map { reap($0) }
        let outputs = logs.map { (try? String(contentsOfFile: $0, encoding: .utf8)) ?? "" }
        #expect(statuses == [0, 0], "\(outputs)")
        let names = (0..<count).compactMap { target.read("nodes/pve1/qemu-server/\(100 + $0).conf")?.split(separator: "-").first }
        let letters = Set(names.map { $0.replacingOccurrences(of: "name: ", with: "") })
        #expect(names.count == count && letters.count == 1, "one push's tree, whole: \(letters)")
        let last = letters.first == "a" ? 0 : 1
        #expect(target.read("pvectl/push.json")?.contains(commits[last]) == true, "the record names the push that wrote last")
        #expect(outputs[1 - last].contains("\(count) written") && outputs[last].contains("\(count) written"), "\(outputs)")
    }

    @Test("a held lock makes a push wait and give up; a saved plan is refused once /etc/pve changed, naming the file")
    func lockAndSavedPlan() throws {
        let target = try Target()
        let repository = try TestRepository()
        try repository.commit("storage", ["storage.cfg": Self.storage, Self.guest: "memory: 512\n"])
        let lock = target.root + "/priv/lock/pvectl-push"
        #expect(mkdir(lock, 0o755) == 0, "pmxcfs takes the lock directory")
        let waited = target.push([repository.path, "--auto-approve"])
        #expect(waited.status != 0 && waited.error.contains("another push holds \(lock)"), "\(waited)")
        #expect(target.read("storage.cfg") == nil)
        #expect(rmdir(lock) == 0)

        // A push's lock that expired and was taken by another push is not removed by the first one's release.
        let first = try Pusher(root: target.root, interfaces: target.scratch.path + "/network/interfaces", node: "pve1",
                               mirrors: target.scratch.path + "/mirrors", includePrivate: false, prune: false).lock()
        #expect(rmdir(lock) == 0 && mkdir(lock, 0o755) == 0, "expired, then another push's")
        first.release()
        #expect(FileManager.default.fileExists(atPath: lock), "the other push's lock stays")
        #expect(rmdir(lock) == 0)

        let planFile = target.scratch.path + "/push.plan"
        let saved = target.push([repository.path, "--out", planFile])
        #expect(saved.status == 0 && saved.output.contains("Saved the push plan"), "\(saved)")
        try target.write("datacenter.cfg", "keyboard: de\n")
        let refused = target.push([planFile])
        #expect(refused.status == 1, "\(refused)")
        #expect(refused.error.contains("\(target.root)/datacenter.cfg changed since the push was planned"), "\(refused.error)")
        #expect(target.read("storage.cfg") == nil)
        #expect(target.push([repository.path, "--out", planFile]).status == 0)
        var info = stat()
        #expect(stat(planFile, &info) == 0 && info.st_mode & 0o077 == 0, "a saved plan is root's alone (it may hold priv/)")
        let applied = target.push([planFile])
        #expect(applied.status == 0 && target.read("storage.cfg") == Self.storage, "\(applied)")
    }

    @Test("a lock left by a killed push expires through pmxcfs (its 120 s, 3 s here) and the next push takes it")
    func expiredLock() throws {
        let target = try Target(pmxcfsArguments: ["--lock-expiry", "3"])
        let repository = try TestRepository()
        try repository.commit("storage", ["storage.cfg": Self.storage])
        #expect(mkdir(target.root + "/priv/lock/pvectl-push", 0o755) == 0)
        let started = Date()
        let push = target.push([repository.path, "--auto-approve"])
        #expect(push.status == 0 && target.read("storage.cfg") == Self.storage, "\(push)")
        #expect(Date().timeIntervalSince(started) >= 2.5, "taken only once expired")
        #expect(!FileManager.default.fileExists(atPath: target.root + "/priv/lock/pvectl-push"), "released after the push")
    }

    @Test("a push killed with SIGKILL while it writes leaves every file old or new; the next push completes it")
    func interruptedPush() throws {
        let target = try Target()
        let repository = try TestRepository()
        let count = 300
        func tree(_ version: Int, extra: Int = 0) -> [String: String?] {
            Dictionary(uniqueKeysWithValues: (0..<(count + extra)).map {
                ("nodes/pve1/qemu-server/\(100 + $0).conf", "name: v\(version)-\($0)\nmemory: \(64 * version)\n")
            })
        }
        func path(_ index: Int) -> String { "nodes/pve1/qemu-server/\(100 + index).conf" }
        let first = try repository.commit("v1", tree(1))
        let second = try repository.commit("v2", tree(2, extra: 20))
        var generator = SystemRandomNumberGenerator()
        var mixed = 0
        for attempt in 0..<4 {
            // Back to v1, then v2 killed once a random file of it is written: in the middle of the writes.
            let reset = target.push([repository.path, "--ref", first, "--auto-approve", "--prune"])
            try #require(reset.status == 0, "\(reset)")
            let victim = Int.random(in: 0..<count, using: &generator)
            let pid = try DetachedProcess.spawn([Self.binary, "push", repository.path, "--auto-approve"] + target.common,
                                                log: target.scratch.path + "/kill-\(attempt).log")
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline, target.read(path(victim))?.hasPrefix("name: v2") != true { usleep(300) }
            kill(pid, SIGKILL)
            _ = reap(pid)
            var versions = Set<Int>()
            for index in 0..<(count + 20) {
                let text = target.read(path(index))
                let old = index < count ? "name: v1-\(index)\nmemory: 64\n" : nil
                #expect(text == old || text == "name: v2-\(index)\nmemory: 128\n", "attempt \(attempt), file \(index): \(String(describing: text))")
                versions.insert(text == old ? 1 : 2)
            }
            if versions.count == 2 {
                mixed += 1
                #expect(target.read("pvectl/push.json")?.contains(second) == false, "the record is written last")
            }
            // The killed push's lock: pmxcfs would expire it after 120 s; the test does not wait for that.
            rmdir(target.root + "/priv/lock/pvectl-push")
        }
        #expect(mixed > 0, "no attempt was killed in the middle of its writes")
        let finish = target.push([repository.path, "--auto-approve"])
        #expect(finish.status == 0, "\(finish)")
        for index in 0..<(count + 20) { #expect(target.read(path(index)) == "name: v2-\(index)\nmemory: 128\n") }
        #expect(target.read("pvectl/push.json")?.contains(second) == true)
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: target.root + "/nodes/pve1/qemu-server")) ?? []
        #expect(!leftovers.contains { $0.contains(".tmp.") }, "\(leftovers.filter { $0.contains(".tmp.") })")
        #expect(target.push([repository.path, "--check"]).status == 0)
    }

    @Test("pull mode: new commits pushed within the poll, a broken one refused with file:line, hand edits reverted by self-heal")
    func pullMode() throws {
        let target = try Target()
        let repository = try TestRepository()
        try repository.commit("storage", ["storage.cfg": Self.storage])
        let namespace = try NetworkNamespace()
        let log = target.scratch.path + "/run.log"
        let pid = try DetachedProcess.spawn(["/usr/sbin/ip", "netns", "exec", namespace.name, Self.binary, "run", "--source", repository.path,
                                             "--ref", "main", "--poll", "1", "--self-heal", "--only", "network", "--resync", "3600", "--root",
                                             target.root, "--node", "pve1", "--interfaces", target.scratch.path + "/network/interfaces",
                                             "--state-dir", target.scratch.path + "/state"], log: log)
        defer {
            kill(pid, SIGKILL)
            _ = reap(pid)
        }
        func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        #expect(waitFor(seconds: 30) { target.read("storage.cfg") == Self.storage }, "\(logText())")

        try repository.commit("web", [Self.guest: "name: web\nmemory: 512\n"])
        #expect(waitFor(seconds: 15) { target.read(Self.guest) == "name: web\nmemory: 512\n" }, "\(logText())")

        let broken = try repository.commit("broken", [Self.guest: "name: web\nmemory: lots\n"])
        #expect(waitFor(seconds: 15) { logText().contains("commit \(broken.prefix(12)) is not pushed") }, "\(logText())")
        // Logged line by line, and the poll's record saved after: each waited for, not read once.
        #expect(waitFor(seconds: 15) { logText().contains("\(repository.path)/\(Self.guest):2:9: error: memory") }, "\(logText())")
        #expect(target.read(Self.guest) == "name: web\nmemory: 512\n", "the last good commit stays")
        var rows: [[String: Any]] = []
        #expect(waitFor(seconds: 15) {
            rows = (try? target.status()) ?? []
            return rows.first { $0["id"] as? String == "pull" }?["condition"] as? String == "Blocked"
        }, "\(rows)")

        try repository.commit("fixed", [Self.guest: "name: web\nmemory: 1024\n"])
        #expect(waitFor(seconds: 15) { target.read(Self.guest) == "name: web\nmemory: 1024\n" }, "\(logText())")
        try target.write(Self.guest, "name: web\nmemory: 4096\n")
        #expect(waitFor(seconds: 15) { target.read(Self.guest) == "name: web\nmemory: 1024\n" }, "self-heal: \(logText())")
        // The revert is a rename; the poll logs it once its record is written too, a moment later.
        #expect(waitFor(seconds: 15) { logText().contains("self-heal: reverted \(Self.guest)") }, "\(logText())")
    }
}
