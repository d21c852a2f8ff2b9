import Foundation
@testable import Reconciler
import Resources
import Synchronization
import Testing
import TestSupport

/// The LXC kind through the engine on in-memory drivers: which containers start, from what, what changes live, what
/// waits for a restart, and what drift is repaired.
@Suite("LXC kind: plan and apply on in-memory drivers")
struct LxcReconcilerTests {
    static let template = "/srv/ct/template/cache/busybox.tar.gz"
    static let rootfs = "/srv/ct/images/300/subvol-300-disk-0.subvol"

    static func files(_ container: String, vmid: Int = 300) -> [String: String] {
        var files = EngineTests.files
        files["/pve/storage.cfg"] = EngineTests.files["/pve/storage.cfg"]! + "dir: ct\n\tpath /srv/ct\n\tcontent images,rootdir,vztmpl\n"
        files["/pve/nodes/pve1/lxc/\(vmid).conf"] = container
        return files
    }

    static let container = """
    #pvectl ostemplate=ct:vztmpl/busybox.tar.gz
    hostname: ct300
    memory: 256
    swap: 128
    net0: name=eth0,bridge=vmbr0,ip=192.0.2.30/24
    onboot: 1
    ostype: unmanaged
    rootfs: ct:300/subvol-300-disk-0.subvol,size=0
    startup: down=5

    """

    func resource(_ plan: ReconcileEngine.Computation, _ id: String) -> ResourcePlan? {
        plan.plan.resources.first { $0.id == id }
    }

    func converge(_ node: EngineTests.Node, _ only: [String] = []) async throws {
        let engine = try node.engine()
        let selectors = only.compactMap(ResourceSelector.init)
        let computation = try await engine.plan(node.load(), scope: selectors, named: selectors)
        _ = try await engine.apply(computation, reload: { node.load() }, progress: { _ in })
    }

    @Test("a new container is populated from its OS template once, started, its MAC written back; then nothing to do")
    func startFromTemplate() async throws {
        let node = EngineTests.Node(Self.files(Self.container))
        _ = node.host.lxc.files.withLock { $0.insert(Self.template) }
        let plan = try await node.plan()
        let start = try #require(resource(plan, "lxc/300"))
        #expect(start.action == .create)
        #expect(start.operations.contains("populate the empty rootfs from ct:vztmpl/busybox.tar.gz"))
        #expect(start.changes.contains { $0.field == "net0" && $0.new?.contains("hwaddr=BC:24:11:") == true })

        try await converge(node)
        let running = try #require(node.host.lxc.containers.withLock { $0[300] })
        #expect(running.spec.template == Self.template)
        #expect(running.spec.mounts.first == ContainerMount(key: "rootfs", source: Self.rootfs, type: .directory, path: "/", readOnly: false))
        #expect(running.spec.config.contains("lxc.cgroup.memory.memsw.limit_in_bytes = 402653184"))
        let written = try #require(node.host.tree.read("/pve/nodes/pve1/lxc/300.conf"))
        #expect(written.contains("hwaddr=BC:24:11:"))
        #expect(written.contains("#pvectl ostemplate=ct%3Avztmpl/busybox.tar.gz"))
        #expect(resource(try await node.plan(), "lxc/300") == nil)

        // Its init dies: started again, the rootfs (holding data now) not populated again.
        node.host.lxc.crash(300)
        let again = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(again.action == .create)
        #expect(again.message?.hasPrefix("start again") == true)
        #expect(!again.operations.contains { $0.contains("populate") })
        try await converge(node)
        #expect(node.host.lxc.containers.withLock { $0[300]?.spec.template } == Self.template)
        #expect(resource(try await node.plan(), "lxc/300") == nil)
    }

    @Test("an empty rootfs without a template, or with a missing one, blocks the container with the reason")
    func missingTemplate() async throws {
        let node = EngineTests.Node(Self.files(Self.container))
        let blocked = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(blocked.action == .blocked)
        #expect(blocked.message?.contains("OS template ct:vztmpl/busybox.tar.gz is missing (\(Self.template))") == true)
        #expect(try await node.plan().problems.contains { $0.code == .blocked && $0.location.file == "/pve/nodes/pve1/lxc/300.conf" })

        let without = EngineTests.Node(Self.files(Self.container.replacingOccurrences(of: "#pvectl ostemplate=ct:vztmpl/busybox.tar.gz\n", with: "")))
        let none = try #require(resource(try await without.plan(), "lxc/300"))
        #expect(none.action == .blocked)
        #expect(none.message?.contains("is empty and the config names no OS template") == true)

        // A rootfs that holds data needs no template.
        _ = without.host.lxc.populated.withLock { $0.insert(Self.rootfs) }
        #expect(resource(try await without.plan(), "lxc/300")?.action == .create)
    }

    @Test("limits change live in the limit cgroup, in an order the kernel accepts; hostname waits for --restart")
    func liveLimitsAndPending() async throws {
        let node = EngineTests.Node(Self.files(Self.container))
        _ = node.host.lxc.populated.withLock { $0.insert(Self.rootfs) }
        try await converge(node)
        let path = "/pve/nodes/pve1/lxc/300.conf"
        let text = try #require(node.host.tree.read(path))
        node.host.tree.write(path, text.replacingOccurrences(of: "memory: 256", with: "memory: 128")
            .replacingOccurrences(of: "hostname: ct300", with: "hostname: renamed") + "cpulimit: 0.5\n")
        let plan = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(plan.action == .update, "\(plan)")
        #expect(plan.changes.first { $0.field == "hostname" }?.changeClass == .restart)
        #expect(plan.message?.contains("1 change(s) stay pending until a restart") == true)
        try await converge(node)
        let steps = node.host.lxc.containers.withLock { $0[300]?.steps } ?? []
        // Shrinking: the memory limit goes down before the memory+swap limit.
        #expect(steps == [
            .setLimit(controller: "memory", file: "memory.limit_in_bytes", value: "134217728"),
            .setLimit(controller: "memory", file: "memory.memsw.limit_in_bytes", value: "268435456"),
            .setLimit(controller: "cpu", file: "cpu.cfs_quota_us", value: "50000"),
        ])
        let pending = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(pending.action == .pending)
        #expect(pending.changes.map(\.field) == ["hostname"])

        // A new mount point is hot-plugged; a changed one waits for a restart.
        let withMount = try #require(node.host.tree.read(path))
        node.host.tree.write(path, withMount + "mp0: /srv/shared,mp=/mnt/shared,ro=1\n")
        try await converge(node)
        #expect(node.host.lxc.containers.withLock { $0[300]?.steps.last }
                == .addMountPoint(ContainerMount(key: "mp0", source: "/srv/shared", type: .bind, path: "/mnt/shared", readOnly: true),
                                  unprivileged: false))
        node.host.tree.write(path, withMount + "mp0: /srv/shared,mp=/mnt/elsewhere\n")
        let moved = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(moved.changes.first { $0.field == "mp0" }?.changeClass == .restart, "\(moved)")
        node.host.tree.write(path, withMount)

        // A limit changed behind pvectl's back is restored.
        node.host.lxc.containers.withLock { $0[300]?.limits["memory/memory.limit_in_bytes"] = "999" }
        let drift = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(drift.changes.contains { $0.field == "limits" && $0.changeClass == .live })

        // --restart: stopped and started with the new hostname.
        let restarting = try host(node, restart: [300])
        let computation = try await restarting.plan(node.load(), scope: [], named: [])
        #expect(computation.plan.resources.first { $0.id == "lxc/300" }?.action == .replace)
        _ = try await restarting.apply(computation, reload: { node.load() }, progress: { _ in })
        #expect(node.host.lxc.containers.withLock { $0[300]?.spec.config.contains("lxc.uts.name = renamed") } == true)
        #expect(resource(try await node.plan(), "lxc/300") == nil)
    }

    func host(_ node: EngineTests.Node, restart: Set<Int>) throws -> ReconcileEngine {
        try node.host.engine(store: node.store, clock: node.clock, restartVMs: restart)
    }

    @Test("growing memory raises the memory+swap limit first; v2 hosts get memory.max, memory.high, memory.swap.max, cpu.max")
    func limitFiles() throws {
        let grow = try LxcLimits(["memory": "1024", "swap": "512"]).files(layout: .v1, current: ["memory/memory.limit_in_bytes": "536870912"])
        #expect(grow.prefix(2).map(\.file) == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"])
        #expect(grow.first?.value == "1610612736")
        let v2 = try LxcLimits(["memory": "512", "cpulimit": "2", "cpuunits": "200"]).files(layout: .v2)
        #expect(v2.map { "\($0.file)=\($0.value)" } == ["memory.max=536870912", "memory.high=532676608", "memory.swap.max=0",
                                                       "cpu.max=200000 100000", "cpu.weight=200"])
    }

    @Test("NICs: added, removed, moved between bridges and readdressed live; a veth pulled off its bridge is put back")
    func nics() async throws {
        var files = Self.files(Self.container)
        files["/etc/network/interfaces"] = EngineTests.interfaces + "\nauto vmbr1\niface vmbr1 inet manual\n\tbridge-ports none\n"
        let node = EngineTests.Node(files)
        _ = node.host.lxc.populated.withLock { $0.insert(Self.rootfs) }
        try await converge(node)
        let path = "/pve/nodes/pve1/lxc/300.conf"
        let text = try #require(node.host.tree.read(path))
        let mac = try #require(text.split(separator: "\n").first { $0.hasPrefix("net0:") }.flatMap { $0.range(of: "hwaddr=") }.map {
            String(text[$0.upperBound...].prefix(17))
        })
        node.host.tree.write(path, text.replacingOccurrences(of: "bridge=vmbr0,ip=192.0.2.30/24", with: "bridge=vmbr1,ip=192.0.2.31/24")
            + "net1: name=eth1,bridge=vmbr0,hwaddr=BC:24:11:00:03:01\n")
        try await converge(node)
        var steps = node.host.lxc.containers.withLock { $0[300]?.steps } ?? []
        #expect(steps.contains { if case .attachNIC(let nic) = $0 { nic.bridge == "vmbr1" && nic.hwaddr == mac } else { false } })
        #expect(steps.contains { if case .setAddresses(let nic) = $0 { nic.ip == "192.0.2.31/24" } else { false } })
        #expect(steps.contains { if case .addNIC(let nic) = $0 { nic.veth == "veth300i1" && nic.name == "eth1" } else { false } })
        #expect(resource(try await node.plan(), "lxc/300") == nil)

        node.host.network.state.withLock { $0.links["veth300i1"]?.master = nil }
        let drift = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(drift.changes.first?.old == "veth300i1 on no bridge")
        try await converge(node)
        #expect(node.host.network.master(of: "veth300i1") == .some("vmbr0"))

        let current = try #require(node.host.tree.read(path))
        node.host.tree.write(path, current.split(separator: "\n").filter { !$0.hasPrefix("net1:") }.joined(separator: "\n") + "\n")
        try await converge(node)
        steps = node.host.lxc.containers.withLock { $0[300]?.steps } ?? []
        #expect(steps.last == .removeNIC(veth: "veth300i1"))
        #expect(node.host.network.master(of: "veth300i1") == nil)
    }

    @Test("a locked container is left alone and reported; template: 1 and a removed config stop it with startup down=")
    func lockTemplateRemoval() async throws {
        let node = EngineTests.Node(Self.files(Self.container))
        _ = node.host.lxc.populated.withLock { $0.insert(Self.rootfs) }
        let path = "/pve/nodes/pve1/lxc/300.conf"
        node.host.tree.write(path, Self.container + "lock: backup\n")
        let locked = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(locked.action == .blocked)
        #expect(locked.message == "locked (backup): left as it is until the lock is removed")

        node.host.tree.write(path, Self.container)
        try await converge(node)
        node.host.tree.write(path, try #require(node.host.tree.read(path)) + "template: 1\n")
        let stop = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(stop.action == .delete)
        #expect(stop.operations == ["clean shutdown, hard stop after 5 s"])
        try await converge(node)
        #expect(node.host.lxc.containers.withLock { $0[300]?.state } == .stopped)

        node.host.tree.write(path, Self.container)
        try await converge(node)
        node.host.tree.remove(path)
        let removed = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(removed.action == .delete)
        #expect(removed.message == "stop: no config for container 300 on node pve1")
        #expect(removed.operations == ["clean shutdown, hard stop after 5 s"])
    }

    @Test("an HA resource's state decides, as for VMs: ct:300 stopped stops it, started starts it without onboot")
    func haState() async throws {
        var files = Self.files(Self.container.replacingOccurrences(of: "onboot: 1\n", with: ""))
        files["/pve/ha/resources.cfg"] = "ct: 300\n\tstate started\n"
        let node = EngineTests.Node(files)
        node.host.lxc.populated.withLock { _ = $0.insert(Self.rootfs) }
        let start = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(start.action == .create && start.message == "start: HA state started", "\(start)")
        try await converge(node)
        node.host.tree.write("/pve/ha/resources.cfg", "ct: 300\n\tstate stopped\n")
        let stop = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(stop.action == .delete && stop.message == "stop: HA state stopped", "\(stop)")
        node.host.tree.write("/pve/ha/resources.cfg", "ct: 300\n\tstate ignored\n")
        #expect(resource(try await node.plan(), "lxc/300") == nil, "ignored: left as it is")
    }

    @Test("a volume the storage kind cannot allocate blocks the start, naming it")
    func unallocatableVolume() async throws {
        let node = EngineTests.Node(Self.files(Self.container.replacingOccurrences(of: "size=0", with: "size=1G")))
        let blocked = try #require(resource(try await node.plan(), "lxc/300"))
        #expect(blocked.action == .blocked)
        #expect(blocked.message?.contains("rootfs: volume ct:300/subvol-300-disk-0.subvol is blocked") == true)
    }

    @Test("validate and plan check a container the same way: its template line, ostype and rootfs, host-managed SLAAC")
    func validation() async throws {
        let broken = """
        #pvectl ostemplate=nowhere:vztmpl/busybox.tar.gz
        hostname: ct300
        net0: name=eth0,bridge=vmbr0,host-managed=1,ip6=auto
        onboot: 1

        """
        let node = EngineTests.Node(Self.files(broken))
        let messages = TreeValidator.validate(node.load()).filter { $0.location.file.hasSuffix("lxc/300.conf") }.map(\.description)
        #expect(messages.contains { $0.contains("error: pvectl ostemplate=nowhere:vztmpl/busybox.tar.gz: storage 'nowhere' is not defined") })
        #expect(messages.contains { $0.contains("warning: missing 'ostype': the container cannot start") })
        #expect(messages.contains { $0.contains("warning: missing 'rootfs': the container cannot start") })
        #expect(messages.contains { $0.contains("error: net0: SLAAC (ip6=auto) is not supported with host-managed=1") })
        let plan = try await node.plan()
        #expect(Set(plan.findings.filter { $0.location.file.hasSuffix("lxc/300.conf") }.map(\.description)).isSuperset(of: messages))
        #expect(resource(plan, "lxc/300")?.action == .blocked)
    }

    @Test("memory past what a cgroup limit holds: validate and plan report it at the value, the container is blocked")
    func limitOutOfRange() async throws {
        let config = Self.container.replacingOccurrences(of: "memory: 256", with: "memory: 99999999999999")
        let node = EngineTests.Node(Self.files(config))
        let messages = TreeValidator.validate(node.load()).filter { $0.location.file.hasSuffix("lxc/300.conf") }.map(\.description)
        let expected = "error: memory 99999999999999 MiB is more than a cgroup limit can hold"
        #expect(messages.filter { $0.contains(expected) }.count == 1)
        let plan = try await node.plan()
        #expect(plan.findings.filter { $0.description.contains(expected) }.count == 1)
        #expect(resource(plan, "lxc/300")?.action == .blocked)
        #expect(resource(plan, "lxc/300")?.message?.contains("its limits cannot be set") == true)
    }

    @Test("starts follow startup order: an up= wait after its container, side by side within one order otherwise")
    func startupOrder() async throws {
        var files = Self.files(Self.container)
        func container(_ vmid: Int, _ startup: String) -> String {
            "memory: 64\nonboot: 1\nostype: unmanaged\nrootfs: ct:\(vmid)/subvol-\(vmid)-disk-0.subvol,size=0\nstartup: \(startup)\n"
        }
        files["/pve/nodes/pve1/lxc/300.conf"] = container(300, "order=2")
        files["/pve/nodes/pve1/lxc/301.conf"] = container(301, "order=1,up=7")
        files["/pve/nodes/pve1/lxc/302.conf"] = container(302, "order=1")
        files["/pve/nodes/pve1/lxc/303.conf"] = container(303, "order=2")
        let node = EngineTests.Node(files)
        node.host.lxc.populated.withLock { set in
            for vmid in 300...303 { set.insert("/srv/ct/images/\(vmid)/subvol-\(vmid)-disk-0.subvol") }
        }
        let lines = Mutex<[String]>([])
        let engine = try node.engine()
        let computation = try await engine.plan(node.load(), scope: [], named: [])
        _ = try await engine.apply(computation, reload: { node.load() }, progress: { line in lines.withLock { $0.append(line) } })
        let events = lines.withLock { $0 }.filter { $0.hasPrefix("lxc/") && ($0.contains("started") || $0.contains("waiting")) }
        let names = events.map { String($0.prefix { $0 != ":" }) }
        #expect(events.count == 6, "\(events)")
        #expect(events.first == "lxc/301: started (init pid 7001)", "\(events)")
        #expect(events.dropFirst().first == "lxc/301: waiting 7 s (startup up=7) before the next guest", "\(events)")
        #expect(names.dropFirst(2).first == "lxc/302")
        // Order 2 side by side, then the engine tests' container 200, which has no order.
        #expect(Set(names.dropFirst(3).prefix(2)) == ["lxc/300", "lxc/303"], "\(events)")
        #expect(names.last == "lxc/200", "\(events)")
        #expect(node.clock.waits == [7])
    }

    @Test("VMs and containers start and stop in one startup order, as Proxmox's startall and stopall have them")
    func startupOrderAcrossKinds() async throws {
        var files = Self.files(Self.container)
        func container(_ vmid: Int, _ startup: String) -> String {
            "memory: 64\nonboot: 1\nostype: unmanaged\nrootfs: ct:\(vmid)/subvol-\(vmid)-disk-0.subvol,size=0\nstartup: \(startup)\n"
        }
        files["/pve/nodes/pve1/lxc/300.conf"] = nil
        files["/pve/nodes/pve1/lxc/301.conf"] = container(301, "order=1,up=5")
        files["/pve/nodes/pve1/lxc/302.conf"] = container(302, "order=3")
        files["/pve/nodes/pve1/qemu-server/100.conf"] = files["/pve/nodes/pve1/qemu-server/100.conf"]! + "startup: order=2\n"
        let node = EngineTests.Node(files)
        node.host.lxc.populated.withLock { set in
            for vmid in 301...302 { set.insert("/srv/ct/images/\(vmid)/subvol-\(vmid)-disk-0.subvol") }
        }
        func run() async throws -> [String] {
            let lines = Mutex<[String]>([])
            let engine = try node.engine()
            let computation = try await engine.plan(node.load(), scope: [], named: [])
            let report = try await engine.apply(computation, reload: { node.load() }, progress: { line in lines.withLock { $0.append(line) } })
            #expect(report.failures.isEmpty, "\(report.failures)")
            return lines.withLock { $0 }.filter { $0.hasPrefix("lxc/") || $0.hasPrefix("qemu/") }
                .filter { $0.contains("started") || $0.contains("stopped") || $0.contains("waiting") }
                .map { String($0.prefix { $0 != "(" }).trimmingCharacters(in: .whitespaces) }
        }
        #expect(try await run() == ["lxc/301: started", "lxc/301: waiting 5 s", "qemu/100: started", "lxc/302: started", "lxc/200: started"])
        #expect(node.clock.waits == [5])

        for path in ["/pve/nodes/pve1/lxc/301.conf", "/pve/nodes/pve1/lxc/302.conf", "/pve/nodes/pve1/qemu-server/100.conf"] {
            node.host.tree.write(path, try #require(node.host.tree.read(path)) + "template: 1\n")
        }
        #expect(try await run() == ["lxc/302: stopped", "qemu/100: stopped", "lxc/301: stopped"])
    }

    @Test("the OS template is read from a description line, encoded or not")
    func templateLine() {
        let (config, _) = GuestConfig.parse("#notes\n#pvectl ostemplate=local%3Avztmpl/debian.tar.zst\nmemory: 64\n", file: "x", kind: .lxc)
        #expect(LxcReconciler.osTemplate(config.main) == "local:vztmpl/debian.tar.zst")
        let (plain, _) = GuestConfig.parse("#pvectl ostemplate=local:vztmpl/a.tar.gz\n", file: "x", kind: .lxc)
        #expect(LxcReconciler.osTemplate(plain.main) == "local:vztmpl/a.tar.gz")
        let (prose, _) = GuestConfig.parse("#pvectl ostemplate is set below\n", file: "x", kind: .lxc)
        #expect(LxcReconciler.osTemplate(prose.main) == nil)
    }
}
