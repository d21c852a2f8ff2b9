import Foundation

/// A tree as it would read after a push: `base` with some files replaced, added or removed (absolute paths), so that
/// validate and plan run on the merged tree without anything written.
public struct OverlayTreeSource: TreeSource {
    let base: any TreeSource
    /// Absolute path → new bytes, or nil for a file the push deletes.
    let files: [String: Data?]
    /// Directories the overlay adds names to (absolute path → names).
    let added: [String: Set<String>]
    let removed: [String: Set<String>]

    public init(base: any TreeSource, files: [String: Data?]) {
        self.base = base
        self.files = files
        var added: [String: Set<String>] = [:]
        var removed: [String: Set<String>] = [:]
        for (path, data) in files {
            var child = path
            var parent = (path as NSString).deletingLastPathComponent
            let name = (path as NSString).lastPathComponent
            if data == nil {
                removed[parent, default: []].insert(name)
                continue
            }
            // Every directory on the way down gets its child's name.
            while !child.isEmpty && child != "/" {
                added[parent, default: []].insert((child as NSString).lastPathComponent)
                child = parent
                parent = (parent as NSString).deletingLastPathComponent
                if child == parent { break }
            }
        }
        self.added = added
        self.removed = removed
    }

    public func fileExists(atPath path: String) -> Bool {
        if let replaced = files[path] { return replaced != nil }
        return added[path] != nil || base.fileExists(atPath: path)
    }

    public func contents(atPath path: String) -> Data? {
        if let replaced = files[path] { return replaced }
        return base.contents(atPath: path)
    }

    public func contentsOfDirectory(atPath path: String) -> [String]? {
        let names = base.contentsOfDirectory(atPath: path)
        guard added[path] != nil || removed[path] != nil else { return names }
        let merged = Set(names ?? []).union(added[path] ?? []).subtracting(removed[path] ?? [])
        return merged.sorted()
    }

    public func isSymbolicLink(atPath path: String) -> Bool { files[path] == nil && base.isSymbolicLink(atPath: path) }
}
