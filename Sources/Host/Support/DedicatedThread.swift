import Foundation

/// Blocking work off Swift's cooperative pool: a thread of its own for one job (a plugin probe, a worker's lifetime).
///
/// The pool has one thread per core (two on a small machine); anything that blocks on it (a `waitpid`, a `poll`, a
/// plugin's code) stalls every task of the process, `/healthz` and shutdown included.
enum DedicatedThread {
    /// The stack size of these threads: as large as a main thread's, since plugin code may run on them.
    static let stackSize = 8 << 20

    /// Runs `body` on a new thread and returns its result.
    static func run<T: Sendable>(name: String = "hookproxy-blocking", _ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            start(name: name) { continuation.resume(returning: body()) }
        }
    }

    /// Starts `body` on a new thread.
    static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.name = name
        thread.stackSize = stackSize
        thread.start()
    }
}
