import PluginABI
import PluginKit

/// One instance of a plugin, created from options for a destination (or a source's override, or a mapper).
///
/// This type is the only place where the host calls into a plugin; it converts bytes in and out so that nothing else
/// sees a C pointer. The instance is destroyed (`on_instance_destroy`) when the last reference goes away, which is after
/// every call that holds it has returned: a reload retires old instances without cutting off in-flight work.
///
/// `@unchecked Sendable`: the plugin handle is opaque to the host and the ABI requires `on_format` / `on_map` to be
/// callable concurrently on one instance; the handle itself is never mutated after creation.
final class PluginInstance: @unchecked Sendable {
    /// A format or map call taking longer than this is reported (logged, and counted in
    /// `hookproxy_plugin_slow_calls_total`): plugin calls run on the host's workers and cannot be interrupted.
    static let slowCall: Duration = .milliseconds(500)

    let plugin: LoadedPlugin
    private let handle: UnsafeMutableRawPointer?

    /// What a formatter decided.
    enum FormatOutcome: Sendable {
        case send(body: [UInt8], contentType: String, headers: [(name: String, value: String)])
        case skip(reason: String)
        case failed(message: String, permanent: Bool)
    }

    /// What a mapper produced.
    enum MapOutcome: Sendable {
        case fields(JSONObject)
        case failed(message: String, permanent: Bool)
    }

    /// Creates an instance; throws the plugin's reason when it rejects the options.
    init(plugin: LoadedPlugin, options: JSONValue) throws(PluginInstanceError) {
        self.plugin = plugin
        let optionsText = Array(options.serialized().utf8)
        var output = hookproxy_output()
        var instance: UnsafeMutableRawPointer?
        let status = optionsText.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) {
                plugin.table.pointee.on_instance_new!($0.baseAddress, $0.count, &instance, &output)
            }
        }
        let message = Self.errorText(output)
        plugin.table.pointee.on_output_release!(nil, &output)
        guard status == HOOKPROXY_OK else {
            throw PluginInstanceError(
                message: message.isEmpty ? "plugin '\(plugin.name)' rejected its options (status \(status.rawValue))" : message)
        }
        handle = instance
    }

    deinit {
        plugin.table.pointee.on_instance_destroy!(handle)
    }

    /// Calls `on_format` with the event document and the raw body.
    func format(document: [UInt8], body: [UInt8], contentType: String) -> FormatOutcome {
        guard let onFormat = plugin.table.pointee.on_format else {
            return .failed(message: "plugin '\(plugin.name)' is not a formatter", permanent: true)
        }
        var output = hookproxy_output()
        let status = call(onFormat, document: document, body: body, contentType: contentType, output: &output)
        defer { plugin.table.pointee.on_output_release!(handle, &output) }
        switch status {
        case HOOKPROXY_OK:
            let body = output.body.map { Array(UnsafeBufferPointer(start: $0, count: output.body_len)) } ?? []
            let type = Self.text(output.content_type, output.content_type_len)
            var headers: [(name: String, value: String)] = []
            if let list = output.headers {
                for header in UnsafeBufferPointer(start: list, count: output.header_count) {
                    headers.append((Self.text(header.name, header.name_len), Self.text(header.value, header.value_len)))
                }
            }
            return .send(body: body, contentType: type.isEmpty ? "application/json" : type, headers: headers)
        case HOOKPROXY_SKIP:
            return .skip(reason: Self.errorText(output))
        case HOOKPROXY_ERROR_TRANSIENT:
            return .failed(message: describe(output, status), permanent: false)
        default:
            return .failed(message: describe(output, status), permanent: true)
        }
    }

    /// Calls `on_map` with the mapper document and the raw body.
    func map(document: [UInt8], body: [UInt8], contentType: String) -> MapOutcome {
        guard let onMap = plugin.table.pointee.on_map else {
            return .failed(message: "plugin '\(plugin.name)' is not a mapper", permanent: true)
        }
        var output = hookproxy_output()
        let status = call(onMap, document: document, body: body, contentType: contentType, output: &output)
        defer { plugin.table.pointee.on_output_release!(handle, &output) }
        guard status == HOOKPROXY_OK else {
            return .failed(message: describe(output, status), permanent: status != HOOKPROXY_ERROR_TRANSIENT)
        }
        let bytes = output.body.map { Array(UnsafeBufferPointer(start: $0, count: output.body_len)) } ?? []
        guard let fields = try? JSONValue(parsing: bytes).objectValue else {
            return .failed(message: "plugin '\(plugin.name)' returned fields that are not a JSON object", permanent: true)
        }
        return .fields(fields)
    }

    private typealias Entry =
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<hookproxy_event>?, UnsafeMutablePointer<hookproxy_output>?
        ) -> hookproxy_status

    private func call(_ function: Entry, document: [UInt8], body: [UInt8], contentType: String, output: inout hookproxy_output)
        -> hookproxy_status
    {
        var contentType = contentType
        return document.withUnsafeBufferPointer { json in
            body.withUnsafeBufferPointer { bodyBytes in
                contentType.withUTF8 { type in
                    json.withMemoryRebound(to: CChar.self) { jsonChars in
                        type.withMemoryRebound(to: CChar.self) { typeChars in
                            var event = hookproxy_event(
                                json: jsonChars.baseAddress, json_len: jsonChars.count,
                                body: bodyBytes.baseAddress, body_len: bodyBytes.count,
                                content_type: typeChars.baseAddress, content_type_len: typeChars.count)
                            return function(handle, &event, &output)
                        }
                    }
                }
            }
        }
    }

    private func describe(_ output: hookproxy_output, _ status: hookproxy_status) -> String {
        let message = Self.errorText(output)
        return message.isEmpty ? "plugin '\(plugin.name)' failed (status \(status.rawValue))" : message
    }

    private static func errorText(_ output: hookproxy_output) -> String { text(output.error, output.error_len) }

    private static func text(_ pointer: UnsafePointer<CChar>?, _ length: Int) -> String {
        guard let pointer, length > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
    }
}

/// A plugin that refused to create an instance, with its reason.
struct PluginInstanceError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
