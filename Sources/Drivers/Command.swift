import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// A finished command: a non-zero exit is a result, not a thrown error.
public struct CommandResult: Sendable {
    public var status: Int32
    public var output: String
    public var error: String

    public var succeeded: Bool { status == 0 }
}

/// A command that failed, with what it printed.
public struct CommandError: Error, CustomStringConvertible, Sendable {
    public var command: [String]
    public var result: CommandResult

    public var description: String {
        let message = (result.error.isEmpty ? result.output : result.error).trimmingCharacters(in: .whitespacesAndNewlines)
        return "\(command.joined(separator: " ")) exited with status \(result.status): \(message)"
    }
}

/// The file that holds a command's input could not be made (a full or read-only temporary directory).
public struct CommandInputError: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public var code: Int32

    public var description: String { "\(reason): \(String(cString: strerror(code)))" }
}

/// A tool pvectl needs is not on this machine: said as such, with the
/// Debian package that has it, instead of a failure of the tool.
public struct MissingExecutable: Error, CustomStringConvertible, Sendable {
    public var name: String

    /// The Debian package of the tools pvectl runs.
    static let packages = [
        "ip": "iproute2", "bridge": "iproute2", "nft": "nftables", "sysctl": "procps", "qemu-img": "qemu-utils",
        "mount.nfs": "nfs-common", "mount.cifs": "cifs-utils", "lvs": "lvm2", "lvcreate": "lvm2", "lvextend": "lvm2",
        "vgchange": "lvm2", "lvchange": "lvm2", "mkfs.ext4": "e2fsprogs", "resize2fs": "e2fsprogs", "e2fsck": "e2fsprogs",
        "btrfs": "btrfs-progs", "mount": "mount", "umount": "mount", "findmnt": "util-linux",
        "lxc-start": "lxc", "lxc-stop": "lxc", "lxc-info": "lxc", "lxc-attach": "lxc", "lxc-monitor": "lxc", "lxc-usernsexec": "lxc",
        "tc": "iproute2",
        "zstd": "zstd", "xz": "xz-utils", "bzip2": "bzip2", "gzip": "gzip",
        "corosync-cfgtool": "corosync", "corosync-cmapctl": "corosync", "corosync-quorumtool": "corosync", "corosync-keygen": "corosync",
        "corosync-qdevice": "corosync-qdevice", "corosync-qdevice-tool": "corosync-qdevice", "corosync-qdevice-net-certutil": "corosync-qdevice",
        "certutil": "libnss3-tools",
    ]

    public var description: String {
        "\(name) is not installed" + (Self.packages[name].map { " (Debian package \($0))" } ?? "")
    }
}

/// Runs external tools (ip, bridge, sh) through swift-subprocess.
public enum Command {
    /// The full path of a program found on PATH, or nil.
    public static func locate(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return path.split(separator: ":").lazy.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The program a command line runs in the end (`ip netns exec NS nft …` runs nft).
    static func programs(_ arguments: [String]) -> [String] {
        if arguments.count > 4 && arguments[0] == "ip" && arguments[1] == "netns" && arguments[2] == "exec" {
            return [arguments[0], arguments[4]]
        }
        return [arguments[0]]
    }

    /// Output larger than this is an error rather than silently cut.
    static let outputLimit = 64 << 20

    public static func run(_ arguments: [String], input: String? = nil, environment: [String: String] = [:]) async throws -> CommandResult {
        precondition(!arguments.isEmpty)
        if let missing = programs(arguments).first(where: { locate($0) == nil }) { throw MissingExecutable(name: missing) }
        let executable: Executable = arguments[0].hasPrefix("/") ? .path(.init(arguments[0])) : .name(arguments[0])
        let env: Environment = environment.isEmpty ? .inherit : .inherit.updating(Dictionary(uniqueKeysWithValues: environment.map {
            (Environment.Key(stringLiteral: $0.key), Optional($0.value))
        }))
        let result = try await Subprocess.run(
            executable,
            arguments: Arguments(Array(arguments.dropFirst())),
            environment: env,
            input: .fileDescriptor(try inputFile(input), closeAfterSpawningProcess: true),
            output: .string(limit: outputLimit),
            error: .string(limit: outputLimit)
        )
        let status: Int32 = switch result.terminationStatus {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
        return CommandResult(status: status, output: result.standardOutput, error: result.standardError)
    }

    /// A command's standard input, as an unlinked file rather than a pipe: a command that stops reading early (`ip -batch`
    /// at its first error, with more lines than a pipe holds) cannot fail pvectl's write with EPIPE or kill it with
    /// SIGPIPE; it reads what it reads and its exit status says the rest.
    static func inputFile(_ text: String?) throws -> FileDescriptor {
        guard let text, !text.isEmpty else {
            // No input: the empty file every machine has, so a full or read-only temporary directory stops nothing.
            let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { throw CommandInputError(reason: "cannot open /dev/null", code: errno) }
            return FileDescriptor(rawValue: descriptor)
        }
        var template = Array((FileManager.default.temporaryDirectory.path + "/pvectl-input-XXXXXX").utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw CommandInputError(reason: "cannot make a file for a command's input", code: errno) }
        unlink(template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        // Not inherited by commands other threads start meanwhile: only this one gets it, as its standard input.
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        let file = FileDescriptor(rawValue: descriptor)
        do {
            _ = try file.writeAll(Array(text.utf8))
            guard lseek(descriptor, 0, SEEK_SET) == 0 else { throw Errno(rawValue: errno) }
        } catch {
            try? file.close()
            throw CommandInputError(reason: "cannot write a command's input", code: (error as? Errno)?.rawValue ?? EIO)
        }
        return file
    }

    /// Runs and returns standard output as bytes (file contents from `git cat-file`, which need not be text); throws
    /// `CommandError` unless the command exits 0.
    public static func bytes(_ arguments: [String], input: String? = nil) async throws -> [UInt8] {
        precondition(!arguments.isEmpty)
        if let missing = programs(arguments).first(where: { locate($0) == nil }) { throw MissingExecutable(name: missing) }
        let executable: Executable = arguments[0].hasPrefix("/") ? .path(.init(arguments[0])) : .name(arguments[0])
        let result = try await Subprocess.run(executable, arguments: Arguments(Array(arguments.dropFirst())),
                                              input: .fileDescriptor(try inputFile(input), closeAfterSpawningProcess: true),
                                              output: .bytes(limit: outputLimit), error: .string(limit: outputLimit))
        let status: Int32 = switch result.terminationStatus {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
        guard status == 0 else {
            throw CommandError(command: arguments, result: CommandResult(status: status, output: "", error: result.standardError))
        }
        return result.standardOutput
    }

    /// Runs and throws `CommandError` unless the command exits 0.
    @discardableResult
    public static func check(_ arguments: [String], input: String? = nil) async throws -> String {
        let result = try await run(arguments, input: input)
        guard result.succeeded else { throw CommandError(command: arguments, result: result) }
        return result.output
    }
}
