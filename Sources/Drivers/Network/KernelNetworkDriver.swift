import Foundation
import Reconciler

/// The network kind against the real kernel: observes with `ip -json`
/// (links, addresses, default routes) and `bridge -json vlan`, applies with
/// `ip -batch` so a whole plan is one process, and runs hook commands with
/// /bin/sh exactly as ifupdown does.
///
/// `namespace` runs everything inside a named network namespace (`ip -n`,
/// `ip netns exec`); nil is the host's.
public struct KernelNetworkDriver: NetworkDriver {
    public var namespace: String?

    public init(namespace: String? = nil) { self.namespace = namespace }

    func ip(_ arguments: [String]) -> [String] {
        ["ip"] + (namespace.map { ["-n", $0] } ?? []) + arguments
    }

    /// A command run inside the namespace (when there is one).
    func inNamespace(_ command: [String]) -> [String] {
        (namespace.map { ["ip", "netns", "exec", $0] } ?? []) + command
    }

    func bridgeCommand(_ arguments: [String]) -> [String] { inNamespace(["bridge"] + arguments) }

    public func observe() async throws -> ObservedNetwork {
        async let linksJSON = Command.check(ip(["-json", "-details", "link", "show"]))
        async let addressesJSON = Command.check(ip(["-json", "address", "show"]))
        async let routes4JSON = Command.check(ip(["-4", "-json", "route", "show", "default"]))
        async let routes6JSON = Command.check(ip(["-6", "-json", "route", "show", "default"]))
        async let vlansResult = Command.run(bridgeCommand(["-json", "vlan", "show"]))
        return try ObservedNetworkParser.parse(
            links: try await linksJSON, addresses: try await addressesJSON,
            routes4: try await routes4JSON, routes6: try await routes6JSON,
            vlans: (try? await vlansResult).flatMap { $0.succeeded ? $0.output : nil } ?? "[]")
    }

    public struct InstallError: Error, CustomStringConvertible {
        public var description: String
    }

    public func installStagedInterfaces(_ staged: String) throws {
        let target = String(staged.dropLast(".new".count))
        guard rename(staged, target) == 0 else {
            throw InstallError(description: "cannot move \(staged) to \(target): \(String(cString: strerror(errno)))")
        }
    }

    public func perform(_ steps: [NetworkStep], log: @Sendable (String) -> Void) async throws {
        // Consecutive ip steps go to one `ip -batch` process; bridge and hook
        // steps run where they stand, so their order is kept.
        var batch: [(index: Int, lines: [String])] = []
        func flush() async throws {
            guard !batch.isEmpty else { return }
            let lines = batch.flatMap(\.lines)
            let result = try await Command.run(ip(["-batch", "-"]), input: lines.joined(separator: "\n") + "\n")
            if !result.succeeded {
                throw NetworkApplyError(step: failedStep(result.error, batch), message: result.error.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            batch = []
        }
        for (index, step) in steps.enumerated() {
            switch step {
            case .setBridgeVLANs(let port, let vids, let isBridge):
                try await flush()
                for range in vidArguments(vids) {
                    let arguments = ["vlan", "add", "vid", range, "dev", port] + (isBridge ? ["self"] : [])
                    let result = try await Command.run(bridgeCommand(arguments))
                    if !result.succeeded {
                        throw NetworkApplyError(step: index, message: "bridge \(arguments.joined(separator: " ")): "
                                                + "\(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
                    }
                }
            case .promoteSecondaries(let name):
                try await flush()
                let command = inNamespace(["sysctl", "-q", "-w", "net/ipv4/conf/\(name)/promote_secondaries=1"])
                let result = try await Command.run(command)
                if !result.succeeded {
                    throw NetworkApplyError(step: index, message: "\(command.joined(separator: " ")): "
                                            + "\(result.error.trimmingCharacters(in: .whitespacesAndNewlines))")
                }
            case .runHook(let name, let phase, let command):
                try await flush()
                let shell = inNamespace(["/bin/sh", "-c", command])
                // The same environment ifupdown gives its hooks.
                let result = try await Command.run(shell, environment: ["IFACE": name, "LOGICAL": name, "PHASE": phase,
                                                                         "MODE": phase.contains("down") ? "stop" : "start",
                                                                         "ADDRFAM": "inet", "METHOD": "static"])
                let output = (result.output + result.error).trimmingCharacters(in: .whitespacesAndNewlines)
                log("\(phase) \(name): \(command)"
                    + (output.isEmpty ? "" : "\n" + output.split(separator: "\n").map { "    | \($0)" }.joined(separator: "\n")))
                if !result.succeeded {
                    throw NetworkApplyError(step: index, message: "\(phase) hook of \(name) exited with status \(result.status): \(command)")
                }
            default:
                batch.append((index, step.ipBatchLines ?? []))
            }
        }
        try await flush()
    }

    /// `ip -batch` prints "Command failed -:N"; N is the failing batch line.
    func failedStep(_ error: String, _ batch: [(index: Int, lines: [String])]) -> Int {
        guard let range = error.range(of: "Command failed -:"),
              let line = Int(error[range.upperBound...].prefix { $0.isNumber }) else { return batch.first?.index ?? 0 }
        var seen = 0
        for entry in batch {
            seen += entry.lines.count
            if line <= seen { return entry.index }
        }
        return batch.last?.index ?? 0
    }

    func vidArguments(_ vids: String) -> [String] {
        vids.split(whereSeparator: { $0 == " " || $0 == "," || $0 == ";" }).map(String.init)
    }
}

/// A step that failed; `step` is its index in the performed list, so the
/// caller knows which resources finished.
public struct NetworkApplyError: Error, CustomStringConvertible, StepFailure {
    public var step: Int
    public var message: String
    public var description: String { message }
    public var failedStep: Int { step }
}

/// Turns `ip -json` output into observed values.
public enum ObservedNetworkParser {
    struct Link: Decodable {
        var ifindex: Int
        var ifname: String
        var flags: [String]?
        var mtu: Int?
        var master: String?
        var link: String?
        var linkinfo: LinkInfo?
    }

    struct LinkInfo: Decodable {
        var info_kind: String?
        var info_data: InfoData?
        var info_slave_kind: String?
        var info_slave_data: SlaveData?
    }

    struct InfoData: Decodable {
        // bridge
        var stp_state: Int?
        var forward_delay: Int?
        var vlan_filtering: Int?
        // bond
        var mode: String?
        var miimon: Int?
        var xmit_hash_policy: String?
        var ad_lacp_rate: String?
        var min_links: Int?
        var primary: String?
        // vlan
        var id: Int?
        var `protocol`: String?
    }

    struct SlaveData: Decodable {
        var learning: Bool?
    }

    struct AddressEntry: Decodable {
        var ifname: String?
        var addr_info: [AddressInfo]?
    }

    struct AddressInfo: Decodable {
        var family: String?
        var local: String?
        var prefixlen: Int?
        var scope: String?
    }

    struct Route: Decodable {
        var dst: String?
        var gateway: String?
        var dev: String?
    }

    struct VLANEntry: Decodable {
        var ifname: String
        var vlans: [VLANInfo]?
    }

    struct VLANInfo: Decodable {
        var vlan: Int
        var vlanEnd: Int?
    }

    public static func parse(links: String, addresses: String, routes4: String, routes6: String, vlans: String) throws -> ObservedNetwork {
        let decoder = JSONDecoder()
        let linkList = try decoder.decode([Link].self, from: Data(links.utf8))
        let addressList = try decoder.decode([AddressEntry].self, from: Data(addresses.utf8))
        var addressesByName: [String: [String]] = [:]
        for entry in addressList {
            guard let name = entry.ifname else { continue }
            for info in entry.addr_info ?? [] where info.scope == "global" {
                guard let local = info.local, let prefix = info.prefixlen else { continue }
                addressesByName[name, default: []].append("\(local)/\(prefix)")
            }
        }
        var result = ObservedNetwork()
        for link in linkList {
            var observed = ObservedLink(name: link.ifname, ifindex: link.ifindex, kind: link.linkinfo?.info_kind,
                                        up: link.flags?.contains("UP") ?? false, mtu: link.mtu ?? 1500, master: link.master,
                                        addresses: addressesByName[link.ifname] ?? [])
            let data = link.linkinfo?.info_data
            switch link.linkinfo?.info_kind {
            case "bridge":
                observed.bridge = .init(stp: (data?.stp_state ?? 0) != 0, forwardDelay: (data?.forward_delay ?? 1500) / 100,
                                        vlanFiltering: (data?.vlan_filtering ?? 0) != 0)
            case "bond":
                observed.bond = .init(mode: data?.mode ?? "balance-rr", miimon: data?.miimon ?? 0, xmitHashPolicy: data?.xmit_hash_policy,
                                      lacpRate: data?.ad_lacp_rate, minLinks: data?.min_links, primary: data?.primary)
            case "vlan":
                observed.vlan = .init(id: data?.id ?? 0, rawDevice: link.link, proto: data?.protocol ?? "802.1Q")
            default:
                break
            }
            if link.linkinfo?.info_slave_kind == "bridge" { observed.learning = link.linkinfo?.info_slave_data?.learning }
            result.links[link.ifname] = observed
        }
        for (family, text) in [(4, routes4), (6, routes6)] {
            let routes = try decoder.decode([Route].self, from: Data(text.utf8))
            for route in routes where route.dst == "default" {
                guard let gateway = route.gateway, let device = route.dev else { continue }
                result.defaultRoutes.append(ObservedRoute(family: family, gateway: gateway, device: device))
            }
        }
        if let vlanList = try? decoder.decode([VLANEntry].self, from: Data(vlans.utf8)) {
            for entry in vlanList {
                result.vlans[entry.ifname] = (entry.vlans ?? [])
                    .map { v in v.vlanEnd.map { "\(v.vlan)-\($0)" } ?? "\(v.vlan)" }.joined(separator: " ")
            }
        }
        return result
    }
}
