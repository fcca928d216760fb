import Foundation
import Logging
import PluginABI
import Synchronization

/// A plugin library that passed the loader's checks: its declared identity and its function table.
///
/// `@unchecked Sendable`: the table is static, immutable memory owned by the plugin for the life of the process (the
/// ABI's promise), and the library is never unloaded, so the pointer may be shared across threads.
final class LoadedPlugin: @unchecked Sendable {
    /// The declared name (`formatter: NAME` in `sources.yaml`).
    let name: String
    let version: String
    let capabilities: UInt32
    let abiVersion: UInt32
    /// The absolute path of the `.so`.
    let file: String
    let table: UnsafePointer<hookproxy_plugin>

    init(name: String, version: String, capabilities: UInt32, abiVersion: UInt32, file: String, table: UnsafePointer<hookproxy_plugin>) {
        self.name = name
        self.version = version
        self.capabilities = capabilities
        self.abiVersion = abiVersion
        self.file = file
        self.table = table
    }

    var isFormatter: Bool { capabilities & HOOKPROXY_CAPABILITY_FORMATTER != 0 }
    var isMapper: Bool { capabilities & HOOKPROXY_CAPABILITY_MAPPER != 0 }

    /// "formatter", "mapper" or both, for listings.
    var capabilityNames: [String] {
        (isFormatter ? ["formatter"] : []) + (isMapper ? ["mapper"] : [])
    }
}

/// A plugin file the loader would not use, and why: one line for the operator.
struct PluginRefusal: Sendable, CustomStringConvertible, Error {
    let file: String
    let reason: String

    var description: String { "plugin \(file) refused: \(reason)" }
}
