import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PluginKit

/// Makes one attempt at one delivery: format with the destination's plugin instance, send, and decide what happens
/// next (delivered, retry at a time, dead, skipped). Never throws: every failure is an outcome with its reason.
struct DeliverySender: Sendable {
    let httpClient: HTTPClient
    let logger: Logger

    /// HTTP statuses that are worth trying again; any other 4xx is permanent.
    static let retryableClientErrors: Set<Int> = [408, 409, 425, 429]

    func attempt(_ delivery: ClaimedDelivery, runtime: Runtime) async -> DeliveryOutcome {
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
        func record(status: Int? = nil, body: [UInt8] = [], error: String? = nil) -> AttemptRecord {
            AttemptRecord(
                number: number, startedAt: startedAt, durationMilliseconds: elapsed(), httpStatus: status,
                responseBody: Array(body.prefix(AttemptRecord.maximumResponseBytes)), error: error)
        }
        func dead(_ reason: String, _ attempt: AttemptRecord) -> DeliveryOutcome {
            logger.warning("delivery dead", metadata: ["attempt": "\(number)", "error": "\(reason)"])
            return DeliveryOutcome(deliveryID: delivery.id, status: .dead, nextAttemptAt: nil, attempt: attempt, error: reason)
        }
        func retry(_ reason: String, _ attempt: AttemptRecord, policy: RetryPolicy, notBefore: Duration? = nil) -> DeliveryOutcome {
            guard let delay = policy.delay(afterAttempt: number) else {
                return dead("\(reason) (gave up after \(number) attempts)", attempt)
            }
            let wait = max(delay, notBefore ?? .zero)
            let next = Clock.milliseconds() + Int64(wait.seconds * 1000)
            logger.info("delivery will be retried", metadata: ["attempt": "\(number)", "error": "\(reason)", "retry_in": "\(wait)"])
            return DeliveryOutcome(deliveryID: delivery.id, status: .retrying, nextAttemptAt: next, attempt: attempt, error: reason)
        }

        guard let destination = runtime.config.destinations[delivery.destination],
            let formatter = runtime.instances.formatter(source: delivery.event.source, destination: delivery.destination)
        else {
            let reason = "destination '\(delivery.destination)' is no longer configured"
            return dead(reason, record(error: reason))
        }

        let document = EventDocument.make(event: delivery.event, destination: delivery.destination, attempt: number)
        let formatted = formatter.format(
            document: document.serializedBytes(), body: delivery.event.body, contentType: delivery.event.contentType)
        let body: [UInt8]
        let contentType: String
        let pluginHeaders: [(name: String, value: String)]
        switch formatted {
        case .send(let formattedBody, let type, let headers):
            body = formattedBody
            contentType = type
            pluginHeaders = headers
        case .skip(let reason):
            logger.info("delivery skipped by formatter", metadata: ["reason": "\(reason)"])
            return DeliveryOutcome(
                deliveryID: delivery.id, status: .skipped, nextAttemptAt: nil,
                attempt: record(error: "skipped by formatter '\(formatter.plugin.name)': \(reason)"), error: nil)
        case .failed(let message, let permanent):
            let reason = "formatter '\(formatter.plugin.name)' failed: \(message)"
            return permanent ? dead(reason, record(error: reason)) : retry(reason, record(error: reason), policy: destination.retry)
        }

        var request = HTTPClientRequest(url: destination.url)
        request.method = .POST
        for header in destination.headers { request.headers.replaceOrAdd(name: header.name, value: header.value) }
        for header in pluginHeaders { request.headers.replaceOrAdd(name: header.name, value: header.value) }
        request.headers.replaceOrAdd(name: "Content-Type", value: contentType)
        request.headers.replaceOrAdd(name: "User-Agent", value: "hookproxy/\(HookproxyVersion.current)")
        request.headers.replaceOrAdd(name: "webhook-id", value: delivery.id)
        request.headers.replaceOrAdd(name: "webhook-timestamp", value: String(Clock.milliseconds() / 1000))
        request.body = .bytes(ByteBuffer(bytes: body))

        let status: Int
        let responseHeaders: [(name: String, value: String)]
        var responseBody: [UInt8] = []
        do {
            let response = try await httpClient.execute(
                request, deadline: .now() + .milliseconds(Int64(destination.timeout.seconds * 1000)))
            status = Int(response.status.code)
            responseHeaders = response.headers.map { ($0.name, $0.value) }
            for try await chunk in response.body {
                responseBody.append(contentsOf: chunk.readableBytesView.prefix(AttemptRecord.maximumResponseBytes - responseBody.count))
                if responseBody.count >= AttemptRecord.maximumResponseBytes { break }
            }
        } catch is CancellationError {
            // Shutdown cut the attempt short: release it without counting an attempt.
            return DeliveryOutcome(deliveryID: delivery.id, status: .pending, nextAttemptAt: Clock.milliseconds(), attempt: nil, error: nil)
        } catch {
            let reason = Self.describe(error)
            return retry(reason, record(error: reason), policy: destination.retry)
        }

        let attempt = record(status: status, body: responseBody)
        switch status {
        case 200..<300:
            logger.info("delivered", metadata: ["attempt": "\(number)", "status": "\(status)", "ms": "\(attempt.durationMilliseconds)"])
            return DeliveryOutcome(deliveryID: delivery.id, status: .delivered, nextAttemptAt: nil, attempt: attempt, error: nil)
        case 400..<500 where !Self.retryableClientErrors.contains(status):
            return dead("destination answered HTTP \(status)", attempt)
        default:
            let wait = status == 429 || status == 503 ? RetryAfter.parse(headers: responseHeaders, body: responseBody) : nil
            return retry("destination answered HTTP \(status)", attempt, policy: destination.retry, notBefore: wait)
        }
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
