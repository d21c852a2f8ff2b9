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

    /// Whether the operation changes (or moves something onto) `path`.
    public func touches(_ path: String) -> Bool {
        switch self {
        case .create(let target), .mkdir(let target), .write(let target, _, _), .truncate(let target, _), .unlink(let target),
             .rmdir(let target), .mtime(let target, _):
            target == path
        case .rename(let from, let to): from == path || to == path
        }
    }

    enum Code: UInt8 {
        case create = 1, mkdir, write, truncate, unlink, rmdir, rename, mtime
    }

    public struct DecodeError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Little-endian: a code byte, then per case its fields; strings and data as a u32 length and the bytes.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        func blob(_ value: [UInt8]) {
            u32(UInt32(value.count))
            bytes += value
        }
        func text(_ value: String) { blob(Array(value.utf8)) }
        switch self {
        case .create(let path): bytes.append(Code.create.rawValue); text(path)
        case .mkdir(let path): bytes.append(Code.mkdir.rawValue); text(path)
        case .write(let path, let offset, let data): bytes.append(Code.write.rawValue); text(path); u64(UInt64(offset)); blob(data)
        case .truncate(let path, let size): bytes.append(Code.truncate.rawValue); text(path); u64(UInt64(size))
        case .unlink(let path): bytes.append(Code.unlink.rawValue); text(path)
        case .rmdir(let path): bytes.append(Code.rmdir.rawValue); text(path)
        case .rename(let from, let to): bytes.append(Code.rename.rawValue); text(from); text(to)
        case .mtime(let path, let time):
            bytes.append(Code.mtime.rawValue)
            text(path)
            bytes.append(time == nil ? 0 : 1)
            u32(time ?? 0)
        }
        return bytes
    }

    /// The operation in `bytes`; anything short, too long, unknown or trailing is an error, never a trap.
    public init(decoding bytes: [UInt8]) throws {
        var position = 0
        func take(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count >= 0, bytes.count - position >= count else { throw DecodeError(description: "truncated at byte \(position)") }
            defer { position += count }
            return bytes[position..<(position + count)]
        }
        func u32() throws -> UInt32 { try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        func u64() throws -> UInt64 { try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        func blob() throws -> [UInt8] {
            let count = try u32()
            guard count <= UInt32(ClusterFileSystem.maxFileSize) * 2 else { throw DecodeError(description: "a field of \(count) bytes") }
            return Array(try take(Int(count)))
        }
        func text() throws -> String {
            guard let value = String(validating: try blob(), as: UTF8.self) else { throw DecodeError(description: "a path that is not UTF-8") }
            return value
        }
        func size() throws -> Int {
            let value = try u64()
            guard value <= UInt64(Int32.max) else { throw DecodeError(description: "an offset or size of \(value)") }
            return Int(value)
        }
        guard let first = try take(1).first, let code = Code(rawValue: first) else { throw DecodeError(description: "an unknown operation") }
        switch code {
        case .create: self = .create(try text())
        case .mkdir: self = .mkdir(try text())
        case .write:
            let path = try text()
            let offset = try size()
            self = .write(path, offset: offset, data: try blob())
        case .truncate:
            let path = try text()
            self = .truncate(path, size: try size())
        case .unlink: self = .unlink(try text())
        case .rmdir: self = .rmdir(try text())
        case .rename:
            let from = try text()
            self = .rename(from, to: try text())
        case .mtime:
            let path = try text()
            let given = try take(1).first!
            let time = try u32()
            guard given <= 1 else { throw DecodeError(description: "an mtime flag of \(given)") }
            self = .mtime(path, given == 1 ? time : nil)
        }
        guard position == bytes.count else { throw DecodeError(description: "\(bytes.count - position) trailing bytes") }
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
