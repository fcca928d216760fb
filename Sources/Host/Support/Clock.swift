import Foundation

/// Wall-clock time in the store's unit.
enum Clock {
    /// Milliseconds since the Unix epoch.
    static func milliseconds() -> Int64 { Int64(finite: (Date().timeIntervalSince1970 * 1000).rounded(.down)) ?? 0 }

    /// RFC 3339 text with milliseconds, in UTC (`2026-11-21T12:00:00.123Z`).
    static func rfc3339(milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(
            .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon)
                .timeZone(separator: .omitted))
    }

    /// Parses RFC 3339 text (`2026-11-21T12:00:00Z`, with or without fractional seconds, any offset) to milliseconds.
    static func parse(rfc3339 text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(finite: (date.timeIntervalSince1970 * 1000).rounded(.down)) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).flatMap { Int64(finite: ($0.timeIntervalSince1970 * 1000).rounded(.down)) }
    }
}
