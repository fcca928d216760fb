import Synchronization

/// What every plugin written with the kit is: a named, versioned type whose instances are created from a destination's
/// options. Conform to ``FormatterPlugin`` and/or ``MapperPlugin`` as well, then export it with ``PluginExport``.
public protocol HookproxyPlugin: Sendable {
    /// The declared name that `sources.yaml` uses (`formatter: discord`): lowercase letters, digits, `-` and `_`.
    static var name: String { get }
    /// The plugin's own version.
    static var version: String { get }
    /// Creates an instance from the options JSON object. Throw ``PluginError`` (permanent) for bad options; the
    /// configuration is then refused with your message.
    init(options: JSONValue) throws
}

/// A plugin that turns an event into the body of the request sent to a destination.
///
/// `format` is called concurrently from many threads, also on the same instance: keep instances immutable.
public protocol FormatterPlugin: HookproxyPlugin {
    func format(_ event: FormatterEvent) throws -> FormatResult
}

/// A plugin that turns a raw inbound request into mapped fields.
///
/// `map` is called concurrently from many threads during ingest: keep instances immutable and fast.
public protocol MapperPlugin: HookproxyPlugin {
    func map(_ request: MapperRequest) throws -> JSONObject
}

/// A failure reported to the host: transient failures are retried, permanent ones are not (bad options refuse the
/// configuration; an event that cannot be formatted makes the delivery dead at once).
public struct PluginError: Error, CustomStringConvertible, Sendable {
    /// A one-line reason for operators; never put secrets in it.
    public let message: String
    /// True when trying again cannot help.
    public let isPermanent: Bool

    public init(_ message: String, permanent: Bool) {
        self.message = message
        self.isPermanent = permanent
    }

    /// A failure that trying again cannot fix.
    public static func permanent(_ message: String) -> PluginError { PluginError(message, permanent: true) }
    /// A failure that may pass when tried again.
    public static func transient(_ message: String) -> PluginError { PluginError(message, permanent: false) }

    public var description: String { message }
}

/// What a formatter decided for one event.
public enum FormatResult: Sendable {
    /// Send this request.
    case send(OutboundRequest)
    /// Send these requests, in order (an event too big for one message). A retry resumes at the first request that
    /// did not succeed; each request carries its own `webhook-id` (the delivery's id, then `<id>-1`, `<id>-2`, …).
    case sendAll([OutboundRequest])
    /// Send nothing for this event; the delivery is marked skipped with the reason.
    case skip(reason: String)
}

/// The body, content type and extra headers of the request to send. The host adds the URL, method (POST), identity
/// and signature headers.
public struct OutboundRequest: Sendable, Equatable {
    public var body: [UInt8]
    public var contentType: String
    public var headers: [(name: String, value: String)]

    public init(body: [UInt8], contentType: String = "application/json", headers: [(name: String, value: String)] = []) {
        self.body = body
        self.contentType = contentType
        self.headers = headers
    }

    /// A JSON request body.
    public init(json: JSONValue, headers: [(name: String, value: String)] = []) {
        self.init(body: json.serializedBytes(), contentType: "application/json", headers: headers)
    }

    /// The content type of an output that holds several requests (see `hookproxy_plugin.h`, on_format).
    public static let sequenceContentType = "application/vnd.hookproxy.requests+json"

    /// Several requests as one ABI output: `{"requests": [{"content_type", "headers": [{"name", "value"}], "body" or
    /// "body_hex"}]}` with ``sequenceContentType``.
    public static func sequence(_ requests: [OutboundRequest]) -> OutboundRequest {
        let encoded: [JSONValue] = requests.map { request in
            var object = JSONObject()
            object["content_type"] = .string(request.contentType)
            object["headers"] = .array(request.headers.map { ["name": .string($0.name), "value": .string($0.value)] })
            if let text = String(validating: request.body, as: UTF8.self) {
                object["body"] = .string(text)
            } else {
                let digits = Array("0123456789abcdef")
                object["body_hex"] = .string(String(request.body.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] }))
            }
            return .object(object)
        }
        return OutboundRequest(json: ["requests": .array(encoded)]).withContentType(sequenceContentType)
    }

    /// Reads an output made by ``sequence(_:)``; nil when it is not one.
    public static func requests(inSequence body: [UInt8]) -> [OutboundRequest]? {
        guard let list = (try? JSONValue(parsing: body))?["requests"]?.arrayValue, !list.isEmpty else { return nil }
        var requests: [OutboundRequest] = []
        for element in list {
            guard let contentType = element["content_type"]?.stringValue else { return nil }
            let headers = (element["headers"]?.arrayValue ?? []).compactMap { header -> (name: String, value: String)? in
                guard let name = header["name"]?.stringValue, let value = header["value"]?.stringValue else { return nil }
                return (name, value)
            }
            let body: [UInt8]
            if let text = element["body"]?.stringValue {
                body = Array(text.utf8)
            } else if let hex = element["body_hex"]?.stringValue, hex.utf8.count % 2 == 0 {
                var bytes: [UInt8] = []
                var high: UInt8?
                for digit in hex.utf8 {
                    guard let value = Self.hexValue(digit) else { return nil }
                    if let first = high {
                        bytes.append(first << 4 | value)
                        high = nil
                    } else {
                        high = value
                    }
                }
                body = bytes
            } else {
                return nil
            }
            requests.append(OutboundRequest(body: body, contentType: contentType, headers: headers))
        }
        return requests
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        default: nil
        }
    }

    private func withContentType(_ type: String) -> OutboundRequest {
        OutboundRequest(body: body, contentType: type, headers: headers)
    }

    public static func == (lhs: OutboundRequest, rhs: OutboundRequest) -> Bool {
        lhs.body == rhs.body && lhs.contentType == rhs.contentType
            && lhs.headers.map { "\($0.name):\($0.value)" } == rhs.headers.map { "\($0.name):\($0.value)" }
    }
}

/// What a plugin is called with: a JSON document plus the raw body exactly as it was received.
///
/// For a formatter the document is the event (`id`, `source`, `received_at`, `headers`, `payload`, `fields`,
/// `destination`, `attempt`); for a mapper it is `{"source", "headers", "payload"}`.
///
/// The payload, usually most of the document, is built only when it is read (``payload``, ``document``, or a path
/// into it through ``value(atPath:)``): a formatter whose templates name only mapped fields never parses it.
public struct PluginInput: Sendable {
    /// The document, its payload `null` while that is deferred.
    private let head: JSONValue
    private let deferred: DeferredPayload?

    /// The raw request body.
    public let body: [UInt8]
    /// The request's content type ("" when none was sent).
    public let contentType: String

    public init(document: JSONValue, body: [UInt8], contentType: String) {
        self.head = document
        self.deferred = nil
        self.body = body
        self.contentType = contentType
    }

    /// An input whose `payload` member is still the JSON text `payload` (checked to be valid JSON), built on first use.
    init(head: JSONValue, payload: [UInt8]?, body: [UInt8], contentType: String) {
        self.head = head
        self.deferred = payload.map(DeferredPayload.init)
        self.body = body
        self.contentType = contentType
    }

    /// The whole document.
    public var document: JSONValue {
        guard let deferred, case .object(var object) = head else { return head }
        object["payload"] = deferred.value
        return .object(object)
    }

    /// Follows a dotted path into the document (see ``JSONValue/value(atPath:)``), building the payload only when the
    /// path leads into it.
    public func value(atPath path: some StringProtocol) -> JSONValue? {
        value(atComponents: path.split(separator: ".", omittingEmptySubsequences: false))
    }

    /// ``value(atPath:)`` with the path already split at its dots.
    public func value(atComponents components: some Collection<some StringProtocol>) -> JSONValue? {
        guard let first = components.first else { return document }
        if deferred != nil, first == "payload" { return payload.value(atComponents: components.dropFirst()) }
        return head.value(atComponents: components)
    }

    /// The event id (formatters).
    public var id: String { head["id"]?.stringValue ?? "" }
    /// The source name.
    public var source: String { head["source"]?.stringValue ?? "" }
    /// When it was received, as RFC 3339 text (formatters).
    public var receivedAt: String { head["received_at"]?.stringValue ?? "" }
    /// The request headers, names in lowercase.
    public var headers: JSONObject { head["headers"]?.objectValue ?? JSONObject() }
    /// The parsed payload, or `.null` when the body is not JSON.
    public var payload: JSONValue { deferred?.value ?? head["payload"] ?? .null }
    /// The mapped fields (formatters).
    public var fields: JSONObject { head["fields"]?.objectValue ?? JSONObject() }
}

/// A payload's JSON text, parsed once, when first read.
private final class DeferredPayload: Sendable {
    private let text: [UInt8]
    private let parsed = Mutex<JSONValue?>(nil)

    init(_ text: [UInt8]) { self.text = text }

    var value: JSONValue {
        if let value = parsed.withLock({ $0 }) { return value }
        // The text was checked when the document was read; a failure here cannot happen, and would read as no payload.
        let value = (try? JSONValue(parsing: text)) ?? .null
        parsed.withLock { $0 = value }
        return value
    }
}

/// The event a formatter receives.
public typealias FormatterEvent = PluginInput

/// The request a mapper receives.
public typealias MapperRequest = PluginInput
