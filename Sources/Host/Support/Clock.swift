import Foundation

/// Wall-clock time in the store's unit.
enum Clock {
    /// Milliseconds since the Unix epoch.
    static func milliseconds() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    /// RFC 3339 text with milliseconds, in UTC (`2026-11-21T12:00:00.123Z`).
    static func rfc3339(milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(
            .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon)
                .timeZone(separator: .omitted))
    }
}
