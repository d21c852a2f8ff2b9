/// Booleans read the way Proxmox's parsers store them. Upstream accepts
/// `1/0`, `yes/no`, `on/off` and `true/false` (any case) wherever the schema
/// says boolean, and keeps 1 or 0; a SectionConfig key without a value is 1.
/// Desired state is normalised once on load, from the specs, so every
/// consumer can compare with "1" and a spelling never changes a meaning.
extension BooleanValue {
    /// "1" or "0" for any accepted spelling; nil for text that is not a boolean.
    public static func canonical(_ text: String) -> String? {
        parse(text).map { $0 ? "1" : "0" }
    }
}

extension KindSpec {
    /// A value with its booleans canonical: the value itself when its option
    /// is boolean, the boolean keys of a property string otherwise. Values
    /// that are not booleans are returned unchanged (validation reports them).
    public func canonicalBooleans(key: String, value: String) -> String {
        guard let option = option(key) else { return value }
        switch option.type {
        case .boolean:
            return BooleanValue.canonical(value) ?? value
        case .property:
            guard Self.mayHoldSpelledBoolean(value), let name = option.format, let format = formats[name] else { return value }
            var parsed = PropertyString(parsing: value)
            var changed = false
            for index in parsed.entries.indices {
                let entry = parsed.entries[index]
                guard let key = entry.key ?? format.defaultKey, format.modelKeys?.contains(key) != true,
                      format.keys[key]?.type == .boolean,
                      let canonical = BooleanValue.canonical(entry.value), canonical != entry.value else { continue }
                parsed.entries[index].value = canonical
                changed = true
            }
            return changed ? parsed.description : value
        default:
            return value
        }
    }

    /// Whether a property string may hold a boolean spelled otherwise than 1 or 0: some value (the first, or one after
    /// `=` or `,`) starts with a letter of yes, no, on, off, true or false. Most property strings have none, and are not parsed.
    static func mayHoldSpelledBoolean(_ value: String) -> Bool {
        var atValueStart = true
        for byte in value.utf8 {
            if atValueStart {
                switch byte {
                case UInt8(ascii: " "), UInt8(ascii: "\t"): continue
                case UInt8(ascii: "y"), UInt8(ascii: "Y"), UInt8(ascii: "n"), UInt8(ascii: "N"), UInt8(ascii: "o"), UInt8(ascii: "O"),
                     UInt8(ascii: "t"), UInt8(ascii: "T"), UInt8(ascii: "f"), UInt8(ascii: "F"):
                    return true
                default: atValueStart = false
                }
            }
            if byte == UInt8(ascii: "=") || byte == UInt8(ascii: ",") { atValueStart = true }
        }
        return false
    }
}

extension GuestConfig {
    /// The config with every boolean option and boolean property-string key
    /// canonical (1 or 0), per the kind's spec. Raw `lxc.*` lines and sections
    /// upstream skips are left as written.
    public func withCanonicalBooleans(_ spec: KindSpec) -> GuestConfig {
        var copy = self
        for index in copy.elements.indices {
            guard case .block(var section) = copy.elements[index] else { continue }
            if case .unknown = section.role { continue }
            var changed = false
            for entryIndex in section.entries.indices where !section.entries[entryIndex].isRawLXC {
                let entry = section.entries[entryIndex]
                let canonical = spec.canonicalBooleans(key: entry.key, value: entry.value)
                if canonical != entry.value {
                    section.entries[entryIndex].value = canonical
                    changed = true
                }
            }
            if changed { copy.elements[index] = .block(section) }
        }
        return copy
    }
}
