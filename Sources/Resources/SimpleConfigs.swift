/// One `key: value` line of a flat configuration file.
public struct KeyValueLine: LosslessBlock {
    public var key: String
    public var value: String
    public var location: SourceLocation
    public var valueColumn: Int
    public var origin: Origin?

    public init(key: String, value: String, location: SourceLocation = SourceLocation(file: "", line: 0), valueColumn: Int = 0) {
        self.key = key
        self.value = value
        self.location = location
        self.valueColumn = valueColumn
    }

    public var valueLocation: SourceLocation { SourceLocation(file: location.file, line: location.line, column: valueColumn) }

    public static func == (lhs: KeyValueLine, rhs: KeyValueLine) -> Bool { lhs.key == rhs.key && lhs.value == rhs.value }
    public func hash(into hasher: inout Hasher) { hasher.combine(key); hasher.combine(value) }

    public func canonicalLines() -> [String] { ["\(key): \(value)"] }
}

/// `datacenter.cfg`: `key: value` lines whose values are often property strings.
public struct DatacenterConfig: Hashable, Sendable {
    public var file: String
    public var elements: [DocumentElement<KeyValueLine>]
    public var trailingNewline: Bool

    public var entries: [KeyValueLine] {
        elements.compactMap { if case .block(let e) = $0 { e } else { nil } }
    }

    public subscript(key: String) -> String? { entries.last { $0.key == key }?.value }

    public static func parse(_ text: String, file: String) -> (DatacenterConfig, [Diagnostic]) {
        let (lines, trailing) = splitKeepingTrailingNewline(text)
        var elements: [DocumentElement<KeyValueLine>] = []
        var diagnostics: [Diagnostic] = []
        var seen: [String: Int] = [:]
        for (index, raw) in lines.enumerated() {
            let line = raw.withoutCarriageReturn
            if line.isBlank || line.trimmed.hasPrefix("#") {
                elements.append(.trivia(String(raw)))
                continue
            }
            let location = SourceLocation(file: file, line: index + 1, column: line.column(of: line.firstNonBlankIndex))
            guard let colon = line.firstIndex(of: ":"),
                  line[line.firstNonBlankIndex..<colon].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }),
                  line.firstNonBlankIndex < colon else {
                diagnostics.append(.error(location, "expected 'key: value', got '\(line.trimmed)'", code: .syntax))
                elements.append(.trivia(String(raw)))
                continue
            }
            let key = String(line[line.firstNonBlankIndex..<colon])
            let rest = line[line.index(after: colon)...]
            let valueStart = rest.firstNonBlankIndex
            if let previous = seen[key] {
                diagnostics.append(.error(location, "duplicate key '\(key)' (first at line \(previous))", code: .duplicate))
            }
            seen[key] = index + 1
            var entry = KeyValueLine(key: key, value: rest[valueStart...].trimmed, location: location,
                                     valueColumn: line.column(of: valueStart))
            entry.stamp(rawLines: [raw], location: location)
            elements.append(.block(entry))
        }
        return (DatacenterConfig(file: file, elements: elements, trailingNewline: trailing), diagnostics)
    }

    public func losslessText() -> String { renderLossless(elements, trailingNewline: trailingNewline) }

    /// Proxmox writes the keys sorted, one per line (comments are not kept).
    public func canonicalText() -> String {
        var latest: [String: String] = [:]
        for entry in entries { latest[entry.key] = entry.value }
        return latest.keys.sorted().map { "\($0): \(latest[$0]!)\n" }.joined()
    }
}

/// `user.cfg`: colon-separated lines `user:`, `token:`, `group:`, `pool:`,
/// `role:` and `acl:` (access control; not a SectionConfig).
public struct UserConfig: Hashable, Sendable {
    public struct Line: LosslessBlock {
        public var kind: String
        public var fields: [String]
        public var location: SourceLocation
        public var origin: Origin?

        public static func == (lhs: Line, rhs: Line) -> Bool { lhs.kind == rhs.kind && lhs.fields == rhs.fields }
        public func hash(into hasher: inout Hasher) { hasher.combine(kind); hasher.combine(fields) }

        public func canonicalLines() -> [String] { [([kind] + fields).joined(separator: ":") + ":"] }

        /// The entry's name (user id, group, role ...); empty on a malformed line.
        public var name: String { fields.first ?? "" }
    }

    /// Field counts: the number of colon-separated fields after the kind.
    static let fieldCounts: [String: ClosedRange<Int>] = [
        "user": 1...8, "token": 1...4, "group": 1...3, "pool": 1...4, "role": 1...2, "acl": 4...4,
    ]

    public var file: String
    public var elements: [DocumentElement<Line>]
    public var trailingNewline: Bool

    public var lines: [Line] { elements.compactMap { if case .block(let l) = $0 { l } else { nil } } }

    public static func parse(_ text: String, file: String) -> (UserConfig, [Diagnostic]) {
        let (rawLines, trailing) = splitKeepingTrailingNewline(text)
        var elements: [DocumentElement<Line>] = []
        var diagnostics: [Diagnostic] = []
        for (index, raw) in rawLines.enumerated() {
            let text = raw.withoutCarriageReturn
            let location = SourceLocation(file: file, line: index + 1)
            if text.isBlank || text.trimmed.hasPrefix("#") {
                elements.append(.trivia(String(raw)))
                continue
            }
            var fields = text.trimmed.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            let kind = fields.removeFirst()
            // Lines end with a colon, which leaves one empty last field.
            if fields.last == "" { fields.removeLast() }
            guard let range = fieldCounts[kind] else {
                diagnostics.append(.error(location, "unknown entry type '\(kind)' (expected user, token, group, pool, role or acl)",
                                          code: .unknownKey))
                elements.append(.trivia(String(raw)))
                continue
            }
            if !range.contains(fields.count) {
                diagnostics.append(.error(location, "'\(kind)' entry has \(fields.count) fields, expected "
                                          + (range.lowerBound == range.upperBound ? "\(range.lowerBound)"
                                                : "\(range.lowerBound) to \(range.upperBound)"), code: .syntax))
            }
            var line = Line(kind: kind, fields: fields, location: location)
            line.stamp(rawLines: [raw], location: location)
            elements.append(.block(line))
        }
        return (UserConfig(file: file, elements: elements, trailingNewline: trailing), diagnostics)
    }

    public func losslessText() -> String { renderLossless(elements, trailingNewline: trailingNewline) }

    /// Users with their tokens, groups, pools, roles, then ACLs; each group
    /// sorted by name and followed by an empty line.
    public func canonicalText() -> String {
        let order = ["user", "group", "pool", "role", "acl"]
        var out = ""
        for kind in order {
            var group = lines.filter { $0.kind == kind || (kind == "user" && $0.kind == "token") }
            if kind != "acl" {
                group.sort { a, b in
                    // A token sorts right after its user (user@realm!tokenname).
                    let ka = a.kind == "token" ? String(a.name.split(separator: "!").first ?? "") : a.name
                    let kb = b.kind == "token" ? String(b.name.split(separator: "!").first ?? "") : b.name
                    return (ka, a.kind == "token" ? 1 : 0, a.name) < (kb, b.kind == "token" ? 1 : 0, b.name)
                }
            }
            guard !group.isEmpty else { continue }
            out += group.map { $0.canonicalLines()[0] + "\n" }.joined() + "\n"
        }
        return out
    }
}
