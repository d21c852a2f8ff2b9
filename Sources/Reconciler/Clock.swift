import Foundation

/// Time as the kinds see it: when something was applied, and the waits between guests (`startup: up=`). Injected,
/// so that tests run an apply with a clock that records the waits instead of sleeping through them.
public protocol ReconcilerClock: Sendable {
    func now() -> Date
    func sleep(seconds: Double) async throws
}

/// The wall clock and real waits: the one place the reconcilers read time when no clock is given.
public struct SystemClock: ReconcilerClock {
    public init() {}
    public func now() -> Date { Date() }
    public func sleep(seconds: Double) async throws { try await Task.sleep(for: .seconds(seconds)) }
}
