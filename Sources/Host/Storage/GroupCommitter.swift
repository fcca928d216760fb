import Synchronization

/// Group commit: many concurrent callers submit items, one writer loop drains everything queued so far, commits it as
/// one batch (one transaction, one fsync), and resumes each caller with its own result. The next batch forms while the
/// current one commits, so under load batches grow and throughput follows; under light load a batch is one item.
///
/// When a commit fails, every caller in that batch gets the error: nothing in the batch is acknowledged.
///
/// With a ``Gathering``, a batch smaller than `enough` waits up to `delay` for more items while the caller says more
/// are on their way: fewer, larger transactions (and fsyncs) for the same items.
final class GroupCommitter<Item: Sendable, Output: Sendable>: Sendable {
    typealias Commit = @Sendable ([Item]) async throws -> [Output]

    /// Waiting a moment for more items before a commit, when more are known to be coming (as PostgreSQL's
    /// `commit_delay` does when other transactions are active).
    struct Gathering: Sendable {
        /// The longest a forming batch waits for more items.
        var delay: Duration
        /// A batch this size commits at once.
        var enough: Int
        /// Whether more items are on their way; asked when a batch starts to form.
        var moreComing: @Sendable () -> Bool
    }

    private struct Waiting {
        var item: Item
        /// Nil for an item queued with ``enqueue(_:)``: nobody waits for its result.
        var continuation: CheckedContinuation<Output, any Error>?
    }

    private struct State {
        var queue: [Waiting] = []
        var writerWaiting: CheckedContinuation<Void, Never>?
        /// While the writer gathers: the queue's size that ends the wait.
        var gatherUntil: Int?
        var closed = false
    }

    private enum Next {
        case batch([Waiting])
        case gather
        case finished
        case wait
    }

    private let state = Mutex(State())
    private let batches = Atomic<Int>(0)
    private let commit: Commit
    private let gathering: Gathering?
    /// Ends a gathering wait early, when the batch is big enough or the writer closes.
    private let gathered: WakeSignal?
    /// The most items one batch takes.
    let maximumBatch: Int

    init(maximumBatch: Int = 2048, gathering: Gathering? = nil, commit: @escaping Commit) {
        self.maximumBatch = maximumBatch
        self.gathering = gathering
        self.gathered = gathering == nil ? nil : WakeSignal()
        self.commit = commit
    }

    /// Queues `item` for the next batch and waits for its result. Fails with ``StoreError/closed`` once the writer
    /// has stopped.
    func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            if !queue(Waiting(item: item, continuation: continuation)) { continuation.resume(throwing: StoreError.closed) }
        }
    }

    /// Queues `item` for the next batch without waiting for it: the commit itself acts on the outcome (its result is
    /// dropped). False, and nothing queued, once the writer has stopped.
    @discardableResult
    func enqueue(_ item: Item) -> Bool {
        queue(Waiting(item: item, continuation: nil))
    }

    private func queue(_ waiting: Waiting) -> Bool {
        let wake = state.withLock { state -> (accepted: Bool, writer: CheckedContinuation<Void, Never>?, gathered: Bool) in
            guard !state.closed else { return (false, nil, false) }
            state.queue.append(waiting)
            defer { state.writerWaiting = nil }
            return (true, state.writerWaiting, state.gatherUntil.map { state.queue.count >= $0 } ?? false)
        }
        wake.writer?.resume()
        if wake.gathered { gathered?.signal() }
        return wake.accepted
    }

    /// The writer loop. Returns after ``close()`` once everything queued before it has been committed.
    func run() async {
        while true {
            let batch = await nextBatch()
            guard let batch else { return }
            batches.add(1, ordering: .relaxed)
            do {
                let outputs = try await commit(batch.map(\.item))
                for (waiting, output) in zip(batch, outputs) { waiting.continuation?.resume(returning: output) }
            } catch {
                for waiting in batch { waiting.continuation?.resume(throwing: error) }
            }
        }
    }

    /// How many batches (transactions) have been committed or attempted so far.
    var batchCount: Int { batches.load(ordering: .relaxed) }

    /// Stops accepting items; ``run()`` returns when the queue is empty.
    func close() {
        let writer = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.closed = true
            defer { state.writerWaiting = nil }
            return state.writerWaiting
        }
        writer?.resume()
        gathered?.signal()
    }

    private func nextBatch() async -> [Waiting]? {
        var waitedForMore = false
        while true {
            let next = state.withLock { state -> Next in
                if !state.queue.isEmpty {
                    if !waitedForMore, !state.closed, let gathering, state.queue.count < min(gathering.enough, maximumBatch) {
                        return .gather
                    }
                    let count = min(state.queue.count, maximumBatch)
                    let batch = Array(state.queue.prefix(count))
                    state.queue.removeFirst(count)
                    return .batch(batch)
                }
                return state.closed ? .finished : .wait
            }
            switch next {
            case .batch(let batch): return batch
            case .finished: return nil
            case .gather:
                waitedForMore = true
                await gatherMore()
            case .wait:
                await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state -> Bool in
                        if !state.queue.isEmpty || state.closed { return true }
                        state.writerWaiting = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    /// Waits up to the gathering's delay for the queue to reach `enough`, if more items are on their way.
    private func gatherMore() async {
        guard let gathering, let gathered, gathering.moreComing() else { return }
        let enough = min(gathering.enough, maximumBatch)
        let full = state.withLock { state -> Bool in
            if state.queue.count >= enough || state.closed { return true }
            state.gatherUntil = enough
            return false
        }
        guard !full else { return }
        await gathered.wait(timeout: gathering.delay)
        state.withLock { $0.gatherUntil = nil }
    }
}
