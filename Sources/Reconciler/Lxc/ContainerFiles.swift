import Foundation

/// A container's root file system as the guest setup sees it: paths are inside the container, resolved as a chroot
/// would (a symbolic link never leads out of the root), and every write replaces the final path component by a rename,
/// so a link planted there is replaced, never written through. The driver implements it on the host.
public protocol ContainerFiles {
    /// The text of a regular file (links followed inside the root), nil when there is none.
    func contents(_ path: String) -> String?
    func isRegularFile(_ path: String) -> Bool
    func isDirectory(_ path: String) -> Bool
    func isExecutable(_ path: String) -> Bool
    func isSymbolicLink(_ path: String) -> Bool
    /// Where a symbolic link points, as written in the link.
    func linkTarget(_ path: String) -> String?
    /// Anything at the path, a dangling link included.
    func exists(_ path: String) -> Bool
    /// The names in a directory, in the order the directory lists them.
    func entries(_ path: String) -> [String]
    /// The first `count` bytes of a regular file.
    func prefix(_ path: String, count: Int) -> [UInt8]?

    /// Writes a whole file: a temporary name beside it, then a rename over the path. The parent must exist.
    func write(_ path: String, _ text: String, mode: Int) throws
    /// Creates a directory and its missing parents.
    func makeDirectory(_ path: String, mode: Int) throws
    func remove(_ path: String) throws
    /// Creates a symbolic link (fails when the path exists or its directory does not).
    func symlink(_ path: String, to target: String) throws
}
