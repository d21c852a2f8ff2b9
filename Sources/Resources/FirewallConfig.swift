/// A firewall file: `cluster.fw`, `host.fw` or `<vmid>.fw`, with `[OPTIONS]`,
/// `[ALIASES]`, `[RULES]`, `[IPSET name]` and `[GROUP name]` sections.
public struct FirewallConfig: Hashable, Sendable {
    public enum Scope: String, Sendable, Hashable {
        case cluster
        case host
        case guest
    }

    public enum SectionKind: Hashable, Sendable {
        case options
        case aliases
        case rules
        case ipset(String)
        case group(String)
    }

    public struct Rule: Hashable, Sendable {
        public enum Direction: String, Sendable, Hashable {
            case inbound = "IN"
            case outbound = "OUT"
            case forward = "FORWARD"
            case group = "GROUP"
        }

        public var enabled: Bool
        public var direction: Direction
        /// ACCEPT, DROP, REJECT, a security group name (GROUP rules), or the macro's action.
        public var action: String
        public var macro: String?
        /// Options in file order: `-i`, `-source`, `-dest`, `-p`, `-dport`, `-sport`, `-icmp-type`, `-log`.
        public var options: [(key: String, value: String)]
        public var comment: String?
        public var location: SourceLocation

        public init(enabled: Bool = true, direction: Direction, action: String, macro: String? = nil,
                    options: [(key: String, value: String)] = [], comment: String? = nil,
                    location: SourceLocation = SourceLocation(file: "", line: 0)) {
            self.enabled = enabled
            self.direction = direction
            self.action = action
            self.macro = macro
            self.options = options
            self.comment = comment
            self.location = location
        }

        public subscript(option: String) -> String? { options.last { $0.key == option }?.value }

        public static func == (lhs: Rule, rhs: Rule) -> Bool { lhs.canonicalLine() == rhs.canonicalLine() }
        public func hash(into hasher: inout Hasher) { hasher.combine(canonicalLine()) }

        static let optionOrder = ["i", "source", "dest", "p", "dport", "sport", "icmp-type", "log"]

        public func canonicalLine() -> String {
            var line = enabled ? "" : "|"
            line += direction.rawValue
            line += macro.map { " \($0)(\(action))" } ?? " \(action)"
            let ordered = options.sorted {
                (Rule.optionOrder.firstIndex(of: $0.key) ?? 99) < (Rule.optionOrder.firstIndex(of: $1.key) ?? 99)
            }
            for option in ordered { line += " -\(option.key) \(option.value)" }
            if let comment, !comment.isEmpty { line += " # \(comment)" }
            return line
        }
    }

    /// One line of `[ALIASES]` or `[IPSET name]`.
    public struct Entry: Hashable, Sendable {
        public var name: String?
        public var cidr: String
        public var nomatch: Bool
        public var comment: String?
        public var location: SourceLocation
        public var cidrColumn: Int
    }

    public struct Section: LosslessBlock {
        public var kind: SectionKind
        public var comment: String?
        public var options: [(key: String, value: String, location: SourceLocation, valueColumn: Int)]
        public var rules: [Rule]
        public var entries: [Entry]
        public var location: SourceLocation
        public var origin: Origin?

        public init(kind: SectionKind, comment: String?, location: SourceLocation) {
            self.kind = kind
            self.comment = comment
            self.options = []
            self.rules = []
            self.entries = []
            self.location = location
        }

        public static func == (lhs: Section, rhs: Section) -> Bool { lhs.canonicalLines() == rhs.canonicalLines() }
        public func hash(into hasher: inout Hasher) { hasher.combine(kind) }

        public var header: String {
            var text: String
            switch kind {
            case .options: text = "[OPTIONS]"
            case .aliases: text = "[ALIASES]"
            case .rules: text = "[RULES]"
            case .ipset(let name): text = "[IPSET \(name)]"
            case .group(let name): text = "[group \(name)]"
            }
            if let comment, !comment.isEmpty { text += " # \(comment)" }
            return text
        }

        public func canonicalLines() -> [String] {
            var lines = [header, ""]
            switch kind {
            case .options:
                var latest: [String: String] = [:]
                for option in options { latest[option.key] = option.value }
                for key in latest.keys.sorted() { lines.append("\(key): \(latest[key]!)") }
            case .aliases:
                for entry in entries.sorted(by: { ($0.name ?? "") < ($1.name ?? "") }) {
                    lines.append("\(entry.name ?? "") \(entry.cidr)" + (entry.comment.map { " # \($0)" } ?? ""))
                }
            case .ipset:
                for entry in entries.sorted(by: { $0.cidr < $1.cidr }) {
                    lines.append((entry.nomatch ? "!" : "") + entry.cidr + (entry.comment.map { " # \($0)" } ?? ""))
                }
            case .rules, .group:
                for rule in rules { lines.append(rule.canonicalLine()) }
            }
            return lines
        }
    }

    public var file: String
    public var scope: Scope
    public var elements: [DocumentElement<Section>]
    public var trailingNewline: Bool

    public var sections: [Section] {
        elements.compactMap { if case .block(let s) = $0 { s } else { nil } }
    }

    public var options: [String: String] {
        var result: [String: String] = [:]
        for section in sections where section.kind == .options {
            for option in section.options { result[option.key] = option.value }
        }
        return result
    }

    public var rules: [Rule] { sections.filter { $0.kind == .rules }.flatMap(\.rules) }

    public var aliases: [Entry] { sections.filter { $0.kind == .aliases }.flatMap(\.entries) }

    public var ipsets: [String: Section] {
        var result: [String: Section] = [:]
        for section in sections { if case .ipset(let name) = section.kind { result[name] = section } }
        return result
    }

    public var groups: [String: Section] {
        var result: [String: Section] = [:]
        for section in sections { if case .group(let name) = section.kind { result[name] = section } }
        return result
    }

    public static func scope(forPath path: String) -> Scope {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        if name == "cluster.fw" { return .cluster }
        if name == "host.fw" { return .host }
        return .guest
    }

    public static func parse(_ text: String, file: String, scope: Scope? = nil) -> (FirewallConfig, [Diagnostic]) {
        let scope = scope ?? FirewallConfig.scope(forPath: file)
        let (lines, trailing) = splitKeepingTrailingNewline(text)
        var elements: [DocumentElement<Section>] = []
        var diagnostics: [Diagnostic] = []
        var current: Section?
        var currentStart = 0
        var seen: Set<SectionKind> = []
        func location(_ i: Int, _ column: Int = 1) -> SourceLocation { SourceLocation(file: file, line: i + 1, column: column) }

        func close(at end: Int) {
            guard var section = current else {
                for i in currentStart..<end { elements.append(.trivia(String(lines[i]))) }
                return
            }
            var stop = end
            while stop > currentStart + 1, lines[stop - 1].withoutCarriageReturn.isBlank { stop -= 1 }
            section.stamp(rawLines: Array(lines[currentStart..<stop]), location: section.location)
            elements.append(.block(section))
            for i in stop..<end { elements.append(.trivia(String(lines[i]))) }
        }

        for index in lines.indices {
            let line = lines[index].withoutCarriageReturn
            let content = line.trimmed
            if content.hasPrefix("[") {
                close(at: index)
                currentStart = index
                current = nil
                guard let (kind, comment) = parseHeader(content, scope: scope) else {
                    diagnostics.append(.error(location(index), "unknown section header '\(content)' "
                                              + "(expected [OPTIONS], [ALIASES], [RULES], [IPSET name] or [group name])", code: .unknownKey))
                    continue
                }
                if seen.contains(kind) {
                    diagnostics.append(.error(location(index), "duplicate section \(content)", code: .duplicate))
                }
                seen.insert(kind)
                current = Section(kind: kind, comment: comment, location: location(index))
                continue
            }
            if content.isEmpty || content.hasPrefix("#") { continue }
            guard current != nil else {
                diagnostics.append(.error(location(index), "line outside of any section: '\(content)'", code: .misplaced))
                continue
            }
            let column = line.column(of: line.firstNonBlankIndex)
            switch current!.kind {
            case .options:
                guard let colon = content.firstIndex(of: ":") else {
                    diagnostics.append(.error(location(index, column), "expected 'option: value', got '\(content)'", code: .syntax))
                    continue
                }
                let key = content[..<colon].trimmed
                let rest = content[content.index(after: colon)...]
                let value = rest.trimmed
                let valueColumn = column + content.distance(from: content.startIndex, to: colon) + 1
                    + rest.distance(from: rest.startIndex, to: rest.firstNonBlankIndex)
                current!.options.append((key, value, location(index, column), valueColumn))
            case .aliases, .ipset:
                let (body, comment) = splitComment(content)
                var words = body.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
                let isAlias = current!.kind == .aliases
                var nomatch = false
                if !isAlias, let first = words.first, first.hasPrefix("!") {
                    nomatch = true
                    words[0] = String(first.dropFirst())
                    if words[0].isEmpty { words.removeFirst() }
                }
                let needed = isAlias ? 2 : 1
                guard words.count == needed else {
                    diagnostics.append(.error(location(index, column),
                                              isAlias ? "expected 'name address', got '\(content)'"
                                                  : "expected one address, range, alias or ipset name, got '\(content)'", code: .syntax))
                    continue
                }
                let cidr = words[needed - 1]
                let cidrColumn = line.column(of: line.range(of: cidr)?.lowerBound ?? line.startIndex)
                current!.entries.append(Entry(name: isAlias ? words[0] : nil, cidr: cidr, nomatch: nomatch,
                                              comment: comment, location: location(index, column), cidrColumn: cidrColumn))
            case .rules, .group:
                switch parseRule(content, location: location(index, column)) {
                case .success(let rule): current!.rules.append(rule)
                case .failure(let error): diagnostics.append(error)
                }
            }
        }
        close(at: lines.count)
        return (FirewallConfig(file: file, scope: scope, elements: elements, trailingNewline: trailing), diagnostics)
    }

    static func splitComment(_ text: String) -> (String, String?) {
        guard let hash = text.firstIndex(of: "#") else { return (text, nil) }
        let comment = text[text.index(after: hash)...].trimmed
        return (text[..<hash].trimmed, comment.isEmpty ? nil : comment)
    }

    static func parseHeader(_ content: String, scope: Scope) -> (SectionKind, String?)? {
        guard let close = content.firstIndex(of: "]") else { return nil }
        let inner = content[content.index(after: content.startIndex)..<close].trimmed
        let (_, comment) = splitComment(String(content[content.index(after: close)...]))
        let words = inner.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let first = words.first?.uppercased() else { return nil }
        switch (first, words.count) {
        case ("OPTIONS", 1): return (.options, comment)
        case ("ALIASES", 1): return (.aliases, comment)
        case ("RULES", 1): return (.rules, comment)
        case ("IPSET", 2): return (.ipset(words[1]), comment)
        case ("GROUP", 2) where scope == .cluster: return (.group(words[1]), comment)
        default: return nil
        }
    }

    static let validOptions: Set<String> = ["i", "source", "dest", "p", "dport", "sport", "icmp-type", "log", "iface", "proto"]
    /// Long spellings proxmox-firewall accepts, stored under the short name.
    static let optionAliases = ["iface": "i", "proto": "p"]

    static func parseRule(_ content: String, location: SourceLocation) -> Result<Rule, Diagnostic> {
        let (body, comment) = splitComment(content)
        var text = Substring(body)
        var enabled = true
        if text.hasPrefix("|") {
            enabled = false
            text = text.dropFirst()
        }
        var words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)[...]
        guard let typeWord = words.popFirst(), let direction = Rule.Direction(rawValue: typeWord.uppercased()) else {
            return .failure(.error(location, "expected a rule 'IN|OUT|FORWARD|GROUP ACTION [options]', got '\(content)'", code: .firewallRuleLine))
        }
        guard let actionWord = words.popFirst() else {
            return .failure(.error(location, "rule has no action", code: .firewallRuleLine))
        }
        var action = actionWord
        var macro: String?
        if let open = actionWord.firstIndex(of: "("), actionWord.hasSuffix(")") {
            macro = String(actionWord[..<open])
            action = String(actionWord[actionWord.index(after: open)..<actionWord.index(before: actionWord.endIndex)])
        }
        if direction != .group {
            guard ["ACCEPT", "DROP", "REJECT"].contains(action) else {
                return .failure(.error(location, "unknown action '\(action)' (expected ACCEPT, DROP or REJECT)", code: .firewallRuleLine))
            }
        }
        var options: [(key: String, value: String)] = []
        while let word = words.popFirst() {
            guard word.hasPrefix("-"), word.count > 1 else {
                return .failure(.error(location, "unexpected '\(word)' in rule (options start with '-')", code: .firewallRuleLine))
            }
            // pve-firewall writes -dport; proxmox-firewall also reads --dport.
            let key = String(word.hasPrefix("--") ? word.dropFirst(2) : word.dropFirst())
            guard validOptions.contains(key) else {
                return .failure(.error(location, "unknown rule option '-\(key)'", code: .firewallRuleLine))
            }
            guard let value = words.popFirst() else {
                return .failure(.error(location, "option '-\(key)' needs a value", code: .firewallRuleLine))
            }
            options.append((optionAliases[key] ?? key, value))
        }
        return .success(Rule(enabled: enabled, direction: direction, action: action, macro: macro,
                             options: options, comment: comment, location: location))
    }

    public func losslessText() -> String {
        renderLossless(elements, trailingNewline: trailingNewline)
    }

    /// Upstream's order: options, aliases, ipsets (sorted), rules, then security
    /// groups (sorted); each section followed by an empty line.
    public func canonicalText() -> String {
        func rank(_ kind: SectionKind) -> (Int, String) {
            switch kind {
            case .options: (0, "")
            case .aliases: (1, "")
            case .ipset(let name): (2, name)
            case .rules: (3, "")
            case .group(let name): (4, name)
            }
        }
        return sections.filter { section in
            switch section.kind {
            case .options: !section.options.isEmpty
            case .aliases: !section.entries.isEmpty
            case .rules: !section.rules.isEmpty
            case .ipset, .group: true
            }
        }
        .sorted { rank($0.kind) < rank($1.kind) }
        .map { $0.canonicalLines().joined(separator: "\n") + "\n\n" }
        .joined()
    }
}
