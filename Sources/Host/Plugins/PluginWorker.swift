import Foundation
import HostShims
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The plugin worker: what `hookproxy plugin-worker` runs, in a process of its own, to load one plugin library and run
/// its calls one at a time on its main thread, so that whatever the plugin does (crash, `exit()`, loop, overflow its
/// stack, allocate without end) ends or stalls this process only. The host kills it past a call's deadline, and it is
/// killed by the kernel when the host thread that started it ends (`PR_SET_PDEATHSIG`).
///
/// In probe mode it loads each file it was given, reports what it found, and exits: a library that crashes while it
/// loads takes the probe down, not the host.
enum PluginWorker {
    /// Writes frames to the host; shared with the plugin's log callback, which any thread of the plugin may call.
    static let output = Mutex<Int32>(HP_WORKER_CHANNEL_FD)

    /// Runs the worker until the host closes the socket; returns the exit status.
    static func run(parent: Int32, memoryLimit: UInt64, probe: Bool, files: [String]) -> Int32 {
        guard hp_worker_prepare(parent, memoryLimit) == 0 else { return 0 }
        HostCallbacks.forward.withLock { $0 = { level, text in send(.log(level: level, text: text)) } }
        if probe {
            for file in files {
                switch PluginLoader.openNative(file: file) {
                case .success(let plugin): send(.loaded(plugin.identity))
                case .failure(let refusal): send(.refused(refusal))
                }
            }
            send(.probeDone)
            return 0
        }
        guard let file = files.first else { return 2 }
        let plugin: NativePlugin
        switch PluginLoader.openNative(file: file) {
        case .success(let loaded):
            plugin = loaded
            send(.loaded(plugin.identity))
        case .failure(let refusal):
            send(.refused(refusal))
            return 0
        }
        serve(plugin)
        return 0
    }

    /// Answers the host's messages, in order, until it closes the socket.
    private static func serve(_ plugin: NativePlugin) {
        var instances: [UInt32: NativePlugin.Handle] = [:]
        var buffer: [UInt8] = []
        var offset = 0
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            let message: WorkerMessage
            do {
                guard let (next, end) = try WorkerMessage.next(in: buffer, from: offset, maximum: Int(Int32.max)) else {
                    let count = chunk.withUnsafeMutableBytes { read(HP_WORKER_CHANNEL_FD, $0.baseAddress, $0.count) }
                    if count < 0, errno == EINTR { continue }
                    guard count > 0 else { return }
                    if offset == buffer.count {
                        buffer.removeAll(keepingCapacity: true)
                        offset = 0
                    } else if offset > 1 << 20 {
                        buffer.removeFirst(offset)
                        offset = 0
                    }
                    buffer += chunk[0..<count]
                    continue
                }
                message = next
                offset = end
            } catch {
                return
            }
            switch message {
            case .createInstance(let id, let options):
                switch plugin.createInstance(options: options) {
                case .success(let handle):
                    instances[id] = handle
                    send(.instanceCreated(id: id, ok: true, error: ""))
                case .failure(let error):
                    send(.instanceCreated(id: id, ok: false, error: error.message))
                }
            case .destroyInstance(let id):
                if let handle = instances.removeValue(forKey: id) { plugin.destroyInstance(handle) }
            case .call(let id, let operation, let instance, let document, let body, let contentType):
                guard let handle = instances[instance], let operation = PluginCall.Operation(rawValue: operation) else {
                    send(.result(id: id, output: PluginOutput(status: 3, error: "the worker has no instance \(instance)")))
                    continue
                }
                let output = plugin.call(
                    operation, instance: handle, document: document, body: body,
                    contentType: String(decoding: contentType, as: UTF8.self))
                send(.result(id: id, output: output))
            default:
                return
            }
        }
    }

    /// Writes one message; a host that is gone ends the worker.
    static func send(_ message: WorkerMessage) {
        let frame = message.frame()
        output.withLock { descriptor in
            var sent = 0
            while sent < frame.count {
                let count = frame.withUnsafeBytes { raw in
                    Glibc.send(descriptor, raw.baseAddress.map { $0 + sent }, raw.count - sent, Int32(MSG_NOSIGNAL))
                }
                if count > 0 {
                    sent += count
                } else if count < 0, errno == EINTR {
                    continue
                } else {
                    _exit(0)
                }
            }
        }
    }
}
