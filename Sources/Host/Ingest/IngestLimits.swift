import Synchronization

/// Admission control for the ingest listener: the cap on requests in progress (load shedding) and each source's rate
/// limit (never more than N accepted requests in any window of the configured length).
final class IngestLimits: Sendable {
    private let inProgress = Atomic<Int>(0)
    private let shedCount = Atomic<Int>(0)
    private let windows = Mutex<[String: [Int64]]>([:])
    /// Requests that failed verification, per client address (``ClientAddress``).
    private let unverified = Mutex(ClientWindows())
    /// Requests in progress per client address; an address leaves the map when its last request ends.
    private let perClient = Mutex<[String: Int]>([:])
    private let clientShedCount = Atomic<Int>(0)
    private let warnedForwarding = Atomic<Bool>(false)
    /// The first-body-byte deadline's watch (its sweeper runs as a service of the server).
    let firstByte = FirstByteWatch()

    /// True once: the first time a request carries `X-Forwarded-For` while no proxy is trusted (worth one warning).
    func firstUntrustedForwarding() -> Bool {
        !warnedForwarding.exchange(true, ordering: .relaxed)
    }

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

    /// Takes one of `client`'s share of the slots; false when `maximum` of its requests are already in progress.
    func enter(client: String, maximum: Int) -> Bool {
        let admitted = perClient.withLock { counts in
            let current = counts[client, default: 0]
            guard current < maximum else { return false }
            counts[client] = current + 1
            return true
        }
        if !admitted { clientShedCount.add(1, ordering: .relaxed) }
        return admitted
    }

    /// Gives `client`'s slot back.
    func leave(client: String) {
        perClient.withLock { counts in
            let current = counts[client, default: 0]
            if current <= 1 { counts[client] = nil } else { counts[client] = current - 1 }
        }
    }

    /// Requests refused with 503 because their client address had `max_concurrent_per_client` in progress.
    var clientRequestsShed: Int { clientShedCount.load(ordering: .relaxed) }

    /// When `client` has failed verification `limit.requests` times within `limit.per`, the seconds until one of those
    /// failures leaves the window; nil when it may try.
    func unverifiedWait(client: String, limit: RateLimit, now: Int64 = Clock.milliseconds()) -> Int? {
        unverified.withLock { $0.wait(client, limit: limit, now: now) }
    }

    /// Counts a failed verification from `client`.
    func recordUnverified(client: String, limit: RateLimit, now: Int64 = Clock.milliseconds()) {
        unverified.withLock { $0.record(client, limit: limit, now: now) }
    }

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

/// Sliding windows per client address, bounded: at most `capacity` addresses are tracked. When a new address finds the
/// table full, addresses whose windows are empty go first, then the half least recently seen, so a sender of many
/// addresses costs bounded memory (and gets no more than a fresh budget per address, which it had anyway).
struct ClientWindows {
    private struct Entry {
        var starts: [Int64]
        var lastSeen: Int64
    }

    private var entries: [String: Entry] = [:]
    let capacity: Int

    init(capacity: Int = 16_384) { self.capacity = capacity }

    var count: Int { entries.count }

    func wait(_ client: String, limit: RateLimit, now: Int64) -> Int? {
        guard let entry = entries[client] else { return nil }
        let window = limit.per.wholeMilliseconds
        let live = entry.starts.filter { $0 > now.subtractingSaturated(window) }
        guard live.count >= limit.requests, let oldest = live.first else { return nil }
        let milliseconds = oldest.addingSaturated(window).subtractingSaturated(now)
        return Int(max(1, milliseconds / 1000 + (milliseconds % 1000 == 0 ? 0 : 1)))
    }

    mutating func record(_ client: String, limit: RateLimit, now: Int64) {
        let window = limit.per.wholeMilliseconds
        if entries[client] == nil, entries.count >= capacity { makeRoom(now: now, window: window) }
        var entry = entries[client] ?? Entry(starts: [], lastSeen: now)
        entry.starts.removeAll { $0 <= now.subtractingSaturated(window) }
        // Only the newest `requests` starts decide the wait; older ones need not be kept.
        if entry.starts.count >= limit.requests { entry.starts.removeFirst(entry.starts.count - limit.requests + 1) }
        entry.starts.append(now)
        entry.lastSeen = now
        entries[client] = entry
    }

    private mutating func makeRoom(now: Int64, window: Int64) {
        entries = entries.filter { $0.value.lastSeen > now.subtractingSaturated(window) }
        guard entries.count >= capacity else { return }
        let keep = entries.sorted { $0.value.lastSeen > $1.value.lastSeen }.prefix(capacity / 2)
        entries = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
    }
}
