/// Replay, shared by the admin API and the CLI: schedules a fresh delivery of an event to each of its destinations,
/// unless its source says `replay: false`.
struct Replayer: Sendable {
    let store: any EventRecords
    let config: HookproxyConfig

    enum Failure: Error {
        case notFound(String)
        case disabled(source: String)
    }

    /// The ids of the new deliveries.
    func replay(eventID: String) async throws -> [String] {
        guard let detail = try await store.eventDetail(id: eventID) else { throw Failure.notFound(eventID) }
        let source = config.sources[detail.event.source]
        if source?.replay == false { throw Failure.disabled(source: detail.event.source) }
        let fallback = source?.routes.map(\.destination) ?? []
        guard let ids = try await store.replay(eventID: eventID, fallbackDestinations: fallback, now: Clock.milliseconds()) else {
            throw Failure.notFound(eventID)
        }
        return ids
    }
}

extension Replayer {
    /// What a replay by filter did (or, dry, would do).
    struct Summary: Sendable, Equatable {
        /// Current, finished deliveries that matched the filter.
        var matched = 0
        /// New deliveries scheduled (0 on a dry run).
        var scheduled = 0
        /// Matches per destination that are (or would be) replayed.
        var byDestination: [String: Int] = [:]
        /// Matches left alone because their source says `replay: false`.
        var skippedReplayDisabled = 0
        /// Matches left alone because their destination is no longer configured.
        var skippedUnknownDestination = 0
    }

    /// Replays every current, finished delivery matching `filter` (oldest first, `batch` per transaction), or with
    /// `dryRun` only counts them. Deliveries created after the call started are never included, so a replay never
    /// replays its own work. `progress` is told the running summary after each batch.
    func replay(
        matching filter: RecordFilter, dryRun: Bool, batch: Int = 500, progress: @Sendable (Summary) -> Void = { _ in }
    ) async throws -> Summary {
        if let name = filter.source, config.sources[name]?.replay == false { throw Failure.disabled(source: name) }
        let startedAt = Clock.milliseconds()
        var summary = Summary()
        var cursor: String?
        repeat {
            let page = try await store.replayCandidates(filter, createdBefore: startedAt, cursor: cursor, limit: batch)
            summary.matched += page.items.count
            var chosen: [DeliverySummary] = []
            for delivery in page.items {
                if config.sources[delivery.source]?.replay == false {
                    summary.skippedReplayDisabled += 1
                } else if config.destinations[delivery.destination] == nil {
                    summary.skippedUnknownDestination += 1
                } else {
                    chosen.append(delivery)
                    summary.byDestination[delivery.destination, default: 0] += 1
                }
            }
            if !dryRun { summary.scheduled += try await store.replay(deliveries: chosen, now: Clock.milliseconds()).count }
            progress(summary)
            cursor = page.nextCursor
        } while cursor != nil
        return summary
    }
}
