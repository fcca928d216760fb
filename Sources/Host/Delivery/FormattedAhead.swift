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
        enum Found {
            case nothing
            case ready(Outcome)
            case running
        }
        let found: Found = entries.withLock { entries in
            guard let entry = entries[id], entry.formatter === formatter, entry.waiter == nil else { return .nothing }
            guard let outcome = entry.outcome else { return .running }
            entries[id] = nil
            return .ready(outcome)
        }
        switch found {
        case .nothing:
            // Made with an instance a reload has since replaced (or never made): formatted again by the caller.
            discard([id])
            return nil
        case .ready(let outcome): return outcome
        case .running: break
        }
        return await withCheckedContinuation { continuation in
            let now: Found = entries.withLock { entries in
                guard var entry = entries[id], entry.formatter === formatter, entry.waiter == nil else { return .nothing }
                if let outcome = entry.outcome {
                    entries[id] = nil
                    return .ready(outcome)
                }
                entry.waiter = continuation
                entries[id] = entry
                return .running
            }
            switch now {
            case .nothing: continuation.resume(returning: nil)
            case .ready(let outcome): continuation.resume(returning: outcome)
            case .running: break
            }
        }
    }

    /// Forgets deliveries that went back to the store without starting.
    func discard(_ ids: some Sequence<String>) {
        let waiters = entries.withLock { entries in ids.compactMap { entries.removeValue(forKey: $0)?.waiter } }
        for waiter in waiters { waiter.resume(returning: nil) }
    }
}
