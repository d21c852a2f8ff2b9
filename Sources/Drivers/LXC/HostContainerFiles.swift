import Foundation
import Reconciler

/// A container's root file system on this host, with chroot semantics: every path is resolved component by component
/// inside `root` (an absolute link target starts again at `root`, `..` stops at it), so a link planted in the
/// container never leads the setup to a host file; writes replace the final component by a rename.
public struct HostContainerFiles: ContainerFiles, Sendable {
    public let root: String
    /// Owner of what is written, for an unprivileged container (its root is 100000 on the host); nil keeps root's.
    public var owner: (uid: uid_t, gid: gid_t)?

    public init(root: String, owner: (uid: uid_t, gid: gid_t)? = nil) {
        self.root = root.hasSuffix("/") && root.count > 1 ? String(root.dropLast()) : root
        self.owner = owner
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The host path of `path` inside the root, links resolved as a chroot would.
    public func hostPath(of path: String) -> String? { resolve(path) }

    /// The host path of `path` inside the root; `followFinal` also follows a link in the last component.
    func resolve(_ path: String, followFinal: Bool = true) -> String? {
        var resolved: [String] = []
        var pending = path.split(separator: "/").map(String.init)
        var links = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            if component == "." { continue }
            if component == ".." {
                if !resolved.isEmpty { resolved.removeLast() }
                continue
            }
            let candidate = root + "/" + (resolved + [component]).joined(separator: "/")
            if pending.isEmpty && !followFinal {
                resolved.append(component)
                break
            }
            var info = stat()
            if lstat(candidate, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK {
                links += 1
                guard links <= 40, let target = Self.readLink(candidate) else { return nil }
                if target.hasPrefix("/") { resolved = [] }
                pending = target.split(separator: "/").map(String.init) + pending
                continue
            }
            resolved.append(component)
        }
        return root + "/" + resolved.joined(separator: "/")
    }

    static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func status(_ path: String, follow: Bool) -> stat? {
        guard let host = resolve(path, followFinal: follow) else { return nil }
        var info = stat()
        return (follow ? stat(host, &info) : lstat(host, &info)) == 0 ? info : nil
    }

    public func contents(_ path: String) -> String? {
        guard isRegularFile(path), let host = resolve(path), let data = FileManager.default.contents(atPath: host) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    public func isRegularFile(_ path: String) -> Bool { status(path, follow: true).map { ($0.st_mode & S_IFMT) == S_IFREG } ?? false }
    public func isDirectory(_ path: String) -> Bool { status(path, follow: true).map { ($0.st_mode & S_IFMT) == S_IFDIR } ?? false }
    public func isSymbolicLink(_ path: String) -> Bool { status(path, follow: false).map { ($0.st_mode & S_IFMT) == S_IFLNK } ?? false }
    public func exists(_ path: String) -> Bool { status(path, follow: false) != nil }

    public func isExecutable(_ path: String) -> Bool {
        guard isRegularFile(path), let host = resolve(path) else { return false }
        return access(host, X_OK) == 0
    }

    public func linkTarget(_ path: String) -> String? {
        guard isSymbolicLink(path), let host = resolve(path, followFinal: false) else { return nil }
        return Self.readLink(host)
    }

    public func entries(_ path: String) -> [String] {
        guard isDirectory(path), let host = resolve(path), let directory = opendir(host) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    public func prefix(_ path: String, count: Int) -> [UInt8]? {
        guard isRegularFile(path), let host = resolve(path), let handle = FileHandle(forReadingAtPath: host) else { return nil }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: count)).map { [UInt8]($0) }
    }

    /// The resolved directory and the final name of `path`, the final component not followed.
    func placement(_ path: String) throws -> (directory: String, name: String) {
        let name = (path as NSString).lastPathComponent
        guard !name.isEmpty, name != "/", let directory = resolve((path as NSString).deletingLastPathComponent) else {
            throw Failure(description: "\(path): cannot be resolved inside \(root)")
        }
        return (directory, name)
    }

    public func write(_ path: String, _ text: String, mode: Int) throws {
        let (directory, name) = try placement(path)
        let target = directory + "/" + name
        let temporary = target + ".tmp.\(getpid())"
        unlink(temporary)
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
            throw Failure(description: "\(path): cannot write \(temporary): \(String(cString: strerror(errno)))")
        }
        if let owner { _ = chown(temporary, owner.uid, owner.gid) }
        guard rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw Failure(description: "\(path): cannot rename into place: \(reason)")
        }
    }

    public func makeDirectory(_ path: String, mode: Int) throws {
        guard !isDirectory(path) else { return }
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            guard !isDirectory(current) else { continue }
            guard let host = resolve(current), mkdir(host, mode_t(mode)) == 0 || errno == EEXIST else {
                throw Failure(description: "\(current): cannot create the directory: \(String(cString: strerror(errno)))")
            }
            if let owner, let host = resolve(current) { _ = chown(host, owner.uid, owner.gid) }
        }
    }

    public func remove(_ path: String) throws {
        let (directory, name) = try placement(path)
        let target = directory + "/" + name
        guard unlink(target) == 0 || errno == ENOENT else {
            throw Failure(description: "\(path): cannot remove: \(String(cString: strerror(errno)))")
        }
    }

    public func symlink(_ path: String, to target: String) throws {
        let (directory, name) = try placement(path)
        guard Foundation.symlink(target, directory + "/" + name) == 0 else {
            throw Failure(description: "\(path): cannot link to \(target): \(String(cString: strerror(errno)))")
        }
        if let owner { _ = lchown(directory + "/" + name, owner.uid, owner.gid) }
    }
}
