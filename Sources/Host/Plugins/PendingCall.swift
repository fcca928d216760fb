import Synchronization

/// One call on its way through an executor: queued, then running, then answered exactly once, by whichever comes
/// first of the plugin's answer, its deadline, the wait for a free worker running out, or the caller's cancellation.
final class PendingCall: Sendable {
    let call: PluginCall
    /// When it was queued.
    let queuedAt: ContinuousClock.Instant
    private let state: Mutex<State>

    private enum State {
        case waiting(CheckedContinuation<PluginCallResult, Never>?)
        /// Answered before the caller started waiting (a cancellation racing the enqueue).
        case early(PluginCallResult)
        case running(CheckedContinuation<PluginCallResult, Never>?, deadline: ContinuousClock.Instant)
        case answered
    }

    init(_ call: PluginCall) {
        self.call = call
        queuedAt = .now
        state = Mutex(.waiting(nil))
    }

    /// Waits for the answer; a cancelled task stops waiting at once (the call may still run, its answer dropped).
    func result(enqueue: () -> Void) async -> PluginCallResult {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let early = state.withLock { state -> PluginCallResult? in
                    switch state {
                    case .waiting: state = .waiting(continuation)
                    case .running(_, let deadline): state = .running(continuation, deadline: deadline)
                    case .early(let result):
                        state = .answered
                        return result
                    case .answered: return .cancelled
                    }
                    return nil
                }
                if let early {
                    continuation.resume(returning: early)
                } else {
                    enqueue()
                }
            }
        } onCancel: {
            answer(.cancelled)
        }
    }

    /// Marks the call as started with this deadline; false when it was answered meanwhile (cancelled, expired).
    func start(deadline: ContinuousClock.Instant) -> Bool {
        state.withLock { state in
            guard case .waiting(let continuation) = state else { return false }
            state = .running(continuation, deadline: deadline)
            return true
        }
    }

    /// Back to waiting: it was taken for a worker that died before running it.
    func requeue() {
        state.withLock { state in
            if case .running(let continuation, _) = state { state = .waiting(continuation) }
        }
    }

    /// The deadline of a running call.
    var deadline: ContinuousClock.Instant? {
        state.withLock { state in
            if case .running(_, let deadline) = state { return deadline }
            return nil
        }
    }

    /// True while it waits for a worker.
    var isWaiting: Bool {
        state.withLock { state in
            if case .waiting = state { return true }
            return false
        }
    }

    /// Answers the call; false when it had been answered already (the result is then dropped).
    @discardableResult
    func answer(_ result: PluginCallResult) -> Bool {
        let answered = state.withLock { state -> (CheckedContinuation<PluginCallResult, Never>?, Bool) in
            switch state {
            case .waiting(let continuation), .running(let continuation, _):
                if let continuation {
                    state = .answered
                    return (continuation, true)
                }
                state = .early(result)
                return (nil, true)
            case .early, .answered:
                return (nil, false)
            }
        }
        answered.0?.resume(returning: result)
        return answered.1
    }
}
