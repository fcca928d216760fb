import PluginKit

/// Reads a request body as the payload that mappings, templates and formatters see.
///
/// - JSON (`application/json`, `application/*+json`): parsed; invalid JSON is reported.
/// - Form-encoded (`application/x-www-form-urlencoded`): a `payload` field holding JSON (as GitHub and Slack send it)
///   is parsed; otherwise the form's fields become a JSON object of strings.
/// - Anything else: parsed when it looks like JSON (starts with `{` or `[`), otherwise there is no payload and the body
///   is kept as it is.
enum PayloadDecoder {
    enum Decoded: Sendable {
        case payload(JSONValue)
        /// The body is not JSON and does not claim to be.
        case opaque
        /// The body claims to be JSON (or a form with a JSON payload) and is not; the reason names the problem.
        case invalid(String)
    }

    /// How a body is read, by its media type and, for other types, its first byte.
    enum Reading: Sendable {
        /// Declared JSON (`application/json`, `application/*+json`, `text/json`): parsed, invalid JSON reported.
        case json
        /// Form-encoded.
        case form
        /// Another type that starts like a JSON object or array: parsed when it is JSON, else opaque.
        case sniffedJSON
        /// Anything else: no payload.
        case opaque
    }

    static func reading(body: [UInt8], contentType: String) -> Reading {
        let mediaType = String((contentType.split(separator: ";").first ?? "").trimmingBlanks()).asciiLowercased()
        if mediaType == "application/json" || mediaType.hasSuffix("+json") || mediaType == "text/json" { return .json }
        if mediaType == "application/x-www-form-urlencoded" { return .form }
        if let first = body.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }),
            first == UInt8(ascii: "{") || first == UInt8(ascii: "[")
        {
            return .sniffedJSON
        }
        return .opaque
    }

    static func decode(body: [UInt8], contentType: String, maximumDepth: Int = JSONValue.defaultMaximumDepth) -> Decoded {
        switch reading(body: body, contentType: contentType) {
        case .json:
            do {
                return .payload(try JSONValue(parsing: body, maximumDepth: maximumDepth))
            } catch {
                return .invalid("the body is not valid JSON: \(error)")
            }
        case .form:
            guard let form = decodeForm(body) else { return .invalid("the form-encoded body is not valid UTF-8") }
            if let payload = form["payload"]?.stringValue {
                do {
                    return .payload(try JSONValue(parsing: Array(payload.utf8), maximumDepth: maximumDepth))
                } catch {
                    return .invalid("form field 'payload' is not valid JSON: \(error)")
                }
            }
            return .payload(.object(JSONObject(form.members.map { ($0.key, $0.value) })))
        case .sniffedJSON:
            return (try? JSONValue(parsing: body, maximumDepth: maximumDepth)).map { .payload($0) } ?? .opaque
        case .opaque:
            return .opaque
        }
    }

    /// Decodes `a=1&b=x+y` (percent-escapes, `+` as space); `nil` when the result is not UTF-8.
    static func decodeForm(_ body: [UInt8]) -> JSONObject? {
        var result = JSONObject()
        for pair in body.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true) {
            let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = percentDecode(parts[0]) else { return nil }
            guard let value = parts.count > 1 ? percentDecode(parts[1]) : "" else { return nil }
            result[name] = .string(value)
        }
        return result
    }

    private static func percentDecode(_ bytes: ArraySlice<UInt8>) -> String? {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                output.append(0x20)
            } else if byte == UInt8(ascii: "%"), index + 2 < bytes.endIndex,
                let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2])
            {
                output.append(high << 4 | low)
                index += 2
            } else {
                output.append(byte)
            }
            index += 1
        }
        return String(validating: output, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
