import Foundation
import Testing

@testable import Host

/// The hand-written RFC 3339 formatter must write what Foundation's ISO 8601 style writes (but exact to the
/// millisecond), and never trap on a time read from a damaged row.
@Suite("Clock")
struct ClockTests {
    static func foundation(_ milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(
            .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon)
                .timeZone(separator: .omitted))
    }

    @Test("RFC 3339 text is Foundation's, from 1900 to 2400, leap days and the ends of days included")
    func sameAsFoundation() {
        var generator = SystemRandomNumberGenerator()
        var times: [Int64] = [0, -1, 1, 999, 1000, 86_399_999, 86_400_000, 951_782_400_000, 951_868_799_999, 1_709_164_800_123]
        // 2000-02-29, 2024-02-29 and 2100-03-01 (2100 is no leap year), and random times.
        times += [4_107_542_400_000, 4_107_455_999_999]
        for _ in 0..<5000 { times.append(Int64.random(in: -2_208_988_800_000...13_569_465_600_000, using: &generator)) }
        for time in times {
            let text = Clock.rfc3339(milliseconds: time)
            // Foundation's milliseconds go through a Double and are one short for many times (999 ms shows as .998):
            // the date and time to the second are compared with it, the milliseconds with the stored number.
            #expect(text.prefix(20) == Self.foundation(time).prefix(20), "at \(time) ms")
            let milliseconds = (time % 1000 + 1000) % 1000
            #expect(text.suffix(4) == String(format: "%03dZ", milliseconds), "at \(time) ms")
        }
    }

    @Test("a time outside the years 0000 to 9999 is shown at the nearer end, and parses back")
    func outOfRange() {
        #expect(Clock.rfc3339(milliseconds: .max) == "9999-12-31T23:59:59.999Z")
        #expect(Clock.rfc3339(milliseconds: .min) == "0000-01-01T00:00:00.000Z")
        #expect(Clock.rfc3339(milliseconds: Clock.latestShown + 1) == "9999-12-31T23:59:59.999Z")
        #expect(Clock.parse(rfc3339: Clock.rfc3339(milliseconds: 1_709_164_800_123)) == 1_709_164_800_123)
    }
}
