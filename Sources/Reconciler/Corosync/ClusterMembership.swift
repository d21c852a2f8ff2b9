import Foundation
import Resources

/// corosync.conf as the cluster manager writes it: a new cluster of one node, a node added, a node removed; each a
/// new text with `config_version` bumped, checked by the validator before anyone writes it.
public enum ClusterMembership {
    /// One `--linkN ADDRESS[,priority=N]`.
    public struct Link: Sendable, Equatable {
        public var number: Int
        public var address: String
        public var priority: Int?

        public init(number: Int, address: String, priority: Int? = nil) {
            self.number = number
            self.address = address
            self.priority = priority
        }

        /// `ADDRESS[,priority=N]` as pvecm takes it.
        public init(number: Int, parsing text: String) throws {
            let parts = text.split(separator: ",").map(String.init)
            guard let address = parts.first, IPAddress.parse(address) != nil else {
                throw Failure(description: "--link\(number) \(text): expected ADDRESS[,priority=N] with an IP address")
            }
            var priority: Int?
            for part in parts.dropFirst() {
                guard part.hasPrefix("priority="), let value = Int(part.dropFirst(9)), (0...255).contains(value) else {
                    throw Failure(description: "--link\(number) \(text): unknown option '\(part)' (priority=0..255)")
                }
                priority = value
            }
            self.init(number: number, address: address, priority: priority)
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    static func value(_ key: String, _ value: String) -> CorosyncConfig.Item {
        .value(key: key, value: value, location: SourceLocation(file: "", line: 0))
    }

    static func nodeSection(name: String, nodeid: Int, votes: Int, links: [Link]) -> CorosyncConfig.Section {
        CorosyncConfig.Section(name: "node", items: [value("name", name), value("nodeid", String(nodeid)), value("quorum_votes", String(votes))]
                               + links.map { value("ring\($0.number)_addr", $0.address) })
    }

    /// A cluster name as pvecm takes it: 1 to 15 letters, digits or '-'.
    public static func isValidClusterName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 15 && name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" }
    }

    /// The config with the top-level sections named `name` changed by `edit`.
    static func editing(_ config: CorosyncConfig, section name: String, _ edit: (inout CorosyncConfig.Section) -> Void) -> CorosyncConfig {
        var updated = config
        updated.root.items = updated.root.items.map { item in
            guard case .section(var section) = item, section.name == name else { return item }
            edit(&section)
            return .section(section)
        }
        return updated
    }

    /// A cluster of this node alone, as `pvecm create` writes it (knet, secauth, votequorum).
    public static func newCluster(name: String, node: String, links: [Link], nodeid: Int = 1, votes: Int = 1) throws -> String {
        guard isValidClusterName(name) else {
            throw Failure(description: "cluster name '\(name)': 1 to 15 letters, digits or '-'")
        }
        guard !links.isEmpty else { throw Failure(description: "give this node's address on link 0: --link0 ADDRESS") }
        let interfaces = links.map { link in
            CorosyncConfig.Item.section(CorosyncConfig.Section(name: "interface", items: [value("linknumber", String(link.number))]
                                                              + (link.priority.map { [value("knet_link_priority", String($0))] } ?? [])))
        }
        let root = CorosyncConfig.Section(name: "", items: [
            .section(CorosyncConfig.Section(name: "logging", items: [value("debug", "off"), value("to_syslog", "yes")])),
            .section(CorosyncConfig.Section(name: "nodelist", items: [.section(nodeSection(name: node, nodeid: nodeid, votes: votes,
                                                                                            links: links))])),
            .section(CorosyncConfig.Section(name: "quorum", items: [value("provider", "corosync_votequorum")])),
            .section(CorosyncConfig.Section(name: "totem", items: [value("cluster_name", name), value("config_version", "1")] + interfaces
                                            + [value("ip_version", "ipv4-6"), value("link_mode", "passive"), value("secauth", "on"),
                                               value("version", "2")])),
        ])
        var config = CorosyncConfig.parse("", file: "corosync.conf").0
        config.root = root
        return try checked(config.canonicalText(), node: node)
    }

    /// The config with `node` added (the next free node id unless given), its links the ones every node has.
    public static func adding(node: String, links: [Link], nodeid: Int?, votes: Int, to config: CorosyncConfig,
                              standingOn me: String) throws -> String {
        if config.nodes.contains(where: { $0["name"] == node }) { throw Failure(description: "node \(node) is in the cluster already") }
        let used = Set(config.nodes.compactMap { $0["nodeid"].flatMap { Int($0) } })
        let id = nodeid ?? (1...).first { !used.contains($0) }!
        if used.contains(id) { throw Failure(description: "node id \(id) is taken") }
        let updated = editing(config, section: "nodelist") {
            $0.items.append(.section(nodeSection(name: node, nodeid: id, votes: votes, links: links)))
        }
        return try checked(bumped(updated).canonicalText(), node: me)
    }

    /// The config without `node`; the node you stand on cannot remove itself.
    public static func removing(node: String, from config: CorosyncConfig, standingOn me: String) throws -> String {
        guard node != me else { throw Failure(description: "\(node) is this node: remove it from another node of the cluster") }
        guard config.nodes.contains(where: { $0["name"] == node }) else { throw Failure(description: "node \(node) is not in the cluster") }
        let updated = editing(config, section: "nodelist") { nodelist in
            nodelist.items.removeAll { if case .section(let child) = $0 { child.name == "node" && child["name"] == node } else { false } }
        }
        return try checked(bumped(updated).canonicalText(), node: me)
    }

    /// The quorum device a config names (`quorum { device { model: net; net { host: … } } }`), nil without one.
    public struct QuorumDevice: Sendable, Equatable {
        public var model: String
        public var host: String?
        public var algorithm: String?
        public var location: SourceLocation

        public init?(_ config: CorosyncConfig) {
            guard let device = config.root.sections("quorum").first?.sections("device").first else { return nil }
            let net = device.sections("net").first
            self.model = device["model"] ?? ""
            self.host = net?["host"]
            self.algorithm = net?["algorithm"]
            self.location = device.location
        }
    }

    /// The config with a QDevice (model net, TLS) at `host`, as `pvecm qdevice setup` writes it: ffsplit with one vote
    /// for an even number of nodes; an odd number only with `force`, then lms with corosync's default votes (nodes - 1:
    /// one node and the device make quorum).
    public static func addingQuorumDevice(host: String, force: Bool, to config: CorosyncConfig, standingOn me: String) throws -> String {
        if QuorumDevice(config) != nil {
            throw Failure(description: "a quorum device is configured already: remove it first (pvectl cluster qdevice remove)")
        }
        let odd = config.nodes.count % 2 == 1
        if odd && !force {
            throw Failure(description: "clusters with an odd node count (\(config.nodes.count)) gain nothing from ffsplit and are "
                          + "not supported by Proxmox VE: --force sets the QDevice up with the lms algorithm")
        }
        let device = CorosyncConfig.Section(name: "device", items: [
            value("model", "net"),
            .section(CorosyncConfig.Section(name: "net", items: [value("algorithm", odd ? "lms" : "ffsplit"), value("host", host),
                                                                 value("tls", "on")])),
        ] + (odd ? [] : [value("votes", "1")]))
        var updated = config
        if !updated.root.items.contains(where: { if case .section(let section) = $0 { section.name == "quorum" } else { false } }) {
            updated.root.items.append(.section(CorosyncConfig.Section(name: "quorum", items: [value("provider", "corosync_votequorum")])))
        }
        updated = editing(updated, section: "quorum") { $0.items.insert(.section(device), at: 0) }
        return try checked(bumped(updated).canonicalText(), node: me)
    }

    /// The config without its quorum device.
    public static func removingQuorumDevice(from config: CorosyncConfig, standingOn me: String) throws -> String {
        guard QuorumDevice(config) != nil else { throw Failure(description: "no quorum device is configured") }
        let updated = editing(config, section: "quorum") { quorum in
            quorum.items.removeAll { if case .section(let child) = $0 { child.name == "device" } else { false } }
        }
        return try checked(bumped(updated).canonicalText(), node: me)
    }

    static func bumped(_ config: CorosyncConfig) -> CorosyncConfig {
        editing(config, section: "totem") { totem in
            let version = (totem["config_version"].flatMap { UInt64($0) } ?? 0) + 1
            totem.items = totem.items.map { item in
                if case .value(let key, _, let location) = item, key == "config_version" {
                    return .value(key: key, value: String(version), location: location)
                }
                return item
            }
        }
    }

    /// The text, when the validator finds nothing wrong in it from `node`'s side.
    static func checked(_ text: String, node: String) throws -> String {
        let (parsed, problems) = CorosyncConfig.parse(text, file: "corosync.conf")
        let errors = (problems + CorosyncValidator.validate(parsed, node: node)).filter { $0.severity == .error }
        guard errors.isEmpty else { throw Failure(description: errors.map(\.message).joined(separator: "; ")) }
        return text
    }
}
