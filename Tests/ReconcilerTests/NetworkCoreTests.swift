import Foundation
import Synchronization
import TestSupport
import Testing
@testable import Reconciler
@testable import Resources

func desiredState(_ interfaces: String) throws -> DesiredState {
    let (file, diagnostics) = InterfacesFile.parse(interfaces, file: "interfaces")
    #expect(diagnostics.isEmpty)
    var state = DesiredState(root: "/nonexistent", node: "pve1")
    state.interfaces = file
    state.interfacesPath = "interfaces"
    return state
}

func temporaryStore() -> StateStore {
    StateStore(directory: FileManager.default.temporaryDirectory.appendingPathComponent("pvectl-state-\(UUID().uuidString)").path)
}

let nics = ObservedNetwork(links: [
    "lo": ObservedLink(name: "lo", ifindex: 1, up: true, mtu: 65536),
    "eno1": ObservedLink(name: "eno1", ifindex: 2),
    "eno2": ObservedLink(name: "eno2", ifindex: 3),
    "docker0": ObservedLink(name: "docker0", ifindex: 4, kind: "bridge", up: true, addresses: ["172.17.0.1/16"],
                            bridge: .init(stp: false, forwardDelay: 15, vlanFiltering: false)),
])

let bondedBridge = """
auto lo
iface lo inet loopback

iface eno1 inet manual

iface eno2 inet manual

auto bond0
iface bond0 inet manual
\tbond-slaves eno1 eno2
\tbond-miimon 100
\tbond-mode 802.3ad

auto vmbr0
iface vmbr0 inet static
\taddress 192.0.2.10/24
\tgateway 192.0.2.1
\tbridge-ports bond0
\tbridge-stp off
\tbridge-fd 0
\tmtu 9000

auto vmbr0.20
iface vmbr0.20 inet static
\taddress 198.51.100.2/24

"""

@Suite("Network kind: the pure core with an in-memory kernel")
struct NetworkCoreTests {
    @Test("create from nothing in dependency order, then nothing is left to do")
    func createThenConverge() async throws {
        let driver = InMemoryNetworkDriver(nics)
        let reconciler = NetworkReconciler(driver: driver, store: temporaryStore())
        let state = try desiredState(bondedBridge)
        let computed = try await reconciler.compute(state, only: [])
        #expect(computed.problems.isEmpty)
        let plan = Plan(node: "pve1", inputs: [:], resources: computed.resources)
        #expect(plan.summary.create == 3)
        let ordered = try #require(computed.diff).orderedSteps.map(\.step)
        func position(_ step: NetworkStep) -> Int { ordered.firstIndex(of: step) ?? -1 }
        // bond before the bridge that uses it, VLAN on the bridge after the bridge,
        // slaves enslaved after the bond exists, addresses after links are up, routes last
        #expect(position(.createBond(name: "bond0", mode: "802.3ad")) < position(.createBridge(name: "vmbr0")))
        #expect(position(.createBridge(name: "vmbr0")) < position(.createVLAN(name: "vmbr0.20", rawDevice: "vmbr0", id: 20, proto: "802.1q")))
        #expect(position(.createBond(name: "bond0", mode: "802.3ad")) < position(.setBondSlave(port: "eno1", bond: "bond0")))
        #expect(position(.setUp(name: "vmbr0")) < position(.addAddress(name: "vmbr0", cidr: "192.0.2.10/24")))
        #expect(position(.addAddress(name: "vmbr0", cidr: "192.0.2.10/24"))
                < position(.replaceDefaultRoute(gateway: "192.0.2.1", device: "vmbr0", family: 4)))
        #expect(ordered.last == .replaceDefaultRoute(gateway: "192.0.2.1", device: "vmbr0", family: 4))

        let outcome = try await reconciler.apply(computed) { _ in }
        #expect(outcome.failed.isEmpty)
        let again = try await reconciler.compute(state, only: [])
        #expect(again.resources.isEmpty, "\(again.resources)")
    }

    @Test("changing one attribute changes only that, live, without recreating")
    func oneAttribute() async throws {
        let driver = InMemoryNetworkDriver(nics)
        let reconciler = NetworkReconciler(driver: driver, store: temporaryStore())
        _ = try await reconciler.apply(try await reconciler.compute(try desiredState(bondedBridge), only: [])) { _ in }
        let ifindex = try #require(driver.state.withLock { $0.links["vmbr0"]?.ifindex })
        let edited = bondedBridge.replacingOccurrences(of: "mtu 9000", with: "mtu 1500")
        let computed = try await reconciler.compute(try desiredState(edited), only: [])
        #expect(computed.resources.count == 1)
        let resource = try #require(computed.resources.first)
        #expect(resource.id == "network/vmbr0" && resource.action == .update)
        #expect(resource.changes.map(\.field) == ["mtu"])
        #expect(resource.changes.first?.changeClass == .live)
        #expect(resource.changes.first?.source?.line == 21)
        #expect(computed.diff?.orderedSteps.map(\.step) == [.setMTU(name: "vmbr0", mtu: 1500)])
        _ = try await reconciler.apply(computed) { _ in }
        #expect(driver.state.withLock { $0.links["vmbr0"]?.ifindex } == ifindex)
    }

    @Test("unmanaged devices and guest ports are never touched; only what was created is deleted")
    func ownership() async throws {
        var initial = nics
        initial.links["tap100i0"] = ObservedLink(name: "tap100i0", ifindex: 50, up: true)
        let driver = InMemoryNetworkDriver(initial)
        let store = temporaryStore()
        let reconciler = NetworkReconciler(driver: driver, store: store)
        _ = try await reconciler.apply(try await reconciler.compute(try desiredState(bondedBridge), only: [])) { _ in }
        // A guest port joins the bridge behind our back.
        driver.state.withLock { $0.links["tap100i0"]?.master = "vmbr0" }
        #expect(try await reconciler.compute(try desiredState(bondedBridge), only: []).resources.isEmpty)

        // The file drops the VLAN and bond0 from the bridge ports; docker0 is never mentioned.
        let reduced = String(bondedBridge[..<bondedBridge.range(of: "auto vmbr0.20")!.lowerBound])
            .replacingOccurrences(of: "bridge-ports bond0", with: "bridge-ports none")
        let computed = try await reconciler.compute(try desiredState(reduced), only: [])
        let steps = try #require(computed.diff).orderedSteps.map(\.step)
        #expect(steps.contains(.deleteLink(name: "vmbr0.20")))
        #expect(steps.contains(.clearMaster(port: "bond0")))
        #expect(!steps.contains(.clearMaster(port: "tap100i0")))
        #expect(!steps.contains { if case .deleteLink(let name) = $0 { name == "docker0" } else { false } })
        _ = try await reconciler.apply(computed) { _ in }
        driver.state.withLock { net in
            #expect(net.links["docker0"]?.addresses == ["172.17.0.1/16"])
            #expect(net.links["tap100i0"]?.master == "vmbr0")
            #expect(net.links["vmbr0.20"] == nil)
        }
        #expect(try await reconciler.compute(try desiredState(reduced), only: []).resources.isEmpty)
    }

    @Test("a missing NIC is blocked and skipped; the rest goes ahead")
    func missingNIC() async throws {
        let reconciler = NetworkReconciler(driver: InMemoryNetworkDriver(nics), store: temporaryStore())
        let computed = try await reconciler.compute(try desiredState("iface eno9 inet manual\n\nauto vmbr1\niface vmbr1 inet manual\n\tbridge-ports eno9\n\nauto vmbr2\niface vmbr2 inet manual\n\tbridge-ports none\n"), only: [])
        let blocked = computed.resources.filter { $0.action == .blocked }
        #expect(blocked.map(\.id) == ["network/eno9"])
        #expect(computed.resources.contains { $0.id == "network/vmbr2" && $0.action == .create })
        let vmbr1 = try #require(computed.resources.first { $0.id == "network/vmbr1" })
        #expect(vmbr1.changes.contains { $0.new == "eno9 (missing device, skipped)" })
    }

    @Test("an invalid interfaces file freezes the network kind")
    func invalidFileFreezes() async throws {
        let driver = InMemoryNetworkDriver(nics)
        let reconciler = NetworkReconciler(driver: driver, store: temporaryStore())
        let computed = try await reconciler.compute(try desiredState("auto vmbr0\niface vmbr0 inet static\n\tmtu lots\n"), only: [])
        #expect(!computed.problems.isEmpty)
        #expect(computed.resources.map(\.action) == [.blocked])
        #expect(computed.diff == nil)
    }

    @Test("--only limits the plan to the selected resources")
    func onlySelector() async throws {
        let reconciler = NetworkReconciler(driver: InMemoryNetworkDriver(nics), store: temporaryStore())
        let selector = try #require(ResourceSelector("network/vmbr0"))
        let computed = try await reconciler.compute(try desiredState(bondedBridge), only: [selector])
        #expect(computed.resources.map(\.id) == ["network/vmbr0"])
        // Which kinds exist is the engine's registry.
        let engine = try InMemoryHost(tree: MemoryTree(), links: nics).engine(store: temporaryStore())
        #expect(engine.selector("disks") == nil && engine.selector("network/vmbr0") == selector)
    }

    @Test("the plan is a stable JSON artifact")
    func planJSON() async throws {
        let reconciler = NetworkReconciler(driver: InMemoryNetworkDriver(nics), store: temporaryStore())
        let computed = try await reconciler.compute(try desiredState(bondedBridge), only: [])
        let plan = Plan(node: "pve1", inputs: ["interfaces": "abc"], resources: computed.resources)
        let data = try plan.jsonData()
        #expect(try Plan.load(data) == plan)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(object.keys) == ["format_version", "node", "inputs", "resources", "summary"])
        let first = try #require((object["resources"] as? [[String: Any]])?.first)
        #expect(Set(first.keys).isSuperset(of: ["id", "kind", "name", "action", "changes", "operations"]))
        #expect(try plan.jsonData() == data)
        let text = plan.render(colors: false)
        #expect(text.contains("+ network/vmbr0 (create)  interfaces:15"))
        #expect(text.contains("    + mtu: 9000  [live]  line 21"))
        #expect(!text.contains("\u{1B}["))
        #expect(plan.render(colors: true).contains("\u{1B}[32m+\u{1B}[0m"))
    }

    @Test("removing an address keeps the host reachable: add first, then remove, then restore the gateway")
    func addressReplacementOrder() async throws {
        let driver = InMemoryNetworkDriver(nics)
        let reconciler = NetworkReconciler(driver: driver, store: temporaryStore())
        _ = try await reconciler.apply(try await reconciler.compute(try desiredState(bondedBridge), only: [])) { _ in }
        let edited = bondedBridge.replacingOccurrences(of: "192.0.2.10/24", with: "192.0.2.11/24")
        let steps = try #require(try await reconciler.compute(try desiredState(edited), only: []).diff).orderedSteps.map(\.step)
        #expect(steps == [.promoteSecondaries(name: "vmbr0"), .addAddress(name: "vmbr0", cidr: "192.0.2.11/24"),
                          .deleteAddress(name: "vmbr0", cidr: "192.0.2.10/24"),
                          .replaceDefaultRoute(gateway: "192.0.2.1", device: "vmbr0", family: 4)])
    }
}
