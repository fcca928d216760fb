import Synchronization

/// Deliveries claimed ahead of their lane's free slots are formatted while they wait, so that a slot is held only for
/// sending (decisions §41). A claim of forty deliveries sends its calls to the plugin's workers together, which then
/// answer several per wake-up instead of about two; and while a lane's slots are all sending, its next deliveries are
/// already being formatted.
///
/// What is formatted ahead is used only with the plugin instance that made it (a reload in between formats again),
/// and is kept until the delivery starts or goes back to the store (``discard(_:)``): every delivery claimed ahead does
/// one or the other, so nothing stays here.
final class FormattedAhead: Sendable {
    typealias Outcome = PluginInstance.FormatOutcome

    private struct Entry {
        let formatter: PluginInstance
        var outcome: Outcome?
        /// The delivery started while its format call was running, and waits for its outcome.
        var waiter: CheckedContinuation<Outcome?, Never>?
    }

    private let entries = Mutex<[String: Entry]>([:])

    /// Notes that `delivery` is about to be formatted ahead with `formatter` (before its ``format(_:with:)`` task runs,
    /// so that a delivery that starts meanwhile waits for it rather than formatting twice). False when it already is.
    func expect(_ delivery: ClaimedDelivery, formatter: PluginInstance) -> Bool {
        entries.withLock { entries in
            guard entries[delivery.id] == nil else { return false }
            entries[delivery.id] = Entry(formatter: formatter)
            return true
        }
    }

    /// Formats `delivery` (noted with ``expect(_:formatter:)``) and keeps the outcome for ``take(_:formatter:)``, or
    /// hands it to the delivery that waits for it. Dropped when the delivery went back to the store meanwhile.
    func format(_ delivery: ClaimedDelivery, with formatter: PluginInstance) async {
        let outcome = await Attempt.format(delivery, with: formatter)
        let waiter: CheckedContinuation<Outcome?, Never>? = entries.withLock { entries in
            guard var entry = entries[delivery.id], entry.formatter === formatter, entry.outcome == nil else { return nil }
            if let waiter = entry.waiter {
                entries[delivery.id] = nil
                return waiter
            }
            entry.outcome = outcome
            entries[delivery.id] = entry
            return nil
        }
        waiter?.resume(returning: outcome)
    }

    /// What was formatted ahead for delivery `id` with `formatter`, waiting for it if its call is still running; nil
    /// when nothing was, or it was with another instance (the caller formats it now).
    func take(_ id: String, formatter: PluginInstance) async -> Outcome? {
        switch settle(id, formatter: formatter, waiter: nil) {
        case .nothing: return nil
        case .ready(let outcome): return outcome
        case .running: break
        }
        return await withCheckedContinuation { continuation in
            switch settle(id, formatter: formatter, waiter: continuation) {
            case .nothing: continuation.resume(returning: nil)
            case .ready(let outcome): continuation.resume(returning: outcome)
            case .running: break
            }
        }
    }

    private enum Found {
        case nothing
        case ready(Outcome)
        case running
    }

    /// Takes delivery `id`'s outcome if it is there; while its call runs, leaves `waiter` (if any) to be resumed with it.
    /// An entry made with another instance (a reload came in between) is dropped: its call's answer is not used.
    private func settle(_ id: String, formatter: PluginInstance, waiter: CheckedContinuation<Outcome?, Never>?) -> Found {
        entries.withLock { entries in
            guard var entry = entries[id], entry.waiter == nil else { return .nothing }
            guard entry.formatter === formatter else {
                entries[id] = nil
                return .nothing
            }
            if let outcome = entry.outcome {
                entries[id] = nil
                return .ready(outcome)
            }
            if let waiter {
                entry.waiter = waiter
                entries[id] = entry
            }
            return .running
        }
    }

    /// Forgets deliveries that went back to the store without starting.
    func discard(_ ids: some Sequence<String>) {
        let waiters = entries.withLock { entries in ids.compactMap { entries.removeValue(forKey: $0)?.waiter } }
        for waiter in waiters { waiter.resume(returning: nil) }
    }
}
