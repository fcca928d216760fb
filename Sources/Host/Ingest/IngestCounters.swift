import Synchronization

/// What happened to each source's requests since the server started: accepted, duplicate, signature_failed,
/// rate_limited, rejected (any other 4xx), failed (5xx). Shown by `GET /admin/sources`.
final class IngestCounters: Sendable {
    private let counts = Mutex<[String: [String: Int]]>([:])

    func count(source: String, outcome: String) {
        counts.withLock { $0[source, default: [:]][outcome, default: 0] += 1 }
    }

    /// A copy of the counts, by source then outcome.
    var snapshot: [String: [String: Int]] { counts.withLock { $0 } }

    /// The counter name for an error answer.
    static func outcome(for error: APIError) -> String {
        switch error.errorCode {
        case "unauthorized": "signature_failed"
        case "rate_limited": "rate_limited"
        default: error.status.code >= 500 ? "failed" : "rejected"
        }
    }
}
