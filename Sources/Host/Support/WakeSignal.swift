import NIOCore
import NIOPosix
import Synchronization

/// Wakes one waiting loop: `signal()` from anywhere; `wait(timeout:)` returns at the first signal (also one sent while
/// nobody was waiting) or when the timeout passes, or earlier: a waiter takes every return as "look again".
///
/// A wait's timeout is a timer on an event loop, not a task. Most waits end with a signal long before their timeout,
/// and their timer is not cancelled but kept for the next wait: a wait whose deadline is no earlier than the pending
/// timer's reuses it (and may return at that earlier time). The dispatcher, which waits after nearly every delivery
/// with the idle poll as its timeout, so sets about one timer per idle poll, where a child task sleeping on a dispatch
/// timer and its cancellation per wait cost about 4% of a drain's CPU (decisions §36).
///
/// A signal also says what to look at again (``Marks``): the dispatcher asks the store only about destinations that
/// may have new due work, not about every idle one on every wake-up (decisions §45). A plain ``signal()`` marks
/// everything, so a caller that says nothing more is never missed.
final class WakeSignal: Sendable {
    /// What may have changed since the waiter last took the marks.
    enum Marks: Sendable, Equatable {
        /// Anything: look at everything again.
        case all
        /// Only these (none: nothing but capacity freed up).
        case some(Set<String>)
    }

    private struct State {
        var signaled = false
        /// Everything is marked until the waiter first takes the marks.
        var markedAll = true
        var marked: Set<String> = []
        var waiter: CheckedContinuation<Void, Never>?
        /// The earliest timer set and not fired yet.
        var timer: NIODeadline?
    }

    /// The longest a wait lasts, whatever it asks for.
    static let longestWait = Duration.seconds(3600)

    private let state = Mutex(State())
    private let timers: any EventLoop

    init(timers: any EventLoop = MultiThreadedEventLoopGroup.singleton.any()) { self.timers = timers }

    /// A task is parked in ``wait(timeout:)`` (for tests).
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// Wakes the waiter and marks everything: something may have changed anywhere.
    func signal() {
        signal { $0.markedAll = true }
    }

    /// Wakes the waiter and marks `names` (destinations that may have new due work).
    func signal(marking names: some Sequence<String>) {
        signal { state in
            guard !state.markedAll else { return }
            for name in names { state.marked.insert(name) }
        }
    }

    /// Wakes the waiter without marking anything: capacity freed up (a slot, a commit), no new work.
    func signalCapacity() {
        signal { _ in }
    }

    /// Returns what was marked since the last call, and clears it.
    func takeMarks() -> Marks {
        state.withLock { state in
            defer {
                state.markedAll = false
                state.marked = []
            }
            return state.markedAll ? .all : .some(state.marked)
        }
    }

    private func signal(_ mark: (inout State) -> Void) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            mark(&state)
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.signaled = true
            return nil
        }
        waiter?.resume()
    }

    /// A timer set by ``wait(timeout:)`` fired: the wait in progress, if any, returns.
    private func fire(_ deadline: NIODeadline) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.timer == deadline { state.timer = nil }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Returns at the first signal, after `timeout` at the latest, or when the task is cancelled. One task waits at a
    /// time.
    func wait(timeout: Duration) async {
        let milliseconds = min(max(timeout, .zero), Self.longestWait).wholeMilliseconds
        let deadline = NIODeadline.now() + .milliseconds(milliseconds)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let (resumeNow, setTimer) = state.withLock { state -> (Bool, Bool) in
                    if state.signaled {
                        state.signaled = false
                        return (true, false)
                    }
                    state.waiter = continuation
                    if let timer = state.timer, timer <= deadline { return (false, false) }
                    state.timer = deadline
                    return (false, true)
                }
                if resumeNow {
                    continuation.resume()
                } else if setTimer {
                    timers.scheduleTask(deadline: deadline) { self.fire(deadline) }
                }
            }
        } onCancel: {
            signal()
        }
    }
}
