import ClusterFS
import Foundation
import Reconciler

/// Reads a pmxcfs tree through its IPC service instead of the FUSE mount:
/// one request per file, no FUSE round trips. Directory listings the desired
/// state needs (nodes, guest configs, guest firewall files) come from the
/// guest list. Paths outside the mount (the interfaces file) are plain files.
struct IPCTreeSource: TreeSource, @unchecked Sendable {
    // @unchecked: the cache is guarded by its lock; the client locks itself.
    let root: String
    let client: IPCClient
    let node: String
    let guests: [(vmid: Int, node: String, type: String)]
    private let files = FileTreeSource()
    private let cache = Cache()

    final class Cache: @unchecked Sendable {
        // @unchecked: guarded by lock.
        let lock = NSLock()
        var entries: [String: Data?] = [:]
    }

    /// Connects when `root` is a pmxcfs mount and its service answers.
    init?(root: String, service: String, node: String) {
        let prefix = root.hasSuffix("/") ? String(root.dropLast()) : root
        guard FileManager.default.fileExists(atPath: prefix + "/.vmlist"), let client = try? IPCClient(service: service) else { return nil }
        let (status, payload) = client.request(.getGuestList)
        guard status == 0,
              let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
              let ids = object["ids"] as? [String: [String: Any]] else { return nil }
        self.root = prefix
        self.client = client
        self.node = node
        guests = ids.compactMap { key, value in
            guard let vmid = Int(key), let node = value["node"] as? String, let type = value["type"] as? String else { return nil }
            return (vmid, node, type)
        }
    }

    func relative(_ path: String) -> String? {
        guard path.hasPrefix(root + "/") else { return nil }
        return String(path.dropFirst(root.count + 1))
    }

    func fetch(_ relative: String) -> Data? {
        if let cached = cache.lock.withLock({ cache.entries[relative] }) { return cached }
        let (status, payload) = client.config(relative)
        let data = status == 0 ? Data(payload) : nil
        cache.lock.withLock { cache.entries[relative] = data }
        return data
    }

    func fileExists(atPath path: String) -> Bool {
        guard let relative = relative(path) else { return files.fileExists(atPath: path) }
        return fetch(relative) != nil
    }

    func contents(atPath path: String) -> Data? {
        guard let relative = relative(path) else { return files.contents(atPath: path) }
        return fetch(relative)
    }

    func contentsOfDirectory(atPath path: String) -> [String]? {
        guard let relative = relative(path) else { return files.contentsOfDirectory(atPath: path) }
        let parts = relative.split(separator: "/").map(String.init)
        switch parts.count {
        case 1 where parts[0] == "nodes":
            return Array(Set(guests.map(\.node) + [node])).sorted()
        case 1 where parts[0] == "firewall":
            return ["cluster.fw"] + guests.map { "\($0.vmid).fw" }.sorted()
        case 3 where parts[0] == "nodes":
            let type = parts[2] == "qemu-server" ? "qemu" : parts[2]
            return guests.filter { $0.node == parts[1] && $0.type == type }.map { "\($0.vmid).conf" }.sorted()
        default:
            return nil
        }
    }

    func isSymbolicLink(atPath path: String) -> Bool {
        guard let relative = relative(path) else { return files.isSymbolicLink(atPath: path) }
        return ["local", "qemu-server", "lxc", "openvz"].contains(relative)
    }
}
