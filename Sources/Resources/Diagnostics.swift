/// A position in a source file, 1-based, the way editors and compilers print it.
public struct SourceLocation: Hashable, Sendable, Comparable, CustomStringConvertible {
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

/// One problem found in an input, printed as `path:line:column: error: message`.
public struct Diagnostic: Error, Hashable, Sendable, CustomStringConvertible, Comparable {
    public enum Severity: String, Sendable, Hashable {
        case error
        case warning
    }

    public var location: SourceLocation
    public var severity: Severity
    public var message: String

    public init(_ severity: Severity = .error, at location: SourceLocation, _ message: String) {
        self.location = location
        self.severity = severity
        self.message = message
    }

    public static func error(_ location: SourceLocation, _ message: String) -> Diagnostic {
        Diagnostic(.error, at: location, message)
    }

    public static func warning(_ location: SourceLocation, _ message: String) -> Diagnostic {
        Diagnostic(.warning, at: location, message)
    }

    public var description: String { "\(location): \(severity.rawValue): \(message)" }

    public static func < (lhs: Diagnostic, rhs: Diagnostic) -> Bool {
        (lhs.location, lhs.message) < (rhs.location, rhs.message)
    }
}

extension Array where Element == Diagnostic {
    public var hasErrors: Bool { contains { $0.severity == .error } }
}

/// The text of a file split into lines so that joining them with "\n" gives
/// the original bytes back. A file ending in a newline yields a last, empty
/// element; a carriage return stays part of its line's raw text.
public struct SourceLines: Sendable {
    public let file: String
    public let lines: [Substring]

    public init(file: String, text: String) {
        self.file = file
        self.lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    }

    /// Line number (1-based) of index `index` in `lines`.
    public func location(_ index: Int, column: Int = 1) -> SourceLocation {
        SourceLocation(file: file, line: index + 1, column: column)
    }

    /// Whether `index` is the empty remainder after a final newline (not a real line).
    public func isTrailingRemainder(_ index: Int) -> Bool {
        index == lines.count - 1 && lines[index].isEmpty
    }
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

/// Joins raw lines back into the file text (the inverse of `SourceLines`).
func joinLines(_ lines: [String]) -> String {
    lines.joined(separator: "\n")
}
