/// A storage failure. Ingest answers 503 for every one of them and acknowledges nothing.
struct StoreError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable {
        case unavailable
        case commitFailed
        case readFailed
        case closed
    }

    private let code: Code
    /// The underlying reason, for logs (never sent to clients verbatim).
    let reason: String

    private init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    /// The database cannot be opened or reached.
    static func unavailable(_ reason: String) -> StoreError { StoreError(.unavailable, reason) }
    /// A transaction could not be committed (disk full, read-only, locked past the deadline).
    static func commitFailed(_ reason: String) -> StoreError { StoreError(.commitFailed, reason) }
    /// A read failed (the database is locked past the deadline, corrupt, or unreachable).
    static func readFailed(_ reason: String) -> StoreError { StoreError(.readFailed, reason) }
    /// The store is shutting down.
    static let closed = StoreError(.closed, "the store is closed")

    var description: String {
        switch code {
        case .unavailable: "storage unavailable: \(reason)"
        case .commitFailed: "storage commit failed: \(reason)"
        case .readFailed: "storage read failed: \(reason)"
        case .closed: "storage closed"
        }
    }
}
