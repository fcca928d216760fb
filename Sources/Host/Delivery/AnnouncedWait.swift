import Foundation
import PluginKit

/// A wait a destination asked for: `Retry-After` as seconds or an HTTP date, Discord's `X-RateLimit-Reset-After`, or a
/// JSON body's `retry_after` (seconds).
///
/// Everything here is the receiver's word and may be hostile: NaN, infinities, negative numbers, empty or blank values
/// and text are not waits (nil); a finite wait is kept as asked (`1e300` seconds included) and only ever used through
/// ``honoured(atMost:)``, which clamps it to the destination's `max_retry_after`.
struct AnnouncedWait: Sendable, Equatable, CustomStringConvertible {
    /// What the destination asked for, in seconds: finite and not negative, possibly absurdly large.
    var requestedSeconds: Double
    /// The header or field that said so.
    var origin: String

    /// The wait hookproxy keeps: the request, at most `maximum`.
    func honoured(atMost maximum: Duration) -> Duration {
        Duration(untrustedSeconds: requestedSeconds, atMost: maximum) ?? maximum
    }

    /// True when the destination asked for longer than `maximum`.
    func exceeds(_ maximum: Duration) -> Bool { requestedSeconds > maximum.seconds }

    /// `Retry-After 1e+300 s`.
    var description: String { "\(origin) \(Self.format(requestedSeconds)) s" }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() && seconds < 1e15 ? String(Int64(finite: seconds) ?? 0) : String(seconds)
    }

    // MARK: Reading answers

    /// A window announced on any answer: Discord's `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After` means the
    /// bucket is empty for that long, so nothing more is sent until it refills.
    static func window(headers: [(name: String, value: String)]) -> AnnouncedWait? {
        guard let remaining = header("x-ratelimit-remaining", in: headers).flatMap(seconds), remaining <= 0,
            let wait = header("x-ratelimit-reset-after", in: headers).flatMap(seconds), wait > 0
        else { return nil }
        return AnnouncedWait(requestedSeconds: wait, origin: "X-RateLimit-Reset-After")
    }

    /// The wait a 429 or 503 answer asks for, from the first of `Retry-After`, `X-RateLimit-Reset-After` and a JSON
    /// body's `retry_after` that holds a usable value.
    static func parse(headers: [(name: String, value: String)], body: [UInt8], now: Date = Date()) -> AnnouncedWait? {
        if let value = header("retry-after", in: headers) {
            if let wait = seconds(value) { return AnnouncedWait(requestedSeconds: wait, origin: "Retry-After") }
            if let date = httpDate(value) {
                let wait = date.timeIntervalSince(now)
                if wait.isFinite { return AnnouncedWait(requestedSeconds: max(0, wait), origin: "Retry-After") }
            }
        }
        if let wait = header("x-ratelimit-reset-after", in: headers).flatMap(seconds) {
            return AnnouncedWait(requestedSeconds: wait, origin: "X-RateLimit-Reset-After")
        }
        if body.first == UInt8(ascii: "{"), let json = try? JSONValue(parsing: body), let wait = json["retry_after"]?.doubleValue,
            wait.isFinite, wait >= 0
        {
            return AnnouncedWait(requestedSeconds: wait, origin: "retry_after")
        }
        return nil
    }

    private static func header(_ name: String, in headers: [(name: String, value: String)]) -> String? {
        headers.first { $0.name.lowercased() == name }?.value
    }

    /// A number of seconds as a receiver writes it (`120`, `0.25`, `1e3`): nil for anything that is not a finite,
    /// non-negative decimal number. `inf`, `nan` and hex floats are text Swift's `Double` would accept, not numbers a
    /// receiver sends; they are refused before parsing.
    static func seconds(_ text: String) -> Double? {
        let trimmed = text.trimmingBlanks()
        guard !trimmed.isEmpty, trimmed.utf8.count <= 64,
            trimmed.utf8.allSatisfy({ (0x30...0x39).contains($0) || $0 == 0x2E || $0 == 0x2D || $0 == 0x2B || $0 == 0x65 || $0 == 0x45 }),
            let value = Double(trimmed), value.isFinite, value >= 0
        else { return nil }
        return value
    }

    /// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's IMF-fixdate).
    private static func httpDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: String(text.trimmingBlanks()))
    }
}
