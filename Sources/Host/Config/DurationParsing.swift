import Foundation

/// Durations in configuration and on the command line: a number and a unit, `500ms`, `15s`, `5m`, `2h`, `30d`; a bare
/// number is seconds. At most ``maximum``, so that every duration read here converts to milliseconds and adds to a
/// timestamp without overflowing.
enum DurationParsing {
    /// The longest duration accepted: 100 years.
    static let maximum: Duration = .seconds(100 * 365 * 86_400)

    /// The duration `text` spells, or nil when it is not one (or is longer than ``maximum``, or NaN, or negative).
    static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            // "ms" must not be read as "m" + "s": the longest unit is tried first.
            guard let value = number(trimmed.dropLast(suffix.count)) else { continue }
            return duration(seconds: value * scale)
        }
        return number(Substring(trimmed)).flatMap { duration(seconds: $0) }
    }

    /// A decimal number (`1.5`, `30`): nil for NaN, infinities, negatives and Swift's other spellings (`0x1p3`).
    private static func number(_ text: Substring) -> Double? {
        guard !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) || $0 == 0x2E }), let value = Double(text),
            value.isFinite, value >= 0
        else { return nil }
        return value
    }

    private static func duration(seconds: Double) -> Duration? {
        guard seconds <= maximum.seconds, let milliseconds = Int64(finite: (seconds * 1000).rounded()) else { return nil }
        return .milliseconds(milliseconds)
    }
}
