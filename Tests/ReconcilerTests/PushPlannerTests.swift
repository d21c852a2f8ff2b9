import Foundation
@testable import Reconciler
import Resources
import Testing
import TestSupport

@Suite("Push: the three-way merge, the plan, the record and the drift (the pure core)")
struct PushPlannerTests {
    static let root = "/etc/pve"
    static let guest = "nodes/pve1/qemu-server/100.conf"
    static let revision = PushRecord.Revision(digest: "d", source: "/repo")

    static func data(_ text: String) -> Data { Data(text.utf8) }

    static func plan(source: [String: String], current: [String: String], record: PushRecord? = nil, prune: Bool = false) -> PushPlan {
        PushPlanner.plan(PushPlanner.Input(source: source.mapValues(data), current: current.mapValues(data), record: record,
                                           revision: revision, node: "pve1", prune: prune, now: Date(timeIntervalSince1970: 1000)),
                         root: root)
    }

    @Test("what the system wrote survives: the MAC in the model, smbios1's uuid where it stood, vmgenid, snapshots and [PENDING]")
    func systemValuesSurvive() throws {
        let repository = "# web server\nname: web\nmemory: 512\nnet0: virtio,bridge=vmbr0\nsmbios1: manufacturer=acme\n"
        let current = """
        # web server
        name: web
        memory: 256
        net0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0
        smbios1: uuid=5f0c2a3e-1111-2222-3333-444455556666,manufacturer=acme
        vmgenid: 0b3c4d5e-1111-2222-3333-444455556666
        parent: before

        [PENDING]
        memory: 1024

        [before]
        memory: 256
        snaptime: 1700000000

        """
        let plan = Self.plan(source: [Self.guest: repository], current: [Self.guest: current])
        let change = try #require(plan.changes.first)
        let merged = String(decoding: try #require(change.content), as: UTF8.self)
        #expect(merged == """
        # web server
        name: web
        memory: 512
        net0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0
        smbios1: uuid=5f0c2a3e-1111-2222-3333-444455556666,manufacturer=acme
        vmgenid: 0b3c4d5e-1111-2222-3333-444455556666
        parent: before

        [PENDING]
        memory: 1024

        [before]
        memory: 256
        snaptime: 1700000000

        """)
        #expect(change.kept == ["net0 macaddr", "smbios1 uuid", "vmgenid", "parent", "pending changes", "snapshot before"])
        // The repository's lines keep their numbers; kept lines map to none.
        #expect(plan.sourceLines[Self.guest]?.prefix(7).map { $0 } == [1, 2, 3, 4, 5, nil, nil])

        // Pushing the same again: what the merge wrote is what /etc/pve holds, nothing to write.
        let again = Self.plan(source: [Self.guest: repository], current: [Self.guest: merged], record: plan.record)
        #expect(again.changes.isEmpty && again.unchanged == 1)
    }

    @Test("a value the repository sets wins over the system's; a system value it withdrew goes; a MAC moves to a new model")
    func repositoryWins() throws {
        let current = "memory: 512\nnet0: e1000=BC:24:11:00:00:01,bridge=vmbr0\nvmgenid: 11111111-1111-1111-1111-111111111111\n"
        let setting = "memory: 512\nnet0: virtio,bridge=vmbr0\nvmgenid: 22222222-2222-2222-2222-222222222222\n"
        let first = Self.plan(source: [Self.guest: setting], current: [Self.guest: current])
        let merged = String(decoding: try #require(first.changes.first?.content), as: UTF8.self)
        #expect(merged == "memory: 512\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nvmgenid: 22222222-2222-2222-2222-222222222222\n")
        #expect(first.record.repositorySystemValues[Self.guest] == ["vmgenid": "22222222-2222-2222-2222-222222222222"])
        // The repository stops setting vmgenid: the value it had set goes with it...
        let withdrawn = Self.plan(source: [Self.guest: "memory: 512\nnet0: virtio,bridge=vmbr0\n"], current: [Self.guest: merged],
                                  record: first.record)
        let after = String(decoding: try #require(withdrawn.changes.first?.content), as: UTF8.self)
        #expect(after == "memory: 512\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\n")
        // ...but one the system wrote since stays.
        let regenerated = merged.replacingOccurrences(of: "22222222-2222", with: "33333333-3333")
        let kept = Self.plan(source: [Self.guest: "memory: 512\nnet0: virtio,bridge=vmbr0\n"], current: [Self.guest: regenerated],
                             record: first.record)
        #expect(kept.changes.isEmpty && kept.unchanged == 1, "the system's own vmgenid stays: \(kept.changes)")
    }

    @Test("containers: hwaddr is the system's; a config with lock: is not touched, not even pruned")
    func containersAndLocks() throws {
        let container = "nodes/pve1/lxc/200.conf"
        let plan = Self.plan(source: [container: "hostname: ct\nnet0: name=eth0,bridge=vmbr0\n",
                                      Self.guest: "memory: 1024\n"],
                             current: [container: "hostname: ct\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:02\n",
                                       Self.guest: "memory: 512\nlock: backup\n"])
        #expect(plan.changes.isEmpty, "\(plan.changes)")
        #expect(plan.locked == [PushPlan.LockedGuest(path: Self.guest, lock: "backup")])

        let owner = Self.plan(source: [Self.guest: "memory: 512\n"], current: [:]).record
        let pruned = Self.plan(source: [:], current: [Self.guest: "memory: 512\nlock: migrate\n"], record: owner, prune: true)
        #expect(pruned.changes.isEmpty && pruned.locked.map(\.lock) == ["migrate"])
    }

    @Test("prune deletes only files an earlier push wrote, after every write, guests before the storages they use")
    func pruneOwnership() throws {
        let first = Self.plan(source: ["storage.cfg": "dir: local\n\tpath /x\n", Self.guest: "memory: 512\n",
                                       "ha/resources.cfg": "vm: 100\n"], current: [:])
        #expect(first.changes.map(\.path) == ["storage.cfg", Self.guest, "ha/resources.cfg"], "storages, guests, then what names guests")
        let current = ["storage.cfg": "dir: local\n\tpath /x\n", Self.guest: "memory: 512\n", "ha/resources.cfg": "vm: 100\n",
                       "nodes/pve1/qemu-server/101.conf": "memory: 64\n"]
        let keep = Self.plan(source: ["storage.cfg": "dir: local\n\tpath /y\n"], current: current, record: first.record)
        #expect(keep.changes.map(\.action) == [.update], "without --prune nothing is deleted")
        #expect(keep.record.files[Self.guest] != nil, "still owned: a later --prune may delete it")
        let prune = Self.plan(source: ["storage.cfg": "dir: local\n\tpath /y\n"], current: current, record: first.record, prune: true)
        #expect(prune.changes.map { "\($0.action.rawValue) \($0.path)" }
                == ["update storage.cfg", "delete ha/resources.cfg", "delete \(Self.guest)"])
        #expect(prune.keptUnowned == ["nodes/pve1/qemu-server/101.conf"])
        #expect(prune.record.files.keys.sorted() == ["storage.cfg"])
    }

    @Test("the layout: /etc/pve's files are pushed, others are not; priv/ only when asked, never its locks")
    func layout() {
        let pushed = ["storage.cfg", "datacenter.cfg", "user.cfg", "corosync.conf", "firewall/cluster.fw", "firewall/100.fw",
                      "nodes/pve1/host.fw", "nodes/pve1/qemu-server/100.conf", "nodes/pve2/lxc/200.conf", "ha/resources.cfg",
                      "sdn/vnets.cfg", "nodes/pve1/network/interfaces", "virtual-guest/cpu-models.conf", "jobs.cfg"]
        for path in pushed { #expect(PushLayout.stage(of: path, includePrivate: false) != nil, "\(path)") }
        let notPushed = ["README.md", ".gitlab-ci.yml", "nodes/pve1/qemu-server/web.conf", "nodes/pve1/qemu-server/100.conf.tmp.12",
                         "priv/authkey.key", "../storage.cfg", "nodes/pve1/../storage.cfg", "pvectl/push.json", "nodes/pve1/lrm_status"]
        for path in notPushed { #expect(PushLayout.stage(of: path, includePrivate: false) == nil, "\(path)") }
        #expect(PushLayout.stage(of: "priv/storage/nas.pw", includePrivate: true) != nil)
        #expect(PushLayout.stage(of: "priv/lock/x", includePrivate: true) == nil)
    }

    @Test("the record keeps any number of files in parts within pmxcfs's 1 MiB, and a missing part is damage, not emptiness")
    func recordChunks() throws {
        var files: [String: PushRecord.FileRecord] = [:]
        var systemValues: [String: [String: String]] = [:]
        for vmid in 100..<12_100 {
            let path = "nodes/pve1/qemu-server/\(vmid).conf"
            files[path] = PushRecord.FileRecord(written: String(format: "%016x", vmid), managed: String(format: "%016x", vmid + 1),
                                                source: String(format: "%016x", vmid + 2))
            // A repository that sets the system's values itself (a generated tree does) records them for every file.
            systemValues[path] = ["vmgenid": "0b3c4d5e-1111-2222-3333-\(vmid)", "smbios1": "uuid=5f0c2a3e-1111-2222-3333-\(vmid)"]
        }
        let record = PushRecord(revision: Self.revision, pushedAt: Date(timeIntervalSince1970: 1000), node: "pve1", generation: 3,
                                files: files, repositorySystemValues: systemValues)
        let (chunks, header) = try record.encoded()
        #expect(chunks.count > 2 && chunks.allSatisfy { $0.data.count < 1 << 20 } && header.count < 4096, "\(chunks.map(\.data.count))")
        let parts = Dictionary(uniqueKeysWithValues: chunks.map { ($0.name, $0.data) })
        #expect(try PushRecord.decode(header: header, file: "push.json") { parts[$0] } == record)
        #expect(throws: PushRecord.DamagedRecord.self) {
            try PushRecord.decode(header: header, file: "push.json") { $0 == chunks[1].name ? nil : parts[$0] }
        }
    }

    @Test("drift: by hand, by the system (only its values differ), deleted, created since")
    func drift() throws {
        let plan = Self.plan(source: [Self.guest: "memory: 512\nnet0: virtio,bridge=vmbr0\n", "storage.cfg": "dir: a\n\tpath /a\n",
                                      "datacenter.cfg": "keyboard: de\n"], current: [:])
        let current = [Self.guest: "memory: 512\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nvmgenid: 1\n",
                       "storage.cfg": "dir: a\n\tpath /b\n", "firewall/cluster.fw": "[OPTIONS]\nenable: 1\n"].mapValues(Self.data)
        let entries = PushDrift.entries(record: plan.record, current: current,
                                        modified: ["firewall/cluster.fw": Date(timeIntervalSince1970: 2000)], root: Self.root)
        #expect(entries == [PushDrift.Entry(path: "datacenter.cfg", change: .deleted),
                            PushDrift.Entry(path: Self.guest, change: .bySystem),
                            PushDrift.Entry(path: "storage.cfg", change: .byHand),
                            PushDrift.Entry(path: "firewall/cluster.fw", change: .created)])
    }

    @Test("a saved plan names the first file that changed since it was made; problems point into the repository")
    func stalenessAndLocations() throws {
        let plan = Self.plan(source: ["storage.cfg": "dir: a\n\tpath /a\n"], current: ["datacenter.cfg": "keyboard: de\n"])
        #expect(plan.staleFile(now: ["datacenter.cfg": PushRecord.digest(Self.data("keyboard: de\n"))]) == nil)
        #expect(plan.staleFile(now: ["datacenter.cfg": "0"]) == "datacenter.cfg")
        #expect(plan.staleFile(now: [:]) == "datacenter.cfg")
        let diagnostic = Diagnostic.error(SourceLocation(file: "/etc/pve/storage.cfg", line: 2, column: 3), "bad", code: .invalidValue)
        #expect(plan.locate(diagnostic, root: Self.root, sourceRoot: "/repo").location.description == "/repo/storage.cfg:2:3")
        let other = Diagnostic.error(SourceLocation(file: "/etc/pve/datacenter.cfg", line: 1), "bad", code: .invalidValue)
        #expect(plan.locate(other, root: Self.root, sourceRoot: "/repo") == other, "a file the push does not write stays where it is")
    }

    @Test("the unified diff shows hunks with context, as diff -u does")
    func unifiedDiff() {
        let old = (1...10).map { "line \($0)" }.joined(separator: "\n") + "\n"
        let new = old.replacingOccurrences(of: "line 5\n", with: "line five\n")
        #expect(UnifiedDiff.render(old: old, new: new, oldName: "a", newName: "b") == """
        --- a
        +++ b
        @@ -2,7 +2,7 @@
         line 2
         line 3
         line 4
        -line 5
        +line five
         line 6
         line 7
         line 8

        """)
        #expect(UnifiedDiff.render(old: old, new: old, oldName: "a", newName: "b").isEmpty)
        #expect(UnifiedDiff.render(old: "", new: "x\n", oldName: "/dev/null", newName: "b").contains("@@ -0,0 +1,1 @@\n+x\n"))
        // Windows line endings: lines by "\n" byte (Swift takes "\r\n" as one Character), and such a file ends in a newline.
        let crlf = UnifiedDiff.render(old: "a\r\nb\r\n", new: "a\r\nc\r\n", oldName: "a", newName: "b")
        #expect(crlf == "--- a\n+++ b\n@@ -1,2 +1,2 @@\n a\r\n-b\r\n+c\r\n")
    }

    @Test("Windows line endings: what the system wrote goes into the main section; pushing the merged file again changes nothing")
    func windowsLineEndings() {
        let merge = GuestConfigMerge(kind: .qemu)
        let repository = "memory: 512\r\n\r\n[before]\r\nmemory: 256\r\n"
        let current = GuestConfig.parse("memory: 512\nvmgenid: 9c8b7a6d-5e4f-4321-8fed-cba987654321\n", file: "100.conf", kind: .qemu).0
        let first = merge.merge(repository: repository, file: "100.conf", current: current, lastPushed: [:])
        #expect(first.text == "memory: 512\r\nvmgenid: 9c8b7a6d-5e4f-4321-8fed-cba987654321\n\r\n[before]\r\nmemory: 256\r\n")
        #expect(first.sourceLines == [1, nil, 2, 3, 4])
        let merged = GuestConfig.parse(first.text, file: "100.conf", kind: .qemu).0
        #expect(merged.main["vmgenid"] == "9c8b7a6d-5e4f-4321-8fed-cba987654321")
        let second = merge.merge(repository: repository, file: "100.conf", current: merged, lastPushed: first.repositorySystemValues)
        #expect(second.text == first.text)
    }
}
