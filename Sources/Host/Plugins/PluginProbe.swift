import Foundation
import Synchronization

/// Checks plugin files in a probe worker process (`hookproxy plugin-worker --probe`): it opens each one as the loader
/// would and reports its declared identity or why it is refused. A file that crashes the probe, or hangs it, is refused
/// with that reason, and the probe goes on with the next file in a new process.
///
/// Results are kept per file for the life of the process while the file is unchanged (same size, modification time
/// and inode), so a reload probes only new or replaced files.
enum PluginProbe {
    /// How long one file may take to load.
    static let loadTimeout: Duration = .seconds(10)

    private struct Signature: Equatable {
        var size: Int
        var modified: Date
        var inode: Int
    }

    private static let cache = Mutex<[String: (Signature, Result<LoadedPlugin, PluginRefusal>)]>([:])

    /// What each of `files` is.
    static func identify(_ files: [String], memoryLimit: Int) async -> [String: Result<LoadedPlugin, PluginRefusal>] {
        var results: [String: Result<LoadedPlugin, PluginRefusal>] = [:]
        var unknown: [(String, Signature?)] = []
        for file in files {
            let signature = signature(of: file)
            if let signature, let (cached, result) = cache.withLock({ $0[file] }), cached == signature {
                results[file] = result
            } else {
                unknown.append((file, signature))
            }
        }
        guard !unknown.isEmpty else { return results }
        let names = unknown.map(\.0)
        let probed = await DedicatedThread.run { probe(names, memoryLimit: memoryLimit) }
        cache.withLock { cache in
            for (file, signature) in unknown {
                guard let result = probed[file] else { continue }
                results[file] = result
                if let signature { cache[file] = (signature, result) }
            }
        }
        return results
    }

    private static func signature(of file: String) -> Signature? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: file) else { return nil }
        return Signature(
            size: (attributes[.size] as? NSNumber)?.intValue ?? -1,
            modified: attributes[.modificationDate] as? Date ?? .distantPast,
            inode: (attributes[.systemFileNumber] as? NSNumber)?.intValue ?? -1)
    }

    /// Probes `files` in order, one process for as many as load without trouble. Blocks: runs on a dedicated thread.
    private static func probe(_ files: [String], memoryLimit: Int) -> [String: Result<LoadedPlugin, PluginRefusal>] {
        var results: [String: Result<LoadedPlugin, PluginRefusal>] = [:]
        var remaining = files[...]
        while let first = remaining.first {
            let worker: WorkerProcess
            do {
                worker = try WorkerProcess.start(arguments: ["--probe"] + remaining, memoryLimit: memoryLimit)
            } catch {
                for file in remaining { results[file] = .failure(PluginRefusal(file: file, reason: "cannot be checked: \(error.message)")) }
                return results
            }
            var finished = false
            while !finished, let current = remaining.first {
                do throws(WorkerProcess.Failure) {
                    let message = try worker.receive(deadline: .now + loadTimeout) { _, text in
                        HostCallbacks.logger.info("\(text)", metadata: ["plugin_file": "\(current)"])
                    }
                    switch message {
                    case .loaded(let plugin):
                        results[plugin.file] = .success(plugin)
                        remaining = remaining.drop { $0 == plugin.file }
                    case .refused(let refusal):
                        results[refusal.file] = .failure(refusal)
                        remaining = remaining.drop { $0 == refusal.file }
                    case .probeDone:
                        finished = true
                    default:
                        throw WorkerProcess.Failure.malformed("an unexpected message")
                    }
                } catch {
                    let reason: String
                    switch error {
                    case .timedOut:
                        worker.kill()
                        reason = "did not finish loading within \(loadTimeout.compactDescription)"
                    case .closed:
                        reason = "\(worker.reap().describe(memoryLimit: memoryLimit)) while loading"
                    case .malformed(let detail):
                        worker.kill()
                        reason = "broke the probe while loading: \(detail)"
                    }
                    results[current] = .failure(PluginRefusal(file: current, reason: "it \(reason)"))
                    remaining = remaining.dropFirst()
                    break
                }
            }
            if finished {
                worker.stop(grace: .seconds(1))
                for file in remaining where results[file] == nil {
                    results[file] = .failure(PluginRefusal(file: file, reason: "was not reported by the probe"))
                }
                return results
            }
            if remaining.first == first { remaining = remaining.dropFirst() }
        }
        return results
    }
}
