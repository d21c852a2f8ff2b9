import Foundation
import Reconciler
import Synchronization

/// A clock for the reconcilers' tests: time stands at `start` and moves only by the waits asked of it, which are
/// recorded instead of slept through.
public final class TestClock: ReconcilerClock {
    private let state: Mutex<(now: Date, waits: [Double])>

    public init(start: Date = Date(timeIntervalSince1970: 1_700_000_000)) {
        state = Mutex((start, []))
    }

    public func now() -> Date { state.withLock { $0.now } }

    public func sleep(seconds: Double) async throws {
        state.withLock { state in
            state.waits.append(seconds)
            state.now = state.now.addingTimeInterval(seconds)
        }
    }

    /// Every wait asked for, in order.
    public var waits: [Double] { state.withLock { $0.waits } }
}
