import Foundation
@testable import Reconciler
import Resources
import Synchronization
import Testing
import TestSupport

@Suite("The corosync kind: corosync.conf validated, planned (reload or restart) and installed, refusing what splits the cluster")
struct CorosyncKindTests {
    static func config(version: Int = 1, token: Int = 3000, nodes: [(String, String)] = [("pve1", "192.0.2.11"), ("pve2", "192.0.2.12")],
                       cluster: String = "prod", extra: String = "") -> String {
        var text = "nodelist {\n"
        for (index, node) in nodes.enumerated() {
            text += "  node {\n    name: \(node.0)\n    nodeid: \(index + 1)\n    quorum_votes: 1\n    ring0_addr: \(node.1)\n\(extra)  }\n"
        }
        text += "}\n\nquorum {\n  provider: corosync_votequorum\n}\n\ntotem {\n  cluster_name: \(cluster)\n  config_version: \(version)\n"
        text += "  interface {\n    linknumber: 0\n  }\n  secauth: on\n  token: \(token)\n  version: 2\n}\n"
        return text
    }

    static func state(_ text: String?, node: String = "pve1") -> DesiredState {
        var files: [String: String] = [:]
        if let text { files["/etc/pve/corosync.conf"] = text }
        return DesiredState.load(root: "/etc/pve", interfaces: nil, node: node, source: MemoryTree(files))
    }

    /// Every kind pvectl registers, on in-memory drivers; this node's corosync as `driver`.
    static func engine(_ driver: InMemoryCorosyncDriver) throws -> ReconcileEngine {
        let host = InMemoryHost(tree: MemoryTree(), links: ObservedNetwork(), corosync: driver.state.withLock { $0 })
        var kinds = try host.engine(store: StateStore(directory: "/nonexistent")).kinds.filter { $0.kindName != CorosyncReconciler.name }
        kinds.append(CorosyncReconciler(driver: driver))
        return try ReconcileEngine(kinds: kinds)
    }

    static let here: Set<String> = ["192.0.2.11", "127.0.0.1"]

    @Test("a changed token is installed and reloaded on every node; then nothing is left to do")
    func reload() async throws {
        let driver = InMemoryCorosyncDriver(CorosyncObservation(installed: Self.config(), runningVersion: 1, localAddresses: Self.here))
        let engine = try Self.engine(driver)
        let state = Self.state(Self.config(version: 2, token: 5000))
        let computation = try await engine.plan(state, scope: [], named: [])
        let resource = try #require(computation.plan.resources.first { $0.id == "corosync/config" })
        #expect(resource.action == .update)
        #expect(resource.changes.map { "\($0.field) \($0.old ?? "-") → \($0.new ?? "-") \($0.changeClass)" }
                == ["totem.config_version 1 → 2 reload", "totem.token 3000 → 5000 reload"])
        #expect(resource.changes.last?.source?.line == 27)
        let report = try await engine.apply(computation, reload: { state }, progress: { _ in })
        #expect(report.failures.isEmpty && driver.reloads.withLock { $0 } == 1)
        #expect(try await engine.plan(state, scope: [], named: []).plan.resources.allSatisfy { $0.kind != "corosync" })
    }

    @Test("what a running corosync cannot take waits for a restart; an unbumped config_version and a foreign address are refused")
    func refusals() async throws {
        let driver = InMemoryCorosyncDriver(CorosyncObservation(installed: Self.config(), runningVersion: 1, localAddresses: Self.here))
        let engine = try Self.engine(driver)
        let renamed = try await engine.plan(Self.state(Self.config(version: 2, cluster: "other")), scope: [], named: [])
        let pending = try #require(renamed.plan.resources.first { $0.kind == "corosync" })
        #expect(pending.action == .pending && pending.message?.contains("restart corosync on every node") == true)

        let unbumped = try await engine.plan(Self.state(Self.config(token: 5000)), scope: [], named: [])
        let blocked = try #require(unbumped.plan.resources.first { $0.kind == "corosync" })
        #expect(blocked.action == .blocked && blocked.source?.line == 22, "at config_version's line: \(blocked)")
        #expect(unbumped.problems.contains { $0.message.contains("config_version 1 is not above the installed 1") })

        let moved = try await engine.plan(Self.state(Self.config(version: 2, nodes: [("pve1", "198.51.100.7"), ("pve2", "192.0.2.12")])),
                                          scope: [], named: [])
        #expect(moved.problems.contains { $0.message.contains("ring0_addr 198.51.100.7 is not an address of this node (pve1)")
            && $0.location.line == 6 }, "\(moved.problems)")
        let report = try await engine.apply(moved, reload: { Self.state(nil) }, progress: { _ in })
        #expect(driver.state.withLock { $0.installed } == Self.config(), "nothing installed: \(report)")
    }

    @Test("validate refuses removing the node you stand on, a node id or address twice, and nodes on different links")
    func splitting() {
        func messages(_ text: String, node: String = "pve1") -> [String] {
            TreeValidator.validate(Self.state(text, node: node)).filter { $0.severity == .error }.map { "\($0.location.line): \($0.message)" }
        }
        #expect(messages(Self.config()).isEmpty)
        #expect(messages(Self.config(), node: "pve3").contains { $0.hasPrefix("1: this node (pve3) is not in the nodelist") })
        #expect(messages(Self.config(nodes: [("pve1", "192.0.2.11"), ("pve2", "192.0.2.11")]))
                .contains("12: ring0_addr 192.0.2.11 is used by two nodes (first at line 6)"))
        let twoLinks = Self.config().replacingOccurrences(of: "    ring0_addr: 192.0.2.11\n",
                                                          with: "    ring0_addr: 192.0.2.11\n    ring1_addr: 198.51.100.11\n")
        #expect(messages(twoLinks).contains { $0.contains("node pve2 has links ring0_addr but node pve1 has ring0_addr, ring1_addr") })
        let sameID = Self.config().replacingOccurrences(of: "nodeid: 2", with: "nodeid: 1")
        #expect(messages(sameID).contains("8: nodeid 1 is used twice (first at line 2)"))
    }

    @Test("no corosync.conf: nothing managed, nothing said to match; a missing corosync is named")
    func unmanagedAndMissing() async throws {
        let driver = InMemoryCorosyncDriver(CorosyncObservation(installed: nil, runningVersion: nil, localAddresses: Self.here))
        let engine = try Self.engine(driver)
        let none = try await engine.plan(Self.state(nil), scope: [], named: [])
        #expect(none.plan.resources.allSatisfy { $0.kind != "corosync" } && engine.status(none).allSatisfy { !$0.id.hasPrefix("corosync") })
        let missing = InMemoryCorosyncDriver(CorosyncObservation(installed: nil, runningVersion: nil, localAddresses: Self.here,
                                                         missing: "corosync-cfgtool is not installed (Debian package corosync)"))
        let plan = try await Self.engine(missing).plan(Self.state(Self.config()), scope: [], named: []).plan
        let resource = try #require(plan.resources.first { $0.kind == "corosync" })
        #expect(resource.action == .unavailable && resource.message == "unavailable: corosync-cfgtool is not installed (Debian package corosync)")
    }

    static func qdevice(_ engine: ReconcileEngine, _ state: DesiredState) async throws -> ResourcePlan? {
        try await engine.plan(state, scope: [], named: []).plan.resources.first { $0.id == "corosync/qdevice" }
    }

    static let device = "quorum {\n  device {\n    model: net\n    net {\n      algorithm: ffsplit\n      host: 192.0.2.10\n      tls: on\n"
        + "    }\n    votes: 1\n  }\n  provider: corosync_votequorum\n}\n"

    @Test("a QDevice: certificates imported, corosync-qdevice started, restarted for another host, stopped when it goes; blocked, missing")
    func qdevice() async throws {
        let withDevice = Self.config(version: 2).replacingOccurrences(of: "quorum {\n  provider: corosync_votequorum\n}\n", with: Self.device)
        #expect(withDevice.contains("host: 192.0.2.10"))
        let driver = InMemoryCorosyncDriver(CorosyncObservation(installed: withDevice, runningVersion: 2, localAddresses: Self.here,
                                                                qdevice: QdeviceObservation(certificatesShared: true)))
        let engine = try Self.engine(driver)
        let state = Self.state(withDevice)
        let computation = try await engine.plan(state, scope: [], named: [])
        let resource = try #require(computation.plan.resources.first { $0.id == "corosync/qdevice" })
        #expect(resource.action == .create && resource.source?.line == 17)
        #expect(resource.operations == ["import the cluster's QDevice certificate into /etc/corosync/qdevice/net/nssdb",
                                        "start corosync-qdevice (QNetd 192.0.2.10)"])
        #expect(try await engine.apply(computation, reload: { state }, progress: { _ in }).failures.isEmpty)
        #expect(driver.state.withLock { $0.qdevice.running && $0.qdevice.runningHost == "192.0.2.10" })
        #expect(try await engine.plan(state, scope: [], named: []).plan.resources.allSatisfy { $0.kind != "corosync" }, "converged")

        // Another QNetd host: corosync-qdevice restarted for it.
        let moved = withDevice.replacingOccurrences(of: "192.0.2.10", with: "192.0.2.9")
        driver.state.withLock { $0.installed = moved }
        let restart = try #require(try await Self.qdevice(engine, Self.state(moved)))
        #expect(restart.action == .update && restart.operations == ["restart corosync-qdevice (QNetd 192.0.2.10 → 192.0.2.9)"])

        // A new setup's certificates (the database no longer matches them): imported, and corosync-qdevice restarted.
        driver.state.withLock { $0.qdevice.databaseReady = false }
        let renewed = try #require(try await Self.qdevice(engine, Self.state(moved)))
        #expect(renewed.operations == ["import the cluster's QDevice certificate into /etc/corosync/qdevice/net/nssdb",
                                       "restart corosync-qdevice (with the certificates of the latest setup)"])

        // The device gone from the config: stopped, its database removed.
        let without = Self.config(version: 3)
        driver.state.withLock { $0.installed = without }
        let gone = try await engine.plan(Self.state(without), scope: [], named: [])
        #expect(gone.plan.resources.first { $0.id == "corosync/qdevice" }?.action == .delete)
        #expect(try await engine.apply(gone, reload: { Self.state(without) }, progress: { _ in }).failures.isEmpty)
        #expect(driver.state.withLock { !$0.qdevice.running && !$0.qdevice.databaseReady })
        // corosync-qdevice gone by itself: its database stays while the shared certificates do (a setup may be under way),
        // and goes after them.
        driver.state.withLock { $0.qdevice = QdeviceObservation(certificatesShared: true, databaseReady: true) }
        #expect(try await Self.qdevice(engine, Self.state(without)) == nil)
        driver.state.withLock { $0.qdevice = QdeviceObservation(certificatesShared: false, databaseReady: true) }
        #expect(try await Self.qdevice(engine, Self.state(without))?.action == .delete)

        // No certificates shared yet; corosync-qdevice not installed.
        let fresh = InMemoryCorosyncDriver(CorosyncObservation(installed: withDevice, runningVersion: 2, localAddresses: Self.here))
        let blocked = try #require(try await Self.qdevice(Self.engine(fresh), state))
        #expect(blocked.action == .blocked && blocked.message?.contains("pvectl cluster qdevice setup") == true)
        await #expect(throws: InMemoryCorosyncDriver.NoCertificates.self) { try await fresh.startQdevice(host: "192.0.2.10") }
        let bare = InMemoryCorosyncDriver(CorosyncObservation(installed: withDevice, runningVersion: 2, localAddresses: Self.here,
            qdevice: QdeviceObservation(missing: "corosync-qdevice is not installed (Debian package corosync-qdevice)")))
        let missing = try #require(try await Self.qdevice(Self.engine(bare), state))
        #expect(missing.action == .unavailable
                && missing.message == "unavailable: corosync-qdevice is not installed (Debian package corosync-qdevice)")
    }
}
