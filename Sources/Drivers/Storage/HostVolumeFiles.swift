import Foundation
import Resources

/// Image files on this host, as `StorageVolumes` needs them: paths resolved, existence, and qcow2 headers read here
/// (the parsing is `StorageVolumes.QCOW2Header`'s).
public struct HostVolumeFiles: StorageVolumes.VolumeFiles, Sendable {
    public init() {}

    public func resolve(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    public func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    public func qcow2Header(_ path: String) -> StorageVolumes.QCOW2Header? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let bytes = try? handle.read(upToCount: StorageVolumes.QCOW2Header.length) else { return nil }
        return StorageVolumes.QCOW2Header([UInt8](bytes))
    }

    public func qcow2BackingFile(_ path: String) -> String? {
        guard let name = qcow2Header(path)?.backingFileName, let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard (try? handle.seek(toOffset: name.offset)) != nil, let data = try? handle.read(upToCount: name.length),
              data.count == name.length else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
