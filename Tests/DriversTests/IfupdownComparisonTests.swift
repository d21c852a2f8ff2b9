import Foundation
import Testing
import TestSupport
@testable import Drivers
@testable import Reconciler
@testable import Resources

/// The same interfaces file applied by pvectl in one namespace and by
/// ifupdown2's `ifreload -a` in its twin: the kernel state must match,
/// attribute by attribute.
@Suite("Kernel state after pvectl apply equals ifupdown2's ifreload -a",
       .enabled(if: NetworkNamespace.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ifreload"),
                "needs root, network namespaces and ifupdown2 (scripts/test installs it)"))
struct IfupdownComparisonTests {
    static let wrapper = Corpus.packageRoot.appendingPathComponent("scripts/ifupdown2-netns").path

    /// What is compared per interface: the state both tools own.
    struct LinkState: Equatable, CustomStringConvertible {
        var kind: String?
        var mtu: Int?
        var up: Bool
        var master: String?
        var addresses: [String]
        var stp: Int?
        var forwardDelay: Int?
        var vlanFiltering: Int?

        var description: String {
            "kind=\(kind ?? "-") mtu=\(mtu.map(String.init) ?? "-") up=\(up) master=\(master ?? "-") addresses=\(addresses) "
                + "stp=\(stp.map(String.init) ?? "-") fd=\(forwardDelay.map(String.init) ?? "-") "
                + "vlan_filtering=\(vlanFiltering.map(String.init) ?? "-")"
        }
    }

    static func state(of namespace: NetworkNamespace, names: [String]) throws -> (links: [String: LinkState], routes: Set<String>) {
        let links = try JSONSerialization.jsonObject(
            with: Data(NetworkNamespace.capture(["ip", "-n", namespace.name, "-json", "-details", "link", "show"]).output.utf8)
        ) as? [[String: Any]] ?? []
        let addresses = try JSONSerialization.jsonObject(
            with: Data(NetworkNamespace.capture(["ip", "-n", namespace.name, "-json", "address", "show"]).output.utf8)
        ) as? [[String: Any]] ?? []
        var byName: [String: LinkState] = [:]
        for link in links {
            guard let name = link["ifname"] as? String, names.contains(name) else { continue }
            let info = link["linkinfo"] as? [String: Any]
            let data = info?["info_data"] as? [String: Any]
            let entry = addresses.first { $0["ifname"] as? String == name }
            let global = ((entry?["addr_info"] as? [[String: Any]]) ?? []).filter { $0["scope"] as? String == "global" }
                .compactMap { info -> String? in
                    guard let local = info["local"] as? String, let prefix = info["prefixlen"] as? Int else { return nil }
                    return "\(local)/\(prefix)"
                }.sorted()
            byName[name] = LinkState(kind: info?["info_kind"] as? String, mtu: link["mtu"] as? Int,
                                     up: (link["flags"] as? [String])?.contains("UP") ?? false, master: link["master"] as? String,
                                     addresses: global, stp: data?["stp_state"] as? Int, forwardDelay: data?["forward_delay"] as? Int,
                                     vlanFiltering: data?["vlan_filtering"] as? Int)
        }
        var routes: Set<String> = []
        for family in ["-4", "-6"] {
            let json = NetworkNamespace.capture(["ip", "-n", namespace.name, family, "-json", "route", "show", "default"]).output
            for route in (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]) ?? [] {
                routes.insert("default via \(route["gateway"] as? String ?? "?") dev \(route["dev"] as? String ?? "?")")
            }
        }
        return (byName, routes)
    }

    static let files: [String] = {
        var files = hostExamples
        files.append(KernelNetworkTests.base)
        return files
    }()

    @Test("twin namespaces end up the same for every host-kernel example")
    func twins() async throws {
        var matched = 0
        for (index, template) in Self.files.enumerated() {
            let ours = try NetworkNamespace(prefix: "pvo")
            let theirs = try NetworkNamespace(prefix: "pvi")
            let directory = try TemporaryDirectory()
            for nic in nicNames(template) {
                try ours.addNIC(nic)
                try theirs.addNIC(nic)
            }
            let oursText = template.replacingOccurrences(of: "NAMESPACE", with: ours.name)
            let theirsText = template.replacingOccurrences(of: "NAMESPACE", with: theirs.name)
            try directory.write("interfaces", theirsText)
            defer {
                for name in [ours.name, theirs.name] { try? FileManager.default.removeItem(atPath: "/tmp/pvectl-hook-vmbr1-\(name)") }
            }

            let reconciler = NetworkReconciler(driver: KernelNetworkDriver(namespace: ours.name),
                                               store: StateStore(directory: directory.path + "/state"))
            let outcome = try await reconciler.apply(try await reconciler.compute(desired(oursText), only: [])) { _ in }
            #expect(outcome.failed.isEmpty, "\(outcome.failed)")
            let ifreload = NetworkNamespace.capture([Self.wrapper, theirs.name, directory.path + "/interfaces", directory.path + "/ifupdown2",
                                                     "ifreload", "-a"])
            #expect(ifreload.status == 0, "ifreload -a failed: \(ifreload.error)")

            let names = NetworkDesiredState.interfaces(from: InterfacesFile.parse(oursText, file: "interfaces").0).interfaces.map(\.name)
            let a = try Self.state(of: ours, names: names)
            let b = try Self.state(of: theirs, names: names)
            #expect(!a.links.isEmpty && a.links.count == b.links.count, "nothing to compare in file \(index)")
            var differences: [String] = []
            for name in Set(a.links.keys).union(b.links.keys).sorted() where a.links[name] != b.links[name] {
                differences.append("\(name):\n    pvectl:    \(a.links[name].map(\.description) ?? "absent")\n"
                                   + "    ifupdown2: \(b.links[name].map(\.description) ?? "absent")")
            }
            if a.routes != b.routes { differences.append("routes: pvectl \(a.routes.sorted()) ifupdown2 \(b.routes.sorted())") }
            #expect(differences.isEmpty, "file \(index) differs:\n\(differences.joined(separator: "\n"))\n\(template)")
            if differences.isEmpty && outcome.failed.isEmpty { matched += 1 }
        }
        Corpus.report("kernel state equals ifupdown2's", passed: matched, total: Self.files.count)
    }
}
