import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PluginKit

/// Makes one attempt at one delivery: format with the destination's plugin instance, sign, send, and decide what
/// happens next (delivered, retry at a time, dead, skipped) and what the destination's lane learns from it. Never
/// throws: every failure is an outcome with its reason.
struct DeliverySender: Sendable {
    let httpClient: HTTPClient
    let logger: Logger
    let metrics: HookproxyMetrics

    /// The outcome to record and what flow control learns.
    struct Result: Sendable {
        var outcome: DeliveryOutcome
        var feedback: DestinationLane.Feedback
        /// A rate-limit window the destination announced, until this time (ms).
        var window: Int64?
        /// The rate-limit bucket the answer named (`X-RateLimit-Bucket`).
        var bucket: String?
    }

    func attempt(_ delivery: ClaimedDelivery, runtime: Runtime) async -> Result {
        let number = delivery.attempts + 1
        let startedAt = Clock.milliseconds()
        let clock = ContinuousClock()
        let start = clock.now
        var logger = self.logger
        logger[metadataKey: "event_id"] = "\(delivery.event.id)"
        logger[metadataKey: "delivery_id"] = "\(delivery.id)"
        logger[metadataKey: "destination"] = "\(delivery.destination)"

        func elapsed() -> Int64 {
            let duration = clock.now - start
            return duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        }
        // What the attempt log keeps of an answer: the destination's `store_response` (the body is read further for
        // a JSON `retry_after`).
        let keptBytes = runtime.config.destinations[delivery.destination]?.storeResponseBytes ?? AttemptRecord.defaultResponseBytes
        func record(status: Int? = nil, body: [UInt8] = [], error: String? = nil) -> AttemptRecord {
            AttemptRecord(
                number: number, startedAt: startedAt, durationMilliseconds: elapsed(), httpStatus: status,
                responseBody: Array(body.prefix(keptBytes)), error: error)
        }
        func dead(_ reason: String, _ attempt: AttemptRecord, _ feedback: DestinationLane.Feedback = .neutral) -> Result {
            logger.warning("delivery dead", metadata: ["attempt": "\(number)", "error": "\(reason)"])
            return Result(
                outcome: DeliveryOutcome(deliveryID: delivery.id, status: .dead, nextAttemptAt: nil, attempt: attempt, error: reason),
                feedback: feedback)
        }
        func retry(
            _ reason: String, _ attempt: AttemptRecord, policy: RetryPolicy, notBefore: Duration? = nil,
            feedback: DestinationLane.Feedback = .failed, window: Int64? = nil
        ) -> Result {
            guard let delay = policy.delay(afterAttempt: number) else {
                return dead("\(reason) (gave up after \(number) attempts)", attempt, feedback)
            }
            let wait = max(delay, notBefore ?? .zero)
            let next = Clock.milliseconds().addingSaturated(wait.wholeMilliseconds)
            if let maximumAge = policy.maximumAge, next.subtractingSaturated(delivery.event.receivedAt) > maximumAge.wholeMilliseconds {
                return dead("\(reason) (the event is older than max_age \(maximumAge) by the next retry)", attempt, feedback)
            }
            logger.info(
                "delivery will be retried",
                metadata: ["attempt": "\(number)", "error": "\(reason)", "retry_in": "\(wait.compactDescription)"])
            return Result(
                outcome: DeliveryOutcome(deliveryID: delivery.id, status: .retrying, nextAttemptAt: next, attempt: attempt, error: reason),
                feedback: feedback, window: window)
        }

        guard let destination = runtime.config.destinations[delivery.destination],
            let formatter = runtime.instances.formatter(source: delivery.event.source, destination: delivery.destination)
        else {
            let reason = "destination '\(delivery.destination)' is no longer configured"
            return dead(reason, record(error: reason))
        }

        let requests: [HTTPClientRequest]
        // The executor measures the call itself (its duration and slowness), not its wait for a worker.
        let prepared = await Self.prepare(
            delivery, destination: destination, formatter: formatter, attempt: number,
            subject: .delivery(id: delivery.id, destination: delivery.destination))
        let plugin = [("plugin", formatter.plugin.name)]
        switch prepared {
        case .failed, .aborted: metrics.increment("hookproxy_plugin_errors_total", plugin + [("operation", "format")])
        default: break
        }
        switch prepared {
        case .send(let parts): requests = parts.map(\.request)
        case .skip(let reason):
            logger.info("delivery skipped by formatter", metadata: ["reason": "\(reason)"])
            return Result(
                outcome: DeliveryOutcome(
                    deliveryID: delivery.id, status: .skipped, nextAttemptAt: nil,
                    attempt: record(error: "skipped by formatter '\(formatter.plugin.name)': \(reason)"), error: nil),
                feedback: .neutral)
        case .failed(let message, let permanent):
            let reason = "formatter '\(formatter.plugin.name)' failed: \(message)"
            return permanent
                ? dead(reason, record(error: reason)) : retry(reason, record(error: reason), policy: destination.retry, feedback: .neutral)
        case .aborted(let reason):
            // The plugin crashed or hung on this event. Once is retried on the schedule (a worker can die for other
            // reasons); the same delivery again is a poison event: dead at once, so it never takes a worker down again.
            let strikes = delivery.pluginFailures + 1
            var result =
                strikes >= Self.poisonStrikes
                ? dead("poison event: \(reason) (\(strikes) times); quarantined, replay it once the plugin is fixed", record(error: reason))
                : retry(reason, record(error: reason), policy: destination.retry, feedback: .neutral)
            result.outcome.pluginFailures = strikes
            return result
        case .unavailable(let message):
            // No worker could take the call in time (they are busy, or restarting after crashes): not the event's
            // fault, so no attempt is spent; it is tried again after the schedule's first delay.
            let reason = "formatter '\(formatter.plugin.name)' could not run: \(message)"
            let wait = destination.retry.delay(afterAttempt: 1, random: 0) ?? .seconds(1)
            logger.info("delivery waits for its formatter", metadata: ["error": "\(reason)", "retry_in": "\(wait.compactDescription)"])
            return Result(
                outcome: DeliveryOutcome(
                    deliveryID: delivery.id, status: .retrying, nextAttemptAt: Clock.milliseconds().addingSaturated(wait.wholeMilliseconds),
                    attempt: record(error: reason), error: reason, countsAsAttempt: false),
                feedback: .neutral)
        case .cancelled:
            return Self.released(delivery)
        }

        // Several requests for one event are sent in order; earlier attempts may have delivered the first ones.
        let first = min(delivery.partsSent, requests.count - 1)
        for index in first..<requests.count {
            let part = requests.count > 1 ? "request \(index + 1) of \(requests.count): " : ""
            func progress(_ result: Result) -> Result {
                var result = result
                if requests.count > 1 { result.outcome.partsSent = index }
                return result
            }
            let status: Int
            let responseHeaders: [(name: String, value: String)]
            var responseBody: [UInt8] = []
            do {
                let response = try await httpClient.execute(
                    requests[index], deadline: .now() + .milliseconds(destination.timeout.wholeMilliseconds))
                status = Int(response.status.code)
                responseHeaders = response.headers.map { ($0.name, $0.value) }
                for try await chunk in response.body {
                    let read = max(keptBytes, AttemptRecord.defaultResponseBytes)
                    responseBody.append(contentsOf: chunk.readableBytesView.prefix(read - responseBody.count))
                    if responseBody.count >= read { break }
                }
            } catch is CancellationError {
                var released = Self.released(delivery)
                if requests.count > 1, index > first { released.outcome.partsSent = index }
                return released
            } catch {
                let reason = part + Self.describe(error)
                return progress(retry(reason, record(error: reason), policy: destination.retry))
            }

            var attempt = record(status: status, body: responseBody)
            let now = Clock.milliseconds()
            let window = honour(AnnouncedWait.window(headers: responseHeaders), destination: destination, logger: logger)
                .map { now.addingSaturated($0.wait.wholeMilliseconds) }
            let bucket = responseHeaders.first { $0.name.lowercased() == "x-ratelimit-bucket" }?.value
            var result: Result
            switch status {
            case 200..<300:
                guard index == requests.count - 1 else { continue }
                logger.info(
                    "delivered", metadata: ["attempt": "\(number)", "status": "\(status)", "ms": "\(attempt.durationMilliseconds)"])
                var delivered = Result(
                    outcome: DeliveryOutcome(deliveryID: delivery.id, status: .delivered, nextAttemptAt: nil, attempt: attempt, error: nil),
                    feedback: .succeeded, window: window)
                if requests.count > 1 { delivered.outcome.partsSent = requests.count }
                result = delivered
            case 429:
                // A rate-limit wait is not a failed attempt: the delivery waits out the window and keeps its place.
                let announced = honour(
                    AnnouncedWait.parse(headers: responseHeaders, body: responseBody), destination: destination, logger: logger)
                let wait = announced?.wait ?? destination.retry.delay(afterAttempt: 1, random: 0) ?? .seconds(1)
                // A clamped wait shows in the attempt log as well as in the delivery's last error.
                if let announced, announced.clamped { attempt.error = announced.note }
                let until = now.addingSaturated(wait.wholeMilliseconds)
                logger.info("destination rate limited", metadata: ["attempt": "\(number)", "wait": "\(wait.compactDescription)"])
                result = progress(
                    Result(
                        outcome: DeliveryOutcome(
                            deliveryID: delivery.id, status: .retrying, nextAttemptAt: until, attempt: attempt,
                            error:
                                "\(part)destination answered HTTP 429 (\(announced?.note ?? "rate limited for \(wait.compactDescription)"))",
                            countsAsAttempt: false),
                        feedback: .rateLimited(until: until), window: window))
            case 400..<500 where !destination.retry.retryableStatuses.contains(status):
                result = progress(dead("\(part)destination answered HTTP \(status)", attempt))
            default:
                let announced =
                    status == 503
                    ? honour(AnnouncedWait.parse(headers: responseHeaders, body: responseBody), destination: destination, logger: logger)
                    : nil
                if let announced, announced.clamped { attempt.error = announced.note }
                let reason =
                    "\(part)destination answered HTTP \(status)" + (announced?.clamped == true ? " (\(announced?.note ?? ""))" : "")
                result = progress(
                    retry(reason, attempt, policy: destination.retry, notBefore: announced?.wait, window: window))
            }
            result.bucket = bucket
            return result
        }
        // Not reached: the last request's answer returns above.
        return Self.released(delivery)
    }

    /// A wait a destination announced, as kept: at most the destination's `max_retry_after`.
    struct HonouredWait {
        var wait: Duration
        /// True when the destination asked for longer.
        var clamped: Bool
        /// For the attempt's error: `rate limited for 2s`, or what was asked and what is kept instead.
        var note: String
    }

    /// Clamps an announced wait to `max_retry_after`, logging a longer request: a receiver's word never holds a
    /// delivery (or the process, in `now + wait`) beyond what the operator allows.
    private func honour(_ announced: AnnouncedWait?, destination: DestinationConfig, logger: Logger) -> HonouredWait? {
        guard let announced else { return nil }
        let maximum = destination.maxRetryAfter
        let wait = announced.honoured(atMost: maximum)
        guard announced.exceeds(maximum) else {
            return HonouredWait(wait: wait, clamped: false, note: "rate limited for \(wait.compactDescription)")
        }
        logger.warning(
            "destination asked to wait longer than max_retry_after; waiting max_retry_after",
            metadata: ["announced": "\(announced)", "max_retry_after": "\(maximum.compactDescription)"])
        return HonouredWait(
            wait: wait, clamped: true,
            note: "it asked to wait \(announced), longer than max_retry_after; waiting \(maximum.compactDescription)")
    }

    /// One request to send and its body.
    struct Part {
        var request: HTTPClientRequest
        var body: [UInt8]
    }

    /// Format calls that crash their plugin or miss their deadline on one delivery before it is dead as a poison event.
    static let poisonStrikes = 2

    /// What the formatter made of a delivery: the requests to send (usually one), or why nothing is sent.
    enum Prepared {
        case send([Part])
        case skip(reason: String)
        case failed(message: String, permanent: Bool)
        /// The format call crashed its worker or missed its deadline.
        case aborted(reason: String)
        /// No worker could take the call in time.
        case unavailable(reason: String)
        /// Shutdown stopped the wait.
        case cancelled
    }

    /// Formats `delivery` with `formatter` and builds its requests: the destination's static headers, the plugin's
    /// headers, Content-Type, User-Agent, and the Standard Webhooks `webhook-id` (`<delivery id>`, then `-1`, `-2` for
    /// further requests of one event), `webhook-timestamp` and (with a signing secret) `webhook-signature`. Sends
    /// nothing; `hookproxy preview` shows exactly this.
    static func prepare(
        _ delivery: ClaimedDelivery, destination: DestinationConfig, formatter: PluginInstance, attempt number: Int,
        subject: CallSubject = .none
    ) async -> Prepared {
        let document = EventDocument.bytes(event: delivery.event, destination: delivery.destination, attempt: number)
        let formatted = await formatter.format(
            document: document, body: delivery.event.body, contentType: delivery.event.contentType, subject: subject)
        let outputs: [OutboundRequest]
        switch formatted {
        case .send(let body, let type, let headers):
            if type == OutboundRequest.sequenceContentType {
                guard let requests = OutboundRequest.requests(inSequence: body) else {
                    return .failed(message: "its list of requests (\(type)) is malformed", permanent: true)
                }
                outputs = requests
            } else {
                outputs = [OutboundRequest(body: body, contentType: type, headers: headers)]
            }
        case .skip(let reason): return .skip(reason: reason)
        case .failed(let message, let permanent): return .failed(message: message, permanent: permanent)
        case .aborted(let reason): return .aborted(reason: reason)
        case .unavailable(let reason): return .unavailable(reason: reason)
        case .cancelled: return .cancelled
        }
        // A plugin's headers are checked as the configuration's are: a broken one is the plugin's permanent failure,
        // named without its value (it may carry a secret), rather than an HTTP client error quoting it.
        for output in outputs {
            for header in output.headers {
                guard HeaderField.isValidName(header.name) else {
                    return .failed(message: "it returned a header whose name is not a valid HTTP header name", permanent: true)
                }
                guard HeaderField.isValidValue(header.value) else {
                    return .failed(
                        message: "it returned header '\(header.name)' with a value that is not a valid HTTP header value", permanent: true)
                }
            }
            guard HeaderField.isValidValue(output.contentType) else {
                return .failed(message: "it returned a content type that is not a valid HTTP header value", permanent: true)
            }
        }
        let timestamp = Clock.milliseconds() / 1000
        return .send(
            outputs.enumerated().map { index, output in
                var request = HTTPClientRequest(url: destination.url)
                request.method = .POST
                for header in destination.headers { request.headers.replaceOrAdd(name: header.name, value: header.value) }
                for header in output.headers { request.headers.replaceOrAdd(name: header.name, value: header.value) }
                request.headers.replaceOrAdd(
                    name: "Content-Type", value: output.contentType.isEmpty ? "application/json" : output.contentType)
                request.headers.replaceOrAdd(name: "User-Agent", value: "hookproxy/\(HookproxyVersion.current)")
                let id = index == 0 ? delivery.id : "\(delivery.id)-\(index)"
                request.headers.replaceOrAdd(name: "webhook-id", value: id)
                request.headers.replaceOrAdd(name: "webhook-timestamp", value: String(timestamp))
                if !destination.signingSecrets.isEmpty {
                    request.headers.replaceOrAdd(
                        name: "webhook-signature",
                        value: WebhookSigner.signature(secrets: destination.signingSecrets, id: id, timestamp: timestamp, body: output.body)
                    )
                }
                request.body = .bytes(ByteBuffer(bytes: output.body))
                return Part(request: request, body: output.body)
            })
    }

    /// Shutdown cut the attempt short (or it never started): the delivery goes back to pending without counting an attempt.
    static func released(_ delivery: ClaimedDelivery) -> Result {
        Result(
            outcome: DeliveryOutcome(
                deliveryID: delivery.id, status: .pending, nextAttemptAt: Clock.milliseconds(), attempt: nil, error: nil),
            feedback: .neutral)
    }

    /// A short description of a transport error; it never includes the URL, which may hold a token.
    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .writeTimeout: return "timed out"
            case .connectTimeout: return "connect timed out"
            case .remoteConnectionClosed: return "the destination closed the connection"
            default: return "\(error)"
            }
        }
        return "cannot connect or send: \(error)"
    }
}
