/// A position in a source file, 1-based, the way editors and compilers print it.
public struct SourceLocation: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int = 1) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }

    public static func < (lhs: SourceLocation, rhs: SourceLocation) -> Bool {
        (lhs.file, lhs.line, lhs.column) < (rhs.file, rhs.line, rhs.column)
    }
}

/// What kind of problem a diagnostic is, for code that acts on it: a code, never the wording, decides.
public struct DiagnosticCode: RawRepresentable, Hashable, Sendable, Codable {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// A line or structure the format's grammar cannot read (no `key: value`, no section header, an unclosed section).
    public static let syntax = DiagnosticCode(rawValue: "syntax")
    /// A file that cannot be read, or whose bytes are not UTF-8.
    public static let unreadableFile = DiagnosticCode(rawValue: "unreadable-file")
    /// A file whose name the format does not take (a guest config not named `<vmid>.conf`); it is ignored.
    public static let fileName = DiagnosticCode(rawValue: "file-name")
    /// A key, option, property or section the format (or that type) does not know.
    public static let unknownKey = DiagnosticCode(rawValue: "unknown-key")
    /// A value of the wrong type, out of range, not one of the allowed values or not matching its pattern.
    public static let invalidValue = DiagnosticCode(rawValue: "invalid-value")
    /// A required key, section or value is absent.
    public static let missingValue = DiagnosticCode(rawValue: "missing-value")
    /// A key, section, id, name, VMID or port given twice.
    public static let duplicate = DiagnosticCode(rawValue: "duplicate")
    /// A line, key or rule that is valid elsewhere but not where it stands (outside any section, a group in a group).
    public static let misplaced = DiagnosticCode(rawValue: "misplaced")
    /// Values that each read well but do not go together (a port without a protocol that has ports, IPv4 with IPv6).
    public static let conflict = DiagnosticCode(rawValue: "conflict")
    /// A name of something that does not exist: a bridge or port, storage, security group, alias, ipset, role, node or guest.
    public static let reference = DiagnosticCode(rawValue: "reference")
    /// A guest's volume that its storage cannot hold: a volume name, content type or size.
    public static let volume = DiagnosticCode(rawValue: "volume")
    /// Valid for Proxmox VE, but not managed by pvectl (yet): what the reconciler does is said in the message.
    public static let unsupported = DiagnosticCode(rawValue: "unsupported")
    /// A change the reconciler will not make as things stand (the host lacks something, data would be lost); the
    /// resource is left as it is.
    public static let blocked = DiagnosticCode(rawValue: "blocked")
    /// A firewall rule line that cannot be read: pve-firewall skips that rule, the rest of its file stands.
    public static let firewallRuleLine = DiagnosticCode(rawValue: "firewall-rule-line")
}

/// One problem found in an input, printed as `path:line:column: error: message`.
public struct Diagnostic: Error, Hashable, Sendable, CustomStringConvertible, Comparable, Codable {
    public enum Severity: String, Sendable, Hashable, Codable {
        case error
        case warning
    }

    public var location: SourceLocation
    public var severity: Severity
    public var message: String
    /// What kind of problem this is, for code (and people filtering output) to act on; not printed.
    public var code: DiagnosticCode

    public init(_ severity: Severity = .error, at location: SourceLocation, _ message: String, code: DiagnosticCode) {
        self.location = location
        self.severity = severity
        self.message = message
        self.code = code
    }

    /// The same diagnostic with a code.
    public func coded(_ code: DiagnosticCode) -> Diagnostic {
        var copy = self
        copy.code = code
        return copy
    }

    public static func error(_ location: SourceLocation, _ message: String, code: DiagnosticCode) -> Diagnostic {
        Diagnostic(.error, at: location, message, code: code)
    }

    public static func warning(_ location: SourceLocation, _ message: String, code: DiagnosticCode) -> Diagnostic {
        Diagnostic(.warning, at: location, message, code: code)
    }

    public var description: String { "\(location): \(severity.rawValue): \(message)" }

    public static func < (lhs: Diagnostic, rhs: Diagnostic) -> Bool {
        (lhs.location, lhs.message) < (rhs.location, rhs.message)
    }
}

extension Array where Element == Diagnostic {
    public var hasErrors: Bool { contains { $0.severity == .error } }
}

/// Splits text at every "\n" byte. Splitting by Character would not work:
/// Swift treats "\r\n" as one Character, so CRLF files would read as a single
/// line. A carriage return stays at the end of its line, so joining the
/// pieces with "\n" gives back the exact text.
public func splitLines(_ text: String) -> [Substring] {
    let scalars = text.unicodeScalars
    var result: [Substring] = []
    var start = scalars.startIndex
    var index = scalars.startIndex
    while index != scalars.endIndex {
        if scalars[index] == "\n" {
            result.append(Substring(scalars[start..<index]))
            start = scalars.index(after: index)
        }
        index = scalars.index(after: index)
    }
    result.append(Substring(scalars[start...]))
    return result
}

extension Substring {
    /// The line without a Windows line ending, for matching; raw text is kept elsewhere.
    var withoutCarriageReturn: Substring {
        last == "\r" ? dropLast() : self
    }

    /// 1-based column of `index` within this substring.
    func column(of index: Substring.Index) -> Int {
        distance(from: startIndex, to: index) + 1
    }
}

extension StringProtocol {
    var trimmed: String {
        var start = startIndex
        var end = endIndex
        while start < end, self[start].isWhitespace { start = index(after: start) }
        while end > start, self[index(before: end)].isWhitespace { end = index(before: end) }
        return String(self[start..<end])
    }

    /// Index of the first non-whitespace character.
    var firstNonBlankIndex: Index {
        var i = startIndex
        while i < endIndex, self[i] == " " || self[i] == "\t" { i = index(after: i) }
        return i
    }

    var isBlank: Bool { allSatisfy { $0 == " " || $0 == "\t" || $0 == "\r" } }
}

// Every parser trims every line: ASCII whitespace is checked by byte, the usual case; a non-ASCII byte at either end
// falls back to Unicode's whitespace (the generic `trimmed`).
extension Substring {
    var trimmed: String {
        let bytes = utf8
        var start = bytes.startIndex
        var end = bytes.endIndex
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0d).contains(byte) }
        while start < end, isSpace(bytes[start]) { start = bytes.index(after: start) }
        while end > start, isSpace(bytes[bytes.index(before: end)]) { end = bytes.index(before: end) }
        if start < end, bytes[start] >= 0x80 || bytes[bytes.index(before: end)] >= 0x80 {
            var unicodeStart = startIndex
            var unicodeEnd = endIndex
            while unicodeStart < unicodeEnd, self[unicodeStart].isWhitespace { unicodeStart = index(after: unicodeStart) }
            while unicodeEnd > unicodeStart, self[index(before: unicodeEnd)].isWhitespace { unicodeEnd = index(before: unicodeEnd) }
            return String(self[unicodeStart..<unicodeEnd])
        }
        return String(self[start..<end])
    }
}

extension String {
    var trimmed: String { self[...].trimmed }
}

extension Array where Element == Diagnostic {
    /// Each finding once, in order: two checks may reach the same one.
    public func saidOnce() -> [Diagnostic] {
        var seen: Set<String> = []
        return filter { seen.insert($0.description).inserted }
    }
}

/// Joins raw lines back into the file text (the inverse of `SourceLines`).
func joinLines(_ lines: [String]) -> String {
    lines.joined(separator: "\n")
}

/// One `key value` line of a format (a guest config entry, an interfaces option, a section property), with where it
/// is and where its value starts, so a diagnostic about the value points at the value. `Value` is `String?` where a
/// format allows a bare key.
public struct KeyValueEntry<Value: Hashable & Sendable>: Hashable, Sendable {
    public var key: String
    public var value: Value
    public var location: SourceLocation
    public var valueColumn: Int

    public init(key: String, value: Value, location: SourceLocation = SourceLocation(file: "", line: 0), valueColumn: Int = 0) {
        self.key = key
        self.value = value
        self.location = location
        self.valueColumn = valueColumn
    }

    public var valueLocation: SourceLocation { SourceLocation(file: location.file, line: location.line, column: valueColumn) }
}

extension KeyValueEntry where Value == String {
    /// Raw `lxc.*` keys of a container config are passed to LXC as they are.
    public var isRawLXC: Bool { key.hasPrefix("lxc.") }
}
