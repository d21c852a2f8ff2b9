import Drivers
import Foundation
import Testing

@Suite("Command: the tools pvectl runs")
struct CommandTests {
    /// More input than a pipe holds (64 KiB), so a pipe's writer would still be writing when the reader is gone.
    static let largeInput = String(repeating: "link show dev lo\n", count: 20_000)

    @Test("a command that stops reading its input early is a result, not the death of pvectl by SIGPIPE")
    func stopsReadingEarly() async throws {
        let result = try await Command.run(["/bin/sh", "-c", "read -r first; echo \"$first\"; exit 3"], input: Self.largeInput)
        #expect(result.status == 3)
        #expect(result.output == "link show dev lo\n")
        let bytes = try await Command.bytes(["/usr/bin/head", "-c", "4"], input: Self.largeInput)
        #expect(bytes == Array("link".utf8))
    }

    @Test("the whole input reaches a command that reads it all; no input is an empty standard input")
    func wholeInput() async throws {
        let counted = try await Command.check(["/usr/bin/wc", "-c"], input: Self.largeInput)
        #expect(Int(counted.trimmingCharacters(in: .whitespacesAndNewlines)) == Self.largeInput.utf8.count)
        let empty = try await Command.check(["/usr/bin/wc", "-c"])
        #expect(empty.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }
}
