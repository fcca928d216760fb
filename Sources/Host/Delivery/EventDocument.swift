import PluginKit

/// The event document a formatter receives (contract §7):
/// `{"id", "source", "received_at", "headers", "payload", "fields", "destination": {"name"}, "attempt"}`.
enum EventDocument {
    /// The document as a formatter receives it, UTF-8 encoded. When the body is plain JSON that the payload decoder
    /// would parse as it is, the document is spliced together from the stored JSON texts (headers, fields, body) without
    /// parsing and re-serialising them: the same JSON, at a fraction of the cost per attempt. Anything else (forms,
    /// `\u` escapes, invalid JSON) takes ``make(event:destination:attempt:)``.
    static func bytes(event: StoredEvent, destination: String, attempt: Int) -> [UInt8] {
        guard !event.headersJSON.isEmpty, !event.fieldsJSON.isEmpty, bodyIsPlainJSONPayload(event) else {
            return make(event: event, destination: destination, attempt: attempt).serializedBytes()
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(event.body.count + event.headersJSON.utf8.count + event.fieldsJSON.utf8.count + 200)
        bytes += "{\"id\":".utf8
        JSONValue.writeString(event.id, to: &bytes)
        bytes += ",\"source\":".utf8
        JSONValue.writeString(event.source, to: &bytes)
        bytes += ",\"received_at\":\"".utf8
        bytes += Clock.rfc3339(milliseconds: event.receivedAt).utf8
        bytes += "\",\"headers\":".utf8
        bytes += event.headersJSON.utf8
        bytes += ",\"payload\":".utf8
        bytes += event.body
        bytes += ",\"fields\":".utf8
        bytes += event.fieldsJSON.utf8
        bytes += ",\"destination\":{\"name\":".utf8
        JSONValue.writeString(destination, to: &bytes)
        bytes += "},\"attempt\":".utf8
        bytes += String(attempt).utf8
        bytes += "}".utf8
        return bytes
    }

    /// Whether the payload is the body itself, parsed as JSON (see ``PayloadDecoder``), and the body is plain JSON.
    private static func bodyIsPlainJSONPayload(_ event: StoredEvent) -> Bool {
        switch PayloadDecoder.reading(body: event.body, contentType: event.contentType) {
        case .json, .sniffedJSON: JSONValue.isPlainValidDocument(event.body)
        case .form, .opaque: false
        }
    }

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
