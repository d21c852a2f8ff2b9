import Foundation

/// A fresh network namespace with a unique name, deleted when released (also
/// when a test fails). Nothing in it is routed anywhere: tests use the
/// documentation address ranges only.
public final class NetworkNamespace: @unchecked Sendable {
    // @unchecked: immutable after init; deinit only runs a command.
    public let name: String

    /// Root and `ip netns` are needed; the reason is given when they are missing.
    public static let unavailableReason: String? = {
        if getuid() != 0 { return "network namespace tests need root" }
        let probe = "pvt-probe-\(UUID().uuidString.prefix(8))"
        guard run(["ip", "netns", "add", probe]) == 0 else { return "`ip netns add` does not work here" }
        _ = run(["ip", "netns", "del", probe])
        return nil
    }()

    public static var isAvailable: Bool { unavailableReason == nil }

    public init(prefix: String = "pvt") throws {
        name = "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
        guard Self.run(["ip", "netns", "add", name]) == 0 else {
            throw NamespaceError(message: "cannot create network namespace \(name)")
        }
    }

    deinit { _ = Self.run(["ip", "netns", "del", name]) }

    public struct NamespaceError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static func failure(_ message: String) -> NamespaceError { NamespaceError(message: message) }

    /// Adds a veth pair whose first end stands in for a NIC.
    public func addNIC(_ nic: String) throws {
        try run(["ip", "-n", name, "link", "add", nic, "type", "veth", "peer", "name", String("p\(nic)".prefix(15))])
    }

    /// Runs a command in this namespace (`ip netns exec`) and returns what it printed.
    @discardableResult
    public func exec(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
        Self.capture(["ip", "netns", "exec", name] + arguments, environment: environment)
    }

    public func run(_ arguments: [String]) throws {
        let result = Self.capture(arguments)
        guard result.status == 0 else {
            throw NamespaceError(message: "\(arguments.joined(separator: " ")) failed: \(result.error)")
        }
    }

    /// `ip -json -details link show` of one device, decoded.
    public func link(_ device: String) throws -> [String: Any]? {
        let result = Self.capture(["ip", "-n", name, "-json", "-details", "link", "show", device])
        guard result.status == 0 else { return nil }
        return (try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]])?.first
    }

    /// Runs a command in this namespace and in a mount namespace of its own,
    /// with test directories bound over host paths (target → source), so that
    /// what pvectl writes there (the `local` storage at /var/lib/vz, VM pid
    /// files in /run/qemu-server) stays with the test and never races another
    /// test's plan. A missing host mount point is created empty.
    public func execIsolated(_ arguments: [String], binding binds: [String: String],
                             environment: [String: String] = [:]) -> (status: Int32, output: String, error: String) {
        Self.capture(isolated(arguments, binding: binds), environment: environment)
    }

    /// The command line of `execIsolated`, for starting a long-running program.
    public func isolated(_ arguments: [String], binding binds: [String: String]) -> [String] {
        Self.isolated(in: name, arguments, binding: binds)
    }

    /// `isolated` in any network namespace by name (a corosync node's, say).
    public static func isolated(in namespace: String, _ arguments: [String], binding binds: [String: String]) -> [String] {
        var script = ""
        for target in binds.keys.sorted() {
            try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            script += "mount --bind \(binds[target]!.shellQuoted) \(target.shellQuoted) && "
        }
        // unshare -m makes every mount private: the binds never reach the host.
        // ip netns exec, unshare and sh -c all exec: the pid is the program's.
        return ["ip", "netns", "exec", namespace, "unshare", "-m", "sh", "-c", script + "exec \"$0\" \"$@\""] + arguments
    }

    public static func run(_ arguments: [String]) -> Int32 { capture(arguments).status }

    /// Runs a command synchronously (setup and teardown must work from deinit).
    public static func capture(_ arguments: [String], environment: [String: String] = [:]) -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch { return (127, "", "\(error)") }
        // Read before waiting so a full pipe cannot block the child.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }
}

/// A temporary directory removed when released.
public final class TemporaryDirectory: @unchecked Sendable {
    // @unchecked: immutable after init.
    public let url: URL

    public init(prefix: String = "pvectl") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    public var path: String { url.path }

    public func write(_ relative: String, _ text: String) throws {
        let file = url.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: file)
    }

    public func read(_ relative: String) -> String? {
        try? String(contentsOf: url.appendingPathComponent(relative), encoding: .utf8)
    }
}
