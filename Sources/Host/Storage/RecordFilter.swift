/// What operators look for: events and deliveries matching a filter, a page at a time, and replay by filter.
///
/// A delivery is *current* when no replay has superseded it (no delivery names it in `replay_of`): it is the one that
/// says what last happened to that event at that destination. Listings and replay by filter look at current deliveries
/// only; an event's detail shows every delivery.
struct RecordFilter: Sendable, Equatable {
    var source: String?
    var destination: String?
    /// A current delivery in this status.
    var status: DeliveryStatus?
    /// Events received at or after this time (ms).
    var since: Int64?
    /// Events received before this time (ms).
    var until: Int64?
}

/// One event in a listing, with its current deliveries.
struct EventSummary: Sendable {
    var id: String
    var source: String
    var receivedAt: Int64
    var deliveries: [DeliverySummary]
}

/// One delivery in a listing.
struct DeliverySummary: Sendable {
    var id: String
    var eventID: String
    var source: String
    var destination: String
    var status: DeliveryStatus
    var attempts: Int
    var nextAttemptAt: Int64?
    var lastError: String?
    var replayOf: String?
    var createdAt: Int64
    var updatedAt: Int64
}

/// A page of results and the cursor for the next one (`nil` at the end).
struct Page<Item: Sendable>: Sendable {
    var items: [Item]
    var nextCursor: String?

    init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }

    /// The first `limit` of `fetched`, which was fetched as `limit + 1`: the extra one only says whether there is a
    /// next page, whose cursor is the last shown item's `id`.
    init(fetched: [Item], limit: Int, id: (Item) -> String) {
        guard fetched.count > limit else {
            self.init(items: fetched, nextCursor: nil)
            return
        }
        let shown = Array(fetched.prefix(limit))
        self.init(items: shown, nextCursor: shown.last.map(id))
    }
}

extension DeliveryStatus {
    /// The states in which a delivery is finished: nothing more happens to it unless it is replayed.
    static let finished: Set<DeliveryStatus> = [.delivered, .dead, .skipped]
}
