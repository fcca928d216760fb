public import PluginABI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The C side of a Swift plugin: builds the `hookproxy_plugin` table for a plugin type and converts every call between
/// C and Swift. A plugin's whole export is one function:
///
/// ```swift
/// @_cdecl("hookproxy_plugin_entry")
/// public func hookproxyPluginEntry(
///     _ hostABIVersion: UInt32, _ host: UnsafePointer<hookproxy_host>?
/// ) -> UnsafePointer<hookproxy_plugin>? {
///     PluginExport.entry(MyFormatter.self, host: host)
/// }
/// ```
///
/// Each plugin library links its own copy of the kit (and must be linked with `-Bsymbolic`, as the shipped plugins are,
/// so that copy is the one it uses), so the state below is per plugin.
public enum PluginExport {
    // Written once by `entry`, which the host calls before any other function of the table; read-only afterwards.
    // That ordering is the ABI's promise, which makes these unsynchronised globals safe.
    nonisolated(unsafe) private static var pluginType: (any HookproxyPlugin.Type)?
    nonisolated(unsafe) private static var table: UnsafeMutablePointer<hookproxy_plugin>?
    nonisolated(unsafe) static var host: UnsafePointer<hookproxy_host>?

    /// Returns the plugin's static table for `type`, creating it on the first call.
    public static func entry(_ type: any HookproxyPlugin.Type, host: UnsafePointer<hookproxy_host>?)
        -> UnsafePointer<hookproxy_plugin>?
    {
        if let table { return UnsafePointer(table) }
        self.host = host
        pluginType = type
        var capabilities: UInt32 = 0
        if type is any FormatterPlugin.Type { capabilities |= HOOKPROXY_CAPABILITY_FORMATTER }
        if type is any MapperPlugin.Type { capabilities |= HOOKPROXY_CAPABILITY_MAPPER }
        let table = UnsafeMutablePointer<hookproxy_plugin>.allocate(capacity: 1)
        table.initialize(
            to: hookproxy_plugin(
                abi_version: HOOKPROXY_ABI_VERSION,
                struct_size: UInt32(MemoryLayout<hookproxy_plugin>.size),
                name: UnsafePointer(strdup(type.name)),
                version: UnsafePointer(strdup(type.version)),
                capabilities: capabilities,
                on_instance_new: instanceNew,
                on_instance_destroy: instanceDestroy,
                on_format: capabilities & HOOKPROXY_CAPABILITY_FORMATTER != 0 ? format : nil,
                on_map: capabilities & HOOKPROXY_CAPABILITY_MAPPER != 0 ? map : nil,
                on_output_release: outputRelease
            ))
        self.table = table
        return UnsafePointer(table)
    }

    // MARK: The table's functions

    private static let instanceNew:
        @convention(c) (
            UnsafePointer<CChar>?, Int, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
            UnsafeMutablePointer<hookproxy_output>?
        ) -> hookproxy_status = { optionsPointer, optionsLength, instanceOut, output in
            guard let type = PluginExport.pluginType, let instanceOut else { return HOOKPROXY_ERROR_PERMANENT }
            let optionsBytes = UnsafeRawBufferPointer(start: optionsPointer, count: optionsPointer == nil ? 0 : optionsLength)
            do {
                let options = optionsBytes.isEmpty ? JSONValue.object(JSONObject()) : try JSONValue(parsing: optionsBytes)
                let instance = try type.init(options: options)
                instanceOut.pointee = Unmanaged.passRetained(InstanceBox(instance)).toOpaque()
                return HOOKPROXY_OK
            } catch {
                return fail(error, into: output)
            }
        }

    private static let instanceDestroy: @convention(c) (UnsafeMutableRawPointer?) -> Void = { instance in
        guard let instance else { return }
        Unmanaged<InstanceBox>.fromOpaque(instance).release()
    }

    private static let format:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<hookproxy_event>?, UnsafeMutablePointer<hookproxy_output>?
        ) -> hookproxy_status = { instance, event, output in
            guard let instance, let event, let output else { return HOOKPROXY_ERROR_PERMANENT }
            guard let formatter = Unmanaged<InstanceBox>.fromOpaque(instance).takeUnretainedValue().plugin as? any FormatterPlugin
            else { return HOOKPROXY_ERROR_PERMANENT }
            do {
                var result = try formatter.format(try readEvent(event.pointee, deferringPayload: true))
                if case .sendAll(let requests) = result {
                    switch requests.count {
                    case 0: result = .skip(reason: "the formatter produced no request")
                    case 1: result = .send(requests[0])
                    default: result = .send(OutboundRequest.sequence(requests))
                    }
                }
                switch result {
                case .sendAll:
                    return HOOKPROXY_ERROR_PERMANENT  // made .send above
                case .send(let request):
                    let storage = OutputStorage()
                    output.pointee.body = storage.copy(request.body)
                    output.pointee.body_len = request.body.count
                    output.pointee.content_type = storage.copyText(request.contentType)
                    output.pointee.content_type_len = request.contentType.utf8.count
                    output.pointee.headers = storage.copyHeaders(request.headers)
                    output.pointee.header_count = request.headers.count
                    output.pointee.release_data = Unmanaged.passRetained(storage).toOpaque()
                    return HOOKPROXY_OK
                case .skip(let reason):
                    setError(reason, into: output)
                    return HOOKPROXY_SKIP
                }
            } catch {
                return fail(error, into: output)
            }
        }

    private static let map:
        @convention(c) (
            UnsafeMutableRawPointer?, UnsafePointer<hookproxy_event>?, UnsafeMutablePointer<hookproxy_output>?
        ) -> hookproxy_status = { instance, event, output in
            guard let instance, let event, let output else { return HOOKPROXY_ERROR_PERMANENT }
            guard let mapper = Unmanaged<InstanceBox>.fromOpaque(instance).takeUnretainedValue().plugin as? any MapperPlugin
            else { return HOOKPROXY_ERROR_PERMANENT }
            do {
                // A mapper reads the payload nearly always: built at once, rather than checked now and parsed later.
                let fields = try mapper.map(try readEvent(event.pointee, deferringPayload: false))
                let bytes = JSONValue.object(fields).serializedBytes()
                let storage = OutputStorage()
                output.pointee.body = storage.copy(bytes)
                output.pointee.body_len = bytes.count
                output.pointee.release_data = Unmanaged.passRetained(storage).toOpaque()
                return HOOKPROXY_OK
            } catch {
                return fail(error, into: output)
            }
        }

    private static let outputRelease: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<hookproxy_output>?) -> Void = {
        _, output in
        guard let output, let data = output.pointee.release_data else { return }
        Unmanaged<OutputStorage>.fromOpaque(data).release()
        output.pointee.release_data = nil
    }

    // MARK: Conversions

    /// The call's input. With `deferringPayload` (formatters) the document's payload is checked here but built only
    /// if the plugin reads it.
    private static func readEvent(_ event: hookproxy_event, deferringPayload: Bool) throws -> PluginInput {
        let json = UnsafeRawBufferPointer(start: event.json, count: event.json == nil ? 0 : event.json_len)
        let (head, payload) =
            deferringPayload ? try JSONValue.parsing(json, deferring: "payload") : (try JSONValue(parsing: json), nil)
        let body = event.body == nil ? [] : Array(UnsafeBufferPointer(start: event.body, count: event.body_len))
        let contentType =
            event.content_type == nil
            ? ""
            : String(decoding: UnsafeRawBufferPointer(start: event.content_type, count: event.content_type_len), as: UTF8.self)
        return PluginInput(head: head, payload: payload, body: body, contentType: contentType)
    }

    private static func fail(_ error: any Error, into output: UnsafeMutablePointer<hookproxy_output>?) -> hookproxy_status {
        let pluginError = error as? PluginError ?? PluginError.permanent("\(error)")
        if let output { setError(pluginError.message, into: output) }
        return pluginError.isPermanent ? HOOKPROXY_ERROR_PERMANENT : HOOKPROXY_ERROR_TRANSIENT
    }

    private static func setError(_ message: String, into output: UnsafeMutablePointer<hookproxy_output>) {
        let storage = OutputStorage()
        output.pointee.error = storage.copyText(message)
        output.pointee.error_len = message.utf8.count
        output.pointee.release_data = Unmanaged.passRetained(storage).toOpaque()
    }
}

/// Keeps a plugin instance alive behind the opaque pointer the host holds.
private final class InstanceBox: Sendable {
    let plugin: any HookproxyPlugin
    init(_ plugin: any HookproxyPlugin) { self.plugin = plugin }
}

/// Owns every allocation behind one `hookproxy_output`; freed as a whole by `on_output_release`.
private final class OutputStorage {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { for allocation in allocations { allocation.deallocate() } }

    /// Swift's own allocator, which ends the process when memory is exhausted, as any Swift allocation would: there is
    /// no way to go on without the output (in an isolated worker, that ends the worker and fails the one call).
    private func allocate(_ count: Int) -> UnsafeMutableRawPointer {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        allocations.append(pointer)
        return pointer
    }

    func copy(_ bytes: [UInt8]) -> UnsafePointer<UInt8> {
        let pointer = allocate(bytes.count)
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress { pointer.copyMemory(from: base, byteCount: source.count) }
        }
        return UnsafePointer(pointer.assumingMemoryBound(to: UInt8.self))
    }

    func copyText(_ text: String) -> UnsafePointer<CChar> {
        let utf8 = Array(text.utf8) + [0]
        return UnsafeRawPointer(copy(utf8)).assumingMemoryBound(to: CChar.self)
    }

    func copyHeaders(_ headers: [(name: String, value: String)]) -> UnsafePointer<hookproxy_header>? {
        guard !headers.isEmpty else { return nil }
        let pointer = allocate(MemoryLayout<hookproxy_header>.stride * headers.count).bindMemory(
            to: hookproxy_header.self, capacity: headers.count)
        for (offset, header) in headers.enumerated() {
            (pointer + offset).initialize(
                to: hookproxy_header(
                    name: copyText(header.name), name_len: header.name.utf8.count,
                    value: copyText(header.value), value_len: header.value.utf8.count))
        }
        return UnsafePointer(pointer)
    }
}

/// Logging to the host's log from a plugin. Safe from any thread.
public enum PluginLog {
    public static func debug(_ message: String) { write(HOOKPROXY_LOG_DEBUG, message) }
    public static func info(_ message: String) { write(HOOKPROXY_LOG_INFO, message) }
    public static func warning(_ message: String) { write(HOOKPROXY_LOG_WARNING, message) }
    public static func error(_ message: String) { write(HOOKPROXY_LOG_ERROR, message) }

    private static func write(_ level: hookproxy_log_level, _ message: String) {
        guard let host = PluginExport.host, let log = host.pointee.callback_log else { return }
        var text = message
        text.withUTF8 { buffer in
            buffer.withMemoryRebound(to: CChar.self) { log(host, level, $0.baseAddress, $0.count) }
        }
    }
}
