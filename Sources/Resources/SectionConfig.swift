/// What the canonical writer needs to know about one section type.
public struct SectionTypeLayout: Hashable, Sendable {
    /// Properties written first, in sorted order (upstream: non-optional options).
    public var required: Set<String>
    /// Every property the type accepts.
    public var known: Set<String>
    public var booleans: Set<String>
    public var arrays: Set<String>

    public init(required: Set<String> = [], known: Set<String> = [], booleans: Set<String> = [], arrays: Set<String> = []) {
        self.required = required
        self.known = known
        self.booleans = booleans
        self.arrays = arrays
    }
}

/// The `type: id` blocks with tab-indented `key value` lines used by
/// storage.cfg, ha/resources.cfg, ha/groups.cfg, domains.cfg and others.
public struct SectionConfigFile: Hashable, Sendable {
    /// A `\tkey value` line; the value is nil for a bare key such as `disable` (a boolean set to 1).
    public typealias Property = KeyValueEntry<String?>

    public struct Section: LosslessBlock {
        public var type: String
        public var id: String
        public var properties: [Property]
        public var location: SourceLocation
        public var idColumn: Int
        /// How to order and spell properties canonically; nil: an unknown type.
        public var layout: SectionTypeLayout?
        public var origin: Origin?

        public init(type: String, id: String, properties: [Property] = [], layout: SectionTypeLayout? = nil,
                    location: SourceLocation = SourceLocation(file: "", line: 0), idColumn: Int = 0) {
            self.type = type
            self.id = id
            self.properties = properties
            self.layout = layout
            self.location = location
            self.idColumn = idColumn
        }

        public subscript(key: String) -> String? {
            get {
                guard let property = properties.last(where: { $0.key == key }) else { return nil }
                return property.value ?? "1"
            }
            set {
                properties.removeAll { $0.key == key }
                if let newValue { properties.append(Property(key: key, value: newValue)) }
            }
        }

        public func values(_ key: String) -> [String] {
            properties.filter { $0.key == key }.map { $0.value ?? "1" }
        }

        public func property(_ key: String) -> Property? { properties.last { $0.key == key } }

        // Positions are provenance, not content: two sections are the same
        // configuration whatever lines they came from.
        public static func == (lhs: Section, rhs: Section) -> Bool {
            lhs.type == rhs.type && lhs.id == rhs.id && lhs.canonicalLines() == rhs.canonicalLines()
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(type)
            hasher.combine(id)
        }

        /// Upstream's write order: comment, a bare `disable`, required
        /// properties sorted, the other properties sorted. Booleans become 0/1.
        /// Unknown properties are kept (sorted, last) so nothing is lost.
        public func canonicalLines() -> [String] {
            var lines = ["\(type): \(id)"]
            var grouped: [String: [String]] = [:]
            var order: [String] = []
            for property in properties {
                if grouped[property.key] == nil { order.append(property.key) }
                let value = property.value ?? "1"
                if let layout, layout.arrays.contains(property.key) {
                    grouped[property.key, default: []].append(value)
                } else {
                    grouped[property.key] = [value]
                }
            }
            func emit(_ key: String) {
                guard let values = grouped.removeValue(forKey: key) else { return }
                for value in values {
                    if layout?.booleans.contains(key) == true || (layout == nil && key == "disable" && value == "1") {
                        let truth = BooleanValue.parse(value)
                        if key == "disable" {
                            if truth == true { lines.append("\tdisable") }
                        } else if let truth {
                            lines.append("\t\(key) \(truth ? 1 : 0)")
                        } else {
                            lines.append("\t\(key) \(value)")
                        }
                    } else if !value.isEmpty {
                        lines.append("\t\(key) \(value)")
                    }
                }
            }
            emit("comment")
            emit("disable")
            if let layout {
                for key in layout.required.sorted() { emit(key) }
            }
            for key in grouped.keys.sorted() { emit(key) }
            return lines
        }
    }

    public var file: String
    public var elements: [DocumentElement<Section>]
    public var trailingNewline: Bool

    public var sections: [Section] {
        elements.compactMap { if case .block(let s) = $0 { s } else { nil } }
    }

    public subscript(id: String) -> Section? {
        for case .block(let section) in elements where section.id == id { return section }
        return nil
    }

    /// Sections by id (the first one when an id repeats), for repeated lookups.
    public var sectionsByID: [String: Section] {
        var result: [String: Section] = [:]
        for section in sections where result[section.id] == nil { result[section.id] = section }
        return result
    }

    /// Replaces the section with the same id, or appends it.
    public mutating func upsert(_ section: Section) {
        for i in elements.indices {
            if case .block(let existing) = elements[i], existing.id == section.id {
                var updated = section
                updated.origin = existing.origin
                elements[i] = .block(updated)
                return
            }
        }
        if trailingNewline || elements.isEmpty {
            if !elements.isEmpty { elements.append(.trivia("")) }
        }
        elements.append(.block(section))
        trailingNewline = true
    }

    public mutating func remove(id: String) {
        elements.removeAll { if case .block(let s) = $0 { s.id == id } else { false } }
    }

    /// Parses a SectionConfig file. Problems (unreadable lines, duplicate
    /// ids, duplicate non-array keys) become diagnostics; nothing is dropped.
    public static func parse(_ text: String, file: String,
                             layout: (String) -> SectionTypeLayout? = { _ in nil }) -> (SectionConfigFile, [Diagnostic]) {
        let (lines, trailing) = splitKeepingTrailingNewline(text)
        var elements: [DocumentElement<Section>] = []
        var diagnostics: [Diagnostic] = []
        var seenIDs: [String: SourceLocation] = [:]
        var index = 0
        func location(_ i: Int, _ column: Int = 1) -> SourceLocation { SourceLocation(file: file, line: i + 1, column: column) }

        while index < lines.count {
            let raw = lines[index]
            let line = raw.withoutCarriageReturn
            if line.isEmpty || line.first == "#" || line.isBlank || line.first == " " || line.first == "\t" {
                if line.first == " " || line.first == "\t", !line.isBlank, line.trimmed.first != "#" {
                    diagnostics.append(.error(location(index, line.column(of: line.firstNonBlankIndex)),
                                              "property line outside of a section: '\(line.trimmed)'", code: .misplaced))
                }
                elements.append(.trivia(String(raw)))
                index += 1
                continue
            }
            guard let header = parseHeader(line) else {
                diagnostics.append(.error(location(index), "expected a section header 'type: id', got '\(line)'", code: .syntax))
                elements.append(.trivia(String(raw)))
                index += 1
                continue
            }
            let start = index
            var section = Section(type: header.type, id: header.id, layout: layout(header.type),
                                  location: location(index), idColumn: header.idColumn)
            if let previous = seenIDs[header.id] {
                diagnostics.append(.error(location(index, header.idColumn),
                                          "duplicate section id '\(header.id)' (first defined at line \(previous.line))", code: .duplicate))
            } else {
                seenIDs[header.id] = location(index)
            }
            index += 1
            var seenKeys: Set<String> = []
            // A section runs until the first empty line; comments inside it are skipped.
            while index < lines.count {
                let body = lines[index].withoutCarriageReturn
                if body.isEmpty { break }
                if body.trimmed.first == "#" { index += 1; continue }
                let keyStart = body.firstNonBlankIndex
                if keyStart == body.startIndex || keyStart == body.endIndex {
                    if keyStart == body.startIndex { break }  // next header without a blank line
                    diagnostics.append(.error(location(index), "ignored line with only white space inside section '\(header.id)'", code: .syntax))
                    index += 1
                    continue
                }
                let rest = body[keyStart...]
                let keyEnd = rest.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? rest.endIndex
                let key = String(rest[..<keyEnd])
                let valuePart = rest[keyEnd...]
                let valueStart = valuePart.firstNonBlankIndex
                let value = valuePart[valueStart...].trimmed
                let keyColumn = body.column(of: keyStart)
                let property = Property(key: key, value: value.isEmpty ? nil : value,
                                        location: location(index, keyColumn),
                                        valueColumn: body.column(of: valueStart))
                if seenKeys.contains(key), !(section.layout?.arrays.contains(key) ?? (section.layout == nil)) {
                    diagnostics.append(.error(location(index, keyColumn), "duplicate attribute '\(key)' in section '\(header.id)'",
                                              code: .duplicate))
                }
                seenKeys.insert(key)
                section.properties.append(property)
                index += 1
            }
            section.stamp(rawLines: Array(lines[start..<index]), location: section.location)
            elements.append(.block(section))
        }
        return (SectionConfigFile(file: file, elements: elements, trailingNewline: trailing), diagnostics)
    }

    private static func parseHeader(_ line: Substring) -> (type: String, id: String, idColumn: Int)? {
        guard let colon = line.firstIndex(of: ":") else { return nil }
        let type = line[..<colon]
        guard !type.isEmpty, !type.contains(where: { $0 == " " || $0 == "\t" }) else { return nil }
        let after = line[line.index(after: colon)...]
        let idStart = after.firstNonBlankIndex
        let id = after[idStart...].trimmed
        guard !id.isEmpty, !id.contains(where: { $0 == " " || $0 == "\t" }) else { return nil }
        return (String(type), id, line.column(of: idStart))
    }

    /// Byte-identical to the input when nothing was edited.
    public func losslessText() -> String {
        renderLossless(elements, trailingNewline: trailingNewline)
    }

    /// What Proxmox writes: every section canonical, separated and followed by
    /// one empty line; comments and unreadable lines are not kept (as upstream).
    public func canonicalText() -> String {
        sections.map { $0.canonicalLines().joined(separator: "\n") + "\n\n" }.joined()
    }
}

/// Proxmox's boolean spellings.
public enum BooleanValue {
    public static func parse(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "1", "yes", "on", "true": true
        case "0", "no", "off", "false": false
        default: nil
        }
    }
}
