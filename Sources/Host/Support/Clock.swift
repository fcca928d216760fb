import Foundation

/// Wall-clock time in the store's unit.
enum Clock {
    /// Milliseconds since the Unix epoch.
    static func milliseconds() -> Int64 { Int64(finite: (Date().timeIntervalSince1970 * 1000).rounded(.down)) ?? 0 }

    /// RFC 3339 text with milliseconds, in UTC (`2026-11-21T12:00:00.123Z`).
    /// Written by hand (every delivery's event document has one): no calendar or formatter is involved. A time outside
    /// the years 0000 to 9999 (a damaged row) is shown at the nearer end of that range.
    static func rfc3339(milliseconds given: Int64) -> String {
        let milliseconds = min(max(given, earliestShown), latestShown)
        let dayLength: Int64 = 86_400_000
        // Days since the epoch, rounded down, and the time of day.
        let days = milliseconds >= 0 ? milliseconds / dayLength : (milliseconds - (dayLength - 1)) / dayLength
        let time = milliseconds - days * dayLength
        // The civil date of `days` (Howard Hinnant's `civil_from_days`, proleptic Gregorian calendar).
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        var text: [UInt8] = []
        text.reserveCapacity(24)
        func digits(_ value: Int64, _ count: Int, then separator: UInt8) {
            var divisor: Int64 = 1
            for _ in 1..<count { divisor *= 10 }
            while divisor > 0 {
                text.append(UInt8(truncatingIfNeeded: 48 + (value / divisor) % 10))
                divisor /= 10
            }
            text.append(separator)
        }
        digits(year, 4, then: UInt8(ascii: "-"))
        digits(month, 2, then: UInt8(ascii: "-"))
        digits(day, 2, then: UInt8(ascii: "T"))
        digits(time / 3_600_000, 2, then: UInt8(ascii: ":"))
        digits(time / 60_000 % 60, 2, then: UInt8(ascii: ":"))
        digits(time / 1000 % 60, 2, then: UInt8(ascii: "."))
        digits(time % 1000, 3, then: UInt8(ascii: "Z"))
        return String(decoding: text, as: UTF8.self)
    }

    /// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, the range ``rfc3339(milliseconds:)`` shows.
    static let earliestShown: Int64 = -62_167_219_200_000
    static let latestShown: Int64 = 253_402_300_799_999

    /// Parses RFC 3339 text (`2026-11-21T12:00:00Z`, with or without fractional seconds, any offset) to milliseconds.
    static func parse(rfc3339 text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(finite: (date.timeIntervalSince1970 * 1000).rounded(.down)) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).flatMap { Int64(finite: ($0.timeIntervalSince1970 * 1000).rounded(.down)) }
    }
}
