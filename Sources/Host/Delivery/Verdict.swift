import Logging

/// What one attempt at a delivery came back with, before anything decides what it means.
enum Answer: Sendable {
    /// The destination, or its formatter instance, is no longer configured.
    case unconfigured
    /// The formatter sent nothing: it skipped the event, failed, crashed, found no worker, or shutdown stopped it.
    case formatter(FormatterDecision)
    /// Request `part` (0-based) of `parts` could not be sent or answered: a connection error or a timeout.
    case transportFailed(description: String, part: Int, parts: Int)
    /// Shutdown stopped the attempt while request `part` of `parts` was being sent (`part` 0 when nothing was sent).
    case cancelled(part: Int, parts: Int)
    /// Request `part` of `parts` was answered.
    case response(Response, part: Int, parts: Int)

    /// An HTTP answer: its status, headers, and as much of its body as was read.
    struct Response: Sendable {
        var status: Int
        var headers: [(name: String, value: String)]
        var body: [UInt8]
    }

    /// Why a formatter sent nothing.
    enum FormatterDecision: Sendable, Equatable {
        case skip(reason: String)
        case failed(message: String, permanent: Bool)
        /// The format call crashed its worker or missed its deadline.
        case aborted(reason: String)
        /// No worker could take the call in time.
        case unavailable(reason: String)
        /// Shutdown stopped the wait.
        case cancelled
    }
}

/// What an attempt's answer means: the outcome to record, what the destination's lane learns, how it is counted and
/// what is logged. ``Verdict/of(_:context:)`` is the one place an answer is interpreted; it is a pure function of the
/// answer and the delivery's context (no clock, no randomness, no I/O), so every rule is unit-tested without a sink.
struct Verdict: Sendable {
    /// What the store records.
    var outcome: DeliveryOutcome
    /// What flow control learns: the lane's circuit breaker and rate limit.
    var feedback: DestinationLane.Feedback
    /// A rate-limit window the destination announced, until this time (ms); it applies to other lanes on its bucket.
    var window: Int64?
    /// The rate-limit bucket the answer named (`X-RateLimit-Bucket`).
    var bucket: String?
    /// The `outcome` label of `hookproxy_delivery_attempts_total`.
    var counted: CountedAs
    /// True when a request was sent or tried, so the attempt's duration is measured.
    var measured: Bool
    /// The formatter plugin that failed or crashed (`hookproxy_plugin_errors_total`).
    var failedPlugin: String?
    /// What the attempt logs, with the delivery's metadata.
    var log: [LogLine]

    /// How an attempt is counted in the metrics.
    enum CountedAs: String, Sendable {
        case delivered, retrying, dead, skipped, released
        case rateLimited = "rate_limited"
    }

    /// One log line an attempt writes.
    struct LogLine: Sendable, Equatable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    /// What an answer is judged against.
    struct Context: Sendable {
        var deliveryID: String
        var destination: String
        /// Attempts made before this one.
        var attempts: Int
        /// Earlier attempts whose format call crashed its plugin or missed its deadline.
        var pluginFailures: Int
        var receivedAt: Int64
        var retry: RetryPolicy
        var maxRetryAfter: Duration
        /// What the attempt log keeps of a response body (`store_response`).
        var keptBytes: Int
        var formatterName: String
        /// When the attempt started and how long it took (ms).
        var startedAt: Int64
        var duration: Int64
        /// When the answer arrived (ms).
        var now: Int64
        /// The jitter draw for a retry's delay, in -1...1.
        var random: Double

        /// This attempt's number.
        var number: Int { attempts.addingSaturated(1) }
    }

    /// Format calls that crash their plugin or miss their deadline on one delivery before it is dead as a poison event.
    static let poisonStrikes = 2

    /// What to do after an answer: send the next request of a multi-request delivery, or finish with a verdict.
    enum Next: Sendable {
        case sendNextPart
        case finish(Verdict)
    }

    /// Judges an answer. A 2xx for a request that is not the delivery's last is `.sendNextPart`; everything else
    /// finishes the attempt.
    static func of(_ answer: Answer, context: Context) -> Next {
        let judge = Judge(context: context)
        switch answer {
        case .unconfigured: return .finish(judge.unconfigured())
        case .formatter(let decision): return .finish(judge.formatter(decision))
        case .transportFailed(let description, let part, let parts):
            let reason = judge.prefix(part, parts) + description
            return .finish(judge.progress(judge.retry(reason, judge.record(error: reason)), part, parts))
        case .cancelled(let part, let parts):
            return .finish(judge.progress(released(deliveryID: context.deliveryID, now: context.now), part, parts, onlyAfterFirst: true))
        case .response(let response, let part, let parts): return judge.response(response, part: part, parts: parts)
        }
    }

    /// The attempt never happened or was cut short by shutdown: the delivery goes back to pending without counting an
    /// attempt.
    static func released(deliveryID: String, now: Int64) -> Verdict {
        Verdict(
            outcome: DeliveryOutcome(deliveryID: deliveryID, status: .pending, nextAttemptAt: now, attempt: nil, error: nil),
            feedback: .neutral, counted: .released, measured: false, log: [])
    }
}

/// The rules, with the context at hand.
private struct Judge {
    let context: Context
    typealias Context = Verdict.Context

    init(context: Context) { self.context = context }

    var number: Int { context.number }

    /// The attempt log's row; the body is cut to what the destination keeps.
    func record(status: Int? = nil, body: [UInt8] = [], error: String?) -> AttemptRecord {
        AttemptRecord(
            number: number, startedAt: context.startedAt, durationMilliseconds: context.duration, httpStatus: status,
            responseBody: Array(body.prefix(max(0, context.keptBytes))), error: error)
    }

    /// `request 2 of 3: ` for a multi-request delivery.
    func prefix(_ part: Int, _ parts: Int) -> String {
        parts > 1 ? "request \(part.addingSaturated(1)) of \(parts): " : ""
    }

    /// Of a multi-request delivery, the requests before `part` are delivered.
    func progress(_ verdict: Verdict, _ part: Int, _ parts: Int, onlyAfterFirst: Bool = false) -> Verdict {
        var verdict = verdict
        if parts > 1, !onlyAfterFirst || part > 0 { verdict.outcome.partsSent = part }
        return verdict
    }

    func dead(_ reason: String, _ attempt: AttemptRecord, _ feedback: DestinationLane.Feedback = .neutral) -> Verdict {
        Verdict(
            outcome: DeliveryOutcome(deliveryID: context.deliveryID, status: .dead, nextAttemptAt: nil, attempt: attempt, error: reason),
            feedback: feedback, counted: .dead, measured: true,
            log: [.init(level: .warning, message: "delivery dead", metadata: ["attempt": "\(number)", "error": reason])])
    }

    /// A failed attempt: retried on the schedule, or dead once the schedule or `max_age` is used up.
    func retry(
        _ reason: String, _ attempt: AttemptRecord, notBefore: Duration? = nil, feedback: DestinationLane.Feedback = .failed,
        window: Int64? = nil
    ) -> Verdict {
        guard let delay = context.retry.delay(afterAttempt: number, random: context.random) else {
            return dead("\(reason) (gave up after \(number) attempts)", attempt, feedback)
        }
        let wait = max(delay, notBefore ?? .zero)
        let next = context.now.addingSaturated(wait.wholeMilliseconds)
        if let maximumAge = context.retry.maximumAge, next.subtractingSaturated(context.receivedAt) > maximumAge.wholeMilliseconds {
            return dead("\(reason) (the event is older than max_age \(maximumAge) by the next retry)", attempt, feedback)
        }
        return Verdict(
            outcome: DeliveryOutcome(
                deliveryID: context.deliveryID, status: .retrying, nextAttemptAt: next, attempt: attempt, error: reason),
            feedback: feedback, window: window, counted: .retrying, measured: true,
            log: [
                .init(
                    level: .info, message: "delivery will be retried",
                    metadata: ["attempt": "\(number)", "error": reason, "retry_in": wait.compactDescription])
            ])
    }

    func unconfigured() -> Verdict {
        let reason = "destination '\(context.destination)' is no longer configured"
        return dead(reason, record(error: reason))
    }

    func formatter(_ decision: Answer.FormatterDecision) -> Verdict {
        let name = context.formatterName
        switch decision {
        case .skip(let reason):
            return Verdict(
                outcome: DeliveryOutcome(
                    deliveryID: context.deliveryID, status: .skipped, nextAttemptAt: nil,
                    attempt: record(error: "skipped by formatter '\(name)': \(reason)"), error: nil),
                feedback: .neutral, counted: .skipped, measured: false,
                log: [.init(level: .info, message: "delivery skipped by formatter", metadata: ["reason": reason])])
        case .failed(let message, let permanent):
            let reason = "formatter '\(name)' failed: \(message)"
            var verdict = permanent ? dead(reason, record(error: reason)) : retry(reason, record(error: reason), feedback: .neutral)
            verdict.failedPlugin = name
            return verdict
        case .aborted(let reason):
            // The plugin crashed or hung on this event. Once is retried on the schedule (a worker can die for other
            // reasons); the same delivery again is a poison event: dead at once, so it never takes a worker down again.
            let strikes = context.pluginFailures.addingSaturated(1)
            var verdict =
                strikes >= Verdict.poisonStrikes
                ? dead("poison event: \(reason) (\(strikes) times); quarantined, replay it once the plugin is fixed", record(error: reason))
                : retry(reason, record(error: reason), feedback: .neutral)
            verdict.outcome.pluginFailures = strikes
            verdict.failedPlugin = name
            return verdict
        case .unavailable(let message):
            // No worker could take the call in time (they are busy, or restarting after crashes): not the event's
            // fault, so no attempt is spent; it is tried again after the schedule's first delay.
            let reason = "formatter '\(name)' could not run: \(message)"
            let wait = context.retry.delay(afterAttempt: 1, random: 0) ?? .seconds(1)
            return Verdict(
                outcome: DeliveryOutcome(
                    deliveryID: context.deliveryID, status: .retrying, nextAttemptAt: context.now.addingSaturated(wait.wholeMilliseconds),
                    attempt: record(error: reason), error: reason, countsAsAttempt: false),
                feedback: .neutral, counted: .retrying, measured: true,
                log: [
                    .init(
                        level: .info, message: "delivery waits for its formatter",
                        metadata: ["error": reason, "retry_in": wait.compactDescription])
                ])
        case .cancelled:
            return Verdict.released(deliveryID: context.deliveryID, now: context.now)
        }
    }

    func response(_ response: Answer.Response, part: Int, parts: Int) -> Verdict.Next {
        let status = response.status
        var notes: [Verdict.LogLine] = []
        let window = honour(AnnouncedWait.window(headers: response.headers), notes: &notes)
            .map { context.now.addingSaturated($0.wait.wholeMilliseconds) }
        let bucket = response.headers.first { $0.name.lowercased() == "x-ratelimit-bucket" }?.value
        var attempt = record(status: status, body: response.body, error: nil)
        let prefix = self.prefix(part, parts)
        var verdict: Verdict
        switch status {
        case 200..<300:
            guard part.addingSaturated(1) >= parts else { return .sendNextPart }
            verdict = Verdict(
                outcome: DeliveryOutcome(
                    deliveryID: context.deliveryID, status: .delivered, nextAttemptAt: nil, attempt: attempt, error: nil),
                feedback: .succeeded, window: window, counted: .delivered, measured: true,
                log: [
                    .init(
                        level: .info, message: "delivered",
                        metadata: ["attempt": "\(number)", "status": "\(status)", "ms": "\(context.duration)"])
                ])
            if parts > 1 { verdict.outcome.partsSent = parts }
        case 429:
            // A rate-limit wait is not a failed attempt: the delivery waits out the window and keeps its place.
            let announced = honour(AnnouncedWait.parse(headers: response.headers, body: response.body), notes: &notes)
            let wait = announced?.wait ?? context.retry.delay(afterAttempt: 1, random: 0) ?? .seconds(1)
            // A clamped wait shows in the attempt log as well as in the delivery's last error.
            if let announced, announced.clamped { attempt.error = announced.note }
            let until = context.now.addingSaturated(wait.wholeMilliseconds)
            verdict = progress(
                Verdict(
                    outcome: DeliveryOutcome(
                        deliveryID: context.deliveryID, status: .retrying, nextAttemptAt: until, attempt: attempt,
                        error:
                            "\(prefix)destination answered HTTP 429 (\(announced?.note ?? "rate limited for \(wait.compactDescription)"))",
                        countsAsAttempt: false),
                    feedback: .rateLimited(until: until), window: window, counted: .rateLimited, measured: true,
                    log: [
                        .init(
                            level: .info, message: "destination rate limited",
                            metadata: ["attempt": "\(number)", "wait": wait.compactDescription])
                    ]), part, parts)
        case 400..<500 where !context.retry.retryableStatuses.contains(status):
            verdict = progress(dead("\(prefix)destination answered HTTP \(status)", attempt), part, parts)
        default:
            let announced =
                status == 503 ? honour(AnnouncedWait.parse(headers: response.headers, body: response.body), notes: &notes) : nil
            if let announced, announced.clamped { attempt.error = announced.note }
            let reason = "\(prefix)destination answered HTTP \(status)" + (announced.map { $0.clamped ? " (\($0.note))" : "" } ?? "")
            verdict = progress(retry(reason, attempt, notBefore: announced?.wait, window: window), part, parts)
        }
        verdict.bucket = bucket
        verdict.log = notes + verdict.log
        return .finish(verdict)
    }

    /// A wait a destination announced, as kept: at most the destination's `max_retry_after`.
    struct HonouredWait {
        var wait: Duration
        /// True when the destination asked for longer.
        var clamped: Bool
        /// For the attempt's error: `rate limited for 2s`, or what was asked and what is kept instead.
        var note: String
    }

    /// Clamps an announced wait to `max_retry_after`, noting a longer request: a receiver's word never holds a delivery
    /// (or the process, in `now + wait`) beyond what the operator allows.
    func honour(_ announced: AnnouncedWait?, notes: inout [Verdict.LogLine]) -> HonouredWait? {
        guard let announced else { return nil }
        let maximum = context.maxRetryAfter
        let wait = announced.honoured(atMost: maximum)
        guard announced.exceeds(maximum) else {
            return HonouredWait(wait: wait, clamped: false, note: "rate limited for \(wait.compactDescription)")
        }
        notes.append(
            .init(
                level: .warning, message: "destination asked to wait longer than max_retry_after; waiting max_retry_after",
                metadata: ["announced": "\(announced)", "max_retry_after": maximum.compactDescription]))
        return HonouredWait(
            wait: wait, clamped: true,
            note: "it asked to wait \(announced), longer than max_retry_after; waiting \(maximum.compactDescription)")
    }
}
