/// Replay, shared by the admin API and the CLI: schedules a fresh delivery of an event to each of its destinations,
/// unless its source says `replay: false`.
struct Replayer: Sendable {
    let store: any EventStore
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
