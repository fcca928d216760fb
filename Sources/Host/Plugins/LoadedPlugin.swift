import PluginABI

/// A plugin library that passed the loader's checks: its declared identity. Which process its code runs in is the
/// executor's business (``PluginExecutor``); this is what the catalog, the listings and the configuration know of it.
struct LoadedPlugin: Sendable, Equatable {
    /// The declared name (`formatter: NAME` in `sources.yaml`).
    let name: String
    let version: String
    let capabilities: UInt32
    let abiVersion: UInt32
    /// The absolute path of the `.so`.
    let file: String

    var isFormatter: Bool { capabilities & HOOKPROXY_CAPABILITY_FORMATTER != 0 }
    var isMapper: Bool { capabilities & HOOKPROXY_CAPABILITY_MAPPER != 0 }

    /// "formatter", "mapper" or both, for listings.
    var capabilityNames: [String] {
        (isFormatter ? ["formatter"] : []) + (isMapper ? ["mapper"] : [])
    }
}

/// A plugin file the loader would not use, and why: one line for the operator.
struct PluginRefusal: Sendable, CustomStringConvertible, Error, Equatable {
    let file: String
    let reason: String

    var description: String { "plugin \(file) refused: \(reason)" }
}
