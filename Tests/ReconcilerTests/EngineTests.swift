import Foundation
import Logging
@testable import Reconciler
import Resources
import Synchronization
import Testing
import TestSupport

/// The engine across every registered kind, on in-memory drivers sharing one host model: plan, order, apply, re-plan,
/// finish, status, saved plans, and the loop's manager on a test clock.
@Suite("engine: every kind through one protocol, on in-memory drivers")
struct EngineTests {
    static let interfaces = """
    auto lo
    iface lo inet loopback

    iface eno1 inet manual

    auto vmbr0
    iface vmbr0 inet static
    \taddress 192.0.2.10/24
    \tbridge-ports eno1
    \tbridge-stp off
    \tbridge-fd 0

    """

    static let files: [String: String] = [
        "/etc/network/interfaces": interfaces,
        "/pve/storage.cfg": "dir: local\n\tpath /srv/local\n\tcontent images,rootdir\n",
        "/pve/firewall/cluster.fw": "[OPTIONS]\nenable: 1\n\n[RULES]\nIN ACCEPT -p tcp -dport 22\n",
        "/pve/nodes/pve1/qemu-server/100.conf": """
        name: web01
        memory: 512
        onboot: 1
        scsi0: local:100/vm-100-disk-0.qcow2,size=1G
        net0: virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1
        smbios1: uuid=7b4f0b5e-54c1-4a43-9d36-1a3f3c6b8a10
        vmgenid: 2f0e7a9c-1b7d-4d8e-9a0b-6c1d2e3f4a5b

        """,
        "/pve/nodes/pve1/lxc/200.conf": """
        hostname: ct200
        memory: 256
        net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:02:00,firewall=1,ip=192.0.2.20/24
        onboot: 1
        ostype: debian
        rootfs: local:200/subvol-200-disk-0.subvol,size=0

        """,
    ]

    /// One node: the tree, its host, a state directory and a clock.
    final class Node: Sendable {
        let host: InMemoryHost
        let store: StateStore
        let clock = TestClock()

        init(_ files: [String: String] = EngineTests.files) {
            host = InMemoryHost(tree: MemoryTree(files), links: ObservedNetwork(links: [
                "lo": ObservedLink(name: "lo", ifindex: 1, up: true, mtu: 65536),
                "eno1": ObservedLink(name: "eno1", ifindex: 2),
            ]))
            // Container 200's rootfs holds an operating system already.
            _ = host.lxc.populated.withLock { $0.insert("/var/lib/vz/images/200/subvol-200-disk-0.subvol") }
            store = StateStore(directory: FileManager.default.temporaryDirectory.appendingPathComponent("pvectl-engine-\(UUID().uuidString)").path)
        }

        deinit { try? FileManager.default.removeItem(atPath: store.directory) }

        func engine() throws -> ReconcileEngine { try host.engine(store: store, clock: clock) }

        func load(staged: Bool = true) -> DesiredState {
            DesiredState.load(root: "/pve", interfaces: "/etc/network/interfaces", node: "pve1", source: host.tree, stagedInterfaces: staged)
        }

        func plan(_ only: [String] = []) async throws -> ReconcileEngine.Computation {
            let selectors = only.compactMap(ResourceSelector.init)
            return try await engine().plan(load(), scope: selectors, named: selectors)
        }
    }

    /// Lines logged by the loop, for assertions.
    final class LogLines: Sendable {
        let lines = Mutex<[String]>([])
        var all: [String] { lines.withLock { $0 } }

        var logger: Logger {
            Logger(label: "test") { _ in Handler(sink: self) }
        }

        struct Handler: LogHandler {
            let sink: LogLines
            var metadata: Logger.Metadata = [:]
            var logLevel: Logger.Level = .debug
            subscript(metadataKey key: String) -> Logger.Metadata.Value? {
                get { metadata[key] }
                set { metadata[key] = newValue }
            }
            func log(event: LogEvent) {
                let key = metadata["kind"].map { "[\($0)] " } ?? ""
                sink.lines.withLock { $0.append("\(event.level) \(key)\(event.message)") }
            }
        }
    }

    @Test("the registry orders kinds by what they are applied after, and refuses duplicates, unknown names and cycles")
    func registry() throws {
        let engine = try Node().engine()
        #expect(engine.names == ["network", "storage", "qemu", "lxc", "firewall", "corosync"])
        // Registered in another order, the apply order is the same.
        let store = StateStore(directory: "/nonexistent")
        let host = InMemoryHost(tree: MemoryTree(), links: ObservedNetwork())
        let shuffled = try ReconcileEngine(kinds: [
            FirewallReconciler(driver: host.firewall, store: store), LxcReconciler(driver: host.lxc, store: store),
            QemuReconciler(driver: host.qemu, store: store),
            StorageReconciler(driver: host.storage, store: store), NetworkReconciler(driver: host.network, store: store),
        ])
        let lxc = LxcReconciler(driver: host.lxc, store: store)
        let position = { (name: String) in shuffled.names.firstIndex(of: name) ?? -1 }
        #expect(position("network") < position("storage") && position("storage") < position("qemu") && position("qemu") < position("firewall"))
        #expect(position("storage") < position("lxc"))
        #expect(throws: ReconcileEngine.RegistrationError.self) { try ReconcileEngine(kinds: [lxc, lxc]) }
        #expect(throws: ReconcileEngine.RegistrationError.self) { try ReconcileEngine(kinds: [lxc]) }
        #expect(throws: ReconcileEngine.RegistrationError.self) { try ReconcileEngine(kinds: [EggKind(), ChickenKind()]) }
        #expect(engine.selector("qemu/100") == ResourceSelector(kind: "qemu", name: "100"))
        #expect(engine.selector("disks") == nil)
    }

    @Test("one plan across kinds; apply runs them in order, plans the firewall again after VMs started, then nothing is left")
    func planApplyConverge() async throws {
        let node = Node()
        let computation = try await node.plan()
        #expect(computation.problems.isEmpty, "\(computation.problems)")
        let actions = Dictionary(uniqueKeysWithValues: computation.plan.resources.map { ($0.id, $0.action) })
        #expect(actions["network/vmbr0"] == .create)
        #expect(actions["storage/local"] == .create)
        #expect(actions["storage/local:100/vm-100-disk-0.qcow2"] == .create)
        #expect(actions["qemu/100"] == .create)
        #expect(actions["lxc/200"] == .create)
        #expect(actions["firewall/ruleset"] == .create)

        let progress = Mutex<[String]>([])
        let report = try await node.engine().apply(computation, reload: { node.load() }, progress: { line in progress.withLock { $0.append(line) } })
        #expect(report.failures.isEmpty, "\(report.failures)")
        var seen: [String] = []
        for kind in report.applied.compactMap({ $0.split(separator: "/").first.map(String.init) }) where seen.last != kind { seen.append(kind) }
        #expect(seen == ["network", "storage", "qemu", "lxc", "firewall"], "\(report.applied)")
        #expect(progress.withLock { $0.contains("qemu/100: started (pid 4001)") }, "\(progress.withLock { $0 })")
        // The firewall saw the VM's tap that the same apply created: its NIC went behind a firewall bridge.
        #expect(node.host.network.master(of: "tap100i0") == .some("fwbr100i0"))
        #expect(node.host.network.master(of: "veth200i0") == .some("fwbr200i0"))
        #expect(node.host.qemu.isRunning(100))

        let again = try await node.plan()
        #expect(!again.plan.hasChanges, "\(again.plan.render(colors: false))")

        let rows = try node.engine().status(again)
        let conditions = Dictionary(uniqueKeysWithValues: rows.map { ($0.id, $0.condition) })
        #expect(conditions["network/vmbr0"] == "Ready")
        #expect(conditions["storage/local"] == "Ready")
        #expect(conditions["qemu/100"] == "Running")
        #expect(conditions["qemu/accelerator"] == "TCG")
        #expect(conditions["lxc/200"] == "Running")
        #expect(conditions["firewall/ruleset"] == "Ready")
        #expect(rows.map(\.id) == rows.map(\.id).sorted())
    }

    @Test("a kind read by a selected one is planned for it but stays out of the plan; --only names one VM")
    func readsAndScope() async throws {
        let node = Node()
        let alone = try await node.plan(["qemu/100"])
        #expect(alone.plan.resources.map(\.id) == ["qemu/100"])
        #expect(alone.computed["storage"] != nil && alone.computed(StorageReconciler.self) == nil)
        // The storage is not there yet and this run does not create it: the VM cannot start.
        #expect(alone.plan.resources.first?.action == .unavailable)
        #expect(alone.plan.resources.first?.message?.contains("local") == true)

        // With the storage kind in the same run, the storage comes first and the VM starts.
        let both = try await node.plan(["storage", "qemu/100"])
        #expect(both.plan.resources.first { $0.id == "qemu/100" }?.action == .create)
        #expect(!both.plan.resources.contains { $0.kind == "network" || $0.kind == "firewall" })
        // Only the files of the selected kinds are checked.
        #expect(both.checks.allSatisfy { !$0.location.file.hasSuffix(".fw") })
    }

    @Test("a staged interfaces.new is the desired state of apply, installed once the network converged; the loop leaves it")
    func stagedInterfaces() async throws {
        var files = Self.files
        files["/etc/network/interfaces.new"] = Self.interfaces.replacingOccurrences(of: "bridge-fd 0", with: "bridge-fd 0\n\tmtu 1400")
        let node = Node(files)
        let computation = try await node.plan(["network"])
        #expect(computation.plan.resources.contains { $0.id == "network/vmbr0" } && computation.plan.resources.allSatisfy { $0.kind == "network" })
        let report = try await node.engine().apply(computation, reload: { node.load() }, progress: { _ in })
        #expect(report.finished == ["Installed /etc/network/interfaces.new as /etc/network/interfaces."])
        #expect(node.host.network.installed.withLock { $0 } == ["/etc/network/interfaces.new"])
        #expect(node.host.tree.read("/etc/network/interfaces")?.contains("mtu 1400") == true)

        node.host.tree.write("/etc/network/interfaces.new", Self.interfaces)
        let loop = try await node.engine().plan(node.load(staged: false), scope: [ResourceSelector(kind: "network")], named: [])
        #expect(loop.plan.notes == ["/etc/network/interfaces.new is staged and left alone: `pvectl apply` installs it"])
        #expect(!loop.plan.hasChanges)
    }

    @Test("a saved plan is stale when an input it read changed, custom CPU models included, or the system moved")
    func staleness() async throws {
        let node = Node()
        let saved = try await node.plan().plan
        #expect(ReconcileEngine.staleness(saved: saved, current: try await node.plan().plan) == nil)
        node.host.tree.write("/pve/virtual-guest/cpu-models.conf", "cpu-model: fast\n\treported-model kvm64\n")
        #expect(ReconcileEngine.staleness(saved: saved, current: try await node.plan().plan) == "/pve/virtual-guest/cpu-models.conf changed")
        node.host.tree.remove("/pve/virtual-guest/cpu-models.conf")
        node.host.network.addLink("vmbr0", kind: "bridge", master: nil)
        let moved = ReconcileEngine.staleness(saved: saved, current: try await node.plan().plan)
        #expect(moved?.hasPrefix("the system changed: network/vmbr0") == true, "\(moved ?? "nil")")
    }

    @Test("the loop held (a node without quorum): passes plan and say what they would do, apply nothing; after the hold they do")
    func heldLoop() async throws {
        let node = Node()
        let logs = LogLines()
        var manager = LoopManager(engine: try node.engine(), selectors: [], pid: 1, clock: node.clock, minimumInterval: 0)
        let load: @Sendable () -> DesiredState = { node.load(staged: false) }
        manager.postAll()
        while let key = manager.next() { await manager.pass(key, load: load, logger: logs.logger, hold: "no quorum") }
        #expect(node.host.network.performed.withLock { $0 }.isEmpty, "nothing applied")
        #expect(node.host.qemu.vms.withLock { $0 }.isEmpty && node.host.lxc.containers.withLock { $0 }.isEmpty, "no guest started")
        #expect(manager.record.kinds["network"]?.outcome == "held")
        let held = "no quorum: keeping everything as it is; would update network/eno1, create network/vmbr0"
        #expect(manager.record.kinds["network"]?.message?.hasPrefix(held) == true,
                "\(String(describing: manager.record.kinds["network"]))")
        #expect(logs.all.contains { $0.contains("held (no quorum): not applying") }, "\(logs.all)")
        manager.postAll()
        while let key = manager.next() { await manager.pass(key, load: load, logger: logs.logger) }
        #expect(!node.host.network.performed.withLock { $0 }.isEmpty && manager.record.kinds["network"]?.outcome == "applied")
    }

    @Test("the loop: a failing VM backs off alone on the clock, an edit of another VM runs at once and plans only that VM")
    func loopBackoffPerResource() async throws {
        var files = Self.files
        files["/pve/nodes/pve1/qemu-server/101.conf"] = "name: db01\nmemory: 256\n"
        let node = Node(files)
        let logs = LogLines()
        var manager = LoopManager(engine: try node.engine(), selectors: [], pid: 1, clock: node.clock, minimumInterval: 0)
        node.host.qemu.failingStarts.withLock { $0[100] = "no such device" }
        let load: @Sendable () -> DesiredState = { node.load(staged: false) }
        #expect(manager.record.followed == ["network", "storage", "qemu", "lxc", "firewall", "corosync"])
        #expect(!manager.record.passedEveryKind, "no pass yet: not converged, whatever the kinds with a record say")

        manager.postAll()
        var passes: [String] = []
        while let key = manager.next() {
            passes.append(key.description)
            await manager.pass(key, load: load, logger: logs.logger)
            #expect(manager.record.passedEveryKind == (passes.count == 6), "after \(passes)")
        }
        #expect(passes == ["network", "storage", "qemu", "lxc", "firewall", "corosync"],
                "network and storage feed qemu and firewall again: queued once")
        #expect(manager.record.kinds["qemu"]?.outcome == "failed")
        #expect(manager.record.kinds["qemu"]?.retryAt == node.clock.now().addingTimeInterval(1))
        #expect(manager.record.kinds["lxc"]?.outcome == "applied", "container 200 started")
        #expect(logs.all.contains { $0.hasPrefix("error [qemu] qemu/100: no such device") }, "\(logs.all)")

        // An edit of VM 101 (now onboot) is planned alone and runs at once; VM 100 keeps waiting for its retry.
        node.host.tree.write("/pve/nodes/pve1/qemu-server/101.conf", "name: db01\nmemory: 256\nonboot: 1\n")
        manager.post(manager.keys(forChangeOf: "/pve/nodes/pve1/qemu-server/101.conf", root: "/pve", interfaces: "/etc/network/interfaces"))
        #expect(manager.next() == ResourceKey("storage"))
        await manager.pass(ResourceKey("storage"), load: load, logger: logs.logger)
        #expect(manager.next() == ResourceKey("qemu", "101"))
        let edited = await manager.pass(ResourceKey("qemu", "101"), load: load, logger: logs.logger)
        #expect(edited.outcome == "applied" && edited.message == "qemu/101", "\(edited)")
        #expect(node.host.qemu.isRunning(101) && !node.host.qemu.isRunning(100))
        #expect(manager.next() == ResourceKey("firewall"), "a VM that started feeds the firewall")
        await manager.pass(ResourceKey("firewall"), load: load, logger: logs.logger)
        #expect(manager.next() == nil)

        // Its backoff over, VM 100 is tried again; the device is back, it starts.
        node.host.qemu.failingStarts.withLock { $0 = [:] }
        try await node.clock.sleep(seconds: 1)
        #expect(manager.next() == ResourceKey("qemu"))
        #expect(await manager.pass(ResourceKey("qemu"), load: load, logger: logs.logger).outcome == "applied")
        #expect(node.host.qemu.isRunning(100))
    }

    @Test("the loop: a blocked input is terminal (not retried); report-only logs drift and changes nothing; notes once")
    func loopBlockedAndReportOnly() async throws {
        var files = Self.files
        files["/etc/network/interfaces"] = "auto vmbr0\niface vmbr0 inet static\n\tmtu lots\n"
        files["/etc/network/interfaces.new"] = Self.interfaces
        let node = Node(files)
        let logs = LogLines()
        var manager = LoopManager(engine: try node.engine(), selectors: [], reportOnly: ["firewall"], pid: 1, clock: node.clock,
                                  minimumInterval: 0)
        let load: @Sendable () -> DesiredState = { node.load(staged: false) }
        let network = await manager.pass(ResourceKey("network"), load: load, logger: logs.logger)
        #expect(network.outcome == "blocked", "\(network)")
        #expect(manager.nextWake == node.clock.now().addingTimeInterval(300), "nothing retries a blocked input before the resync: an edit does")
        await manager.pass(ResourceKey("network"), load: load, logger: logs.logger)
        #expect(logs.all.filter { $0.contains("is staged and left alone") }.count == 1, "a note is logged once: \(logs.all)")
        let errors = logs.all.filter { $0.hasPrefix("error [network]") }
        #expect(!errors.isEmpty && Set(errors).count == errors.count, "errors are logged when they change: \(logs.all)")

        let firewall = await manager.pass(ResourceKey("firewall"), load: load, logger: logs.logger)
        #expect(firewall.outcome == "reported")
        #expect(node.host.firewall.scripts.withLock { $0.isEmpty })
        #expect(logs.all.contains { $0.hasPrefix("notice [firewall] drift (report only): create firewall/ruleset") }, "\(logs.all)")
    }

    @Test("the loop: a kind may ask to be looked at again (a storage waiting for its mount), without backoff")
    func loopRequeue() async throws {
        var files = Self.files
        files["/pve/storage.cfg"] = "dir: usb\n\tpath /mnt/usb/pve\n\tcontent images\n\tis_mountpoint /mnt/usb\n"
        files["/pve/nodes/pve1/qemu-server/100.conf"] = "memory: 512\nonboot: 1\nscsi0: usb:100/vm-100-disk-0.raw,size=1G\n"
        let node = Node(files)
        var manager = LoopManager(engine: try node.engine(), selectors: [ResourceSelector(kind: "storage")], pid: 1, clock: node.clock,
                                  minimumInterval: 0)
        let load: @Sendable () -> DesiredState = { node.load(staged: false) }
        let waiting = await manager.pass(ResourceKey("storage"), load: load, logger: LogLines().logger)
        #expect(waiting.outcome != "failed" && waiting.failures == 0, "\(waiting)")
        #expect(waiting.retryAt == node.clock.now().addingTimeInterval(10))
        #expect(manager.next() == nil)
        try await node.clock.sleep(seconds: 10)
        #expect(manager.next() == ResourceKey("storage"), "asked for, not retried as a failure")

        // The disk is plugged in: the storage comes up, nothing more is asked.
        node.host.storage.host.withLock { $0.mounts["/mnt/usb"] = .init(source: "/dev/sdb1", fileSystem: "ext4") }
        let mounted = await manager.pass(ResourceKey("storage"), load: load, logger: LogLines().logger)
        #expect(mounted.outcome == "applied" && mounted.retryAt == nil, "\(mounted)")
        #expect(node.host.storage.host.withLock { $0.volumes["/mnt/usb/pve/images/100/vm-100-disk-0.raw"] } == 1 << 30)
    }
}

/// Two kinds each applied after the other: the registry refuses them.
struct EggKind: ResourceKind {
    struct Computed: KindComputation {
        var resources: [ResourcePlan] = []
        var problems: [Diagnostic] = []
    }

    static let name = "egg"
    static let summary = "test"
    static let appliedAfter = ["chicken"]
    static func concern(_ change: TreeChange) -> ChangeConcern { .none }
    func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed { Computed() }
    func apply(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome { ApplyOutcome() }
    func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] { [] }
}

struct ChickenKind: ResourceKind {
    typealias Computed = EggKind.Computed
    static let name = "chicken"
    static let summary = "test"
    static let appliedAfter = ["egg"]
    static func concern(_ change: TreeChange) -> ChangeConcern { .none }
    func compute(_ state: DesiredState, context: PlanContext) async throws -> Computed { Computed() }
    func apply(_ computed: Computed, progress: @escaping @Sendable (String) -> Void) async throws -> ApplyOutcome { ApplyOutcome() }
    func statusRows(_ computed: Computed, plan: Plan, scope: [ResourceSelector]) -> [StatusRow] { [] }
}
