import Synchronization
import Testing

@testable import Host

/// The group commit of outcomes: what forms one batch, with and without gathering.
@Suite struct GroupCommitterTests {
    /// The sizes of the batches committed, in order.
    final class Batches: Sendable {
        let sizes = Mutex<[Int]>([])
        var all: [Int] { sizes.withLock { $0 } }
    }

    private func committer(_ batches: Batches, gathering: GroupCommitter<Int, Int>.Gathering?) -> GroupCommitter<Int, Int> {
        GroupCommitter(maximumBatch: 512, gathering: gathering) { items in
            batches.sizes.withLock { $0.append(items.count) }
            return items.map { $0 * 10 }
        }
    }

    @Test("while more items are coming, a batch waits for them and commits as soon as it has enough")
    func gathersWhileMoreAreComing() async throws {
        let batches = Batches()
        // Bounds on time are loose: under a full suite's load a task may wait seconds for a thread.
        let writer = committer(batches, gathering: .init(delay: .seconds(60), enough: 3, moreComing: { true }))
        async let run: Void = writer.run()
        let clock = ContinuousClock()
        let start = clock.now
        async let first = writer.submit(1)
        try await Task.sleep(for: .milliseconds(100))
        async let second = writer.submit(2)
        async let third = writer.submit(3)
        let results = try await [first, second, third]
        #expect(results.sorted() == [10, 20, 30])
        #expect(batches.all == [3], "one transaction for the three items")
        #expect(clock.now - start < .seconds(30), "enough items end the wait before its delay")
        writer.close()
        await run
    }

    @Test("a batch waits at most its delay for more, and not at all when nothing more is coming")
    func waitsAtMostTheDelay() async throws {
        let clock = ContinuousClock()
        let gathered = Batches()
        let gathering = committer(gathered, gathering: .init(delay: .milliseconds(300), enough: 64, moreComing: { true }))
        async let gatheringRun: Void = gathering.run()
        let start = clock.now
        #expect(try await gathering.submit(1) == 10)
        let waited = clock.now - start
        #expect(waited >= .milliseconds(250), "it waited for more (\(waited))")
        #expect(waited < .seconds(30))
        #expect(gathered.all == [1])
        gathering.close()
        await gatheringRun

        // With nothing more coming, a minute's delay is never waited.
        let alone = Batches()
        let writer = committer(alone, gathering: .init(delay: .seconds(60), enough: 64, moreComing: { false }))
        async let run: Void = writer.run()
        let started = clock.now
        #expect(try await writer.submit(2) == 20)
        #expect(clock.now - started < .seconds(30), "nothing more was coming: committed at once")
        #expect(alone.all == [1])
        writer.close()
        await run
    }

    @Test("closing ends a gathering wait and commits what is queued")
    func closeEndsTheWait() async throws {
        let batches = Batches()
        let writer = committer(batches, gathering: .init(delay: .seconds(30), enough: 64, moreComing: { true }))
        async let run: Void = writer.run()
        let clock = ContinuousClock()
        let start = clock.now
        async let first = writer.submit(7)
        try await Task.sleep(for: .milliseconds(100))
        writer.close()
        #expect(try await first == 70)
        await run
        #expect(clock.now - start < .seconds(30))
        #expect(batches.all == [1])
        await #expect(throws: StoreError.self) { try await writer.submit(8) }
    }
}
