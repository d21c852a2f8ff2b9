/// `/etc/network/interfaces` in the ifupdown2 dialect Proxmox writes, as an
/// ordered list of stanzas (lossless) with source positions.
public struct InterfacesFile: Hashable, Sendable {
    /// An option line of a stanza (`address 192.0.2.1/24`).
    public typealias Option = KeyValueEntry<String>

    public enum StanzaKind: Hashable, Sendable {
        /// `auto a b`, `allow-auto a`, `allow-hotplug a`, `allow-ovs a`, `allow-vmbr0 a`.
        case allow(class: String, interfaces: [String])
        /// `iface NAME [inet|inet6 METHOD]`.
        case iface(name: String, family: String?, method: String?)
        case source(String)
        case sourceDirectory(String)
        /// `mapping` and anything else ifupdown accepts that we carry as is.
        case other(String)
    }

    public struct Stanza: LosslessBlock {
        public var kind: StanzaKind
        public var options: [Option]
        /// Comment lines inside an iface stanza, without the `#`.
        public var comments: [String]
        public var location: SourceLocation
        public var origin: Origin?

        public init(kind: StanzaKind, options: [Option] = [], comments: [String] = [],
                    location: SourceLocation = SourceLocation(file: "", line: 0)) {
            self.kind = kind
            self.options = options
            self.comments = comments
            self.location = location
        }

        public func values(_ key: String) -> [String] {
            let keys = InterfacesFile.spellings(of: key)
            return options.filter { keys.contains($0.key) }.map(\.value)
        }

        public subscript(key: String) -> String? { values(key).last }

        public func option(_ key: String) -> Option? {
            let keys = InterfacesFile.spellings(of: key)
            return options.last { keys.contains($0.key) }
        }

        public static func == (lhs: Stanza, rhs: Stanza) -> Bool {
            lhs.kind == rhs.kind && lhs.canonicalLines() == rhs.canonicalLines()
        }

        public func hash(into hasher: inout Hasher) { hasher.combine(kind) }

        public func canonicalLines() -> [String] {
            switch kind {
            case .allow(let cls, let names):
                return ["\(cls == "auto" ? "auto" : "allow-" + cls) \(names.joined(separator: " "))"]
            case .source(let path): return ["source \(path)"]
            case .sourceDirectory(let path): return ["source-directory \(path)"]
            case .other(let line): return [line] + options.map { "\t\($0.key) \($0.value)" }
            case .iface(let name, let family, let method):
                var header = "iface \(name)"
                if let family { header += " \(family) \(method ?? "manual")" }
                return [header] + options.map { "\t\($0.key) \($0.value)" } + comments.map { "#\($0)" }
            }
        }
    }

    public var file: String
    public var elements: [DocumentElement<Stanza>]
    public var trailingNewline: Bool

    public var stanzas: [Stanza] {
        elements.compactMap { if case .block(let s) = $0 { s } else { nil } }
    }

    /// ifupdown2 accepts `bridge_ports` and `bridge-ports` alike.
    public static func spellings(of key: String) -> [String] {
        let dashed = key.replacingOccurrences(of: "_", with: "-")
        let underscored = key.replacingOccurrences(of: "-", with: "_")
        return dashed == underscored ? [key] : [dashed, underscored]
    }

    /// The canonical (dashed) spelling ifupdown2 documents.
    public static func canonicalKey(_ key: String) -> String {
        if key.hasPrefix("ovs_") || key.hasPrefix("post-") || key.hasPrefix("pre-") { return key }
        return key.replacingOccurrences(of: "_", with: "-")
    }

    static let stanzaKeywords: Set<String> = ["iface", "mapping", "auto", "source", "source-directory"]

    static func isStanzaStart(_ line: Substring) -> Bool {
        let trimmed = line[line.firstNonBlankIndex...]
        let word = trimmed.prefix { $0 != " " && $0 != "\t" }
        return stanzaKeywords.contains(String(word)) || word.hasPrefix("allow-")
    }

    public static func parse(_ text: String, file: String) -> (InterfacesFile, [Diagnostic]) {
        let (lines, trailing) = splitKeepingTrailingNewline(text)
        var elements: [DocumentElement<Stanza>] = []
        var diagnostics: [Diagnostic] = []
        func location(_ i: Int, _ column: Int = 1) -> SourceLocation { SourceLocation(file: file, line: i + 1, column: column) }
        var index = 0
        while index < lines.count {
            let raw = lines[index]
            let line = raw.withoutCarriageReturn
            let start = line.firstNonBlankIndex
            if line.isBlank || line[start] == "#" {
                elements.append(.trivia(String(raw)))
                index += 1
                continue
            }
            let words = line[start...].split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            let keyword = words[0]
            let headerIndex = index
            index += 1
            var stanza: Stanza
            switch keyword {
            case "auto", "allow-auto":
                stanza = Stanza(kind: .allow(class: "auto", interfaces: Array(words.dropFirst())), location: location(headerIndex))
                if words.count < 2 { diagnostics.append(.error(location(headerIndex), "'\(keyword)' names no interface", code: .missingValue)) }
            case _ where keyword.hasPrefix("allow-"):
                stanza = Stanza(kind: .allow(class: String(keyword.dropFirst(6)), interfaces: Array(words.dropFirst())),
                                location: location(headerIndex))
                if words.count < 2 { diagnostics.append(.error(location(headerIndex), "'\(keyword)' names no interface", code: .missingValue)) }
            case "source":
                stanza = Stanza(kind: .source(words.dropFirst().joined(separator: " ")), location: location(headerIndex))
            case "source-directory":
                stanza = Stanza(kind: .sourceDirectory(words.dropFirst().joined(separator: " ")), location: location(headerIndex))
            case "iface":
                if words.count != 2 && words.count != 4 {
                    diagnostics.append(.error(location(headerIndex), "expected 'iface NAME [inet|inet6 METHOD]', got '\(line.trimmed)'",
                                              code: .syntax))
                }
                let family = words.count >= 4 ? words[2] : nil
                if let family, family != "inet", family != "inet6" {
                    diagnostics.append(.error(location(headerIndex, line.column(of: line.range(of: family)?.lowerBound ?? start)),
                                              "unknown address family '\(family)' (expected inet or inet6)", code: .invalidValue))
                }
                stanza = Stanza(kind: .iface(name: words.count > 1 ? words[1] : "", family: family,
                                             method: words.count >= 4 ? words[3] : nil),
                                location: location(headerIndex))
            case "mapping":
                stanza = Stanza(kind: .other(String(line)), location: location(headerIndex))
            default:
                diagnostics.append(.error(location(headerIndex, line.column(of: start)),
                                          "unknown stanza '\(keyword)' (expected auto, allow-*, iface, mapping, source or source-directory)",
                                          code: .unknownKey))
                elements.append(.trivia(String(raw)))
                continue
            }
            // Option lines follow iface and mapping stanzas up to a blank line or the next stanza.
            if case .allow = stanza.kind {} else if case .source = stanza.kind {} else if case .sourceDirectory = stanza.kind {} else {
                while index < lines.count {
                    let body = lines[index].withoutCarriageReturn
                    if isStanzaStart(body) { break }
                    if body.isBlank {
                        // ifupdown keeps reading options after blank lines until the
                        // next stanza; an indented option line continues this one.
                        var next = index
                        while next < lines.count, lines[next].withoutCarriageReturn.isBlank { next += 1 }
                        guard next < lines.count else { break }
                        let following = lines[next].withoutCarriageReturn
                        let indented = following.first == " " || following.first == "\t"
                        if !indented || isStanzaStart(following) || following.trimmed.hasPrefix("#") { break }
                        index = next
                        continue
                    }
                    let keyStart = body.firstNonBlankIndex
                    if body[keyStart] == "#" {
                        stanza.comments.append(String(body[body.index(after: keyStart)...]).trimmedTrailing)
                        index += 1
                        continue
                    }
                    let content = body[keyStart...]
                    let keyEnd = content.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? content.endIndex
                    let rest = content[keyEnd...]
                    let valueStart = rest.firstNonBlankIndex
                    let value = String(rest[valueStart...]).trimmedTrailing
                    if value.isEmpty {
                        diagnostics.append(.error(location(index, body.column(of: keyStart)), "option '\(content[..<keyEnd])' has no value",
                                                  code: .missingValue))
                    }
                    stanza.options.append(Option(key: String(content[..<keyEnd]), value: value,
                                                 location: location(index, body.column(of: keyStart)),
                                                 valueColumn: body.column(of: valueStart)))
                    index += 1
                }
            }
            stanza.stamp(rawLines: Array(lines[headerIndex..<index]), location: stanza.location)
            elements.append(.block(stanza))
        }
        return (InterfacesFile(file: file, elements: elements, trailingNewline: trailing), diagnostics)
    }

    public func losslessText() -> String {
        renderLossless(elements, trailingNewline: trailingNewline)
    }

    /// Interfaces brought up at boot (`auto`, `allow-auto`, `allow-hotplug`, `allow-ovs`).
    public var autostart: Set<String> {
        var names: Set<String> = []
        for stanza in stanzas {
            if case .allow(_, let list) = stanza.kind { names.formUnion(list) }
        }
        return names
    }

    /// Every `iface` stanza by interface name (an interface may have one per family).
    public var ifaceStanzas: [String: [Stanza]] {
        var result: [String: [Stanza]] = [:]
        for stanza in stanzas {
            if case .iface(let name, _, _) = stanza.kind { result[name, default: []].append(stanza) }
        }
        return result
    }
}

extension String {
    var trimmedTrailing: String {
        var end = endIndex
        while end > startIndex, self[index(before: end)].isWhitespace { end = index(before: end) }
        return String(self[..<end])
    }
}
