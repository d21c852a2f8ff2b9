import Foundation
@testable import Reconciler
import Testing

/// The continuous loop's pure parts: which kinds a changed file concerns,
/// and the work queue (collapsing, order, backoff, rate limit).
@Suite("controller: events to kinds, the work queue")
struct ControllerTests {
    @Test("a changed file names the kinds that read it")
    func affectedKinds() {
        func kinds(_ path: String) -> [ControllerKind] {
            ControllerKind.affected(byChangeOf: path, root: "/etc/pve", interfaces: "/etc/network/interfaces").sorted()
        }
        #expect(kinds("/etc/network/interfaces") == [.network, .firewall])
        #expect(kinds("/etc/network/interfaces.new") == [.network, .firewall])
        #expect(kinds("/etc/network/if-up.d/foo").isEmpty)
        #expect(kinds("/etc/pve/storage.cfg") == [.storage, .qemu])
        #expect(kinds("/etc/pve/firewall/cluster.fw") == [.firewall])
        #expect(kinds("/etc/pve/firewall/100.fw") == [.firewall])
        #expect(kinds("/etc/pve/nodes/pve1/host.fw") == [.firewall])
        #expect(kinds("/etc/pve/nodes/pve1/qemu-server/100.conf") == [.storage, .qemu, .firewall])
        #expect(kinds("/etc/pve/nodes/pve1/qemu-server/100.conf.tmp.4242").isEmpty, "a temporary file is not a config yet")
        #expect(kinds("/etc/pve/nodes/pve2") == [.storage, .qemu, .firewall], "a new directory may hold configs")
        #expect(kinds("/etc/pve/ha/resources.cfg") == [.qemu])
        #expect(kinds("/etc/pve/datacenter.cfg") == [.qemu, .firewall])
        #expect(kinds("/etc/pve/user.cfg").isEmpty)
        #expect(kinds("/elsewhere/storage.cfg").isEmpty)
        #expect(ControllerKind.affected(byChangeOf: "/srv/pve/storage.cfg", root: "/srv/pve/", interfaces: nil) == [.storage, .qemu])
    }

    @Test("a VM's own config concerns that VM alone; everything else whole kinds")
    func affectedKeys() {
        func keys(_ path: String) -> [String] {
            ResourceKey.affected(byChangeOf: path, root: "/etc/pve", interfaces: "/etc/network/interfaces").sorted().map(\.description)
        }
        #expect(keys("/etc/pve/nodes/pve1/qemu-server/100.conf") == ["storage", "qemu/100", "firewall"])
        #expect(keys("/etc/pve/nodes/pve1/lxc/200.conf") == ["storage", "qemu", "firewall"])
        #expect(keys("/etc/pve/storage.cfg") == ["storage", "qemu"])
        #expect(keys("/etc/pve/nodes/pve2") == ["storage", "qemu", "firewall"])
        #expect(keys("/etc/network/interfaces") == ["network", "firewall"])
    }

    @Test("per resource: a failing VM backs off alone, another VM's edit runs at once, a whole-kind pass covers both")
    func perResourceBackoff() {
        let now = Date(timeIntervalSince1970: 1_000_000)
        var queue = WorkQueue<ResourceKey>(baseDelay: 1, maximumDelay: 8, minimumInterval: 0)
        let failing = ResourceKey(.qemu, "100"), edited = ResourceKey(.qemu, "101")
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
        queue.add([ResourceKey(.firewall), ResourceKey(.qemu, "99"), ResourceKey(.qemu, "100"), ResourceKey(.qemu), ResourceKey(.network)],
                  now: now.addingTimeInterval(2))
        let later = now.addingTimeInterval(2)
        #expect(queue.next(now: later) == ResourceKey(.network))
        #expect(queue.next(now: later) == ResourceKey(.qemu))
        // The whole-kind pass covered the waiting VMs; one still backing off keeps its retry.
        queue.drop { $0.kind == .qemu && $0.name != nil }
        #expect(queue.next(now: later) == ResourceKey(.firewall))
        #expect(queue.next(now: later) == nil)
        #expect(queue.next(now: now.addingTimeInterval(3)) == ResourceKey(.qemu, "100"), "its backoff survived the event and the drop")
        #expect(queue.next(now: now.addingTimeInterval(10)) == nil)
    }

    @Test("kinds queued twice run once, in apply order, no faster than the rate limit")
    func collapseAndOrder() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        var queue = ControllerQueue(minimumInterval: 0.5)
        queue.add([.firewall, .network, .qemu, .network], now: start)
        #expect(queue.next(now: start) == .network)
        #expect(queue.next(now: start) == nil, "the rate limit holds the next pass")
        #expect(queue.nextWake == start.addingTimeInterval(0.5))
        #expect(queue.next(now: start.addingTimeInterval(0.5)) == .qemu)
        #expect(queue.next(now: start.addingTimeInterval(1)) == .firewall)
        #expect(queue.next(now: start.addingTimeInterval(2)) == nil)
        #expect(queue.isEmpty && queue.nextWake == nil)
    }

    @Test("a failing kind backs off exponentially up to the cap; an event does not cut the wait; success forgets it")
    func backoff() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        var queue = ControllerQueue(baseDelay: 1, maximumDelay: 8, minimumInterval: 0)
        var now = start
        var delays: [TimeInterval] = []
        for _ in 0..<5 {
            queue.add(.storage, now: now)
            guard queue.next(now: now) == .storage else {
                Issue.record("storage should be due at \(now)")
                return
            }
            let delay = queue.failed(.storage, now: now)
            delays.append(delay)
            #expect(queue.next(now: now) == nil)
            queue.add(.storage, now: now)
            #expect(queue.next(now: now.addingTimeInterval(delay / 2)) == nil, "an event during the backoff waits for it")
            now = now.addingTimeInterval(delay)
        }
        #expect(delays == [1, 2, 4, 8, 8])
        #expect(queue.next(now: now) == .storage)
        queue.succeeded(.storage)
        #expect(queue.failureCount(.storage) == 0)
        queue.add(.storage, now: now)
        #expect(queue.next(now: now) == .storage, "after a success an event runs at once")
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
        await inbox.post([ControllerKind.qemu])
        await waiter.value
        #expect(await inbox.take() == [ResourceKey(.qemu)])
        #expect(await inbox.take().isEmpty)

        let stopped = Task { await inbox.wait(until: nil) }
        await inbox.stop()
        await stopped.value
        #expect(await inbox.isStopping)
    }
}
