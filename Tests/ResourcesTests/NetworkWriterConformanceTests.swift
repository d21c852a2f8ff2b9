import Foundation
import Testing
import TestSupport
@testable import Resources

/// Replays pve-common's /etc/network/interfaces reader/writer scenarios
/// (recorded as steps in the conformance data) against PVENetworkConfig.
@Suite("Network writer matches pve-common's scenarios", .needsConformance)
struct NetworkWriterConformanceTests {
    static let scenarios: [String] = {
        guard Corpus.isAvailable else { return [] }
        return Corpus.files(under: "pve-common/_derived/etc_network_interfaces") { $0.hasSuffix(".steps.json") }
    }()

    static func stringValue(_ value: Any) -> String? {
        switch value {
        case let s as String: return s
        case let n as NSNumber: return n.stringValue
        case is NSNull: return nil
        default: return "\(value)"
        }
    }

    /// Sets one attribute the way the Perl hash would hold it (lists stay lists).
    static func set(_ key: String, _ value: Any, on iface: inout PVENetworkConfig.Interface) {
        switch key {
        case "families": iface.families = (value as? [Any] ?? []).map { stringValue($0) }
        case "options": iface.options = (value as? [Any] ?? []).compactMap { stringValue($0) }
        case "options6": iface.options6 = (value as? [Any] ?? []).compactMap { stringValue($0) }
        case "vxlan-remoteip": iface.vxlanRemoteIPs = (value as? [Any] ?? []).compactMap { stringValue($0) }
        case "priority": iface.priority = (value as? NSNumber)?.intValue
        default: iface[key] = stringValue(value)
        }
    }

    static func interface(from dictionary: [String: Any]) -> PVENetworkConfig.Interface {
        var iface = PVENetworkConfig.Interface()
        for (key, value) in dictionary { set(key, value, on: &iface) }
        return iface
    }

    static func ipLinks(_ json: Any) -> [String: PVENetworkConfig.IPLink] {
        var result: [String: PVENetworkConfig.IPLink] = [:]
        for (name, value) in json as? [String: [String: Any]] ?? [:] {
            let info = value["linkinfo"] as? [String: Any]
            result[name] = PVENetworkConfig.IPLink(name: name, linkType: value["link_type"] as? String ?? "",
                                                   infoKind: info?["info_kind"] as? String,
                                                   altnames: value["altnames"] as? [String] ?? [])
        }
        return result
    }

    static func update(_ config: inout PVENetworkConfig, name: String, families: [[String: Any]], extra: [String: Any]) {
        var iface = config.interfaces[name] ?? PVENetworkConfig.Interface()
        iface["exists"] = "1"
        for (key, value) in extra { set(key, value, on: &iface) }
        for family in families {
            let name = family["family"] as! String
            let suffix = name == "inet6" ? "6" : ""
            iface.families.removeAll { $0 == name }
            iface.families.append(name)
            iface["method" + suffix] = family["address"] != nil ? "static" : "manual"
            for field in ["address", "netmask", "gateway"] {
                if let value = family[field] { iface[field + suffix] = stringValue(value) }
            }
            if let options = family["options"] as? [Any] {
                let list = options.compactMap { stringValue($0) }
                if suffix == "6" { iface.options6 = list } else { iface.options = list }
            }
        }
        config.interfaces[name] = iface
    }

    @Test("the corpus holds pve-common's scenarios")
    func scenariosFound() {
        #expect(Self.scenarios.count >= 10, "found \(Self.scenarios.count) scenarios")
    }

    @Test("scenario", arguments: scenarios)
    func scenario(_ path: String) throws {
        let json = try JSONSerialization.jsonObject(with: Corpus.data(path)) as! [String: Any]
        let steps = json["steps"] as! [[String: Any]]
        let defaultLinks = try JSONSerialization.jsonObject(with: Corpus.data("pve-common/test/etc_network_interfaces/ip_link_details"))
        let defaultActive = try Corpus.text("pve-common/test/etc_network_interfaces/active_interfaces")
            .split(whereSeparator: \.isWhitespace).map(String.init)
        var written: [Int: String] = [:]
        var config: PVENetworkConfig?
        func substitute(_ text: String) -> String {
            var result = text
            for (id, body) in written { result = result.replacingOccurrences(of: "@@WRITTEN:\(id)@@", with: body) }
            return result
        }
        var failures = 0
        for (index, step) in steps.enumerated() {
            let op = step["op"] as! String
            switch op {
            case "parse":
                let links = Self.ipLinks(step["ip_links"] ?? defaultLinks)
                let active = (step["active"] as? [String]) ?? defaultActive
                config = PVENetworkConfig(parsing: substitute(step["input"] as! String), ipLinks: links, active: active)
            case "write":
                written[(step["id"] as! NSNumber).intValue] = try config!.write()
            case "expect":
                let expected = substitute(step["text"] as! String)
                let actual = try config!.write()
                #expect(actual == expected, "step \(index) of \(path)")
                if actual != expected { failures += 1 }
            case "set_iface":
                config!.interfaces[step["name"] as! String] = Self.interface(from: step["value"] as! [String: Any])
            case "set_iface_attr":
                let name = step["name"] as! String
                Self.set(step["key"] as! String, step["value"]!, on: &config!.interfaces[name, default: PVENetworkConfig.Interface()])
            case "new_iface":
                let name = step["name"] as! String
                #expect(config!.interfaces[name] == nil)
                var fresh = PVENetworkConfig.Interface()
                fresh["type"] = step["type"] as? String
                config!.interfaces[name] = fresh
                Self.update(&config!, name: name, families: step["families"] as? [[String: Any]] ?? [], extra: step["extra"] as? [String: Any] ?? [:])
            case "update_iface":
                Self.update(&config!, name: step["name"] as! String, families: step["families"] as? [[String: Any]] ?? [],
                            extra: step["extra"] as? [String: Any] ?? [:])
            case "delete_iface":
                let name = step["name"] as! String
                if let family = step["family"] as? String {
                    let suffix = family == "inet6" ? "6" : ""
                    config!.interfaces[name]?.families.removeAll { $0 == family }
                    for field in ["address", "netmask", "gateway"] { config!.interfaces[name]?[field + suffix] = nil }
                    if suffix == "6" { config!.interfaces[name]?.options6 = [] } else { config!.interfaces[name]?.options = [] }
                } else {
                    config!.interfaces[name] = nil
                }
            case "assert_attr":
                let iface = config!.interfaces[step["iface"] as! String]
                let key = step["key"] as! String
                let expected = step["expected"]!
                let actual: String?
                switch key {
                case "families": actual = iface?.families.map { $0 ?? "" }.joined(separator: ",")
                case "options": actual = iface?.options.joined(separator: ",")
                case "options6": actual = iface?.options6.joined(separator: ",")
                default: actual = iface?[key]
                }
                let want = (expected as? [Any]).map { $0.map { Self.stringValue($0) ?? "" }.joined(separator: ",") } ?? Self.stringValue(expected)
                #expect(actual == want, "step \(index) of \(path): \(step["iface"]!).\(key)")
                if actual != want { failures += 1 }
            case "assert_families_sorted":
                let iface = config!.interfaces[step["iface"] as! String]
                let actual = (iface?.families ?? []).compactMap { $0 }.sorted()
                #expect(actual == (step["expected"] as! [String]))
            case "assert_iface_defined":
                for name in step["names"] as! [String] {
                    #expect(config!.interfaces[name] != nil, "\(name) should be defined")
                }
            default:
                Issue.record("unknown step \(op) in \(path)")
            }
        }
        Corpus.report("network \(path.split(separator: "/").last!)", passed: failures == 0 ? 1 : 0, total: 1)
    }
}
