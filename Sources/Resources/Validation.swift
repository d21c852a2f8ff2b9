/// Single-file checks driven by `specs/`: unknown keys, values of the wrong
/// type, missing required properties. Cross-file checks (a disk on a storage
/// that does not exist ...) belong to the desired state as a whole.

/// Position of a property-string problem: the value's column, good enough to
/// put the cursor on the right line and value.
private func problem(_ location: SourceLocation, _ key: String, _ message: String) -> Diagnostic {
    .error(location, "\(key): \(message)", code: .invalidValue)
}

public enum GuestValidator {
    /// Keys only snapshots (or the state machine) carry.
    static let snapshotKeys: Set<String> = ["snaptime", "vmstate", "runningmachine", "runningcpu", "snapstate"]

    public static func validate(_ config: GuestConfig, spec: KindSpec) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        for section in config.sections {
            switch section.role {
            case .unknown: continue
            case .special(let name):
                if name == "fleecing" {
                    for entry in section.entries where entry.key != "fleecing-images" {
                        diagnostics.append(.error(entry.location, "unknown key '\(entry.key)' in [special:fleecing]", code: .unknownKey))
                    }
                }
                continue
            default: break
            }
            var seen: [String: SourceLocation] = [:]
            for entry in section.entries {
                if let first = seen[entry.key], !entry.isRawLXC {
                    diagnostics.append(.warning(entry.location, "'\(entry.key)' is set again (line \(first.line)); the last value wins",
                                                code: .duplicate))
                }
                seen[entry.key] = entry.location
                if entry.isRawLXC { continue }
                if entry.key == "delete" {
                    if section.role == .pending {
                        for key in config.pendingDeletions where spec.option(key) == nil {
                            diagnostics.append(.error(entry.valueLocation, "delete: unknown option '\(key)'", code: .unknownKey))
                        }
                    }
                    continue
                }
                if snapshotKeys.contains(entry.key) {
                    if case .snapshot = section.role { continue }
                    if entry.key == "vmstate" || entry.key == "runningmachine" || entry.key == "runningcpu" { continue }
                }
                guard let option = spec.option(entry.key) else {
                    diagnostics.append(.error(entry.location, "unknown \(config.kind.rawValue) option '\(entry.key)'", code: .unknownKey))
                    continue
                }
                if let message = ValueChecker.check(entry.value, option, formats: spec.formats) {
                    diagnostics.append(problem(entry.valueLocation, entry.key, message))
                }
            }
        }
        return diagnostics
    }
}

public enum StorageValidator {
    public static func validate(_ file: SectionConfigFile, spec: KindSpec = Specs.storage) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        for section in file.sections {
            guard let typeSpec = spec.types[section.type] else {
                diagnostics.append(.error(section.location, "unknown storage type '\(section.type)' "
                                          + "(expected one of: \(spec.types.keys.sorted().joined(separator: ", ")))", code: .invalidValue))
                continue
            }
            if !isValidStorageID(section.id) {
                diagnostics.append(.error(SourceLocation(file: section.location.file, line: section.location.line, column: section.idColumn),
                                          "invalid storage id '\(section.id)' (letters, digits, '-', '_' and '.', starting with a letter)",
                                          code: .invalidValue))
            }
            let allowed = Set(typeSpec.required + typeSpec.optional)
            for property in section.properties {
                guard allowed.contains(property.key) else {
                    diagnostics.append(.error(property.location, "unexpected property '\(property.key)' for storage type '\(section.type)'",
                                              code: .unknownKey))
                    continue
                }
                guard let option = spec.options[property.key] else { continue }
                if let message = ValueChecker.check(property.value ?? (option.type == .boolean ? "1" : ""), option, formats: spec.formats) {
                    diagnostics.append(problem(property.valueLocation, property.key, message))
                }
            }
            for key in typeSpec.required where section.property(key) == nil {
                diagnostics.append(.error(section.location, "storage '\(section.id)' (\(section.type)) is missing required property '\(key)'",
                                          code: .missingValue))
            }
        }
        return diagnostics
    }

    /// Storage ids: `[a-z][a-z0-9\-\_\.]*[a-z0-9]`, case-insensitive.
    public static func isValidStorageID(_ id: String) -> Bool {
        guard let first = id.first, first.isASCII, first.isLetter else { return false }
        guard id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) else { return false }
        return id.last.map { $0.isLetter || $0.isNumber } ?? false
    }
}

public enum InterfacesValidator {
    public static func validate(_ file: InterfacesFile, spec: KindSpec = Specs.network) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        var stanzasByFamily: [String: SourceLocation] = [:]
        let repeatable: Set<String> = ["address", "up", "post-up", "pre-up", "down", "post-down", "pre-down", "vxlan-remoteip"]
        for stanza in file.stanzas {
            guard case .iface(let name, let family, let method) = stanza.kind else { continue }
            if name.isEmpty || name.count > 15 || name.contains("/") {
                diagnostics.append(.error(stanza.location, "invalid interface name '\(name)' (1 to 15 characters, no '/')", code: .invalidValue))
            }
            let familyKey = "\(name) \(family ?? "-")"
            if let first = stanzasByFamily[familyKey] {
                diagnostics.append(.error(stanza.location, "interface '\(name)' \(family ?? "") is declared again (first at line \(first.line))",
                                          code: .duplicate))
            }
            stanzasByFamily[familyKey] = stanza.location
            if let method, !spec.methods.contains(method) {
                diagnostics.append(.error(stanza.location, "unknown method '\(method)' (expected one of: \(spec.methods.joined(separator: ", ")))",
                                          code: .invalidValue))
            }
            var seen: [String: SourceLocation] = [:]
            for option in stanza.options {
                let key = InterfacesFile.canonicalKey(option.key)
                guard let optionSpec = spec.options[key] ?? spec.options[option.key] else {
                    diagnostics.append(.error(option.location, "unknown option '\(option.key)' on interface '\(name)'", code: .unknownKey))
                    continue
                }
                if let first = seen[key], !repeatable.contains(key) {
                    diagnostics.append(.error(option.location, "'\(option.key)' is set again on '\(name)' (first at line \(first.line))",
                                              code: .duplicate))
                }
                seen[key] = option.location
                if key == "address" {
                    let valid = IPAddress.isCIDR(option.value) || IPAddress.isIPv4(option.value) || IPAddress.isIPv6(option.value)
                    if !valid {
                        diagnostics.append(problem(option.valueLocation, option.key, "'\(option.value)' is not an address or address/prefix"))
                    }
                    continue
                }
                if key == "netmask" {
                    let valid = (Int(option.value).map { (0...128).contains($0) } ?? false) || PVENetworkConfig.netmaskBits(option.value) != nil
                    if !valid { diagnostics.append(problem(option.valueLocation, option.key, "'\(option.value)' is not a netmask")) }
                    continue
                }
                if let message = ValueChecker.check(option.value, optionSpec, formats: spec.formats) {
                    diagnostics.append(problem(option.valueLocation, option.key, message))
                }
            }
        }
        return diagnostics
    }
}

public enum FirewallValidator {
    static let protocolsWithPorts: Set<String> = ["tcp", "udp", "udplite", "sctp", "dccp", "6", "17", "136", "132", "33"]

    /// - Parameter groups: security groups defined in cluster.fw, for GROUP rules elsewhere.
    public static func validate(_ file: FirewallConfig, spec: KindSpec = Specs.firewall, groups: Set<String>? = nil) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        let scopeOptions = spec.scopes[file.scope.rawValue] ?? [:]
        let knownGroups = groups ?? Set(file.groups.keys)
        let aliases = Set(file.aliases.compactMap { $0.name?.lowercased() })
        for section in file.sections {
            switch section.kind {
            case .options:
                for option in section.options {
                    guard let optionSpec = scopeOptions[option.key] else {
                        diagnostics.append(.error(option.location, "unknown \(file.scope.rawValue) firewall option '\(option.key)'",
                                                  code: .unknownKey))
                        continue
                    }
                    if let message = ValueChecker.check(option.value, optionSpec, formats: spec.formats) {
                        diagnostics.append(problem(SourceLocation(file: file.file, line: option.location.line, column: option.valueColumn),
                                                   option.key, message))
                    }
                }
            case .aliases:
                for entry in section.entries where !isAddressSpec(entry.cidr) {
                    diagnostics.append(.error(SourceLocation(file: file.file, line: entry.location.line, column: entry.cidrColumn),
                                              "alias '\(entry.name ?? "")': '\(entry.cidr)' is not an address or network", code: .invalidValue))
                }
            case .ipset:
                for entry in section.entries
                where !isAddressSpec(entry.cidr) && !aliases.contains(entry.cidr.lowercased()) && !entry.cidr.contains("/") {
                    // Names that are not addresses must be aliases (possibly cluster-wide).
                    if entry.cidr.first?.isLetter != true {
                        diagnostics.append(.error(SourceLocation(file: file.file, line: entry.location.line, column: entry.cidrColumn),
                                                  "'\(entry.cidr)' is not an address, network or alias", code: .invalidValue))
                    }
                }
            case .rules, .group:
                for rule in section.rules {
                    diagnostics += validate(rule, spec: spec, groups: knownGroups, inGroup: section.kind != .rules)
                }
            }
        }
        return diagnostics
    }

    static func validate(_ rule: FirewallConfig.Rule, spec: KindSpec, groups: Set<String>, inGroup: Bool) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        if rule.direction == .group {
            if inGroup { diagnostics.append(.error(rule.location, "a security group cannot include another group", code: .misplaced)) }
            if !groups.contains(rule.action.lowercased()) && !groups.contains(rule.action) {
                diagnostics.append(.error(rule.location, "security group '\(rule.action)' does not exist", code: .reference))
            }
        }
        if let macro = rule.macro, !spec.macros.contains(where: { $0.lowercased() == macro.lowercased() }) {
            diagnostics.append(.error(rule.location, "unknown macro '\(macro)'", code: .invalidValue))
        }
        for option in rule.options {
            guard let optionSpec = spec.ruleOptions[option.key] else { continue }
            if let message = ValueChecker.check(option.value, optionSpec, formats: spec.formats) {
                diagnostics.append(.error(rule.location, "-\(option.key): \(message)", code: .invalidValue))
            }
        }
        // pve-firewall's parse_address_list: +ipset, an alias name, or addresses, networks and ranges it can read.
        for key in ["source", "dest"] {
            guard let value = rule[key], !isAddressReference(value) else { continue }
            diagnostics.append(.error(rule.location, "-\(key): '\(value)' is not an address, network, range, list, alias or +ipset",
                                      code: .invalidValue))
        }
        let proto = rule["p"]
        for portOption in ["dport", "sport"] where rule[portOption] != nil && rule.macro == nil {
            if let proto {
                if ["icmp", "icmpv6", "ipv6-icmp"].contains(proto.lowercased()) && portOption == "dport" {
                    // pve-firewall's historic spelling of an ICMP type.
                    diagnostics.append(.warning(rule.location, "-dport with -p \(proto) is read as -icmp-type; write -icmp-type instead",
                                                code: .conflict))
                } else if !protocolsWithPorts.contains(proto.lowercased()) {
                    diagnostics.append(.error(rule.location, "-\(portOption) needs a protocol with ports (tcp, udp, sctp ...), not '\(proto)'",
                                              code: .conflict))
                }
            } else {
                diagnostics.append(.error(rule.location, "-\(portOption) requires -p (a protocol such as tcp or udp)", code: .conflict))
            }
        }
        if rule["icmp-type"] != nil, let proto, !["icmp", "ipv6-icmp", "icmpv6", "1", "58"].contains(proto.lowercased()) {
            diagnostics.append(.error(rule.location, "-icmp-type requires -p icmp or ipv6-icmp", code: .conflict))
        }
        return diagnostics
    }

    /// `+ipset`, an alias (`name`, `dc/name`, `guest/name`) or an address list.
    static func isAddressReference(_ text: String) -> Bool {
        if text.hasPrefix("+") { return text.count > 1 && !text.contains(where: \.isWhitespace) }
        var name = Substring(text)
        if name.hasPrefix("dc/") || name.hasPrefix("guest/") { name = name[name.index(after: name.firstIndex(of: "/")!)...] }
        if let first = name.first, first.isASCII, first.isLetter, name.count >= 2,
           name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) {
            return true
        }
        return isAddressSpec(text)
    }

    /// An address, network, range (a-b), list (a,b) or ipset/alias reference.
    static func isAddressSpec(_ text: String) -> Bool {
        text.split(separator: ",").allSatisfy { part in
            let item = String(part)
            if IPAddress.isIPv4(item) || IPAddress.isIPv6(item) || IPAddress.isCIDR(item) { return true }
            let range = item.split(separator: "-")
            return range.count == 2 && range.allSatisfy { IPAddress.isIPv4(String($0)) || IPAddress.isIPv6(String($0)) }
        }
    }
}

public enum CorosyncValidator {
    /// The file's own rules and, with `node`, what would split the cluster from the node reading it: node names, ids
    /// and each link's addresses unique, every node on the same links, and this node in the nodelist.
    public static func validate(_ config: CorosyncConfig, node: String? = nil) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        let top = SourceLocation(file: config.file, line: 1)
        guard let totem = config.totem else {
            return [.error(top, "corosync.conf has no totem section", code: .missingValue)]
        }
        if totem["cluster_name"] == nil { diagnostics.append(.error(totem.location, "totem has no cluster_name", code: .missingValue)) }
        if let version = totem["config_version"], UInt64(version) == nil {
            diagnostics.append(.error(totem.location, "config_version '\(version)' is not a number", code: .invalidValue))
        }
        var names: [String: SourceLocation] = [:]
        var ids: [String: SourceLocation] = [:]
        for node in config.nodes {
            if let name = node["name"] {
                if let first = names[name] {
                    diagnostics.append(.error(node.location, "node name '\(name)' is used twice (first at line \(first.line))", code: .duplicate))
                }
                names[name] = node.location
            } else {
                diagnostics.append(.error(node.location, "node has no name", code: .missingValue))
            }
            if let id = node["nodeid"] {
                if UInt32(id) == nil || id == "0" {
                    diagnostics.append(.error(node.location, "nodeid '\(id)' must be a positive number", code: .invalidValue))
                }
                if let first = ids[id] {
                    diagnostics.append(.error(node.location, "nodeid \(id) is used twice (first at line \(first.line))", code: .duplicate))
                }
                ids[id] = node.location
            }
            if node["ring0_addr"] == nil && node["name"] == nil {
                diagnostics.append(.error(node.location, "node has neither ring0_addr nor name", code: .missingValue))
            }
        }
        // Each link's addresses unique, and every node on the same links (knet needs an address per link on each node).
        var addresses: [String: SourceLocation] = [:]
        var firstLinks: (links: [String], name: String)?
        for node in config.nodes {
            var links: [String] = []
            for case .value(let key, let address, let location) in node.items where key.hasPrefix("ring") && key.hasSuffix("_addr") {
                links.append(key)
                if let first = addresses[key + " " + address] {
                    diagnostics.append(.error(location, "\(key) \(address) is used by two nodes (first at line \(first.line))", code: .duplicate))
                }
                addresses[key + " " + address] = location
            }
            links.sort()
            let name = node["name"] ?? node["nodeid"] ?? "?"
            if let first = firstLinks {
                if first.links != links {
                    diagnostics.append(.error(node.location, "node \(name) has links \(links.joined(separator: ", ")) but node \(first.name) has "
                                              + "\(first.links.joined(separator: ", ")): every node needs an address on the same links",
                                              code: .reference))
                }
            } else {
                firstLinks = (links, name)
            }
        }
        if let node, !config.nodes.isEmpty, !config.nodes.contains(where: { $0["name"] == node }) {
            diagnostics.append(.error(config.root.sections("nodelist").first?.location ?? top, "this node (\(node)) is not in the nodelist: "
                                      + "installing it would remove the node you stand on from the cluster (delnode it from another node)",
                                      code: .reference))
        }
        return diagnostics
    }
}

public enum DatacenterValidator {
    public static func validate(_ config: DatacenterConfig, spec: KindSpec? = Specs.spec("datacenter")) -> [Diagnostic] {
        guard let spec else { return [] }
        var diagnostics: [Diagnostic] = []
        for entry in config.entries {
            guard let option = spec.option(entry.key) else {
                diagnostics.append(.error(entry.location, "unknown datacenter option '\(entry.key)'", code: .unknownKey))
                continue
            }
            if let message = ValueChecker.check(entry.value, option, formats: spec.formats) {
                diagnostics.append(problem(entry.valueLocation, entry.key, message))
            }
        }
        return diagnostics
    }
}

public enum UserConfigValidator {
    public static func validate(_ config: UserConfig) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        var users: Set<String> = []
        var groups: Set<String> = []
        var roles: Set<String> = ["Administrator", "NoAccess", "PVEAdmin", "PVEAuditor", "PVEDatastoreAdmin", "PVEDatastoreUser",
                                  "PVEMappingAdmin", "PVEMappingUser", "PVEPoolAdmin", "PVEPoolUser", "PVESDNAdmin", "PVESDNUser",
                                  "PVESysAdmin", "PVETemplateUser", "PVEUserAdmin", "PVEVMAdmin", "PVEVMUser"]
        for line in config.lines {
            switch line.kind {
            case "user":
                let id = line.name
                if !id.contains("@") { diagnostics.append(.error(line.location, "user id '\(id)' has no realm (user@realm)", code: .invalidValue)) }
                users.insert(id)
            case "group": groups.insert(line.name)
            case "role": roles.insert(line.name)
            default: break
            }
        }
        for line in config.lines where line.kind == "acl" && line.fields.count == 4 {
            if line.fields[0] != "0" && line.fields[0] != "1" {
                diagnostics.append(.error(line.location, "acl propagate flag must be 0 or 1, got '\(line.fields[0])'", code: .invalidValue))
            }
            if !line.fields[1].hasPrefix("/") {
                diagnostics.append(.error(line.location, "acl path '\(line.fields[1])' must start with '/'", code: .invalidValue))
            }
            for role in line.fields[3].split(separator: ",") where !roles.contains(String(role)) {
                diagnostics.append(.error(line.location, "acl names unknown role '\(role)'", code: .reference))
            }
            for subject in line.fields[2].split(separator: ",") {
                if subject.hasPrefix("@"), !groups.contains(String(subject.dropFirst())) {
                    diagnostics.append(.warning(line.location, "acl names unknown group '\(subject.dropFirst())'", code: .reference))
                }
            }
        }
        return diagnostics
    }
}
