import NIOCore
import ServiceLifecycle
import Synchronization

/// The deadline for a request's first body byte (`server.first_byte_timeout`).
///
/// A client that sends a request head and then nothing holds an ingest slot until the connection's idle timeout (twice
/// `read_timeout`); a few hundred such connections would shed every real sender. Each request waiting for its first
/// body byte is listed here, and one sweeper task for the whole listener closes the connections of those past their
/// deadline. No timer per request (decisions §27): a request costs two short lock holds.
final class FirstByteWatch: Sendable {
    private struct Waiting {
        let deadline: ContinuousClock.Instant
        let channel: any Channel
    }

    private struct State {
        var next: UInt64 = 0
        var waiting: [UInt64: Waiting] = [:]
        /// Requests whose connection the sweeper closed, until the request itself notices.
        var expired: Set<UInt64> = []
    }

    private let state = Mutex(State())
    private let closedCount = Atomic<Int>(0)

    /// Starts watching a request on `channel`; returns its ticket for ``finish(_:)``.
    func start(channel: any Channel, timeout: Duration) -> UInt64 {
        let deadline = ContinuousClock.now + timeout
        return state.withLock { state in
            state.next &+= 1
            state.waiting[state.next] = Waiting(deadline: deadline, channel: channel)
            return state.next
        }
    }

    /// The first body byte arrived, or the body ended (or failed): stop watching. True when the deadline had already
    /// passed and the connection was closed.
    @discardableResult
    func finish(_ ticket: UInt64) -> Bool {
        state.withLock { state in
            if state.waiting.removeValue(forKey: ticket) != nil { return false }
            return state.expired.remove(ticket) != nil
        }
    }

    /// Closes the connections of requests past their deadline; returns how many.
    @discardableResult
    func sweep(now: ContinuousClock.Instant = .now) -> Int {
        let overdue = state.withLock { state -> [any Channel] in
            let late = state.waiting.filter { $0.value.deadline < now }
            for ticket in late.keys {
                state.waiting[ticket] = nil
                state.expired.insert(ticket)
            }
            return late.values.map(\.channel)
        }
        for channel in overdue { channel.close(promise: nil) }
        if !overdue.isEmpty { closedCount.add(overdue.count, ordering: .relaxed) }
        return overdue.count
    }

    /// Requests whose body never started within the deadline, since the server started.
    var closed: Int { closedCount.load(ordering: .relaxed) }
}

/// Runs ``FirstByteWatch/sweep(now:)`` every 100 ms until shutdown.
struct FirstByteSweeper: Service {
    let watch: FirstByteWatch

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            watch.sweep()
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(100)) }
            } catch {
                return
            }
        }
    }
}
