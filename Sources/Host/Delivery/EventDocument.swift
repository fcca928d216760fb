import PluginKit

/// The event document a formatter receives (contract §7):
/// `{"id", "source", "received_at", "headers", "payload", "fields", "destination": {"name"}, "attempt"}`.
enum EventDocument {
    static func make(event: StoredEvent, destination: String, attempt: Int) -> JSONValue {
        let payload: JSONValue
        switch PayloadDecoder.decode(body: event.body, contentType: event.contentType) {
        case .payload(let value): payload = value
        case .opaque, .invalid: payload = .null
        }
        return [
            "id": .string(event.id),
            "source": .string(event.source),
            "received_at": .string(Clock.rfc3339(milliseconds: event.receivedAt)),
            "headers": (try? JSONValue(parsing: event.headersJSON)) ?? [:],
            "payload": payload,
            "fields": (try? JSONValue(parsing: event.fieldsJSON)) ?? [:],
            "destination": ["name": .string(destination)],
            "attempt": .int(attempt),
        ]
    }
}
