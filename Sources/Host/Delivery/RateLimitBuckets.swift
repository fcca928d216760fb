import Synchronization

/// Rate-limit windows shared by bucket: Discord names the bucket a request counts against (`X-RateLimit-Bucket`), and
/// several destinations posting to one webhook share it. A window learned by one lane holds back every lane whose last
/// answer named the same bucket.
final class RateLimitBuckets: Sendable {
    private let windows = Mutex<[String: Int64]>([:])

    /// Nothing counted against `bucket` is sent before `until` (ms).
    func block(_ bucket: String, until: Int64) {
        windows.withLock { windows in windows[bucket] = max(windows[bucket] ?? 0, until) }
    }

    /// The end of `bucket`'s current window, if it is still closed at `now`.
    func closedUntil(_ bucket: String, now: Int64) -> Int64? {
        windows.withLock { windows in
            guard let until = windows[bucket] else { return nil }
            if until <= now {
                windows[bucket] = nil
                return nil
            }
            return until
        }
    }
}
