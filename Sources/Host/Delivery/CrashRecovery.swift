import Logging

/// Before anything is claimed at start: what the in-flight journal says was happening when the previous run ended
/// abnormally. The delivery a crashing in-process plugin was formatting is quarantined at once; every other delivery
/// that was being attempted counts one abnormal exit, and is quarantined after its destination's `max_crashes` in a
/// row; a body that crashed an in-process mapper is remembered and refused from now on.
struct CrashRecovery: Sendable {
    let journal: CallJournal
    let store: any DeliveryQueue
    let alerter: Alerter?
    let metrics: HookproxyMetrics
    let logger: Logger

    /// Records the previous run's crash, retrying until the store takes it: nothing is resumed before that (so nothing
    /// is resumed into the same crash). Returns early when `stopping` says the process is stopping.
    func recover(destinations: [String: DestinationConfig], stopping: () -> Bool) async {
        guard let previous = journal.previousRun else { return }
        var crashes: [CrashRecord] = []
        var culprit: String?
        if let (entry, signal) = previous.crashed {
            let what = signal == 0 ? "called exit()" : "crashed hookproxy (\(WorkerExit.signalName(signal)))"
            switch entry.kind {
            case .format where !entry.id.isEmpty:
                culprit = entry.id
                crashes.append(
                    CrashRecord(
                        deliveryID: entry.id, quarantineAt: 1,
                        reason: "poison event: plugin \(entry.plugin) \(what) formatting this event (isolation: in_process); "
                            + "quarantined at the next start; replay it once the plugin is fixed or isolated"))
            case .map:
                journal.recordPoison(.init(source: entry.name, plugin: entry.plugin, digest: entry.digest))
                logger.error(
                    "an in-process mapper crashed hookproxy on a request body; that body is refused from now on",
                    metadata: ["plugin": "\(entry.plugin)", "source": "\(entry.name)", "signal": "\(signal)"])
            default:
                logger.error(
                    "an in-process plugin crashed hookproxy", metadata: ["plugin": "\(entry.plugin)", "signal": "\(signal)"])
            }
        }
        for entry in previous.entries where entry.kind == .attempt && !entry.id.isEmpty && entry.id != culprit {
            let maximum = destinations[entry.name]?.maxCrashes ?? DestinationConfig.defaultMaxCrashes
            crashes.append(
                CrashRecord(
                    deliveryID: entry.id, quarantineAt: maximum,
                    reason: "poison event: in flight during \(maximum) abnormal exits of hookproxy in a row; quarantined; "
                        + "replay it once the cause is fixed"))
        }
        logger.warning(
            "the previous run ended abnormally",
            metadata: [
                "pid": "\(previous.pid)", "attempts_in_flight": "\(crashes.count - (culprit == nil ? 0 : 1))",
                "crashed_in_plugin": "\(previous.crashed.map { $0.entry.plugin } ?? "-")",
            ])
        var logged = false
        while !stopping() {
            do {
                for delivery in try await store.recordCrashes(crashes) { quarantined(delivery) }
                return
            } catch {
                if !logged {
                    logger.error("cannot record the previous run's crash; delivery waits until it can", metadata: ["error": "\(error)"])
                    logged = true
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Tells operators about a delivery quarantined at start.
    private func quarantined(_ delivery: QuarantinedDelivery) {
        logger.error(
            "delivery quarantined",
            metadata: [
                "event_id": "\(delivery.eventID)", "delivery_id": "\(delivery.deliveryID)", "destination": "\(delivery.destination)",
                "reason": "\(delivery.reason)",
            ])
        metrics.increment("hookproxy_deliveries_quarantined_total", [("destination", delivery.destination)])
        alerter?.quarantined(delivery)
    }
}
