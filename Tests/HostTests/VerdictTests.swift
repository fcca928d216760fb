import Testing

@testable import Host

/// Every rule by which an attempt's answer becomes an outcome, judged without I/O: ``Verdict/of(_:context:)`` is a
/// pure function of the answer and the delivery's context.
@Suite("Verdict")
struct VerdictTests {
    static let now: Int64 = 1_800_000_000_000

    /// A delivery on its first attempt with the default retry schedule (5 s, 60 s, … ; 8 attempts), no jitter.
    static func context(
        attempts: Int = 0, pluginFailures: Int = 0, retry: RetryPolicy = RetryPolicy(), maxRetryAfter: Duration = .seconds(3600),
        keptBytes: Int = 4096, receivedAt: Int64 = now
    ) -> Verdict.Context {
        Verdict.Context(
            deliveryID: "d1", destination: "out", attempts: attempts, pluginFailures: pluginFailures, receivedAt: receivedAt,
            retry: retry, maxRetryAfter: maxRetryAfter, keptBytes: keptBytes, formatterName: "generic", startedAt: now - 40,
            duration: 40, now: now, random: 0)
    }

    static func answer(_ status: Int, headers: [(String, String)] = [], body: String = "", part: Int = 0, parts: Int = 1) -> Answer {
        .response(
            .init(status: status, headers: headers.map { (name: $0.0, value: $0.1) }, body: Array(body.utf8)), part: part, parts: parts)
    }

    static func judge(_ answer: Answer, _ context: Verdict.Context = context()) throws -> Verdict {
        guard case .finish(let verdict) = Verdict.of(answer, context: context) else {
            Issue.record("expected a verdict, got send-next-part")
            throw CancellationError()
        }
        return verdict
    }

    @Test("a 2xx is delivered, succeeds for the breaker, and its attempt keeps status, duration and the body's prefix")
    func delivered() throws {
        let verdict = try Self.judge(Self.answer(204, body: "abcdef"), Self.context(keptBytes: 3))
        #expect(verdict.outcome.status == .delivered)
        #expect(verdict.feedback == .succeeded)
        #expect(verdict.counted == .delivered)
        #expect(
            verdict.outcome.attempt
                == AttemptRecord(
                    number: 1, startedAt: Self.now - 40, durationMilliseconds: 40, httpStatus: 204, responseBody: Array("abc".utf8),
                    error: nil))
        #expect(verdict.outcome.error == nil)
        #expect(verdict.log.map(\.message) == ["delivered"])
    }

    @Test("a 5xx is retried after the schedule's delay and counts as a failure; the last attempt gives up")
    func serverErrors() throws {
        let first = try Self.judge(Self.answer(502))
        #expect(first.outcome.status == .retrying)
        #expect(first.outcome.nextAttemptAt == Self.now + 5000)
        #expect(first.outcome.error == "destination answered HTTP 502")
        #expect(first.feedback == .failed)
        #expect(first.outcome.countsAsAttempt)

        let last = try Self.judge(Self.answer(500), Self.context(attempts: 7))
        #expect(last.outcome.status == .dead)
        #expect(last.outcome.error == "destination answered HTTP 500 (gave up after 8 attempts)")
        #expect(last.feedback == .failed)
        #expect(last.counted == .dead)
        #expect(last.log.first?.level == .warning)
    }

    @Test("a 4xx is dead at once unless it is listed as retryable; 408 is retried")
    func clientErrors() throws {
        let gone = try Self.judge(Self.answer(410))
        #expect(gone.outcome.status == .dead)
        #expect(gone.outcome.error == "destination answered HTTP 410")
        #expect(gone.feedback == .neutral)

        #expect(try Self.judge(Self.answer(408)).outcome.status == .retrying)
        var retry = RetryPolicy()
        retry.retryableStatuses.insert(404)
        #expect(try Self.judge(Self.answer(404), Self.context(retry: retry)).outcome.status == .retrying)
    }

    @Test("a 429 waits its Retry-After without spending an attempt, and tells the lane until when")
    func rateLimited() throws {
        let verdict = try Self.judge(Self.answer(429, headers: [("Retry-After", "2")]))
        #expect(verdict.outcome.status == .retrying)
        #expect(verdict.outcome.nextAttemptAt == Self.now + 2000)
        #expect(!verdict.outcome.countsAsAttempt)
        #expect(verdict.feedback == .rateLimited(until: Self.now + 2000))
        #expect(verdict.counted == .rateLimited)
        #expect(verdict.outcome.error == "destination answered HTTP 429 (rate limited for 2s)")

        // With no wait announced, the schedule's first delay (without jitter).
        let unannounced = try Self.judge(Self.answer(429), Self.context(attempts: 7))
        #expect(unannounced.outcome.status == .retrying)
        #expect(unannounced.outcome.nextAttemptAt == Self.now + 5000)
    }

    @Test("a receiver asking for longer than max_retry_after is held to it, and the attempt log says so")
    func clampedWait() throws {
        let verdict = try Self.judge(Self.answer(429, headers: [("Retry-After", "1e300")]), Self.context(maxRetryAfter: .seconds(60)))
        #expect(verdict.outcome.nextAttemptAt == Self.now + 60_000)
        #expect(verdict.outcome.attempt?.error?.contains("longer than max_retry_after; waiting 1m") == true)
        #expect(verdict.log.contains { $0.level == .warning && $0.message.contains("max_retry_after") })

        // A 503's Retry-After is a minimum wait on a failed attempt.
        let unavailable = try Self.judge(Self.answer(503, headers: [("Retry-After", "120")]))
        #expect(unavailable.outcome.nextAttemptAt == Self.now + 120_000)
        #expect(unavailable.outcome.countsAsAttempt)
        #expect(unavailable.feedback == .failed)
    }

    @Test("an announced window and bucket are learned on any answer, a success included")
    func windowAndBucket() throws {
        let verdict = try Self.judge(
            Self.answer(
                200, headers: [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset-After", "1.5"), ("X-RateLimit-Bucket", "abc")]))
        #expect(verdict.outcome.status == .delivered)
        #expect(verdict.window == Self.now + 1500)
        #expect(verdict.bucket == "abc")
    }

    @Test("a retry that would pass max_age is dead instead")
    func maximumAge() throws {
        var retry = RetryPolicy()
        retry.maximumAge = .seconds(3)
        let verdict = try Self.judge(Self.answer(500), Self.context(retry: retry))
        #expect(verdict.outcome.status == .dead)
        #expect(verdict.outcome.error?.contains("older than max_age") == true)
    }

    @Test("a transport error is retried with its description and counts towards the breaker")
    func transport() throws {
        let verdict = try Self.judge(.transportFailed(description: "timed out", part: 0, parts: 1))
        #expect(verdict.outcome.status == .retrying)
        #expect(verdict.outcome.error == "timed out")
        #expect(verdict.outcome.attempt?.error == "timed out")
        #expect(verdict.outcome.attempt?.httpStatus == nil)
        #expect(verdict.feedback == .failed)
        #expect(verdict.measured)
    }

    @Test("of several requests, a 2xx before the last sends the next; a failure keeps the parts delivered so far")
    func multiPart() throws {
        guard case .sendNextPart = Verdict.of(Self.answer(200, part: 0, parts: 3), context: Self.context()) else {
            Issue.record("a 2xx of request 1 of 3 should send the next")
            return
        }
        let failed = try Self.judge(Self.answer(500, part: 1, parts: 3))
        #expect(failed.outcome.partsSent == 1)
        #expect(failed.outcome.error == "request 2 of 3: destination answered HTTP 500")
        let done = try Self.judge(Self.answer(200, part: 2, parts: 3))
        #expect(done.outcome.status == .delivered)
        #expect(done.outcome.partsSent == 3)
        let cut = try Self.judge(.cancelled(part: 2, parts: 3))
        #expect(cut.outcome.status == .pending)
        #expect(cut.outcome.partsSent == 2)
        #expect(cut.outcome.attempt == nil)
    }

    @Test("the formatter's decisions: skip, failures, crashes (a second is a poison event), no worker, shutdown")
    func formatterDecisions() throws {
        let skipped = try Self.judge(.formatter(.skip(reason: "not interesting")))
        #expect(skipped.outcome.status == .skipped)
        #expect(skipped.outcome.attempt?.error == "skipped by formatter 'generic': not interesting")
        #expect(!skipped.measured)
        #expect(skipped.failedPlugin == nil)

        let permanent = try Self.judge(.formatter(.failed(message: "bad template", permanent: true)))
        #expect(permanent.outcome.status == .dead)
        #expect(permanent.outcome.error == "formatter 'generic' failed: bad template")
        #expect(permanent.failedPlugin == "generic")
        #expect(permanent.feedback == .neutral)
        let transient = try Self.judge(.formatter(.failed(message: "busy", permanent: false)))
        #expect(transient.outcome.status == .retrying)
        #expect(transient.feedback == .neutral)

        let crashed = try Self.judge(.formatter(.aborted(reason: "worker crashed (SIGSEGV)")))
        #expect(crashed.outcome.status == .retrying)
        #expect(crashed.outcome.pluginFailures == 1)
        let again = try Self.judge(.formatter(.aborted(reason: "worker crashed (SIGSEGV)")), Self.context(attempts: 1, pluginFailures: 1))
        #expect(again.outcome.status == .dead)
        #expect(again.outcome.pluginFailures == 2)
        #expect(again.outcome.error?.hasPrefix("poison event: worker crashed (SIGSEGV) (2 times)") == true)

        let unavailable = try Self.judge(.formatter(.unavailable(reason: "no worker within 5s")), Self.context(attempts: 7))
        #expect(unavailable.outcome.status == .retrying)
        #expect(!unavailable.outcome.countsAsAttempt)
        #expect(unavailable.outcome.nextAttemptAt == Self.now + 5000)

        let cancelled = try Self.judge(.formatter(.cancelled))
        #expect(cancelled.outcome.status == .pending)
        #expect(cancelled.counted == .released)
    }

    @Test("a destination removed by a reload is dead, naming it")
    func unconfigured() throws {
        let verdict = try Self.judge(.unconfigured)
        #expect(verdict.outcome.status == .dead)
        #expect(verdict.outcome.error == "destination 'out' is no longer configured")
    }

    @Test("hostile numbers never trap: attempt counts at Int.max, timestamps at the edges")
    func extremes() throws {
        var context = Self.context(attempts: Int.max, pluginFailures: Int.max, receivedAt: Int64.min)
        context.now = Int64.max
        for answer in [
            Self.answer(500), Self.answer(429, headers: [("Retry-After", "9e18")]), .formatter(.aborted(reason: "x")),
            .transportFailed(description: "x", part: Int.max, parts: Int.max),
        ] {
            _ = Verdict.of(answer, context: context)
        }
    }
}
