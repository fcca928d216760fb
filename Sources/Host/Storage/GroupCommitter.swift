import Synchronization

/// Group commit: many concurrent callers submit items, one writer loop drains everything queued so far, commits it as
/// one batch (one transaction, one fsync), and resumes each caller with its own result. The next batch forms while the
/// current one commits, so under load batches grow and throughput follows; under light load a batch is one item.
///
/// When a commit fails, every caller in that batch gets the error: nothing in the batch is acknowledged.
final class GroupCommitter<Item: Sendable, Output: Sendable>: Sendable {
    typealias Commit = @Sendable ([Item]) async throws -> [Output]

    private struct Waiting {
        var item: Item
        var continuation: CheckedContinuation<Output, any Error>
    }

    private struct State {
        var queue: [Waiting] = []
        var writerWaiting: CheckedContinuation<Void, Never>?
        var closed = false
    }

    private enum Next {
        case batch([Waiting])
        case finished
        case wait
    }

    private let state = Mutex(State())
    private let batches = Atomic<Int>(0)
    private let commit: Commit
    /// The most items one batch takes.
    let maximumBatch: Int

    init(maximumBatch: Int = 2048, commit: @escaping Commit) {
        self.maximumBatch = maximumBatch
        self.commit = commit
    }

    /// Queues `item` for the next batch and waits for its result. Fails with ``StoreError/closed`` once the writer
    /// has stopped.
    func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let wake = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
                guard !state.closed else { return (false, nil) }
                state.queue.append(Waiting(item: item, continuation: continuation))
                defer { state.writerWaiting = nil }
                return (true, state.writerWaiting)
            }
            if !wake.0 { continuation.resume(throwing: StoreError.closed) }
            wake.1?.resume()
        }
    }

    /// The writer loop. Returns after ``close()`` once everything queued before it has been committed.
    func run() async {
        while true {
            let batch = await nextBatch()
            guard let batch else { return }
            batches.add(1, ordering: .relaxed)
            do {
                let outputs = try await commit(batch.map(\.item))
                for (waiting, output) in zip(batch, outputs) { waiting.continuation.resume(returning: output) }
            } catch {
                for waiting in batch { waiting.continuation.resume(throwing: error) }
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
    }

    private func nextBatch() async -> [Waiting]? {
        while true {
            let next = state.withLock { state -> Next in
                if !state.queue.isEmpty {
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
}
