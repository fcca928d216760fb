import Foundation
import Logging
import PluginABI
import Synchronization

/// The `hookproxy_host` structs given to plugins: one per library, so that a plugin's log lines carry its file.
enum HostCallbacks {
    /// The logger plugin log lines go to.
    static let logger = Logger(label: "hookproxy.plugin")

    /// In a worker process: where log lines go instead (to the host, over the worker's socket).
    static let forward = Mutex<(@Sendable (UInt8, String) -> Void)?>(nil)

    /// A host struct for the library at `file`. It is allocated once and never freed: plugins may keep the pointer
    /// for the life of the process.
    static func make(for file: String) -> UnsafePointer<hookproxy_host> {
        let host = UnsafeMutablePointer<hookproxy_host>.allocate(capacity: 1)
        host.initialize(
            to: hookproxy_host(
                abi_version: HOOKPROXY_ABI_VERSION,
                struct_size: UInt32(MemoryLayout<hookproxy_host>.size),
                callback_log: log,
                host_data: UnsafeMutableRawPointer(strdup(URL(fileURLWithPath: file).lastPathComponent))))
        return UnsafePointer(host)
    }

    /// The log level of an ABI level number.
    static func level(_ level: UInt32) -> Logger.Level {
        switch level {
        case HOOKPROXY_LOG_DEBUG.rawValue: .debug
        case HOOKPROXY_LOG_INFO.rawValue: .info
        case HOOKPROXY_LOG_WARNING.rawValue: .warning
        default: .error
        }
    }

    /// The most bytes of one log line taken from a plugin.
    static let maximumLine = 16 << 10

    private static let log: @convention(c) (UnsafePointer<hookproxy_host>?, hookproxy_log_level, UnsafePointer<CChar>?, Int) -> Void = {
        host, level, message, length in
        guard let message, length >= 0 else { return }
        let text = String(decoding: UnsafeRawBufferPointer(start: message, count: min(length, maximumLine)), as: UTF8.self)
        if let forward = HostCallbacks.forward.withLock({ $0 }) {
            forward(UInt8(clamping: level.rawValue), text)
            return
        }
        let file = host?.pointee.host_data.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "?"
        HostCallbacks.logger.log(level: Self.level(level.rawValue), "\(text)", metadata: ["plugin_file": "\(file)"])
    }
}
