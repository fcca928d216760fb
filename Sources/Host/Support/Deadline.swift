import NIOCore
import NIOPosix
import Synchronization

/// Runs an operation with a deadline that holds even when the operation does not stop.
///
/// A task group racing the operation against a sleep cannot do this: leaving the group waits for every child, so a
/// body that ignores cancellation (a query on a connection a database crash left half-open, a pool waiting for a
/// connection) holds its caller for as long as it runs, and the engine's dispatcher with it. Here the operation runs
/// in a task of its own: at the deadline it is cancelled and left to end by itself, and the caller goes on with
/// `timedOut()`.
enum Deadline {
    /// `body`'s result, or `timedOut()` thrown once `timeout` has passed. Cancelling the caller cancels `body`; the call
    /// then ends when `body` does, or at the deadline.
    static func run<T: Sendable>(
        within timeout: Duration, timedOut: @autoclosure @escaping @Sendable () -> any Error,
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let race = Race<T>()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                race.begin(continuation)
                let milliseconds = max(timeout, .zero).wholeMilliseconds
                let timer = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: .milliseconds(milliseconds)) {
                    race.end(.failure(timedOut()))
                }
                let operation = Task {
                    do {
                        race.end(.success(try await body()))
                    } catch {
                        race.end(.failure(error))
                    }
                }
                race.attach(operation: operation, timer: timer)
            }
        } onCancel: {
            race.cancel()
        }
    }

    /// The first of the operation and the timer to end resumes the caller; the other is then stopped.
    private final class Race<T: Sendable>: Sendable {
        private struct State {
            var continuation: CheckedContinuation<T, any Error>?
            var operation: Task<Void, Never>?
            var timer: Scheduled<Void>?
            var ended = false
            var cancelled = false
        }

        private let state = Mutex(State())

        func begin(_ continuation: CheckedContinuation<T, any Error>) {
            state.withLock { $0.continuation = continuation }
        }

        /// The operation and its timer, once both exist: stopped at once if the race ended (or the caller was cancelled)
        /// meanwhile.
        func attach(operation: Task<Void, Never>, timer: Scheduled<Void>) {
            let (ended, cancelled) = state.withLock { state in
                state.operation = operation
                state.timer = timer
                return (state.ended, state.cancelled)
            }
            if ended {
                timer.cancel()
                operation.cancel()
            } else if cancelled {
                operation.cancel()
            }
        }

        func end(_ result: Result<T, any Error>) {
            let won = state.withLock { state -> (CheckedContinuation<T, any Error>, Task<Void, Never>?, Scheduled<Void>?)? in
                guard !state.ended, let continuation = state.continuation else { return nil }
                state.ended = true
                state.continuation = nil
                return (continuation, state.operation, state.timer)
            }
            guard let (continuation, operation, timer) = won else { return }
            timer?.cancel()
            operation?.cancel()
            continuation.resume(with: result)
        }

        func cancel() {
            let operation = state.withLock { state in
                state.cancelled = true
                return state.operation
            }
            operation?.cancel()
        }
    }
}
