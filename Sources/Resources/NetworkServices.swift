import Foundation

/// The host's service and protocol names (`/etc/services`, `/etc/protocols`), parsed once into a typed table: what
/// getservbyname(3) and getprotobyname(3) answer, without either reaching for the host's files behind the caller's
/// back. The files are read through the tree source with the rest of the desired state, so a plan records their
/// digests like any other input.
public struct NetworkServices: Sendable, Hashable {
    public struct Service: Sendable, Hashable {
        /// The name and its aliases.
        public var names: [String]
        public var port: Int
        public var proto: String
    }

    /// In file order: the first entry that matches wins, as in the C library.
    public private(set) var services: [Service] = []
    /// Protocol names and aliases to numbers.
    public private(set) var protocols: [String: Int] = [:]

    public static let servicesPath = "/etc/services"
    public static let protocolsPath = "/etc/protocols"

    /// Parses the two files' text (nil: the file is missing, and no name resolves).
    public init(services: String?, protocols: String?) {
        for line in Self.lines(services) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard fields.count >= 2 else { continue }
            let portAndProto = fields[1].split(separator: "/", maxSplits: 1).map(String.init)
            guard portAndProto.count == 2, let port = Int(portAndProto[0]), (0...65535).contains(port) else { continue }
            self.services.append(Service(names: [fields[0]] + fields.dropFirst(2), port: port, proto: portAndProto[1]))
        }
        for line in Self.lines(protocols) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard fields.count >= 2, let number = Int(fields[1]), (0...255).contains(number) else { continue }
            for name in [fields[0]] + fields.dropFirst(2) where self.protocols[name] == nil { self.protocols[name] = number }
        }
    }

    /// Lines without comments, skipping empty ones.
    static func lines(_ text: String?) -> [Substring] {
        (text ?? "").split(separator: "\n").compactMap { line in
            let content = line.prefix { $0 != "#" }
            return content.allSatisfy(\.isWhitespace) ? nil : content
        }
    }

    /// getservbyname(name, proto): the first entry named `name` (or with it as an alias) for `proto`, any protocol when nil.
    public func port(named name: String, proto: String?) -> Int? {
        services.first { $0.names.contains(name) && (proto == nil || $0.proto == proto) }?.port
    }

    /// getprotobyname(name): the protocol's number.
    public func protocolNumber(named name: String) -> Int? { protocols[name] }
}
