import Foundation
import Synchronization
import Testing

@testable import Host

/// ``Deadline``: an operation's result, its error, or the deadline's error, and a deadline that holds when the
/// operation ignores cancellation (what a store call on a half-open connection does; with a task group racing a sleep
/// the caller waited for the operation's end).
@Suite("Deadline")
struct DeadlineTests {
    struct TimedOut: Error, Equatable {}
    struct Failed: Error, Equatable {}

    /// A wait that only `release()` ends: cancelling the task that waits does nothing.
    final class Gate: Sendable {
        private let waiters = Mutex<[CheckedContinuation<Void, Never>]>([])
        private let open = Mutex(false)
        private let entered = Atomic<Int>(0)

        var entries: Int { entered.load(ordering: .sequentiallyConsistent) }
        var isOpen: Bool { open.withLock { $0 } }

        func wait() async {
            entered.add(1, ordering: .sequentiallyConsistent)
            await withCheckedContinuation { continuation in
                let isOpen = open.withLock { $0 }
                if isOpen {
                    continuation.resume()
                } else {
                    waiters.withLock { $0.append(continuation) }
                }
            }
        }

        func release() {
            open.withLock { $0 = true }
            for waiter in waiters.withLock({ state in
                defer { state = [] }
                return state
            }) { waiter.resume() }
        }
    }

    @Test("the operation's result, or its error, when it ends in time")
    func endsInTime() async throws {
        let value = try await Deadline.run(within: .seconds(30), timedOut: TimedOut()) { 42 }
        #expect(value == 42)
        await #expect(throws: Failed.self) {
            try await Deadline.run(within: .seconds(30), timedOut: TimedOut()) { () async throws -> Int in throw Failed() }
        }
    }

    @Test("an operation that ignores cancellation: the caller gets the deadline's error while the operation still runs")
    func deadlineHolds() async throws {
        let gate = Gate()
        let finished = Gate()
        let answered = Gate()
        let call = Task { () -> (any Error)? in
            defer { answered.release() }
            do {
                _ = try await Deadline.run(within: .milliseconds(200), timedOut: TimedOut()) {
                    await gate.wait()
                    finished.release()
                    return 1
                }
                return nil
            } catch {
                return error
            }
        }
        // Far beyond the deadline; without the bound the caller is held until the operation ends.
        let clock = ContinuousClock()
        let limit = clock.now + .seconds(10)
        while !answered.isOpen, clock.now < limit { try await Task.sleep(for: .milliseconds(20)) }
        #expect(answered.isOpen, "the caller was still held 10 s after a 200 ms deadline")
        #expect(!finished.isOpen, "the operation ended before its deadline")
        gate.release()
        let error = await call.value
        #expect(error is TimedOut, "\(String(describing: error))")
        #expect(gate.entries == 1)
    }

    @Test("cancelling the caller cancels the operation")
    func callerCancelled() async throws {
        let started = Gate()
        let task = Task {
            try await Deadline.run(within: .seconds(60), timedOut: TimedOut()) { () async throws -> Int in
                started.release()
                try await Task.sleep(for: .seconds(60))
                return 1
            }
        }
        await started.wait()
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
    }
}
