import Foundation
import NIOCore
import NIOHTTP1
import PluginKit

/// One attempt at one delivery, in the order it happens: format with the destination's plugin instance, sign, send
/// each request, and hand each answer to ``Verdict/of(_:context:)``, which decides what it means. Only I/O lives here;
/// never throws: every failure is an answer with its reason.
struct Attempt: Sendable {
    let client: DeliveryClient
    /// Deliveries formatted while they waited for a slot.
    var formattedAhead: FormattedAhead?

    func run(_ delivery: ClaimedDelivery, runtime: Runtime) async -> Verdict {
        let startedAt = Clock.milliseconds()
        let clock = ContinuousClock()
        let start = clock.now
        let destination = runtime.config.destinations[delivery.destination]
        let formatter = runtime.instances.formatter(source: delivery.event.source, destination: delivery.destination)
        let keptBytes = destination?.storeResponseBytes ?? AttemptRecord.defaultResponseBytes
        func judge(_ answer: Answer) -> Verdict.Next {
            let context = Verdict.Context(
                deliveryID: delivery.id, destination: delivery.destination, attempts: delivery.attempts,
                pluginFailures: delivery.pluginFailures, receivedAt: delivery.event.receivedAt, retry: destination?.retry ?? RetryPolicy(),
                maxRetryAfter: destination?.maxRetryAfter ?? .zero, keptBytes: keptBytes, formatterName: formatter?.plugin.name ?? "",
                startedAt: startedAt,
                duration: (clock.now - start).wholeMilliseconds,
                now: Clock.milliseconds(), random: RandomWords.signedUnit())
            return Verdict.of(answer, context: context)
        }
        func finish(_ answer: Answer) -> Verdict {
            if case .finish(let verdict) = judge(answer) { return verdict }
            return Verdict.released(deliveryID: delivery.id, now: Clock.milliseconds())
        }

        guard let destination, let formatter else { return finish(.unconfigured) }
        let formatted: PluginInstance.FormatOutcome
        if let ahead = await formattedAhead?.take(delivery.id, formatter: formatter) {
            formatted = ahead
        } else {
            formatted = await Self.format(delivery, with: formatter)
        }
        let requests: [Part]
        switch Self.requests(delivery, formatted: formatted, destination: destination) {
        case .send(let parts): requests = parts
        case .sendsNothing(let decision): return finish(.formatter(decision))
        }

        // Several requests for one event are sent in order; earlier attempts may have delivered the first ones. A
        // formatter never returns an empty list (``prepare`` makes it a failure), so `first` is a valid index.
        let parts = requests.count
        let first = max(0, min(delivery.partsSent, parts - 1))
        for index in first..<parts {
            let answer: Answer
            do {
                // The body is read further than the log keeps for a JSON `retry_after`.
                let request = requests[index]
                let response = try await client.post(
                    request.url, headers: request.headers, body: request.body,
                    deadline: .now + .milliseconds(destination.timeout.wholeMilliseconds),
                    readLimit: max(keptBytes, AttemptRecord.defaultResponseBytes))
                answer = .response(
                    .init(status: response.status, headers: response.headers, body: response.body), part: index, parts: parts)
            } catch is CancellationError {
                answer = .cancelled(part: index, parts: parts)
            } catch {
                answer = .transportFailed(description: Self.describe(error), part: index, parts: parts)
            }
            switch judge(answer) {
            case .sendNextPart: continue
            case .finish(let verdict): return verdict
            }
        }
        // Not reached: the last request's answer finishes above.
        return Verdict.released(deliveryID: delivery.id, now: Clock.milliseconds())
    }

    /// One request to send: a POST of `body` to `url` with `headers` (``DeliveryClient`` adds `Host` and
    /// `Content-Length`).
    struct Part {
        var url: String
        var headers: HTTPHeaders
        var body: [UInt8]
    }

    /// What the formatter made of a delivery: the requests to send (usually one), or why nothing is sent.
    enum Prepared {
        case send([Part])
        case sendsNothing(Answer.FormatterDecision)
    }

    /// Formats `delivery`'s next attempt with `formatter` and builds its requests (``requests(_:formatted:destination:)``).
    /// Sends nothing; `hookproxy preview` shows exactly this.
    static func prepare(_ delivery: ClaimedDelivery, destination: DestinationConfig, formatter: PluginInstance) async -> Prepared {
        requests(delivery, formatted: await format(delivery, with: formatter), destination: destination)
    }

    /// The format call of `delivery`'s next attempt, noted as being about it (an in-process plugin that crashes on it
    /// gets it quarantined). The executor measures the call itself (its duration and slowness), not its wait for a
    /// worker.
    static func format(_ delivery: ClaimedDelivery, with formatter: PluginInstance) async -> PluginInstance.FormatOutcome {
        let document = EventDocument.bytes(
            event: delivery.event, destination: delivery.destination, attempt: delivery.attempts.addingSaturated(1))
        return await formatter.format(
            document: document, body: delivery.event.body, contentType: delivery.event.contentType,
            subject: .delivery(id: delivery.id, destination: delivery.destination))
    }

    /// The requests a formatter's answer asks for: the destination's static headers, the plugin's headers,
    /// Content-Type, User-Agent, and the Standard Webhooks `webhook-id` (`<delivery id>`, then `-1`, `-2` for further
    /// requests of one event), `webhook-timestamp` (now) and (with a signing secret) `webhook-signature`.
    static func requests(_ delivery: ClaimedDelivery, formatted: PluginInstance.FormatOutcome, destination: DestinationConfig)
        -> Prepared
    {
        let outputs: [OutboundRequest]
        switch formatted {
        case .send(let body, let type, let headers):
            if type == OutboundRequest.sequenceContentType {
                guard let requests = OutboundRequest.requests(inSequence: body), !requests.isEmpty else {
                    return .sendsNothing(.failed(message: "its list of requests (\(type)) is malformed", permanent: true))
                }
                outputs = requests
            } else {
                outputs = [OutboundRequest(body: body, contentType: type, headers: headers)]
            }
        case .skip(let reason): return .sendsNothing(.skip(reason: reason))
        case .failed(let message, let permanent): return .sendsNothing(.failed(message: message, permanent: permanent))
        case .aborted(let reason): return .sendsNothing(.aborted(reason: reason))
        case .unavailable(let reason): return .sendsNothing(.unavailable(reason: reason))
        case .cancelled: return .sendsNothing(.cancelled)
        }
        // A plugin's headers are checked as the configuration's are: a broken one is the plugin's permanent failure,
        // named without its value (it may carry a secret), rather than an HTTP client error quoting it.
        for output in outputs {
            for header in output.headers {
                guard HeaderField.isValidName(header.name) else {
                    return .sendsNothing(
                        .failed(message: "it returned a header whose name is not a valid HTTP header name", permanent: true))
                }
                guard HeaderField.isValidValue(header.value) else {
                    return .sendsNothing(
                        .failed(
                            message: "it returned header '\(header.name)' with a value that is not a valid HTTP header value",
                            permanent: true))
                }
            }
            guard HeaderField.isValidValue(output.contentType) else {
                return .sendsNothing(.failed(message: "it returned a content type that is not a valid HTTP header value", permanent: true))
            }
        }
        let timestamp = Clock.milliseconds() / 1000
        return .send(
            outputs.enumerated().map { index, output in
                var headers = HTTPHeaders()
                for header in destination.headers { headers.replaceOrAdd(name: header.name, value: header.value) }
                for header in output.headers { headers.replaceOrAdd(name: header.name, value: header.value) }
                headers.replaceOrAdd(name: "Content-Type", value: output.contentType.isEmpty ? "application/json" : output.contentType)
                headers.replaceOrAdd(name: "User-Agent", value: "hookproxy/\(HookproxyVersion.current)")
                let id = index == 0 ? delivery.id : "\(delivery.id)-\(index)"
                headers.replaceOrAdd(name: "webhook-id", value: id)
                headers.replaceOrAdd(name: "webhook-timestamp", value: String(timestamp))
                if !destination.signingSecrets.isEmpty {
                    headers.replaceOrAdd(
                        name: "webhook-signature",
                        value: WebhookSigner.signature(secrets: destination.signingSecrets, id: id, timestamp: timestamp, body: output.body)
                    )
                }
                return Part(url: destination.url, headers: headers, body: output.body)
            })
    }

    /// A short description of a transport error; it never includes the URL, which may hold a token.
    static func describe(_ error: any Error) -> String {
        if let error = error as? DeliveryClient.Failure { return error.description }
        return "cannot connect or send: \(error)"
    }
}
