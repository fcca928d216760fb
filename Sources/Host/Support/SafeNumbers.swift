/// Number conversions and time arithmetic that cannot trap, for values that came from outside (a sender, a receiver,
/// a plugin, a configuration file).
///
/// Swift traps on `Int64(Double.nan)`, on a `Double` too large for the integer, and on overflowing `+` and `*`. Every
/// conversion of such a value goes through here: a number that is not finite is refused (`nil`), and one out of range
/// saturates at the integer's bounds.
extension Int64 {
    /// `value` rounded towards zero, saturating at `Int64.min` / `Int64.max`; nil for NaN and infinities.
    init?(finite value: Double) {
        guard value.isFinite else { return nil }
        // 2^63 is exactly representable; anything at or beyond it does not fit.
        if value >= 9_223_372_036_854_775_808.0 {
            self = .max
        } else if value <= -9_223_372_036_854_775_808.0 {
            self = .min
        } else {
            self.init(value)
        }
    }
}

extension FixedWidthInteger where Self: SignedInteger {
    /// `self + other`, saturating at the bounds instead of trapping.
    func addingSaturated(_ other: Self) -> Self {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other > 0 ? .max : .min
    }

    /// `self - other`, saturating at the bounds instead of trapping.
    func subtractingSaturated(_ other: Self) -> Self {
        let (difference, overflow) = subtractingReportingOverflow(other)
        guard overflow else { return difference }
        return other < 0 ? .max : .min
    }
}

extension Duration {
    /// The duration in whole milliseconds (rounded down), saturating at `Int64`'s bounds.
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingSaturated(attoseconds / 1_000_000_000_000_000)
    }

    /// The duration in whole nanoseconds (rounded down), saturating at `Int64`'s bounds.
    var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingSaturated(attoseconds / 1_000_000_000)
    }

    /// A number of seconds that came from outside as a duration, rounded up to the millisecond: nil unless it is a
    /// finite number that is not negative; at most `maximum` (a larger request gives `maximum`).
    init?(untrustedSeconds seconds: Double, atMost maximum: Duration) {
        guard seconds.isFinite, seconds >= 0 else { return nil }
        if seconds >= maximum.seconds {
            self = maximum
            return
        }
        // Below `maximum`, which configuration bounds to far less than Int64 milliseconds.
        self = .milliseconds(Int64(finite: (seconds * 1000).rounded(.up)) ?? maximum.wholeMilliseconds)
    }
}

extension Int {
    /// `value` rounded towards zero, saturating at `Int.min` / `Int.max`; nil for NaN and infinities.
    init?(finite value: Double) {
        guard let wide = Int64(finite: value) else { return nil }
        self.init(wide)
    }
}
