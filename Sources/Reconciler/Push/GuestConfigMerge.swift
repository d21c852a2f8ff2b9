import Resources

/// The three-way merge of one guest config a push writes: the repository's file, what /etc/pve holds now, and what the
/// last push set of the system's values. Values the repository sets win; values the system owns (declared in the
/// kind's spec, `system_owned`) that the repository does not set are kept from /etc/pve, unless the last push set
/// that very value itself (then the repository withdrew it). The repository's lines keep their line numbers wherever
/// possible, and `sourceLines` maps every merged line back to the repository's, so errors point into the repository.
public struct GuestConfigMerge: Sendable {
    public struct Result: Sendable, Equatable {
        public var text: String
        /// Merged line (0-based) → the repository's line (1-based), nil for a line kept from /etc/pve.
        public var sourceLines: [Int?]
        /// The system-owned values the repository itself sets (key → value), recorded for the next push's merge.
        public var repositorySystemValues: [String: String]
        /// What was kept from /etc/pve, for the push's report (`net0 macaddr`, `snapshot before-upgrade`).
        public var kept: [String]
    }

    public let kind: GuestConfig.Kind
    let owned: SystemOwnedSpec
    let nicFormat: FormatSpec?

    public init(kind: GuestConfig.Kind) {
        self.kind = kind
        let spec = Specs.guest(kind)
        owned = spec.systemOwned ?? SystemOwnedSpec(keys: [], properties: [:], sections: [])
        nicFormat = spec.formats["net"]
    }

    /// - Parameters:
    ///   - repository: the file as the repository holds it.
    ///   - current: the file in /etc/pve, parsed (nil when there is none).
    ///   - lastPushed: the system-owned values the last push took from the repository.
    public func merge(repository text: String, file: String, current: GuestConfig?, lastPushed: [String: String]) -> Result {
        let (repository, _) = GuestConfig.parse(text, file: file, kind: kind)
        // By "\n" byte, as the parser numbers lines (Swift would take "\r\n" as one Character, no line break).
        var lines = splitLines(text).map(String.init)
        let trailingNewline = lines.last == ""
        if trailingNewline { lines.removeLast() }
        var rows: [(text: String, source: Int?)] = lines.enumerated().map { ($0.element, $0.offset + 1) }
        let repositoryMain = repository.main
        var repositorySystemValues: [String: String] = [:]
        for entry in repositoryMain.effectiveEntries where owned.ownsKey(entry.key) { repositorySystemValues[entry.key] = entry.value }
        guard let current else {
            return Result(text: text, sourceLines: rows.map(\.source), repositorySystemValues: repositorySystemValues, kept: [])
        }
        var kept: [String] = []
        let currentMain = current.main

        // Properties the system fills in inside a value the repository sets (a NIC's MAC, the SMBIOS UUID).
        for entry in repositoryMain.effectiveEntries {
            let properties = owned.properties(of: entry.key)
            guard !properties.isEmpty, let currentValue = currentMain[entry.key] else { continue }
            var value = entry.value
            for property in properties {
                guard let merged = keeping(property, from: currentValue, in: value) else { continue }
                value = merged
                kept.append("\(entry.key) \(property)")
            }
            guard value != entry.value, let row = rows.firstIndex(where: { $0.source == entry.location.line }) else { continue }
            rows[row].text = "\(entry.key): \(value)"
        }

        // Whole keys the system wrote and the repository does not set, at the end of the main section.
        var insertions: [String] = []
        for entry in currentMain.effectiveEntries where repositoryMain[entry.key] == nil && isSystemWritten(entry) {
            if lastPushed[entry.key] == entry.value { continue }
            insertions.append("\(entry.key): \(entry.value)")
            kept.append(entry.key)
        }
        if !insertions.isEmpty {
            let firstSection = repository.sections.filter { $0.role != .main }.map(\.location.line).min()
            var at = firstSection.flatMap { line in rows.firstIndex { $0.source == line } } ?? rows.count
            while at > 0, rows[at - 1].text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { at -= 1 }
            rows.insert(contentsOf: insertions.map { ($0, nil) }, at: at)
        }

        // Sections the system wrote ([PENDING], snapshots, cloud-init's) that the repository does not have, after it.
        let repositoryRoles = Set(repository.sections.map(\.role))
        for section in current.sections where !repositoryRoles.contains(section.role) && ownsSection(section.role) {
            let sectionLines = splitLines(section.losslessText()).map(String.init)
            if rows.last.map({ !$0.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) ?? false { rows.append(("", nil)) }
            rows.append(contentsOf: sectionLines.map { ($0, nil) })
            kept.append(Self.describe(section.role))
        }
        let merged = rows.map(\.text).joined(separator: "\n") + (trailingNewline || rows.count > lines.count ? "\n" : "")
        // Proxmox (and apply) rewrite a config in their order: when the merge says what /etc/pve says, in another order
        // or spelling of lines, /etc/pve's bytes stay (no rewrite back and forth).
        let (mergedConfig, _) = GuestConfig.parse(merged, file: file, kind: kind)
        if mergedConfig.canonicalText(spec: nil) == current.canonicalText(spec: nil) {
            let text = current.losslessText()
            return Result(text: text, sourceLines: [], repositorySystemValues: repositorySystemValues, kept: kept)
        }
        return Result(text: merged, sourceLines: rows.map(\.source), repositorySystemValues: repositorySystemValues, kept: kept)
    }

    /// A whole key of the system's: declared so (`lock`, `vmgenid`), or a key holding nothing but system-filled
    /// properties (`smbios1: uuid=…`, which Proxmox adds when a VM has none).
    private func isSystemWritten(_ entry: GuestConfig.Entry) -> Bool {
        if owned.ownsKey(entry.key) { return true }
        let properties = owned.properties(of: entry.key)
        guard !properties.isEmpty else { return false }
        return properties.reduce(entry.value) { removing($1, from: $0) }.isEmpty
    }

    /// The config with everything the system owns taken out: what the repository decides. Two files with the same
    /// managed part differ only in what the system wrote.
    public func managedPart(of config: GuestConfig) -> String {
        var lines: [String] = []
        for section in config.sections where !ownsSection(section.role) {
            if let header = section.canonicalLines().first, section.role != .main { lines.append(header) }
            lines += section.description.map { "#" + $0 }
            for entry in section.effectiveEntries where !owned.ownsKey(entry.key) {
                var value = entry.value
                for property in owned.properties(of: entry.key) { value = removing(property, from: value) }
                lines.append("\(entry.key): \(value)")
            }
        }
        return lines.joined(separator: "\n")
    }

    func ownsSection(_ role: GuestConfig.Role) -> Bool {
        switch role {
        case .main, .unknown: false
        case .pending: owned.sections.contains("pending")
        case .snapshot: owned.sections.contains("snapshots")
        case .special(let name): owned.sections.contains("special:" + name)
        }
    }

    static func describe(_ role: GuestConfig.Role) -> String {
        switch role {
        case .main: "main section"
        case .pending: "pending changes"
        case .snapshot(let name): "snapshot \(name)"
        case .special(let name): "[special:\(name)]"
        case .unknown(let name): "[\(name)]"
        }
    }

    // MARK: properties

    /// A NIC's MAC is `MODEL=MAC` (QEMU) or a `macaddr=`/`hwaddr=` property; other properties are `name=value`.
    private func isModel(_ key: String?) -> Bool { key.map { nicFormat?.modelKeys?.contains($0) ?? false } ?? false }

    /// The value of `property` in a property string, the MAC of a QEMU NIC included.
    private func value(of property: String, in text: String) -> String? {
        let parsed = PropertyString(parsing: text)
        if property == "macaddr", let model = parsed.entries.first(where: { isModel($0.key) }) { return model.value }
        return parsed.entries.first { $0.key == property }?.value
    }

    /// `repository` with the system's `property` from `current`, written where the system writes it; nil when the
    /// repository sets the property itself or /etc/pve has none.
    private func keeping(_ property: String, from current: String, in repository: String) -> String? {
        guard value(of: property, in: repository) == nil, let systemValue = value(of: property, in: current) else { return nil }
        // The file as the system left it, when the repository's value is that file without the property.
        if removing(property, from: current) == repository { return current }
        var entries = PropertyString(parsing: repository).entries.map { ($0.key, $0.value) }
        if property == "macaddr", let model = entries.firstIndex(where: { $0.0 == nil && isModel($0.1) }) {
            entries[model] = (entries[model].1, systemValue)
        } else {
            // Where the system put it: first (smbios1's uuid) or after the others.
            let first = PropertyString(parsing: current).entries.first.map { $0.key == property } ?? false
            entries.insert((property, systemValue), at: first ? 0 : entries.count)
        }
        let merged = entries.map { key, value in key.map { "\($0)=\(value)" } ?? value }.joined(separator: ",")
        // A value that cannot carry it (an unclosed quote swallows what follows) does not get it: validation reports it.
        return value(of: property, in: merged) == systemValue ? merged : nil
    }

    private func removing(_ property: String, from text: String) -> String {
        let entries = PropertyString(parsing: text).entries.compactMap { entry -> String? in
            if property == "macaddr", isModel(entry.key) { return entry.key }
            if entry.key == property { return nil }
            return entry.key.map { "\($0)=\(entry.value)" } ?? entry.value
        }
        return entries.joined(separator: ",")
    }
}
