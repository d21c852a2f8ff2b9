import Foundation
import Subprocess

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

/// Runs external tools (ip, bridge, sh) through swift-subprocess.
public enum Command {
    /// Output larger than this is an error rather than silently cut.
    static let outputLimit = 64 << 20

    public static func run(_ arguments: [String], input: String? = nil, environment: [String: String] = [:]) async throws -> CommandResult {
        precondition(!arguments.isEmpty)
        let executable: Executable = arguments[0].hasPrefix("/") ? .path(.init(arguments[0])) : .name(arguments[0])
        let env: Environment = environment.isEmpty ? .inherit : .inherit.updating(Dictionary(uniqueKeysWithValues: environment.map { (Environment.Key(stringLiteral: $0.key), Optional($0.value)) }))
        let result = try await Subprocess.run(
            executable,
            arguments: Arguments(Array(arguments.dropFirst())),
            environment: env,
            input: .string(input ?? ""),
            output: .string(limit: outputLimit),
            error: .string(limit: outputLimit)
        )
        let status: Int32 = switch result.terminationStatus {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
        return CommandResult(status: status, output: result.standardOutput, error: result.standardError)
    }

    /// Runs and throws `CommandError` unless the command exits 0.
    @discardableResult
    public static func check(_ arguments: [String], input: String? = nil) async throws -> String {
        let result = try await run(arguments, input: input)
        guard result.succeeded else { throw CommandError(command: arguments, result: result) }
        return result.output
    }
}
