import Foundation

/// The reconciler's own records under `--state-dir` (default
/// `/var/lib/pvectl`): what it applied and created, per kind, so it removes
/// only what it owns and can tell an interrupted apply from a finished one.
public struct StateStore: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    func path(_ name: String) -> String { directory + "/" + name + ".json" }

    public func load<T: Decodable>(_ name: String, as type: T.Type) throws -> T? {
        guard let data = FileManager.default.contents(atPath: path(name)) else { return nil }
        do {
            return try JSONDecoder.state.decode(T.self, from: data)
        } catch {
            throw StateError.corrupt(path(name), "\(error)")
        }
    }

    /// Writes atomically (temporary file + rename) so a crash never leaves half a record.
    public func save<T: Encodable>(_ value: T, as name: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let data = try JSONEncoder.state.encode(value)
        try data.write(to: URL(fileURLWithPath: path(name)), options: .atomic)
    }

    public enum StateError: Error, CustomStringConvertible {
        case corrupt(String, String)
        public var description: String {
            switch self {
            case .corrupt(let path, let reason): "\(path): cannot read the reconciler's state: \(reason)"
            }
        }
    }
}

extension JSONEncoder {
    static var state: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

extension JSONDecoder {
    static var state: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

/// What the network kind remembers per interface.
public struct AppliedInterface: Codable, Hashable, Sendable {
    public enum Status: String, Codable, Hashable, Sendable {
        /// Converged at `generation`.
        case applied
        /// An apply started and did not finish (crash or failure).
        case inFlight = "in-flight"
        case failed
    }

    public var config: DesiredInterface
    /// The reconciler created this device; it may delete it.
    public var created: Bool
    /// Digest of the desired configuration last applied.
    public var generation: String
    public var status: Status
    public var updatedAt: Date
    public var message: String?
}

public struct NetworkRecords: Codable, Hashable, Sendable {
    public var interfaces: [String: AppliedInterface] = [:]
    public init() {}
}

extension DesiredInterface {
    /// A digest of the configuration (not of where it was written).
    public var generation: String {
        var copy = self
        copy.source = nil
        copy.sources = [:]
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let data = (try? encoder.encode(copy)) ?? Data()
        return String(Digest.sha256Hex(data).prefix(16))
    }
}
