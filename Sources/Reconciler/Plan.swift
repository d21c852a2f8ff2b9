import Foundation
import Resources

/// A file position as it appears in plans (`path:line`).
public struct SourceReference: Codable, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int

    public init(_ location: SourceLocation) {
        file = location.file
        line = location.line
    }

    public var description: String { "\(file):\(line)" }
}

/// One attribute that changes: `mtu 1500 → 9000 (live)`.
public struct PlannedChange: Codable, Hashable, Sendable {
    public var field: String
    public var old: String?
    public var new: String?
    public var changeClass: ChangeClass
    public var source: SourceReference?

    public init(field: String, old: String?, new: String?, changeClass: ChangeClass, source: SourceLocation? = nil) {
        self.field = field
        self.old = old
        self.new = new
        self.changeClass = changeClass
        self.source = source.map(SourceReference.init)
    }

    enum CodingKeys: String, CodingKey {
        case field, old, new, source
        case changeClass = "class"
    }
}

/// What happens to one resource.
public struct ResourcePlan: Codable, Hashable, Sendable {
    public enum Action: String, Codable, Hashable, Sendable {
        case create, update, replace, delete
        /// Cannot be applied (a missing device, a frozen file); the reason is in `message`.
        case blocked
        /// This node cannot have it (a missing tool, kernel feature or mount);
        /// reported, not an error, and nothing is done.
        case unavailable
        /// Changes that take effect only when the guest restarts: `apply`
        /// leaves them (exit 0) unless told to restart the guest.
        case pending
    }

    public var id: String
    public var kind: String
    public var name: String
    public var action: Action
    public var source: SourceReference?
    public var changes: [PlannedChange]
    /// The operations apply will run, in order, for people to read.
    public var operations: [String]
    public var message: String?

    public init(kind: String, name: String, action: Action, source: SourceLocation?, changes: [PlannedChange],
                operations: [String] = [], message: String? = nil) {
        self.id = "\(kind)/\(name)"
        self.kind = kind
        self.name = name
        self.action = action
        self.source = source.map(SourceReference.init)
        self.changes = changes
        self.operations = operations
        self.message = message
    }
}

/// A deterministic, reviewable artifact: what `apply` would do, and a digest
/// of every input it was computed from.
///
/// JSON schema (`format_version` 1): `{format_version, node, inputs: {path:
/// sha256}, resources: [{id, kind, name, action, source: {file, line}?,
/// changes: [{field, old?, new?, class, source?}], operations: [string],
/// message?}], summary: {create, update, replace, delete, blocked, unavailable},
/// notes?: [string]}`.
/// Resources are sorted by id; keys are sorted.
public struct Plan: Codable, Hashable, Sendable {
    public struct Summary: Codable, Hashable, Sendable {
        public var create = 0
        public var update = 0
        public var replace = 0
        public var delete = 0
        public var blocked = 0
        public var unavailable = 0
        public var pending = 0

        enum CodingKeys: String, CodingKey { case create, update, replace, delete, blocked, unavailable, pending }

        public init() {}

        // Plans saved before `pending` existed have no such key.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            for (key, path) in [(CodingKeys.create, \Summary.create), (.update, \.update), (.replace, \.replace), (.delete, \.delete),
                                (.blocked, \.blocked), (.unavailable, \.unavailable), (.pending, \.pending)] {
                self[keyPath: path] = try container.decodeIfPresent(Int.self, forKey: key) ?? 0
            }
        }
    }

    public var formatVersion = 1
    public var node: String
    public var inputs: [String: String]
    public var resources: [ResourcePlan]
    public var summary: Summary
    /// What a reader should know beside the changes: rules left out with
    /// their file:line, values the plan derived (the firewall's local_network).
    public var notes: [String]?

    enum CodingKeys: String, CodingKey {
        case node, inputs, resources, summary, notes
        case formatVersion = "format_version"
    }

    public init(node: String, inputs: [String: String], resources: [ResourcePlan], notes: [String] = []) {
        self.notes = notes.isEmpty ? nil : notes
        self.node = node
        self.inputs = inputs
        self.resources = resources.sorted { $0.id < $1.id }
        var summary = Summary()
        for resource in resources {
            switch resource.action {
            case .create: summary.create += 1
            case .update: summary.update += 1
            case .replace: summary.replace += 1
            case .delete: summary.delete += 1
            case .blocked: summary.blocked += 1
            case .unavailable: summary.unavailable += 1
            case .pending: summary.pending += 1
            }
        }
        self.summary = summary
    }

    /// The resources `apply` changes; blocked, unavailable and restart-pending ones are not.
    public var changingResources: [ResourcePlan] { resources.filter { ![.blocked, .unavailable, .pending].contains($0.action) } }

    /// Whether `apply` has something to do; changes pending a guest restart do not count.
    public var hasChanges: Bool { !changingResources.isEmpty }

    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self)
    }

    public static func load(_ data: Data) throws -> Plan {
        try JSONDecoder().decode(Plan.self, from: data)
    }

    /// The text a person reads: one block per resource, `+` create, `~`
    /// change, `-` delete, each change with its class and source line.
    public func render(colors: Bool) -> String {
        func paint(_ text: String, _ code: String) -> String { colors ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
        var out = ""
        for note in notes ?? [] { out += paint("note: ", "36") + note + "\n" }
        if !(notes ?? []).isEmpty { out += "\n" }
        if !hasChanges && summary.blocked == 0 && summary.unavailable == 0 && summary.pending == 0 {
            return out + "No changes. The system matches the desired state.\n"
        }
        for resource in resources {
            let (symbol, color): (String, String) = switch resource.action {
            case .create: ("+", "32")
            case .update: ("~", "33")
            case .replace: ("-/+", "35")
            case .delete: ("-", "31")
            case .blocked: ("!", "31;1")
            case .unavailable: ("?", "90")
            case .pending: ("~", "90")
            }
            var header = "\(paint(symbol, color)) \(paint(resource.id, "1"))"
            header += resource.action == .pending ? " (pending: takes effect at the next restart)" : " (\(resource.action.rawValue))"
            if let source = resource.source { header += "  " + paint(source.description, "36") }
            out += header + "\n"
            if let message = resource.message { out += "    " + paint(message, color) + "\n" }
            for change in resource.changes {
                let line: String
                switch (change.old, change.new) {
                case (nil, let new?): line = "\(paint("+", "32")) \(change.field): \(new)"
                case (let old?, nil): line = "\(paint("-", "31")) \(change.field): \(old)"
                case (let old?, let new?): line = "\(paint("~", "33")) \(change.field): \(old) → \(new)"
                case (nil, nil): line = "\(paint("~", "33")) \(change.field)"
                }
                var suffix = "  [\(change.changeClass.rawValue)]"
                if let source = change.source { suffix += "  " + paint("line \(source.line)", "36") }
                out += "    \(line)\(suffix)\n"
            }
        }
        out += "\nPlan: \(summary.create) to create, \(summary.update) to change, \(summary.replace) to replace, \(summary.delete) to delete"
        if summary.blocked > 0 { out += ", " + paint("\(summary.blocked) blocked", "31;1") }
        if summary.unavailable > 0 { out += ", \(summary.unavailable) unavailable on this node" }
        if summary.pending > 0 { out += ", \(summary.pending) pending a guest restart (pvectl apply --restart)" }
        out += ".\n"
        return out
    }
}
