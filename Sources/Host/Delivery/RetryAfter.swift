import Foundation
import PluginKit

/// Reads how long a destination asked us to wait: `Retry-After` as seconds or an HTTP date, Discord's
/// `X-RateLimit-Reset-After`, or a JSON body's `retry_after` (seconds).
enum RetryAfter {
    /// A window announced on any answer: Discord's `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After` means the
    /// bucket is empty for that long, so nothing more is sent until it refills.
    static func announcedWindow(headers: [(name: String, value: String)]) -> Duration? {
        func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name }?.value }
        guard let remaining = header("x-ratelimit-remaining").flatMap({ Double($0) }), remaining <= 0,
            let seconds = header("x-ratelimit-reset-after").flatMap({ Double($0) }), seconds > 0
        else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }

    static func parse(headers: [(name: String, value: String)], body: [UInt8], now: Date = Date()) -> Duration? {
        func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name }?.value }
        if let value = header("retry-after").map({ String($0.trimmingBlanks()) }) {
            if let seconds = Double(value), seconds >= 0 { return .milliseconds(Int64(seconds * 1000)) }
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
            if let date = formatter.date(from: value) { return .milliseconds(Int64(max(0, date.timeIntervalSince(now)) * 1000)) }
        }
        if let value = header("x-ratelimit-reset-after"), let seconds = Double(value), seconds >= 0 {
            return .milliseconds(Int64((seconds * 1000).rounded(.up)))
        }
        if body.first == UInt8(ascii: "{"), let json = try? JSONValue(parsing: body), let seconds = json["retry_after"]?.doubleValue,
            seconds >= 0
        {
            return .milliseconds(Int64(seconds * 1000))
        }
        return nil
    }
}
