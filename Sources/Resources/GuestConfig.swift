/// A guest configuration: `qemu-server/<vmid>.conf` or `lxc/<vmid>.conf`.
///
/// The file is a main section followed by `[PENDING]` (QEMU) or
/// `[pve:pending]` (LXC), `[special:cloudinit]`/`[special:fleecing]` (QEMU) and
/// one section per snapshot. `#` lines are the section's description.
public struct GuestConfig: Hashable, Sendable {
    public enum Kind: String, Sendable, Hashable, CaseIterable {
        case qemu
        case lxc
    }

    /// A `key: value` line.
    public typealias Entry = KeyValueEntry<String>

    public enum Role: Hashable, Sendable {
        case main
        case pending
        case special(String)
        case snapshot(String)
        /// A section upstream skips (e.g. `[special:unknown]`); kept for lossless writes.
        case unknown(String)
    }

    public struct Section: LosslessBlock {
        public var role: Role
        public var kind: Kind
        /// Decoded description lines (the `#` comments).
        public var description: [String]
        public var entries: [Entry]
        public var location: SourceLocation
        public var origin: Origin?

        public init(role: Role, kind: Kind, description: [String] = [], entries: [Entry] = [],
                    location: SourceLocation = SourceLocation(file: "", line: 0)) {
            self.role = role
            self.kind = kind
            self.description = description
            self.entries = entries
            self.location = location
        }

        /// The effective value of a key (the last line wins, as upstream).
        public subscript(key: String) -> String? {
            get { entries.last { $0.key == key }?.value }
            set {
                if let newValue {
                    if let i = entries.lastIndex(where: { $0.key == key }) {
                        entries[i].value = newValue
                    } else {
                        entries.append(Entry(key: key, value: newValue))
                    }
                } else {
                    entries.removeAll { $0.key == key }
                }
            }
        }

        public func entry(_ key: String) -> Entry? { entries.last { $0.key == key } }

        /// One entry per key, the last one for keys given more than once;
        /// raw `lxc.*` lines are all kept, in order.
        public var effectiveEntries: [Entry] {
            var seen: Set<String> = []
            var result: [Entry] = []
            for entry in entries.reversed() {
                if entry.isRawLXC || seen.insert(entry.key).inserted { result.append(entry) }
            }
            return result.reversed()
        }

        var header: String? {
            switch role {
            case .main: nil
            case .pending: kind == .qemu ? "[PENDING]" : "[pve:pending]"
            case .special(let name): "[special:\(name)]"
            case .snapshot(let name): "[\(name)]"
            case .unknown(let name): "[\(name)]"
            }
        }

        public static func == (lhs: Section, rhs: Section) -> Bool {
            lhs.role == rhs.role && lhs.kind == rhs.kind && lhs.canonicalLines() == rhs.canonicalLines()
        }

        public func hash(into hasher: inout Hasher) { hasher.combine(role) }

        /// Upstream's layout: description, then keys sorted, then (LXC) the
        /// raw `lxc.*` lines in their order.
        public func canonicalLines() -> [String] {
            var lines: [String] = []
            if let header { lines.append(header) }
            for line in description { lines.append("#" + DescriptionText.encode(line)) }
            let effective = effectiveEntries
            let plain = effective.filter { !$0.isRawLXC }.sorted { $0.key < $1.key }
            for entry in plain { lines.append("\(entry.key): \(entry.value)") }
            for entry in effective where entry.isRawLXC { lines.append("\(entry.key): \(entry.value)") }
            return lines
        }
    }

    public var file: String
    public var kind: Kind
    public var elements: [DocumentElement<Section>]
    public var trailingNewline: Bool

    public var sections: [Section] {
        elements.compactMap { if case .block(let s) = $0 { s } else { nil } }
    }

    /// The running configuration (the first section).
    public var main: Section {
        get { sections.first { $0.role == .main } ?? Section(role: .main, kind: kind) }
        set {
            for i in elements.indices {
                if case .block(let s) = elements[i], s.role == .main {
                    var updated = newValue
                    updated.origin = s.origin
                    elements[i] = .block(updated)
                    return
                }
            }
            elements.insert(.block(newValue), at: 0)
        }
    }

    public var pending: Section? { sections.last { $0.role == .pending } }

    public var snapshots: [String: Section] {
        var result: [String: Section] = [:]
        for section in sections { if case .snapshot(let name) = section.role { result[name] = section } }
        return result
    }

    /// Keys that `[PENDING]`'s `delete:` asks to remove at the next start.
    public var pendingDeletions: [String] {
        guard let value = pending?["delete"] else { return [] }
        return value.split(whereSeparator: { $0 == "," || $0 == ";" || $0 == " " }).map { $0.hasPrefix("!") ? String($0.dropFirst()) : String($0) }
    }

    public static func kind(forPath path: String) -> Kind? {
        if path.contains("/lxc/") || path.hasPrefix("lxc/") { return .lxc }
        if path.contains("/qemu-server/") || path.hasPrefix("qemu-server/") { return .qemu }
        return nil
    }

    /// The VMID a config file's name carries (`100.conf` → 100).
    public static func vmid(forPath path: String) -> Int? {
        let name = path.split(separator: "/").last ?? ""
        guard name.hasSuffix(".conf") else { return nil }
        return Int(name.dropLast(5))
    }

    /// Parses a guest config. Errors are reported with their position; as
    /// upstream in non-strict mode, the rest of the file is still read.
    public static func parse(_ text: String, file: String, kind: Kind) -> (GuestConfig, [Diagnostic]) {
        let (lines, trailing) = splitKeepingTrailingNewline(text)
        var elements: [DocumentElement<Section>] = []
        var diagnostics: [Diagnostic] = []
        var current = Section(role: .main, kind: kind, location: SourceLocation(file: file, line: 1))
        var currentStart = 0
        var seenRoles: Set<Role> = []
        func location(_ i: Int, _ column: Int = 1) -> SourceLocation { SourceLocation(file: file, line: i + 1, column: column) }

        func close(endingBefore end: Int) {
            // Blank lines between sections belong to neither; keep them as trivia.
            var stop = end
            while stop > currentStart, lines[stop - 1].withoutCarriageReturn.isBlank { stop -= 1 }
            if stop > currentStart || current.role == .main && !current.entries.isEmpty {
                current.stamp(rawLines: Array(lines[currentStart..<stop]), location: current.location)
                elements.append(.block(current))
            }
            for i in stop..<end { elements.append(.trivia(String(lines[i]))) }
        }

        var index = 0
        while index < lines.count {
            let line = lines[index].withoutCarriageReturn
            defer { index += 1 }
            if line.isBlank { continue }
            if line.first == "[", let header = sectionRole(line, kind: kind) {
                close(endingBefore: index)
                currentStart = index
                current = Section(role: header, kind: kind, location: location(index))
                switch header {
                case .unknown(let name):
                    diagnostics.append(.error(location(index), "unknown section '\(name)' is skipped by Proxmox", code: .unknownKey))
                default:
                    if seenRoles.contains(header) {
                        diagnostics.append(.error(location(index), "duplicate section \(current.header ?? "")", code: .duplicate))
                    }
                    seenRoles.insert(header)
                }
                continue
            }
            if line.first == "#" {
                current.description.append(DescriptionText.decode(String(line.dropFirst())))
                continue
            }
            guard let colon = keyEnd(of: line, kind: kind) else {
                diagnostics.append(.error(location(index), "unable to parse config line: '\(line)'", code: .syntax))
                continue
            }
            let key = String(line[..<colon.keyEnd])
            let rest = line[colon.valueStart...]
            let valueStart = rest.firstNonBlankIndex
            let value = rest[valueStart...].trimmed
            let valueColumn = line.column(of: valueStart)
            if key == "description" {
                current.description.append(DescriptionText.decode(value))
                continue
            }
            if value.isEmpty && !key.hasPrefix("lxc.") {
                // Proxmox ignores such a line (with a warning); it never reaches the guest.
                diagnostics.append(.warning(location(index), "'\(key)' has no value; Proxmox ignores this line", code: .missingValue))
                continue
            }
            if key == "delete" && current.role != .pending {
                diagnostics.append(.error(location(index), "property 'delete' is only allowed in the pending section", code: .misplaced))
            }
            current.entries.append(Entry(key: key, value: value, location: location(index), valueColumn: valueColumn))
        }
        close(endingBefore: lines.count)
        return (GuestConfig(file: file, kind: kind, elements: elements, trailingNewline: trailing), diagnostics)
    }

    private static func sectionRole(_ line: Substring, kind: Kind) -> Role? {
        let trimmed = line.trimmed
        guard trimmed.hasPrefix("["), trimmed.hasSuffix("]") else { return nil }
        let name = String(trimmed.dropFirst().dropLast())
        guard !name.contains("]") else { return nil }
        let lower = name.lowercased()
        if kind == .qemu && lower == "pending" { return .pending }
        if kind == .lxc && lower == "pve:pending" { return .pending }
        if kind == .qemu, lower.hasPrefix("special:") {
            let special = String(lower.dropFirst(8))
            return ["cloudinit", "fleecing"].contains(special) ? .special(special) : .unknown(name)
        }
        if let first = name.unicodeScalars.first, first.properties.isAlphabetic, first.isASCII,
           name.count >= 2,
           name.unicodeScalars.allSatisfy({ ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "-" }) {
            return .snapshot(name)
        }
        return .unknown(name)
    }

    /// Finds `key:` (or `lxc.key =`) at the start of a line.
    /// Finds `key:` (or `lxc.key =`) at the start of a line. Works on
    /// Unicode scalars: keys are ASCII, and Character properties are slow.
    private static func keyEnd(of line: Substring, kind: Kind) -> (keyEnd: Substring.Index, valueStart: Substring.Index)? {
        let scalars = line.unicodeScalars
        var i = scalars.startIndex
        guard i < scalars.endIndex, ("a"..."z").contains(scalars[i]) else { return nil }
        let isLXCKey = kind == .lxc && line.hasPrefix("lxc.")
        while i < scalars.endIndex {
            let c = scalars[i]
            let allowed = ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
                || c == "_" || c == "-" || (isLXCKey && c == ".")
            if !allowed { break }
            i = scalars.index(after: i)
        }
        let keyEnd = i
        if isLXCKey {
            var j = i
            while j < scalars.endIndex, scalars[j] == " " || scalars[j] == "\t" { j = scalars.index(after: j) }
            if j < scalars.endIndex, scalars[j] == ":" || scalars[j] == "=" { return (keyEnd, scalars.index(after: j)) }
            return nil
        }
        guard i < scalars.endIndex, scalars[i] == ":" else { return nil }
        return (keyEnd, scalars.index(after: i))
    }

    /// Byte-identical to the input when nothing was edited.
    public func losslessText() -> String {
        renderLossless(elements, trailingNewline: trailingNewline)
    }

    /// The section errors a non-strict parse (Proxmox reading a config to rewrite it) only warns about, as warnings
    /// that say what the rewrite does: an unknown section is dropped, of a repeated section the last one is kept.
    /// `canonicalText` writes exactly that; other diagnostics are returned unchanged.
    public func recoveredByNonStrictParse(_ diagnostics: [Diagnostic]) -> [Diagnostic] {
        var seen: Set<Role> = []
        var outcome: [Int: String] = [:]
        for section in sections {
            if case .unknown = section.role {
                outcome[section.location.line] = "dropped"
            } else if !seen.insert(section.role).inserted {
                outcome[section.location.line] = "the last one is kept"
            }
        }
        return diagnostics.map { diagnostic in
            guard diagnostic.severity == .error, diagnostic.location.file == file,
                  let what = outcome[diagnostic.location.line] else { return diagnostic }
            return .warning(diagnostic.location, diagnostic.message + " (\(what))", code: diagnostic.code)
        }
    }

    /// What Proxmox writes after reading the file non-strictly: values that
    /// fail their type check and unknown sections are dropped, duplicate
    /// sections and keys keep the last one, sections come in upstream's order
    /// (main, pending, special sorted, snapshots sorted).
    public func canonicalText(spec: KindSpec?) -> String {
        var mainSection: Section?
        var pendingSection: Section?
        var specials: [String: Section] = [:]
        var snaps: [String: Section] = [:]
        for var section in sections {
            let isCloudinitSpecial = section.role == .special("cloudinit")
            section.entries = section.effectiveEntries.filter { entry in
                if entry.key == "delete" { return section.role == .pending }
                if isCloudinitSpecial || entry.isRawLXC { return true }
                if GuestValidator.snapshotKeys.contains(entry.key) { return true }
                guard let spec else { return true }
                if section.role == .special("fleecing") { return entry.key == "fleecing-images" }
                return spec.check(key: entry.key, value: entry.value) == nil
            }
            switch section.role {
            case .main: mainSection = section
            case .pending: pendingSection = section
            case .special(let name): specials[name] = section
            case .snapshot(let name): snaps[name] = section
            case .unknown: continue
            }
        }
        var out = ""
        func append(_ section: Section) {
            out += section.canonicalLines().joined(separator: "\n") + "\n"
        }
        let main = mainSection ?? Section(role: .main, kind: kind)
        // Upstream writes the description alone when the main section is empty too.
        if !main.canonicalLines().isEmpty { append(main) }
        if let pendingSection, !pendingSection.entries.isEmpty || !pendingSection.description.isEmpty {
            out += "\n"
            append(pendingSection)
        }
        let hasCloudinitDrive = main.entries.contains { $0.value.contains("cloudinit") && GuestConfig.isDriveKey($0.key) }
        for name in specials.keys.sorted() {
            if name == "cloudinit" && !hasCloudinitDrive { continue }
            out += "\n"
            append(specials[name]!)
        }
        for name in snaps.keys.sorted() {
            out += "\n"
            append(snaps[name]!)
        }
        return out
    }

    /// Disk slots: ide0-3, sata0-5, scsi0-30, virtio0-15, efidisk0, tpmstate0 (QEMU);
    /// rootfs and mp0-255 (LXC).
    public static func isDriveKey(_ key: String) -> Bool {
        for prefix in ["ide", "sata", "scsi", "virtio", "efidisk", "tpmstate", "mp"] {
            if key.hasPrefix(prefix), let n = Int(key.dropFirst(prefix.count)), n >= 0 { return true }
        }
        return key == "rootfs"
    }
}

/// The encoding Proxmox uses for description comments: control characters,
/// bytes above 0x7e and ':' are percent-encoded; decoding undoes any %XX.
public enum DescriptionText {
    public static func encode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if (byte >= 0x20 && byte <= 0x39) || (byte >= 0x3b && byte <= 0x7e) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    public static func decode(_ text: String) -> String {
        guard text.contains("%") else { return text }
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2,
               let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}
