import Foundation
@testable import Reconciler
import Resources
import Testing
import TestSupport

/// The continuous loop's pure parts: which kinds a changed file concerns,
/// and the work queue (collapsing, order, backoff, rate limit).
@Suite("controller: events to kinds, the work queue")
struct ControllerTests {
    /// The registered kinds on in-memory drivers: the engine's declarations are what is tested here.
    static let engine = try! InMemoryHost(tree: MemoryTree(), links: ObservedNetwork()).engine(store: StateStore(directory: "/nonexistent"))

    static func key(_ kind: String, _ name: String? = nil) -> ResourceKey { ResourceKey(kind, name) }

    @Test("a changed file names the kinds that read it, from each kind's own declaration")
    func affectedKinds() {
        func kinds(_ path: String, root: String = "/etc/pve", interfaces: String? = "/etc/network/interfaces") -> [String] {
            let keys = Self.engine.affected(byChangeOf: path, root: root, interfaces: interfaces)
            return Self.engine.names.filter { name in keys.contains { $0.kind == name } }
        }
        #expect(kinds("/etc/network/interfaces") == ["network", "firewall"])
        #expect(kinds("/etc/network/interfaces.new") == ["network", "firewall"])
        #expect(kinds("/etc/network/if-up.d/foo").isEmpty)
        #expect(kinds("/etc/pve/storage.cfg") == ["storage", "qemu", "lxc"])
        #expect(kinds("/etc/pve/firewall/cluster.fw") == ["firewall"])
        #expect(kinds("/etc/pve/firewall/100.fw") == ["firewall"])
        #expect(kinds("/etc/pve/nodes/pve1/host.fw") == ["firewall"])
        #expect(kinds("/etc/pve/nodes/pve1/qemu-server/100.conf") == ["storage", "qemu", "firewall"])
        #expect(kinds("/etc/pve/nodes/pve1/qemu-server/100.conf.tmp.4242").isEmpty, "a temporary file is not a config yet")
        #expect(kinds("/etc/pve/nodes/pve2") == ["storage", "qemu", "lxc", "firewall"], "a new directory may hold configs")
        #expect(kinds("/etc/pve/ha/resources.cfg") == ["qemu", "lxc"])
        #expect(kinds("/etc/pve/datacenter.cfg") == ["qemu", "lxc", "firewall"])
        #expect(kinds("/etc/pve/corosync.conf") == ["firewall", "corosync"])
        #expect(kinds("/etc/pve/virtual-guest/cpu-models.conf") == ["qemu"])
        #expect(kinds("/etc/pve/user.cfg").isEmpty)
        #expect(kinds("/elsewhere/storage.cfg").isEmpty)
        #expect(kinds("/srv/pve/storage.cfg", root: "/srv/pve/", interfaces: nil) == ["storage", "qemu", "lxc"])
    }

    @Test("a guest's own config concerns that guest alone; everything else whole kinds")
    func affectedKeys() {
        func keys(_ path: String) -> [String] {
            Self.engine.affected(byChangeOf: path, root: "/etc/pve", interfaces: "/etc/network/interfaces")
                .sorted(by: Self.engine.precedes).map(\.description)
        }
        #expect(keys("/etc/pve/nodes/pve1/qemu-server/100.conf") == ["storage", "qemu/100", "firewall"])
        #expect(keys("/etc/pve/nodes/pve1/lxc/200.conf") == ["storage", "qemu", "lxc/200", "firewall"])
        #expect(keys("/etc/pve/storage.cfg") == ["storage", "qemu", "lxc"])
        #expect(keys("/etc/pve/nodes/pve2") == ["storage", "qemu", "lxc", "firewall"])
        #expect(keys("/etc/network/interfaces") == ["network", "firewall"])
    }

    @Test("the scope of a plan of changed files: what they concern, a whole kind over its resources, within --only")
    func scopeOfChanges() {
        func scope(_ paths: [String], within: [String] = []) -> [String] {
            Self.engine.scope(forChangesOf: paths, root: "/etc/pve", interfaces: "/etc/network/interfaces",
                              within: within.compactMap(ResourceSelector.init)).map(\.description)
        }
        #expect(scope([]).isEmpty)
        #expect(scope(["/etc/pve/nodes/pve1/qemu-server/100.conf", "/etc/pve/nodes/pve1/qemu-server/101.conf"])
                == ["storage", "qemu/100", "qemu/101", "firewall"])
        #expect(scope(["/etc/pve/nodes/pve1/qemu-server/100.conf", "/etc/pve/storage.cfg"]) == ["storage", "qemu", "lxc", "firewall"])
        #expect(scope(["/etc/pve/nodes/pve1/qemu-server/100.conf"], within: ["qemu"]) == ["qemu/100"])
        #expect(scope(["/etc/pve/storage.cfg"], within: ["qemu/7"]) == ["qemu/7"])
        #expect(scope(["/etc/pve/nodes/pve1/qemu-server/100.conf"], within: ["qemu/101", "network"]).isEmpty)
        #expect(scope(["/etc/pve/README"]).isEmpty)
    }

    @Test("per resource: a failing VM backs off alone, another VM's edit runs at once, a whole-kind pass covers both")
    func perResourceBackoff() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        var queue = WorkQueue<ResourceKey>(baseDelay: 1, maximumDelay: 8, minimumInterval: 0, order: Self.engine.precedes)
        let failing = Self.key("qemu", "100"), edited = Self.key("qemu", "101")
        queue.add(failing, now: now)
        #expect(queue.next(now: now) == failing)
        #expect(queue.failed(failing, now: now) == 1)
        queue.add([failing, edited], now: now)
        #expect(queue.next(now: now) == edited, "the other VM does not wait for the failing one")
        #expect(queue.next(now: now) == nil)
        #expect(queue.failureCount(failing) == 1 && queue.failureCount(edited) == 0)
        #expect(queue.next(now: now.addingTimeInterval(1)) == failing)
        #expect(queue.failed(failing, now: now.addingTimeInterval(1)) == 2, "it failed again: due at +3 s")

        // Order: kinds in apply order, a whole kind before its resources, resources by name.
        queue.add([Self.key("firewall"), Self.key("qemu", "99"), Self.key("qemu", "100"), Self.key("qemu"), Self.key("network")],
                  now: now.addingTimeInterval(2))
        let later = now.addingTimeInterval(2)
        #expect(queue.next(now: later) == Self.key("network"))
        #expect(queue.next(now: later) == Self.key("qemu"))
        // The whole-kind pass covered the waiting VMs; one still backing off keeps its retry.
        queue.drop { $0.kind == "qemu" && $0.name != nil }
        #expect(queue.next(now: later) == Self.key("firewall"))
        #expect(queue.next(now: later) == nil)
        #expect(queue.next(now: now.addingTimeInterval(3)) == Self.key("qemu", "100"), "its backoff survived the event and the drop")
        #expect(queue.next(now: now.addingTimeInterval(10)) == nil)
    }

    @Test("kinds queued twice run once, in apply order, no faster than the rate limit")
    func collapseAndOrder() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        var queue = WorkQueue<ResourceKey>(minimumInterval: 0.5, order: Self.engine.precedes)
        queue.add([Self.key("firewall"), Self.key("network"), Self.key("qemu"), Self.key("network")], now: start)
        #expect(queue.next(now: start) == Self.key("network"))
        #expect(queue.next(now: start) == nil, "the rate limit holds the next pass")
        #expect(queue.nextWake == start.addingTimeInterval(0.5))
        #expect(queue.next(now: start.addingTimeInterval(0.5)) == Self.key("qemu"))
        #expect(queue.next(now: start.addingTimeInterval(1)) == Self.key("firewall"))
        #expect(queue.next(now: start.addingTimeInterval(2)) == nil)
        #expect(queue.isEmpty && queue.nextWake == nil)
    }

    @Test("a failing kind backs off exponentially up to the cap; an event does not cut the wait; success forgets it")
    func backoff() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        var queue = WorkQueue<String>(baseDelay: 1, maximumDelay: 8, minimumInterval: 0)
        var now = start
        var delays: [TimeInterval] = []
        for _ in 0..<5 {
            queue.add("storage", now: now)
            guard queue.next(now: now) == "storage" else {
                Issue.record("storage should be due at \(now)")
                return
            }
            let delay = queue.failed("storage", now: now)
            delays.append(delay)
            #expect(queue.next(now: now) == nil)
            queue.add("storage", now: now)
            #expect(queue.next(now: now.addingTimeInterval(delay / 2)) == nil, "an event during the backoff waits for it")
            now = now.addingTimeInterval(delay)
        }
        #expect(delays == [1, 2, 4, 8, 8])
        #expect(queue.next(now: now) == "storage")
        queue.succeeded("storage")
        #expect(queue.failureCount("storage") == 0)
        queue.add("storage", now: now)
        #expect(queue.next(now: now) == "storage", "after a success an event runs at once")
    }

    @Test("the inbox wakes on a post, on stop, and at a deadline")
    func inbox() async {
        let inbox = ControllerInbox()
        let clock = ContinuousClock()
        let timed = clock.now
        await inbox.wait(until: clock.now + .milliseconds(50))
        #expect(clock.now - timed >= .milliseconds(50))
        #expect(await inbox.take().isEmpty)

        let waiter = Task { await inbox.wait(until: nil) }
        await inbox.post(kinds: ["qemu"])
        await waiter.value
        #expect(await inbox.take() == [Self.key("qemu")])
        #expect(await inbox.take().isEmpty)

        let stopped = Task { await inbox.wait(until: nil) }
        await inbox.stop()
        await stopped.value
        #expect(await inbox.isStopping)
    }
}
