/// `corosync.conf`: nested `name { ... }` sections of `key: value` pairs.
public struct CorosyncConfig: Hashable, Sendable {
    public indirect enum Item: Hashable, Sendable {
        case value(key: String, value: String, location: SourceLocation)
        case section(Section)
    }

    public struct Section: Hashable, Sendable {
        public var name: String
        public var items: [Item]
        public var location: SourceLocation

        public init(name: String, items: [Item] = [], location: SourceLocation = SourceLocation(file: "", line: 0)) {
            self.name = name
            self.items = items
            self.location = location
        }

        public subscript(key: String) -> String? {
            for case .value(let k, let v, _) in items.reversed() where k == key { return v }
            return nil
        }

        public func sections(_ name: String) -> [Section] {
            items.compactMap { if case .section(let s) = $0, s.name == name { s } else { nil } }
        }

        public static func == (lhs: Section, rhs: Section) -> Bool {
            lhs.name == rhs.name && lhs.canonical(prefix: "") == rhs.canonical(prefix: "")
        }

        public func hash(into hasher: inout Hasher) { hasher.combine(name) }

        /// Keys sorted; repeated sections (`node`, `interface`) keep their order
        /// at the position of their name; an empty line after each top-level section.
        func canonical(prefix: String) -> String {
            var names: [String] = []
            var byName: [String: [Item]] = [:]
            for item in items {
                let key: String
                switch item {
                case .value(let k, _, _): key = k
                case .section(let s): key = s.name
                }
                if byName[key] == nil { names.append(key) }
                byName[key, default: []].append(item)
            }
            var out = ""
            for key in names.sorted() {
                let group = byName[key]!
                // A repeated scalar keeps its last value, as a hash would.
                var emittedValue = false
                for item in group.reversed() {
                    if case .value(let k, let v, _) = item, !emittedValue {
                        emittedValue = true
                        out += "\(prefix)\(k): \(v)\n"
                    }
                }
                for item in group {
                    if case .section(let s) = item {
                        out += "\(prefix)\(s.name) {\n"
                        out += s.canonical(prefix: prefix + "  ")
                        out += "\(prefix)}\n"
                        if prefix.isEmpty && group.count == 1 { out += "\n" }
                    }
                }
            }
            return out
        }
    }

    public var file: String
    public var root: Section
    public var sourceText: String
    var canonicalAtParse: String

    public static func parse(_ text: String, file: String) -> (CorosyncConfig, [Diagnostic]) {
        var diagnostics: [Diagnostic] = []
        var stack: [Section] = [Section(name: "", location: SourceLocation(file: file, line: 1))]
        let lines = splitLines(text)
        for (index, raw) in lines.enumerated() {
            let line = raw.withoutCarriageReturn
            let content = line.trimmed
            let location = SourceLocation(file: file, line: index + 1, column: line.column(of: line.firstNonBlankIndex))
            if content.isEmpty || content.hasPrefix("#") { continue }
            if content.hasSuffix("{") {
                let name = content.dropLast().trimmed
                if name.isEmpty || name.contains(" ") {
                    diagnostics.append(.error(location, "expected 'name {', got '\(content)'", code: .syntax))
                }
                stack.append(Section(name: name, location: location))
                continue
            }
            if content == "}" {
                if stack.count == 1 {
                    diagnostics.append(.error(location, "'}' closes no section", code: .syntax))
                    continue
                }
                let finished = stack.removeLast()
                stack[stack.count - 1].items.append(.section(finished))
                continue
            }
            guard let colon = content.firstIndex(of: ":") else {
                diagnostics.append(.error(location, "expected 'key: value', got '\(content)'", code: .syntax))
                continue
            }
            let key = content[..<colon].trimmed
            let value = content[content.index(after: colon)...].trimmed
            if stack.count == 1 {
                diagnostics.append(.error(location, "'\(key)' must be inside a section", code: .misplaced))
            }
            stack[stack.count - 1].items.append(.value(key: key, value: value, location: location))
        }
        while stack.count > 1 {
            let open = stack.removeLast()
            diagnostics.append(.error(open.location, "section '\(open.name)' is not closed", code: .syntax))
            stack[stack.count - 1].items.append(.section(open))
        }
        let root = stack[0]
        return (CorosyncConfig(file: file, root: root, sourceText: text, canonicalAtParse: root.canonical(prefix: "")), diagnostics)
    }

    /// The file as written, unless it was edited since it was parsed.
    public func losslessText() -> String {
        root.canonical(prefix: "") == canonicalAtParse ? sourceText : canonicalText()
    }

    public func canonicalText() -> String { root.canonical(prefix: "") }

    public var totem: Section? { root.sections("totem").first }
    public var nodes: [Section] { root.sections("nodelist").first?.sections("node") ?? [] }
}
