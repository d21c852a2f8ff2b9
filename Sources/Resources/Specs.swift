import Foundation
import Synchronization
import Yams

/// How a change to an option reaches a running resource.
public enum ChangeClass: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    /// Cosmetic: nothing to apply.
    case none
    /// Applied to the running resource (netlink, QMP hotplug, cgroup write).
    case live
    /// Applied by reloading configuration, no interruption.
    case reload
    /// Stays pending until the guest restarts.
    case restart
    /// The resource is recreated.
    case replace
    /// Never changed by the reconciler.
    case forbidden

    private var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (lhs: ChangeClass, rhs: ChangeClass) -> Bool { lhs.rank < rhs.rank }
}

/// The type and constraints of one option, as declared in `specs/*.yaml`.
public struct OptionSpec: Sendable, Hashable, Decodable {
    public enum ValueType: String, Sendable, Hashable, Decodable {
        case boolean, integer, number, string, `enum`, size, mac, ip, ipv4, ipv6, list, property
    }

    public var type: ValueType
    public var description: String?
    public var defaultValue: String?
    public var min: Double?
    public var max: Double?
    public var values: [String]?
    public var pattern: String?
    public var format: String?
    /// For indexed options such as `net[n]`: how many slots exist (net0..net31).
    public var count: Int?
    public var changeClass: ChangeClass

    enum CodingKeys: String, CodingKey {
        case type, description, min, max, values, pattern, format, count
        case defaultValue = "default"
        case changeClass = "class"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(ValueType.self, forKey: .type)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        defaultValue = try c.decodeIfPresent(String.self, forKey: .defaultValue)
        min = try c.decodeIfPresent(Double.self, forKey: .min)
        max = try c.decodeIfPresent(Double.self, forKey: .max)
        values = try c.decodeIfPresent([String].self, forKey: .values)
        pattern = try c.decodeIfPresent(String.self, forKey: .pattern)
        format = try c.decodeIfPresent(String.self, forKey: .format)
        count = try c.decodeIfPresent(Int.self, forKey: .count)
        changeClass = try c.decodeIfPresent(ChangeClass.self, forKey: .changeClass) ?? .restart
    }
}

/// The keys of a property string format such as `net` or `drive`.
public struct FormatSpec: Sendable, Hashable, Decodable {
    public var defaultKey: String?
    /// Keys that name the value of the default key and carry a MAC
    /// (`virtio=AA:BB:...` in a QEMU `net` line).
    public var modelKeys: [String]?
    public var keys: [String: OptionSpec]

    enum CodingKeys: String, CodingKey {
        case defaultKey = "default_key"
        case modelKeys = "model_keys"
        case keys
    }
}

/// What the system writes into a guest config itself (`system_owned` in a guest kind's spec): a push keeps these
/// values when the repository does not set them.
public struct SystemOwnedSpec: Sendable, Hashable, Decodable {
    /// Whole options; indexed ones as `unused[n]`.
    public var keys: [String]
    /// Option (`net[n]`) → properties inside its value that the system fills in (`macaddr`, `uuid`).
    public var properties: [String: [String]]
    /// `pending`, `snapshots`, or `special:NAME`.
    public var sections: [String]

    public init(keys: [String], properties: [String: [String]], sections: [String]) {
        self.keys = keys
        self.properties = properties
        self.sections = sections
    }

    /// Whether `key` (`unused3`, `lock`) is one of `patterns` (`unused[n]`).
    public static func matches(_ key: String, _ patterns: some Sequence<String>) -> Bool {
        patterns.contains { pattern in
            guard pattern.hasSuffix("[n]") else { return pattern == key }
            let prefix = pattern.dropLast(3)
            let digits = key.dropFirst(prefix.count)
            return key.hasPrefix(prefix) && !digits.isEmpty && digits.allSatisfy(\.isNumber)
        }
    }

    public func ownsKey(_ key: String) -> Bool { Self.matches(key, keys) }

    /// The system-filled properties inside `key`'s value (`net0` → [macaddr]).
    public func properties(of key: String) -> [String] {
        properties.first { Self.matches(key, [$0.key]) }?.value ?? []
    }
}

/// A storage type's properties (`storage.yaml` `types`).
public struct SectionTypeSpec: Sendable, Hashable, Decodable {
    public var required: [String]
    public var optional: [String]
}

/// Everything `specs/<kind>.yaml` declares.
public struct KindSpec: Sendable, Decodable {
    public var kind: String
    public var options: [String: OptionSpec]
    public var formats: [String: FormatSpec]
    /// storage.cfg: per type.
    public var types: [String: SectionTypeSpec]
    /// firewall: options per scope.
    public var scopes: [String: [String: OptionSpec]]
    public var ruleOptions: [String: OptionSpec]
    public var macros: [String]
    public var methods: [String]
    /// How this format spells a boolean: nil for every spelling Proxmox's
    /// JSON schema takes (1/0, yes/no, on/off, true/false); the firewall's own
    /// option parser takes only 0 and 1.
    public var booleanSpellings: [String]?
    /// Guest kinds: what Proxmox writes into the config itself.
    public var systemOwned: SystemOwnedSpec?

    enum CodingKeys: String, CodingKey {
        case kind, options, formats, types, properties, scopes, macros, methods
        case ruleOptions = "rule_options"
        case booleanSpellings = "boolean_spellings"
        case systemOwned = "system_owned"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        let options = try c.decodeIfPresent([String: OptionSpec].self, forKey: .options) ?? [:]
        let properties = try c.decodeIfPresent([String: OptionSpec].self, forKey: .properties) ?? [:]
        self.options = options.merging(properties) { a, _ in a }
        formats = try c.decodeIfPresent([String: FormatSpec].self, forKey: .formats) ?? [:]
        types = try c.decodeIfPresent([String: SectionTypeSpec].self, forKey: .types) ?? [:]
        scopes = try c.decodeIfPresent([String: [String: OptionSpec]].self, forKey: .scopes) ?? [:]
        ruleOptions = try c.decodeIfPresent([String: OptionSpec].self, forKey: .ruleOptions) ?? [:]
        macros = try c.decodeIfPresent([String].self, forKey: .macros) ?? []
        methods = try c.decodeIfPresent([String].self, forKey: .methods) ?? []
        booleanSpellings = try c.decodeIfPresent([String].self, forKey: .booleanSpellings)
        systemOwned = try c.decodeIfPresent(SystemOwnedSpec.self, forKey: .systemOwned)
        if let spellings = booleanSpellings {
            // Declared once for the format, enforced on every boolean of it.
            func restrict(_ options: inout [String: OptionSpec]) {
                for key in options.keys where options[key]!.type == .boolean { options[key]!.values = spellings }
            }
            restrict(&self.options)
            restrict(&ruleOptions)
            for scope in scopes.keys { restrict(&scopes[scope]!) }
            for format in formats.keys { restrict(&formats[format]!.keys) }
        }
    }

    /// The spec of a key, resolving indexed keys: `net3` → `net[n]` when 3 < count.
    public func option(_ key: String) -> OptionSpec? {
        if let direct = options[key] { return direct }
        var digitsStart = key.endIndex
        while digitsStart > key.startIndex, key[key.index(before: digitsStart)].isNumber {
            digitsStart = key.index(before: digitsStart)
        }
        guard digitsStart < key.endIndex, let index = Int(key[digitsStart...]) else { return nil }
        let prefix = key[..<digitsStart]
        guard let indexed = options["\(prefix)[n]"] else { return nil }
        // No leading zeros: net01 is not net1.
        if key[digitsStart...].count > 1 && key[digitsStart] == "0" { return nil }
        return index < (indexed.count ?? Int.max) ? indexed : nil
    }

    /// nil when `value` is acceptable for `key`, else the reason it is not.
    public func check(key: String, value: String) -> String? {
        guard let spec = option(key) else { return "unknown option '\(key)'" }
        return ValueChecker.check(value, spec, formats: formats)
    }

    /// The layout the SectionConfig writer needs for a storage type.
    public func sectionLayout(forType type: String) -> SectionTypeLayout? {
        guard let typeSpec = types[type] else { return nil }
        let all = Set(typeSpec.required + typeSpec.optional)
        return SectionTypeLayout(
            required: Set(typeSpec.required),
            known: all,
            booleans: Set(all.filter { options[$0]?.type == .boolean }),
            arrays: [])
    }
}

/// Checks a value against an option spec; messages name the allowed values.
public enum ValueChecker {
    public static func check(_ value: String, _ spec: OptionSpec, formats: [String: FormatSpec]) -> String? {
        switch spec.type {
        case .boolean:
            if let spellings = spec.values {
                return spellings.contains(value) ? nil
                    : "type check ('boolean') failed - got '\(value)' (this file takes \(spellings.joined(separator: " or ")))"
            }
            return BooleanValue.parse(value) == nil ? "type check ('boolean') failed - got '\(value)'" : nil
        case .integer:
            guard let number = Int(value) ?? (value.hasPrefix("+") ? Int(value.dropFirst()) : nil) else {
                return "type check ('integer') failed - got '\(value)'"
            }
            return range(Double(number), spec, value)
        case .number:
            guard let number = Double(value), number.isFinite else { return "type check ('number') failed - got '\(value)'" }
            return range(number, spec, value)
        case .string:
            if let pattern = spec.pattern, !matches(value, pattern) {
                return "value '\(value)' does not match format \(pattern)"
            }
            return nil
        case .enum:
            guard let values = spec.values else { return nil }
            return values.contains(value) ? nil : "value '\(value)' is not one of: \(values.joined(separator: ", "))"
        case .size:
            return SizeValue.bytes(value) == nil ? "value '\(value)' is not a size (a number with an optional K, M, G or T suffix)" : nil
        case .mac:
            return isMAC(value) ? nil : "value '\(value)' is not a MAC address"
        case .ip:
            return IPAddress.isIPv4(value) || IPAddress.isIPv6(value) ? nil : "value '\(value)' is not an IP address"
        case .ipv4:
            return IPAddress.isIPv4(value) ? nil : "value '\(value)' is not an IPv4 address"
        case .ipv6:
            return IPAddress.isIPv6(value) ? nil : "value '\(value)' is not an IPv6 address"
        case .list:
            guard let values = spec.values else { return nil }
            for item in value.split(whereSeparator: { $0 == "," || $0 == ";" || $0 == " " }) where !values.contains(String(item)) {
                return "value '\(item)' is not one of: \(values.joined(separator: ", "))"
            }
            return nil
        case .property:
            guard let name = spec.format, let format = formats[name] else { return nil }
            return checkPropertyString(value, format: format, formats: formats)
        }
    }

    public static func checkPropertyString(_ value: String, format: FormatSpec, formats: [String: FormatSpec]) -> String? {
        let parsed = PropertyString(parsing: value)
        var seen: Set<String> = []
        for entry in parsed.entries {
            var key: String
            var itemValue = entry.value
            if let explicit = entry.key {
                key = explicit
                if let models = format.modelKeys, models.contains(explicit) {
                    if !isMAC(itemValue) { return "invalid MAC address '\(itemValue)' for model \(explicit)" }
                    key = format.defaultKey ?? explicit
                    itemValue = explicit
                }
            } else {
                guard let defaultKey = format.defaultKey else { return "value without key '\(entry.value)'" }
                key = defaultKey
            }
            guard let keySpec = format.keys[key] else {
                return "unknown property '\(key)' (allowed: \(format.keys.keys.sorted().joined(separator: ", ")))"
            }
            if !seen.insert(key).inserted { return "duplicate property '\(key)'" }
            if let problem = check(itemValue, keySpec, formats: formats) { return "\(key): \(problem)" }
        }
        return nil
    }

    static func range(_ number: Double, _ spec: OptionSpec, _ text: String) -> String? {
        if let min = spec.min, number < min { return "value '\(text)' must be at least \(formatNumber(min))" }
        if let max = spec.max, number > max { return "value '\(text)' must be at most \(formatNumber(max))" }
        return nil
    }

    static func formatNumber(_ n: Double) -> String {
        n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n)
    }

    static func isMAC(_ value: String) -> Bool {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 6 && parts.allSatisfy { $0.count == 2 && $0.allSatisfy(\.isHexDigit) }
    }

    static func matches(_ value: String, _ pattern: String) -> Bool {
        PatternCache.shared.matches(value, pattern)
    }
}

/// Compiled regular expressions, shared: patterns come from the specs and are
/// few, but are checked against every value of every file.
final class PatternCache: Sendable {
    static let shared = PatternCache()
    /// The embedded specs' patterns, compiled once: read on every core without a lock.
    private let compiled: [String: NSRegularExpression]
    /// Patterns of specs decoded later (tests decode their own).
    private let others = Mutex<[String: NSRegularExpression?]>([:])

    private init() {
        var compiled: [String: NSRegularExpression] = [:]
        for spec in Specs.all {
            let options = spec.options.values + spec.formats.values.flatMap(\.keys.values)
            for pattern in options.compactMap(\.pattern) where compiled[pattern] == nil {
                compiled[pattern] = Self.compile(pattern)
            }
        }
        self.compiled = compiled
    }

    private static func compile(_ pattern: String) -> NSRegularExpression? {
        try? NSRegularExpression(pattern: "^(?:" + pattern + ")$")
    }

    func matches(_ value: String, _ pattern: String) -> Bool {
        let regex = compiled[pattern] ?? others.withLock { cache -> NSRegularExpression? in
            if let cached = cache[pattern] { return cached }
            let regex = Self.compile(pattern)
            cache[pattern] = regex
            return regex
        }
        guard let regex else { return true }
        let range = NSRange(value.startIndex..<value.endIndex, in: value)
        return regex.firstMatch(in: value, options: [], range: range) != nil
    }
}

/// The one reading of IP addresses, for validation and for what the kinds build from them: the C library's
/// `inet_pton`, as `ip`, `nft` and the kernel's tools read them (no leading zeros in an IPv4 octet, as pve-common's
/// IPV4RE; IPv6 with `::` and an embedded IPv4 tail). Nothing is resolved.
public enum IPAddress {
    public enum Family: Int, Sendable, Hashable, Comparable {
        case v4 = 4
        case v6 = 6

        public static func < (lhs: Family, rhs: Family) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// The address family and its bytes in network order; nil when the text is not an address.
    public static func parse(_ text: String) -> (family: Family, bytes: [UInt8])? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return (.v4, withUnsafeBytes(of: &v4) { Array($0) })
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return (.v6, withUnsafeBytes(of: &v6) { Array($0) })
        }
        return nil
    }

    public static func isIPv4(_ text: String) -> Bool { parse(text)?.family == .v4 }

    public static func isIPv6(_ text: String) -> Bool { parse(text)?.family == .v6 }

    /// `192.0.2.1/24` or `2001:db8::1/64`.
    public static func isCIDR(_ text: String) -> Bool {
        guard let slash = text.lastIndex(of: "/"), let bits = Int(text[text.index(after: slash)...]) else { return false }
        let address = String(text[..<slash])
        if isIPv4(address) { return (0...32).contains(bits) }
        if isIPv6(address) { return (0...128).contains(bits) }
        return false
    }
}

/// The specs compiled into the binary (from `specs/`, see EmbeddedSpecs.swift).
public enum Specs {
    public enum LoadError: Error, CustomStringConvertible {
        case missing(String)
        case invalid(String, String)
        public var description: String {
            switch self {
            case .missing(let name): "no embedded spec named '\(name)'"
            case .invalid(let name, let reason): "spec \(name) is invalid: \(reason)"
            }
        }
    }

    public static func decode(_ yaml: String, name: String) throws -> KindSpec {
        do {
            return try YAMLDecoder().decode(KindSpec.self, from: yaml)
        } catch {
            throw LoadError.invalid(name, "\(error)")
        }
    }

    private static let loaded: [String: KindSpec] = {
        // Every command needs them at start: decoded on all cores. The embedded specs are checked by the test suite;
        // a broken one is a build defect.
        let files = Array(EmbeddedSpecs.files)
        let decoded = Mutex<[String: KindSpec]>([:])
        DispatchQueue.concurrentPerform(iterations: files.count) { index in
            let (file, text) = files[index]
            let spec = try! decode(text, name: file)
            decoded.withLock { $0[String(file.dropLast(5))] = spec }
        }
        return decoded.withLock { $0 }
    }()

    public static func spec(_ kind: String) -> KindSpec? { loaded[kind] }

    /// Every embedded spec.
    static var all: Dictionary<String, KindSpec>.Values { loaded.values }

    public static var qemu: KindSpec { loaded["qemu"]! }
    public static var lxc: KindSpec { loaded["lxc"]! }
    public static var storage: KindSpec { loaded["storage"]! }
    public static var network: KindSpec { loaded["network"]! }
    public static var firewall: KindSpec { loaded["firewall"]! }

    public static func guest(_ kind: GuestConfig.Kind) -> KindSpec { kind == .qemu ? qemu : lxc }
}
