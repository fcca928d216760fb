import Logging
import PluginKit
import ServiceLifecycle
import Synchronization

/// hookproxy's own operational events (a delivery gone dead, a destination paused or resumed by its circuit breaker,
/// a plugin refused at reload), sent to the `alerts` destination through the normal pipeline: each alert is an event
/// of the internal source `hookproxy.alerts`, stored durably and delivered (formatted, retried) like any other.
///
/// An outage must be one message, not thousands: the same alert (kind and subject) is sent at most once per
/// `alerts.rate_limit` period, and at most `requests` alerts go out per period in all. Alerts held back are counted
/// and the count is reported in the next message of the same kind and subject.
///
/// Alerts are written by the Alerter's own service, not by tasks of their own: `raise` queues the event and returns,
/// the service stores what is queued (one transaction for all of it) and wakes the engine; on graceful shutdown, which
/// comes after the delivery engine's (so that the engine's last alerts are kept), it stores what is left.
final class Alerter: Service, Sendable {
    struct Alert: Sendable {
        var kind: AlertsConfig.Kind
        /// What it is about: a destination name or a plugin file.
        var subject: String
        var title: String
        var summary: String
        /// Extra fields for formatters and templates (`event_id`, `destination`, …).
        var details: [(String, JSONValue)] = []
    }

    private struct State {
        var lastSent: [String: Int64] = [:]
        var heldBack: [String: Int] = [:]
        var sentAt: [Int64] = []
    }

    private struct Queue {
        var events: [(event: NewEvent, kind: AlertsConfig.Kind, subject: String)] = []
        var writer: CheckedContinuation<Void, Never>?
        var closed = false
    }

    private let runtime: RuntimeHolder
    private let store: any EventWriter
    private let wake: WakeSignal
    private let logger: Logger
    private let state = Mutex(State())
    private let queue = Mutex(Queue())

    init(runtime: RuntimeHolder, store: any EventWriter, wake: WakeSignal, logger: Logger) {
        self.runtime = runtime
        self.store = store
        self.wake = wake
        self.logger = logger
    }

    /// Sends `alert` when alerts are configured for its kind and the rate limit allows; never blocks the caller.
    func raise(_ alert: Alert, now: Int64 = Clock.milliseconds()) {
        guard let config = runtime.runtime.config.alerts, config.kinds.contains(alert.kind) else { return }
        guard let heldBack = admit(alert, config: config, now: now) else { return }
        var fields: [(String, JSONValue)] = [
            ("title", .string(alert.title)),
            ("summary", .string(heldBack > 0 ? "\(alert.summary) (\(heldBack) more like this were held back)" : alert.summary)),
            ("kind", .string(alert.kind.rawValue)), ("subject", .string(alert.subject)),
        ]
        fields += alert.details
        if heldBack > 0 { fields.append(("held_back", .int(heldBack))) }
        let object = JSONValue.object(JSONObject(fields))
        let event = StoredEvent(
            id: EventID.make(milliseconds: now), source: AlertsConfig.source, receivedAt: now, contentType: "application/json",
            headersJSON: "{}", body: object.serializedBytes(), fieldsJSON: object.serialized())
        let new = NewEvent(
            event: event, idempotencyKey: nil,
            deliveries: [NewDelivery(id: EventID.make(milliseconds: now), destination: config.destination)])
        let writer = queue.withLock { queue -> CheckedContinuation<Void, Never>? in
            guard !queue.closed else { return nil }
            queue.events.append((new, alert.kind, alert.subject))
            defer { queue.writer = nil }
            return queue.writer
        }
        writer?.resume()
    }

    /// Stores queued alerts until graceful shutdown (or cancellation, when another service failed), then what is left.
    func run() async throws {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                while let batch = await nextBatch() { await write(batch) }
            } onGracefulShutdown: {
                self.close()
            }
        } onCancel: {
            self.close()
        }
    }

    /// Takes no more alerts; the service stores what is queued and returns.
    private func close() {
        let writer = queue.withLock { queue in
            queue.closed = true
            defer { queue.writer = nil }
            return queue.writer
        }
        writer?.resume()
    }

    /// What is queued; waits when nothing is. Nil once closed and empty.
    private func nextBatch() async -> [(event: NewEvent, kind: AlertsConfig.Kind, subject: String)]? {
        while true {
            let taken = queue.withLock { queue -> [(event: NewEvent, kind: AlertsConfig.Kind, subject: String)]? in
                defer { queue.events = [] }
                return queue.events.isEmpty && queue.closed ? nil : queue.events
            }
            guard let taken else { return nil }
            if !taken.isEmpty { return taken }
            await withCheckedContinuation { continuation in
                let resumeNow = queue.withLock { queue -> Bool in
                    guard queue.events.isEmpty, !queue.closed else { return true }
                    queue.writer = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }
    }

    /// Stores alerts in one transaction, trying again every second while the store fails (until shutdown).
    private func write(_ batch: [(event: NewEvent, kind: AlertsConfig.Kind, subject: String)]) async {
        var logged = false
        while true {
            do {
                _ = try await store.insert(batch.map(\.event))
                wake.signal()
                for alert in batch {
                    logger.info(
                        "alert raised",
                        metadata: ["kind": "\(alert.kind.rawValue)", "subject": "\(alert.subject)", "event_id": "\(alert.event.event.id)"])
                }
                return
            } catch {
                if !logged {
                    logger.error("alerts not stored yet; retrying", metadata: ["count": "\(batch.count)", "error": "\(error)"])
                    logged = true
                }
                let closed = queue.withLock { $0.closed }
                if closed {
                    logger.error("alerts not stored at shutdown", metadata: ["count": "\(batch.count)", "error": "\(error)"])
                    return
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Whether the alert goes out now; if so, how many like it were held back since the last one.
    private func admit(_ alert: Alert, config: AlertsConfig, now: Int64) -> Int? {
        let window = config.rateLimit.per.wholeMilliseconds
        let key = alert.kind.rawValue + "|" + alert.subject
        return state.withLock { state in
            state.sentAt.removeAll { $0 <= now - window }
            let recentlySent = state.lastSent[key].map { now - $0 < window } ?? false
            guard !recentlySent, state.sentAt.count < config.rateLimit.requests else {
                state.heldBack[key, default: 0] += 1
                return nil
            }
            state.lastSent[key] = now
            state.sentAt.append(now)
            return state.heldBack.removeValue(forKey: key) ?? 0
        }
    }
}

// MARK: What delivery tells operators

extension Alerter {
    /// A delivery gave up (not one of an alert: no loops).
    func deliveryDead(_ delivery: ClaimedDelivery, reason: String?) {
        let (source, destination, eventID) = (delivery.event.source, delivery.destination, delivery.event.id)
        guard source != AlertsConfig.source else { return }
        raise(
            .init(
                kind: .deliveryDead, subject: destination, title: "Delivery dead: \(source) → \(destination)",
                summary: "\(reason ?? "gave up"). Event \(eventID); replay: hookproxy replay \(eventID)",
                details: [
                    ("destination", .string(destination)), ("event_id", .string(eventID)), ("delivery_id", .string(delivery.id)),
                    ("source", .string(source)),
                ]))
    }

    /// A delivery quarantined at start because it was in flight when the process crashed.
    func quarantined(_ delivery: QuarantinedDelivery) {
        guard delivery.source != AlertsConfig.source else { return }
        raise(
            .init(
                kind: .deliveryDead, subject: delivery.destination,
                title: "Delivery quarantined: \(delivery.source) → \(delivery.destination)",
                summary: "\(delivery.reason). Event \(delivery.eventID); replay: hookproxy replay \(delivery.eventID)",
                details: [
                    ("destination", .string(delivery.destination)), ("event_id", .string(delivery.eventID)),
                    ("delivery_id", .string(delivery.deliveryID)), ("source", .string(delivery.source)),
                ]))
    }

    /// A destination's circuit breaker opened or closed.
    func circuit(_ change: DestinationLane.CircuitChange, destination: String) {
        switch change {
        case .opened(let until, let failures, let again):
            let time = Clock.rfc3339(milliseconds: until)
            raise(
                .init(
                    kind: .destinationPaused, subject: destination, title: "Destination paused: \(destination)",
                    summary: again
                        ? "The probe request failed; paused again until \(time)."
                        : "\(failures) consecutive failed attempts; paused until \(time). Deliveries wait without spending attempts.",
                    details: [("destination", .string(destination)), ("paused_until", .string(time))]))
        case .closed:
            raise(
                .init(
                    kind: .destinationResumed, subject: destination, title: "Destination resumed: \(destination)",
                    summary: "It answers again; queued deliveries are being sent.", details: [("destination", .string(destination))]))
        }
    }
}
