/// The tables and columns both backends hold, whatever the history of their migrations (SQLite's and PostgreSQL's are
/// numbered apart and use each dialect's types): the data model written once. The store contract suite checks every
/// migrated database against it, so a column added to one backend and not the other fails a test.
enum StoreSchema {
    static let columns: [String: Set<String>] = [
        "events": ["id", "source", "received_at", "content_type", "headers", "body", "fields", "idempotency_key"],
        "deliveries": [
            "id", "event_id", "destination", "status", "attempts", "next_attempt_at", "lease_until", "last_error", "replay_of",
            "parts_sent", "crashes", "plugin_failures", "created_at", "updated_at",
        ],
        "attempts": ["id", "delivery_id", "number", "started_at", "duration_ms", "http_status", "response_body", "error"],
        "suspended_destinations": ["destination", "suspended_at"],
    ]

    /// What the PostgreSQL store adds for several instances: the FIFO order (`seq`; SQLite's `rowid` serves), the claiming
    /// instance, who suspended a destination, and the instances' heartbeats.
    static let postgresExtras: [String: Set<String>] = [
        "deliveries": ["seq", "claimed_by"],
        "suspended_destinations": ["suspended_by"],
        "instances": ["id", "host", "pid", "started_at", "seen_at"],
    ]
}
