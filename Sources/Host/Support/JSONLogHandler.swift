import Foundation
import Logging
import PluginKit
import Synchronization

/// `--log-format json`: one JSON object per line on standard error, with `time` (RFC 3339), `level`, `message`,
/// `logger`, `source` (the module) and every metadata key as a member (`event_id`, `delivery_id`, `destination`,
/// `request_id`, …), for log shippers.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    /// Lines from concurrent tasks never interleave.
    private static let output = Mutex(())

    init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var members: [(String, JSONValue)] = [
            ("time", .string(Clock.rfc3339(milliseconds: Clock.milliseconds()))), ("level", .string(event.level.rawValue)),
            ("message", .string(event.message.description)), ("logger", .string(label)), ("source", .string(event.source)),
        ]
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) { members.append((key, Self.json(value))) }
        var line = JSONValue.object(JSONObject(members)).serializedBytes()
        line.append(UInt8(ascii: "\n"))
        Self.output.withLock { _ in FileHandle.standardError.write(Data(line)) }
    }

    private static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let values): .array(values.map(json))
        case .dictionary(let dictionary): .object(JSONObject(dictionary.sorted { $0.key < $1.key }.map { ($0.key, json($0.value)) }))
        }
    }
}
