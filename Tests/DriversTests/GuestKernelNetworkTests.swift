import Foundation
import Testing
import TestSupport
@testable import Reconciler
@testable import Resources

/// Bonds, VLANs and VLAN-aware bridges, which this host's kernel lacks: the
/// project's harness (scripts/kernel-vm) boots Debian's kernel under QEMU with
/// the host's root shared in, and the pvectl binary runs there for real.
/// Each file is applied by pvectl and by ifupdown2 in twin namespaces; pvectl
/// must converge (a second plan is empty) and leave the same kernel state.
@Suite("Network kind on a guest kernel: bonds, VLANs, VLAN-aware bridges",
       .enabled(if: NetworkNamespace.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ifreload"),
                "needs root and ifupdown2; scripts/test installs QEMU and the kernel"))
struct GuestKernelNetworkTests {
    static let harness = Corpus.packageRoot.appendingPathComponent("scripts/kernel-vm/run").path
    static let binary = Corpus.packageRoot.appendingPathComponent(".build/debug/pvectl").path
    static let ifupdown2 = Corpus.packageRoot.appendingPathComponent("scripts/ifupdown2-netns").path

    static let vlanAwareBridge = """
    auto lo
    iface lo inet loopback

    iface eno1 inet manual

    iface eno2 inet manual

    auto bond0
    iface bond0 inet manual
    \tbond-slaves eno1 eno2
    \tbond-miimon 100
    \tbond-mode active-backup
    \tbond-primary eno1

    auto vmbr0
    iface vmbr0 inet static
    \taddress 192.0.2.10/24
    \tgateway 192.0.2.1
    \tbridge-ports bond0
    \tbridge-stp off
    \tbridge-fd 0
    \tbridge-vlan-aware yes
    \tbridge-vids 2-100

    auto vmbr0.30
    iface vmbr0.30 inet static
    \taddress 198.51.100.2/24

    auto vlan40
    iface vlan40 inet static
    \tvlan-raw-device eno3
    \taddress 203.0.113.40/24

    iface eno3 inet manual

    """

    /// One bond per mode the kernel supports, each on its own pair of NICs.
    static let everyBondMode: String = {
        let modes = ["balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"]
        var text = "auto lo\niface lo inet loopback\n\n"
        for (index, mode) in modes.enumerated() {
            let a = "eth\(index * 2 + 1)", b = "eth\(index * 2 + 2)"
            text += "iface \(a) inet manual\n\niface \(b) inet manual\n\n"
            text += "auto bond\(index)\niface bond\(index) inet static\n\taddress 198.51.100.\(index + 10)/32\n"
            text += "\tbond-slaves \(a) \(b)\n\tbond-miimon \(100 + index)\n\tbond-mode \(mode)\n"
            if mode == "balance-xor" || mode == "802.3ad" { text += "\tbond-xmit-hash-policy layer3+4\n" }
            text += "\n"
        }
        return text
    }()

    static var cases: [String] {
        var files = (try? SeedExamples.interfaces().map(documentationAddresses).filter(needsGuestKernel)) ?? []
        files = files.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        // The guide's `maunal` typo makes ifupdown2 reject the file; compare the intended one.
        files = files.map { $0.replacingOccurrences(of: "inet maunal", with: "inet manual") }
        if let homelab = try? String(contentsOf: Corpus.packageRoot.appendingPathComponent("examples/homelab/network/interfaces"), encoding: .utf8) {
            files.append(homelab)
        }
        files.append(vlanAwareBridge)
        files.append(everyBondMode)
        return files
    }

    /// The guest side: per case, twin namespaces, NIC stand-ins, pvectl apply +
    /// plan in one, ifreload -a in the other, and JSON dumps of both.
    static func guestScript(cases: [String], out: String) -> String {
        var script = "set -u\n"
        for (index, text) in cases.enumerated() {
            let dir = "\(out)/case-\(index)"
            script += "mkdir -p \(dir)\n"
            for side in ["a", "b"] {
                script += "ip netns add \(side)\(index)\n"
                for nic in nicNames(text) {
                    script += "ip -n \(side)\(index) link add \(nic) type veth peer name p\(nic)\n"
                }
            }
            let common = "--root \(dir)/root --interfaces \(dir)/interfaces --state-dir \(dir)/state --node guest"
            script += "mkdir -p \(dir)/root\n"
            script += "ip netns exec a\(index) \(binary.shellQuoted) apply --auto-approve \(common) > \(dir)/apply.log 2>&1; echo $? > \(dir)/apply.status\n"
            script += "ip netns exec a\(index) \(binary.shellQuoted) plan --detailed-exitcode \(common) > \(dir)/plan.log 2>&1; echo $? > \(dir)/plan.status\n"
            script += "\(ifupdown2.shellQuoted) b\(index) \(dir)/interfaces-ifupdown2 \(dir)/ifupdown2 ifreload -a > \(dir)/ifreload.log 2>&1; echo $? > \(dir)/ifreload.status\n"
            for side in ["a", "b"] {
                script += "ip -n \(side)\(index) -json -details link show > \(dir)/\(side)-link.json\n"
                script += "ip -n \(side)\(index) -json address show > \(dir)/\(side)-addr.json\n"
                script += "ip -n \(side)\(index) -json route show default > \(dir)/\(side)-route4.json\n"
                script += "ip -n \(side)\(index) -6 -json route show default > \(dir)/\(side)-route6.json\n"
                script += "ip netns exec \(side)\(index) bridge -json vlan show > \(dir)/\(side)-vlan.json 2>/dev/null || echo '[]' > \(dir)/\(side)-vlan.json\n"
            }
        }
        script += "echo guest done\n"
        return script
    }

    /// What is compared per interface.
    struct State: Equatable, CustomStringConvertible {
        var kind: String?
        var mtu: Int?
        var up: Bool
        var master: String?
        var addresses: [String]
        var attributes: [String: String]
        var vlans: String?

        var description: String {
            "kind=\(kind ?? "-") mtu=\(mtu.map(String.init) ?? "-") up=\(up) master=\(master ?? "-") addresses=\(addresses) "
                + "\(attributes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) vlans=\(vlans ?? "-")"
        }
    }

    static func json(_ path: String) -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return (try? JSONSerialization.jsonObject(with: data) as? [[String: Any]]) ?? []
    }

    static func state(_ dir: String, side: String, names: [String]) -> (links: [String: State], routes: Set<String>) {
        let links = json("\(dir)/\(side)-link.json")
        let addresses = json("\(dir)/\(side)-addr.json")
        var vlans: [String: String] = [:]
        for entry in json("\(dir)/\(side)-vlan.json") {
            guard let name = entry["ifname"] as? String else { continue }
            vlans[name] = ((entry["vlans"] as? [[String: Any]]) ?? []).map { v in
                let start = v["vlan"] as? Int ?? 0
                return (v["vlanEnd"] as? Int).map { "\(start)-\($0)" } ?? "\(start)"
            }.joined(separator: ",")
        }
        let compared: [String: [String]] = [
            "bridge": ["stp_state", "forward_delay", "vlan_filtering"],
            "bond": ["mode", "miimon", "xmit_hash_policy", "primary"],
            "vlan": ["id", "protocol"],
        ]
        var result: [String: State] = [:]
        for link in links {
            guard let name = link["ifname"] as? String, names.contains(name) else { continue }
            let info = link["linkinfo"] as? [String: Any]
            let kind = info?["info_kind"] as? String
            let data = info?["info_data"] as? [String: Any] ?? [:]
            var attributes: [String: String] = [:]
            for key in compared[kind ?? ""] ?? [] { if let value = data[key] { attributes[key] = "\(value)" } }
            let entry = addresses.first { $0["ifname"] as? String == name }
            let global = ((entry?["addr_info"] as? [[String: Any]]) ?? []).filter { $0["scope"] as? String == "global" }
                .compactMap { a -> String? in (a["local"] as? String).map { "\($0)/\(a["prefixlen"] as? Int ?? 0)" } }.sorted()
            result[name] = State(kind: kind, mtu: link["mtu"] as? Int, up: (link["flags"] as? [String])?.contains("UP") ?? false,
                                 master: link["master"] as? String, addresses: global, attributes: attributes, vlans: vlans[name])
        }
        var routes: Set<String> = []
        for file in ["route4", "route6"] {
            for route in json("\(dir)/\(side)-\(file).json") {
                routes.insert("default via \(route["gateway"] as? String ?? "?") dev \(route["dev"] as? String ?? "?")")
            }
        }
        return (result, routes)
    }

    @Test("guide examples with bonds and VLANs, the homelab network and a VLAN-aware bridge")
    func guestKernel() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "build pvectl first (swift build)")
        let cases = Self.cases
        #expect(cases.count >= 10, "found \(cases.count) guest-kernel cases")
        let out = try TemporaryDirectory(prefix: "pvectl-vm")
        for (index, text) in cases.enumerated() {
            try out.write("case-\(index)/interfaces", text)
            // ifupdown2 does not know ifupdown1's `slaves`; give it the spelling it reads.
            try out.write("case-\(index)/interfaces-ifupdown2", text.replacingOccurrences(of: " slaves ", with: " bond-slaves "))
        }
        // Inside the guest the shared directory is /mnt/out.
        try out.write("guest-test.sh", Self.guestScript(cases: cases, out: "/mnt/out"))
        let run = NetworkNamespace.capture([Self.harness, "test", out.path, out.path + "/guest-test.sh"])
        try #require(run.status == 0, "the guest run failed (\(run.status)): \(run.error)\n\(run.output)")

        var matched = 0
        for (index, text) in cases.enumerated() {
            let dir = "\(out.path)/case-\(index)"
            func read(_ name: String) -> String { out.read("case-\(index)/\(name)")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "missing" }
            // A file with errors (the guide has one that makes eno1 both a bond
            // slave and a bridge port) must be refused, untouched.
            let (parsed, _) = InterfacesFile.parse(text, file: "interfaces")
            let problems = (InterfacesValidator.validate(parsed) + TreeValidator.checkInterfaceReferences(parsed)).filter { $0.severity == .error }
            if !problems.isEmpty {
                #expect(read("apply.status") == "1" && read("apply.log").contains("nothing applied"),
                        "case \(index) has errors and must be refused:\n\(problems)\n\(read("apply.log"))")
                if read("apply.status") == "1" { matched += 1 }
                continue
            }
            let applied = read("apply.status") == "0"
            let converged = read("plan.status") == "0"
            #expect(applied, "case \(index): pvectl apply failed:\n\(read("apply.log"))\n\(text)")
            #expect(converged, "case \(index): not converged after apply:\n\(read("plan.log"))\n\(text)")
            #expect(read("ifreload.status") == "0", "case \(index): ifreload -a failed:\n\(read("ifreload.log"))")

            let names = NetworkDesiredState.interfaces(from: InterfacesFile.parse(text, file: "interfaces").0).interfaces.map(\.name)
            let a = Self.state(dir, side: "a", names: names)
            let b = Self.state(dir, side: "b", names: names)
            #expect(!a.links.isEmpty, "case \(index): nothing to compare")
            var differences: [String] = []
            for name in Set(a.links.keys).union(b.links.keys).sorted() where a.links[name] != b.links[name] {
                differences.append("\(name):\n    pvectl:    \(a.links[name].map(\.description) ?? "absent")\n"
                                   + "    ifupdown2: \(b.links[name].map(\.description) ?? "absent")")
            }
            if a.routes != b.routes { differences.append("routes: pvectl \(a.routes.sorted()) ifupdown2 \(b.routes.sorted())") }
            #expect(differences.isEmpty, "case \(index) differs from ifupdown2:\n\(differences.joined(separator: "\n"))\n\(text)")
            if applied && converged && differences.isEmpty { matched += 1 }
        }
        Corpus.report("guest kernel (bonds, VLANs) converge and equal ifupdown2", passed: matched, total: cases.count)
    }
}

/// The harness shows the guest the checkout wherever it is: a clone under
/// /tmp (which the guest covers with its own tmpfs) whose path holds spaces,
/// with an output folder whose path holds a comma (QEMU's option separator).
/// The clone here is a copy of what the guest needs: the harness, the built
/// pvectl and the example tree, at the same relative places.
@Suite("Guest-kernel harness", .enabled(if: NetworkNamespace.isAvailable, Comment(rawValue: NetworkNamespace.unavailableReason ?? "")))
struct GuestHarnessTests {
    @Test("a checkout under /tmp with spaces in its path is visible in the guest, at its own path")
    func checkoutUnderTmp() throws {
        let root = Corpus.packageRoot
        try #require(FileManager.default.isExecutableFile(atPath: root.appendingPathComponent(".build/debug/pvectl").path),
                     "build pvectl first (swift build)")
        let scratch = try TemporaryDirectory(prefix: "pvectl-harness")
        #expect(scratch.path.hasPrefix("/tmp/"))
        let clone = scratch.url.appendingPathComponent("a clone, with 'spaces'")
        for relative in ["scripts/lib.sh", "scripts/kernel-vm/run", "scripts/kernel-vm/init", "scripts/kernel-vm/stage2.sh",
                         ".build/debug/pvectl", "examples/homelab"] {
            let target = clone.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: root.appendingPathComponent(relative), to: target)
        }
        let out = scratch.url.appendingPathComponent("out, here")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let pvectl = clone.appendingPathComponent(".build/debug/pvectl").path
        let example = clone.appendingPathComponent("examples/homelab").path
        let script = """
        \(pvectl.shellQuoted) validate --root \(example.shellQuoted) --interfaces \(example.shellQuoted)/network/interfaces --node pve1
        echo "validate exit $?"
        """
        try script.write(to: out.appendingPathComponent("guest.sh"), atomically: true, encoding: .utf8)
        // The kernel and initramfs prepared for this checkout serve the clone too.
        let cache = ProcessInfo.processInfo.environment["PVECTL_VM_CACHE"] ?? root.appendingPathComponent(".cache/kernel-vm").path
        let run = NetworkNamespace.capture([clone.appendingPathComponent("scripts/kernel-vm/run").path, "test", out.path,
                                            out.appendingPathComponent("guest.sh").path], environment: ["PVECTL_VM_CACHE": cache])
        #expect(run.status == 0, "the guest run failed (\(run.status)): \(run.error)\n\(run.output)")
        #expect(run.output.contains("validate exit 0"), "\(run.output)")
    }
}
