/// Where a parsed block came from, so an unedited block is written back byte
/// for byte and an edited one is rendered canonically without disturbing the
/// lines around it.
public struct Origin: Hashable, Sendable {
    /// The block's exact source lines, joined with "\n" (no trailing newline).
    public var rawText: String
    /// The canonical rendering of the block as parsed; when the block still
    /// renders to this, it has not been edited.
    public var canonicalAtParse: String
    public var location: SourceLocation

    public init(rawText: String, canonicalAtParse: String, location: SourceLocation) {
        self.rawText = rawText
        self.canonicalAtParse = canonicalAtParse
        self.location = location
    }
}

/// A block of a line-oriented file that can render itself canonically.
public protocol LosslessBlock: Hashable, Sendable {
    var origin: Origin? { get set }
    /// Canonical lines for this block, without trailing newline.
    func canonicalLines() -> [String]
}

/// A file as an ordered list of blocks and the lines between them (comments,
/// blank lines, lines the parser could not read), kept verbatim.
public enum DocumentElement<Block: LosslessBlock>: Hashable, Sendable {
    case trivia(String)
    case block(Block)
}

extension LosslessBlock {
    /// Stamps the origin after parsing, recording the canonical form as parsed.
    mutating func stamp(rawLines: [Substring], location: SourceLocation) {
        origin = Origin(rawText: rawLines.joined(separator: "\n"),
                        canonicalAtParse: canonicalLines().joined(separator: "\n"),
                        location: location)
    }

    /// The block's text for a lossless write: its source if unedited.
    public func losslessText() -> String {
        let canonical = canonicalLines().joined(separator: "\n")
        if let origin, origin.canonicalAtParse == canonical { return origin.rawText }
        return canonical
    }
}

/// Renders the elements back to text. Elements are joined by newlines, and
/// `trailingNewline` restores whether the source ended with one.
func renderLossless<Block: LosslessBlock>(_ elements: [DocumentElement<Block>], trailingNewline: Bool) -> String {
    var parts: [String] = []
    parts.reserveCapacity(elements.count)
    for element in elements {
        switch element {
        case .trivia(let text): parts.append(text)
        case .block(let block): parts.append(block.losslessText())
        }
    }
    var text = parts.joined(separator: "\n")
    if trailingNewline && !parts.isEmpty { text += "\n" }
    return text
}

/// Splits text into lines, and tells whether it ended with a newline, so the
/// line list plus that flag reproduce the text exactly.
func splitKeepingTrailingNewline(_ text: String) -> (lines: [Substring], trailingNewline: Bool) {
    var lines = splitLines(text)
    let trailing = lines.count > 1 && lines.last == ""
    if trailing { lines.removeLast() }
    // The empty file has no lines ("\n" has one, empty).
    if !trailing && lines.count == 1 && lines[0].isEmpty { lines = [] }
    return (lines, trailing)
}
