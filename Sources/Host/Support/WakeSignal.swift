import Synchronization

/// Wakes one waiting loop: `signal()` from anywhere; `wait(timeout:)` returns at the first signal (also one sent while
/// nobody was waiting) or when the timeout passes.
final class WakeSignal: Sendable {
    private struct State {
        var signaled = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.signaled = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns at the first signal, or after `timeout`. The timer is a child task of the caller's (structured): it ends
    /// with the wait, and a signal already sent returns at once without one.
    func wait(timeout: Duration) async {
        let signaled = state.withLock { state in
            defer { state.signaled = false }
            return state.signaled
        }
        if signaled { return }
        await withDiscardingTaskGroup { group in
            group.addTask {
                try? await Task.sleep(for: timeout)
                // Resumes this wait (one waits at a time); before it has parked, it is left as a signal it takes.
                if !Task.isCancelled { self.signal() }
            }
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if state.signaled {
                        state.signaled = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            group.cancelAll()
        }
    }
}
