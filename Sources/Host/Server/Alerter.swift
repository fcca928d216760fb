import Logging
import PluginKit
import Synchronization

/// hookproxy's own operational events (a delivery gone dead, a destination paused or resumed by its circuit breaker,
/// a plugin refused at reload), sent to the `alerts` destination through the normal pipeline: each alert is an event
/// of the internal source `hookproxy.alerts`, stored durably and delivered (formatted, retried) like any other.
///
/// An outage must be one message, not thousands: the same alert (kind and subject) is sent at most once per
/// `alerts.rate_limit` period, and at most `requests` alerts go out per period in all. Alerts held back are counted
/// and the count is reported in the next message of the same kind and subject.
final class Alerter: Sendable {
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

    private let runtime: RuntimeHolder
    private let writer: GroupCommitter<NewEvent, InsertResult>
    private let wake: WakeSignal
    private let logger: Logger
    private let state = Mutex(State())

    init(runtime: RuntimeHolder, writer: GroupCommitter<NewEvent, InsertResult>, wake: WakeSignal, logger: Logger) {
        self.runtime = runtime
        self.writer = writer
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
        let (writer, wake, logger) = (self.writer, self.wake, self.logger)
        Task {
            do {
                _ = try await writer.submit(new)
                wake.signal()
                logger.info(
                    "alert raised", metadata: ["kind": "\(alert.kind.rawValue)", "subject": "\(alert.subject)", "event_id": "\(event.id)"])
            } catch {
                logger.error("alert not stored", metadata: ["kind": "\(alert.kind.rawValue)", "error": "\(error)"])
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
