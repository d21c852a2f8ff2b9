@testable import ClusterFS
import Foundation
import Testing

@Suite("the corosync dispatch thread")
struct DispatchThreadTests {
    /// corosync gone: the thread ends by itself, then the replicator stops the old connection. That stop once wrote
    /// into a pipe whose reader the thread had closed, and SIGPIPE killed pmxcfs (and CI's test process) now and then.
    @Test("stopping after the thread ended on a lost connection does not kill the process")
    func stopAfterLost() throws {
        for _ in 0..<200 {
            var ends: [Int32] = [0, 0]
            try #require(pipe(&ends) == 0)
            defer {
                close(ends[0])
                close(ends[1])
            }
            var byte: UInt8 = 1
            try #require(write(ends[1], &byte, 1) == 1)
            let lost = DispatchSemaphore(value: 0)
            let thread = DispatchThread(name: "test-dispatch", descriptor: ends[0], dispatch: { false }, onLost: { lost.signal() })
            try #require(lost.wait(timeout: .now() + 10) == .success)
            thread.stop()
            thread.stop()
        }
    }
}
