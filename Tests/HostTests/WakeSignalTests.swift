import Testing

@testable import Host

/// The dispatcher's wake-up: a signal ends a wait at once, a timeout ends it no later than asked, and a timer kept from
/// an earlier wait never makes a later one wait longer.
@Suite("Wake signal")
struct WakeSignalTests {
    static func elapsed(_ body: () async -> Void) async -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        await body()
        return clock.now - start
    }

    /// Returns once a task waits on `wake` (a signal sent before would be taken by the wait without its timer), or
    /// records an issue after 10 s.
    static func parked(_ wake: WakeSignal) async {
        let deadline = ContinuousClock.now + .seconds(10)
        while !wake.isWaiting {
            guard ContinuousClock.now < deadline else {
                Issue.record("no task waited on the signal within 10 s")
                return
            }
            await Task.yield()
        }
    }

    @Test("a signal sent before the wait, or during it, ends it at once; a timeout ends it on time")
    func signalsAndTimeouts() async {
        let wake = WakeSignal()
        wake.signal()
        #expect(await Self.elapsed { await wake.wait(timeout: .seconds(30)) } < .seconds(5))
        let waited = await Self.elapsed { await wake.wait(timeout: .milliseconds(200)) }
        #expect(waited >= .milliseconds(190) && waited < .seconds(10), "waited \(waited)")
        async let signalled: Duration = Self.elapsed { await wake.wait(timeout: .seconds(30)) }
        await Self.parked(wake)
        wake.signal()
        #expect(await signalled < .seconds(10))
    }

    @Test("a wait with an earlier deadline than the pending timer's gets its own; one with a later deadline ends by then")
    func keptTimers() async {
        let wake = WakeSignal()
        // A long wait ended by a signal leaves its 30 s timer pending.
        async let first: Void = wake.wait(timeout: .seconds(30))
        await Self.parked(wake)
        wake.signal()
        await first
        // A shorter wait must not wait for that timer.
        let short = await Self.elapsed { await wake.wait(timeout: .milliseconds(150)) }
        #expect(short >= .milliseconds(140) && short < .seconds(10), "waited \(short)")
        // A timer of 5 s is pending when a 120 s wait starts: the wait returns at that timer, not after 120 s.
        async let medium: Void = wake.wait(timeout: .seconds(5))
        await Self.parked(wake)
        wake.signal()
        await medium
        let long = await Self.elapsed { await wake.wait(timeout: .seconds(120)) }
        #expect(long < .seconds(60), "waited \(long)")
    }

    @Test("marks: everything at first and after a plain signal, the names signalled since the last take otherwise")
    func marks() async {
        let wake = WakeSignal()
        #expect(wake.takeMarks() == .all)
        #expect(wake.takeMarks() == .some([]))
        wake.signal(marking: ["a", "b"])
        wake.signal(marking: CollectionOfOne("a"))
        wake.signalCapacity()
        #expect(wake.takeMarks() == .some(["a", "b"]))
        wake.signal(marking: ["c"])
        wake.signal()
        wake.signal(marking: ["d"])
        #expect(wake.takeMarks() == .all)
        #expect(wake.takeMarks() == .some([]))
        // Each of them also wakes the waiter.
        wake.signalCapacity()
        #expect(await Self.elapsed { await wake.wait(timeout: .seconds(30)) } < .seconds(10))
        wake.signal(marking: ["e"])
        #expect(await Self.elapsed { await wake.wait(timeout: .seconds(30)) } < .seconds(10))
    }

    @Test("cancelling the waiting task ends the wait")
    func cancellation() async {
        let wake = WakeSignal()
        let waiting = Task { await Self.elapsed { await wake.wait(timeout: .seconds(60)) } }
        await Self.parked(wake)
        waiting.cancel()
        #expect(await waiting.value < .seconds(10))
    }
}
