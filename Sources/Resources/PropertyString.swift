/// A Proxmox property string such as `virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0,tag=10`
/// or `local-lvm:vm-100-disk-0,size=32G`: comma-separated `key=value` pairs,
/// where one bare value may stand for the format's default key.
public struct PropertyString: Hashable, Sendable, CustomStringConvertible {
    public struct Entry: Hashable, Sendable {
        /// nil for a bare value (the format's default key).
        public var key: String?
        public var value: String
        /// 0-based offset of the entry in the raw string, for column numbers.
        public var offset: Int
    }

    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// Splits on commas that are not inside double quotes. Never fails: a
    /// malformed pair becomes a bare value that validation reports.
    public init(parsing raw: String) {
        // Scalars, not Characters: only ',', '"' and '=' matter, and grapheme
        // breaking would cost more than the rest of the parse.
        var entries: [Entry] = []
        let scalars = raw.unicodeScalars
        var start = scalars.startIndex
        var offset = 0
        var startOffset = 0
        var equals: String.UnicodeScalarView.Index?
        var inQuotes = false
        func flush(upTo end: String.UnicodeScalarView.Index) {
            guard start < end else { return }
            if let eq = equals, eq != start {
                entries.append(Entry(key: String(scalars[start..<eq]), value: String(scalars[scalars.index(after: eq)..<end]), offset: startOffset))
            } else {
                entries.append(Entry(key: nil, value: String(scalars[start..<end]), offset: startOffset))
            }
        }
        var index = scalars.startIndex
        while index < scalars.endIndex {
            let scalar = scalars[index]
            if scalar == "\"" { inQuotes.toggle() }
            if scalar == "=" && equals == nil && !inQuotes { equals = index }
            if scalar == "," && !inQuotes {
                flush(upTo: index)
                start = scalars.index(after: index)
                startOffset = offset + 1
                equals = nil
            }
            index = scalars.index(after: index)
            offset += 1
        }
        flush(upTo: scalars.endIndex)
        self.entries = entries
    }

    public subscript(key: String) -> String? {
        entries.last(where: { $0.key == key })?.value
    }

    /// The bare (default-key) value, if any.
    public var bareValue: String? { entries.first(where: { $0.key == nil })?.value }

    public var description: String {
        entries.map { entry in entry.key.map { "\($0)=\(entry.value)" } ?? entry.value }
            .joined(separator: ",")
    }
}

/// Sizes as Proxmox writes them: a number with an optional K, M, G or T suffix
/// (binary units); a bare number means bytes, except where a format says otherwise.
public enum SizeValue {
    /// Bytes for `32G`, `512M`, `4096` ...; nil when malformed.
    public static func bytes(_ text: String, defaultUnit: UInt64 = 1) -> UInt64? {
        guard let last = text.last else { return nil }
        let multipliers: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
                                                "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40]
        var digits = Substring(text)
        var multiplier = defaultUnit
        if let m = multipliers[last] {
            multiplier = m
            digits = digits.dropLast()
        } else if last == "B" || last == "b" {
            multiplier = 1
            digits = digits.dropLast()
        }
        if let whole = UInt64(digits) {
            let (result, overflow) = whole.multipliedReportingOverflow(by: multiplier)
            return overflow ? nil : result
        }
        if let fraction = Double(digits), fraction >= 0, fraction.isFinite {
            let value = fraction * Double(multiplier)
            return value < Double(UInt64.max) ? UInt64(value) : nil
        }
        return nil
    }
}
