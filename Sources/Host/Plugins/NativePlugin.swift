import PluginABI
import PluginKit

/// A plugin library opened with `dlopen` in this process, and the only place that calls into one: it converts bytes in
/// and out so that nothing else sees a C pointer. Used by the worker process (``PluginWorker``) and by the in-process
/// threads (``InProcessPool``); never called on Swift's cooperative pool.
///
/// `@unchecked Sendable`: the table is static, immutable memory owned by the plugin for the life of the process (the
/// ABI's promise), and the library is never unloaded, so the pointer may be shared across threads.
final class NativePlugin: @unchecked Sendable {
    let identity: LoadedPlugin
    let table: UnsafePointer<hookproxy_plugin>

    /// The most bytes of a body, content type, header or message copied out of one output: a plugin's lengths are its
    /// word, and a larger one is refused rather than read.
    static let maximumOutputBytes = 64 << 20
    /// The most headers copied out of one output.
    static let maximumHeaders = 256

    init(identity: LoadedPlugin, table: UnsafePointer<hookproxy_plugin>) {
        self.identity = identity
        self.table = table
    }

    /// An instance handle: opaque to the host, passed back to the plugin.
    struct Handle: @unchecked Sendable {
        // The plugin's pointer; the host never dereferences it.
        let pointer: UnsafeMutableRawPointer?
    }

    /// Calls `on_instance_new` with `options` (a JSON object's text).
    func createInstance(options: [UInt8]) -> Result<Handle, PluginInstanceError> {
        guard let create = table.pointee.on_instance_new, let release = table.pointee.on_output_release else {
            return .failure(PluginInstanceError(message: "plugin '\(identity.name)' has no on_instance_new"))
        }
        var output = hookproxy_output()
        var instance: UnsafeMutableRawPointer?
        let status = options.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { create($0.baseAddress, $0.count, &instance, &output) }
        }
        let message = Self.text(output.error, output.error_len)
        release(nil, &output)
        guard status == HOOKPROXY_OK else {
            return .failure(
                PluginInstanceError(
                    message: message.isEmpty ? "plugin '\(identity.name)' rejected its options (status \(status.rawValue))" : message))
        }
        return .success(Handle(pointer: instance))
    }

    /// Calls `on_instance_destroy`.
    func destroyInstance(_ handle: Handle) {
        table.pointee.on_instance_destroy?(handle.pointer)
    }

    /// Calls `on_format` or `on_map` and copies the output out of plugin memory before releasing it.
    func call(_ operation: PluginCall.Operation, instance: Handle, document: [UInt8], body: [UInt8], contentType: String) -> PluginOutput {
        let function = operation == .format ? table.pointee.on_format : table.pointee.on_map
        guard let function, let release = table.pointee.on_output_release else {
            let role = operation == .format ? "formatter" : "mapper"
            return PluginOutput(status: HOOKPROXY_ERROR_PERMANENT.rawValue, error: "plugin '\(identity.name)' is not a \(role)")
        }
        var output = hookproxy_output()
        var contentType = contentType
        let status = document.withUnsafeBufferPointer { json in
            body.withUnsafeBufferPointer { bodyBytes in
                contentType.withUTF8 { type in
                    json.withMemoryRebound(to: CChar.self) { jsonChars in
                        type.withMemoryRebound(to: CChar.self) { typeChars in
                            var event = hookproxy_event(
                                json: jsonChars.baseAddress, json_len: jsonChars.count,
                                body: bodyBytes.baseAddress, body_len: bodyBytes.count,
                                content_type: typeChars.baseAddress, content_type_len: typeChars.count)
                            return function(instance.pointer, &event, &output)
                        }
                    }
                }
            }
        }
        defer { release(instance.pointer, &output) }
        var result = PluginOutput(status: status.rawValue, error: Self.text(output.error, output.error_len))
        guard status == HOOKPROXY_OK else { return result }
        guard output.body_len <= Self.maximumOutputBytes, output.header_count <= Self.maximumHeaders else {
            return PluginOutput(
                status: HOOKPROXY_ERROR_PERMANENT.rawValue,
                error: "plugin '\(identity.name)' returned \(output.body_len) bytes and \(output.header_count) headers, "
                    + "more than the \(Self.maximumOutputBytes) bytes and \(Self.maximumHeaders) headers accepted")
        }
        result.body = output.body.map { Array(UnsafeBufferPointer(start: $0, count: output.body_len)) } ?? []
        result.contentType = Self.text(output.content_type, output.content_type_len)
        if let list = output.headers {
            for header in UnsafeBufferPointer(start: list, count: output.header_count) {
                result.headers.append((Self.text(header.name, header.name_len), Self.text(header.value, header.value_len)))
            }
        }
        return result
    }

    private static func text(_ pointer: UnsafePointer<CChar>?, _ length: Int) -> String {
        guard let pointer, length > 0, length <= maximumOutputBytes else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
    }
}
