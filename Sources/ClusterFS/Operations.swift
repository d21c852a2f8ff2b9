import Crypto
import Foundation

/// Who made a change and when: the writer's corosync node id (0 in local mode) and the change's time, which every
/// node applies as given, so that replicas apply the same operations to the same result.
public struct Stamp: Sendable, Hashable {
    public var writer: UInt32
    public var time: UInt32

    public init(writer: UInt32, time: UInt32) {
        self.writer = writer
        self.time = time
    }
}

/// A change to the tree, as the file system applies it and as cluster mode will multicast it: the original's dcdb
/// operations (write, mkdir, delete, rename, create, mtime), with truncate as its own case.
public enum TreeOperation: Sendable, Hashable {
    case create(String)
    case mkdir(String)
    case write(String, offset: Int, data: [UInt8])
    case truncate(String, size: Int)
    case unlink(String)
    case rmdir(String)
    case rename(String, to: String)
    /// nil: now (the stamp's time).
    case mtime(String, UInt32?)
    /// Releases the lock directory `path` if it is still the entry whose `digest` the lowest node found expired
    /// (a refresh or a new lock since then keeps it).
    case unlock(String, digest: [UInt8])

    /// Whether the operation changes (or moves something onto) `path`.
    /// Asked of every change applied (is it corosync.conf's?): answered without building `paths`.
    public func touches(_ path: String) -> Bool {
        if case .rename(_, let to) = self, to == path { return true }
        return firstPath == path
    }

    enum Code: UInt8 {
        case create = 1, mkdir, write, truncate, unlink, rmdir, rename, mtime, unlock
    }

    public struct DecodeError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Little-endian (`WireWriter`): a code byte, then per case its fields; strings and data as a u32 length and the bytes.
    public func encoded() -> [UInt8] {
        var writer = WireWriter()
        encode(into: &writer)
        return writer.bytes
    }

    /// At least the bytes `encode(into:)` appends (17: the most any case's fixed fields take), to size a message before
    /// it is written.
    var encodedSizeEstimate: Int {
        switch self {
        case .write(let path, _, let data): 17 + path.utf8.count + data.count
        case .rename(let from, let to): 17 + from.utf8.count + to.utf8.count
        case .unlock(let path, let digest): 17 + path.utf8.count + digest.count
        default: 17 + firstPath.utf8.count
        }
    }

    /// Appended to a message being written (a change's header first), not built apart and copied in.
    func encode(into writer: inout WireWriter) {
        switch self {
        case .create(let path): writer.u8(Code.create.rawValue); writer.text(path)
        case .mkdir(let path): writer.u8(Code.mkdir.rawValue); writer.text(path)
        case .write(let path, let offset, let data):
            writer.u8(Code.write.rawValue)
            writer.text(path)
            writer.u64(UInt64(offset))
            writer.blob(data)
        case .truncate(let path, let size): writer.u8(Code.truncate.rawValue); writer.text(path); writer.u64(UInt64(size))
        case .unlink(let path): writer.u8(Code.unlink.rawValue); writer.text(path)
        case .rmdir(let path): writer.u8(Code.rmdir.rawValue); writer.text(path)
        case .rename(let from, let to): writer.u8(Code.rename.rawValue); writer.text(from); writer.text(to)
        case .mtime(let path, let time):
            writer.u8(Code.mtime.rawValue)
            writer.text(path)
            writer.u8(time == nil ? 0 : 1)
            writer.u32(time ?? 0)
        case .unlock(let path, let digest): writer.u8(Code.unlock.rawValue); writer.text(path); writer.blob(digest)
        }
    }

    /// The operation in `bytes`; anything short, too long, unknown or trailing is an error, never a trap.
    public init(decoding bytes: [UInt8]) throws {
        var reader = WireReader(bytes)
        try self.init(reading: &reader)
    }

    /// The operation in the rest of `reader`'s message (a delivered change, decoded where it lies): it must end there.
    init(reading reader: inout WireReader) throws {
        func size() throws -> Int {
            let value = try reader.u64()
            guard value <= UInt64(Int32.max) else { throw DecodeError(description: "an offset or size of \(value)") }
            return Int(value)
        }
        do {
            guard let code = Code(rawValue: try reader.u8()) else { throw DecodeError(description: "an unknown operation") }
            switch code {
            case .create: self = .create(try reader.text())
            case .mkdir: self = .mkdir(try reader.text())
            case .write: self = .write(try reader.text(), offset: try size(), data: try reader.blob())
            case .truncate: self = .truncate(try reader.text(), size: try size())
            case .unlink: self = .unlink(try reader.text())
            case .rmdir: self = .rmdir(try reader.text())
            case .rename: self = .rename(try reader.text(), to: try reader.text())
            case .mtime:
                let path = try reader.text()
                let given = try reader.u8()
                let time = try reader.u32()
                guard given <= 1 else { throw DecodeError(description: "an mtime flag of \(given)") }
                self = .mtime(path, given == 1 ? time : nil)
            case .unlock: self = .unlock(try reader.text(), digest: try reader.blob())
            }
        } catch let failure as WireReader.Failure {
            throw DecodeError(description: failure.description)
        }
        guard reader.isAtEnd else { throw DecodeError(description: "\(reader.remaining) trailing bytes") }
        for path in paths where !Self.isValidPath(path) {
            throw DecodeError(description: "a path no mount can name (a NUL byte, or a . or .. component): \(path.debugDescription)")
        }
    }

    /// The paths the operation names.
    var paths: [String] {
        if case .rename(let from, let to) = self { [from, to] } else { [firstPath] }
    }

    /// The path the operation acts on (a rename's source).
    private var firstPath: String {
        switch self {
        case .create(let path), .mkdir(let path), .write(let path, _, _), .truncate(let path, _), .unlink(let path), .rmdir(let path),
             .mtime(let path, _), .unlock(let path, _), .rename(let path, _):
            path
        }
    }

    /// A path a kernel could hand the mount: no NUL byte (SQLite would keep the name only up to it, and two entries would
    /// share one name on disk), no "." or ".." component (the kernel resolves those itself). Another node's change is
    /// checked here, before anything of it is applied.
    static func isValidPath(_ path: String) -> Bool {
        ClusterFileSystem.forEachName(in: path) { ClusterFileSystem.isValidName(utf8: $0) }
    }
}

/// The whole tree as rows: what a node in sync hands to one that lags.
public struct TreeSnapshot: Sendable, Hashable {
    public struct Row: Sendable, Hashable {
        public var inode: UInt64
        public var parent: UInt64
        public var version: UInt64
        public var writer: UInt32
        public var mtime: UInt32
        public var type: UInt8
        public var name: String
        public var data: [UInt8]
    }

    public var version: UInt64
    public var mtime: UInt32
    /// Every entry but the root, by inode.
    public var rows: [Row]

    /// SHA-256 over the version and every row in inode order (inode, parent, version, writer, mtime, type, name, data):
    /// equal on two nodes exactly when their trees, inode numbers included, are equal.
    public var digest: String { digestBytes.map { String(format: "%02x", $0) }.joined() }

    public var digestBytes: [UInt8] {
        var hasher = SHA256()
        func add<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { hasher.update(bufferPointer: $0) } }
        add(version)
        for row in rows {
            add(row.inode)
            add(row.parent)
            add(row.version)
            add(row.writer)
            add(row.mtime)
            add(row.type)
            add(UInt32(row.name.utf8.count))
            hasher.update(data: Array(row.name.utf8))
            add(UInt32(row.data.count))
            hasher.update(data: row.data)
        }
        return Array(hasher.finalize())
    }
}
