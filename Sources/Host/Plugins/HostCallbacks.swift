import Foundation
import Logging
import PluginABI

/// The `hookproxy_host` structs given to plugins: one per library, so that a plugin's log lines carry its file.
enum HostCallbacks {
    /// The logger plugin log lines go to.
    static let logger = Logger(label: "hookproxy.plugin")

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

    private static let log: @convention(c) (UnsafePointer<hookproxy_host>?, hookproxy_log_level, UnsafePointer<CChar>?, Int) -> Void = {
        host, level, message, length in
        guard let message else { return }
        let text = String(decoding: UnsafeRawBufferPointer(start: message, count: length), as: UTF8.self)
        let file = host?.pointee.host_data.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "?"
        let logLevel: Logger.Level =
            switch level {
            case HOOKPROXY_LOG_DEBUG: .debug
            case HOOKPROXY_LOG_INFO: .info
            case HOOKPROXY_LOG_WARNING: .warning
            default: .error
            }
        HostCallbacks.logger.log(level: logLevel, "\(text)", metadata: ["plugin_file": "\(file)"])
    }
}
