import Synchronization

/// Admission control for the ingest listener: the cap on requests in progress (load shedding) and each source's rate
/// limit (never more than N accepted requests in any window of the configured length).
final class IngestLimits: Sendable {
    private let inProgress = Atomic<Int>(0)
    private let shedCount = Atomic<Int>(0)
    private let windows = Mutex<[String: [Int64]]>([:])

    /// Takes a slot for one request; false when `maximum` are already in progress.
    func enter(maximum: Int) -> Bool {
        if inProgress.add(1, ordering: .relaxed).newValue > maximum {
            inProgress.subtract(1, ordering: .relaxed)
            shedCount.add(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Gives the slot back.
    func leave() { inProgress.subtract(1, ordering: .relaxed) }

    /// Requests in progress now.
    var requestsInProgress: Int { inProgress.load(ordering: .relaxed) }

    /// Requests refused with 503 because `maximum` were in progress, since the server started.
    var requestsShed: Int { shedCount.load(ordering: .relaxed) }

    /// Counts one request for `source` under `limit` at `now`; when over, the seconds until a slot frees.
    func admit(source: String, limit: RateLimit, now: Int64 = Clock.milliseconds()) -> Int? {
        let window = limit.per.wholeMilliseconds
        return windows.withLock { windows in
            var starts = windows[source, default: []]
            starts.removeAll { $0 <= now - window }
            defer { windows[source] = starts }
            guard starts.count < limit.requests else {
                return Int((Double(starts[0] + window - now) / 1000).rounded(.up))
            }
            starts.append(now)
            return nil
        }
    }
}
