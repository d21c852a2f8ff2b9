import Foundation
import Resources

/// How /etc/pve moved away from what the last push wrote: per file, by hand or by the system (only system-owned
/// values differ: a generated MAC, a snapshot, a lock), deleted, or created by hand since.
public enum PushDrift {
    public enum Change: String, Codable, Sendable {
        case byHand = "changed by hand"
        case bySystem = "changed by the system"
        case deleted = "deleted"
        case created = "created since the push"
    }

    public struct Entry: Codable, Sendable, Equatable {
        public var path: String
        public var change: Change
    }

    /// - Parameters:
    ///   - current: the layout files in /etc/pve now.
    ///   - modified: their modification times, to find files created since the push that no push wrote.
    public static func entries(record: PushRecord, current: [String: Data], modified: [String: Date], root: String) -> [Entry] {
        var entries: [Entry] = []
        for (path, written) in record.files.sorted(by: { $0.key < $1.key }) {
            guard let data = current[path] else {
                entries.append(Entry(path: path, change: .deleted))
                continue
            }
            if PushRecord.digest(data) == written.written { continue }
            entries.append(Entry(path: path, change: managedDigest(path: path, data: data, root: root) == written.managed ? .bySystem : .byHand))
        }
        for (path, date) in modified.sorted(by: { $0.key < $1.key }) where record.files[path] == nil && date > record.pushedAt {
            entries.append(Entry(path: path, change: .created))
        }
        return entries
    }

    /// The digest of the part of a file the repository decides (all of it, but for a guest config's system values).
    public static func managedDigest(path: String, data: Data, root: String) -> String {
        guard let kind = PushLayout.guestKind(of: path), let text = String(data: data, encoding: .utf8) else { return PushRecord.digest(data) }
        let (config, _) = GuestConfig.parse(text, file: root + "/" + path, kind: kind)
        return PushRecord.digest(Data(GuestConfigMerge(kind: kind).managedPart(of: config).utf8))
    }
}
