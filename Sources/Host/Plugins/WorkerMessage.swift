/// The messages between the host and a plugin worker process, over the worker's socket (decisions §29).
///
/// A frame is a little-endian `u32` length, then that many bytes: a type byte and the fields. Integers are
/// little-endian; byte strings are a `u32` length and the bytes. The host sends calls one after the other (several in
/// one write under load); the worker answers each as it finishes, in order, with log lines in between. What a worker
/// sends is a plugin's doing and is read with every length checked: a malformed frame ends the worker, never the host.
enum WorkerMessage: Sendable {
    // Host to worker.
    /// Create instance `id` from the options (a JSON object's text).
    case createInstance(id: UInt32, options: [UInt8])
    /// Destroy instance `id`; no answer.
    case destroyInstance(id: UInt32)
    /// Run one call; answered by `result` with the same id.
    case call(id: UInt64, operation: UInt8, instance: UInt32, document: [UInt8], body: [UInt8], contentType: [UInt8])

    // Worker to host.
    /// A library loaded and passed the checks.
    case loaded(LoadedPlugin)
    /// A library was refused, and why.
    case refused(PluginRefusal)
    /// A probe looked at every file it was given.
    case probeDone
    /// The answer to `createInstance`: empty error when it succeeded.
    case instanceCreated(id: UInt32, ok: Bool, error: String)
    /// The answer to `call`.
    case result(id: UInt64, output: PluginOutput)
    /// A line the plugin logged (`callback_log`).
    case log(level: UInt8, text: String)

    private enum Kind: UInt8 {
        case createInstance = 1
        case destroyInstance = 2
        case call = 3
        case loaded = 10
        case refused = 11
        case probeDone = 12
        case instanceCreated = 13
        case result = 14
        case log = 15
    }

    /// The most a worker's frame may hold: the largest output a plugin may return, plus room for its headers.
    static let maximumFromWorker = NativePlugin.maximumOutputBytes + (4 << 20)

    /// The frame for this message, length prefix included.
    func frame() -> [UInt8] {
        var writer = FrameWriter()
        switch self {
        case .createInstance(let id, let options):
            writer.byte(Kind.createInstance.rawValue)
            writer.u32(id)
            writer.bytes(options)
        case .destroyInstance(let id):
            writer.byte(Kind.destroyInstance.rawValue)
            writer.u32(id)
        case .call(let id, let operation, let instance, let document, let body, let contentType):
            writer.byte(Kind.call.rawValue)
            writer.u64(id)
            writer.byte(operation)
            writer.u32(instance)
            writer.bytes(document)
            writer.bytes(body)
            writer.bytes(contentType)
        case .loaded(let plugin):
            writer.byte(Kind.loaded.rawValue)
            writer.text(plugin.file)
            writer.text(plugin.name)
            writer.text(plugin.version)
            writer.u32(plugin.capabilities)
            writer.u32(plugin.abiVersion)
        case .refused(let refusal):
            writer.byte(Kind.refused.rawValue)
            writer.text(refusal.file)
            writer.text(refusal.reason)
        case .probeDone:
            writer.byte(Kind.probeDone.rawValue)
        case .instanceCreated(let id, let ok, let error):
            writer.byte(Kind.instanceCreated.rawValue)
            writer.u32(id)
            writer.byte(ok ? 1 : 0)
            writer.text(error)
        case .result(let id, let output):
            writer.byte(Kind.result.rawValue)
            writer.u64(id)
            writer.u32(output.status)
            writer.bytes(output.body)
            writer.text(output.contentType)
            writer.u32(UInt32(clamping: output.headers.count))
            for header in output.headers {
                writer.text(header.name)
                writer.text(header.value)
            }
            writer.text(output.error)
        case .log(let level, let text):
            writer.byte(Kind.log.rawValue)
            writer.byte(level)
            writer.text(text)
        }
        return writer.finished()
    }

    /// Reads one message from a frame's payload (without the length prefix).
    init(payload: ArraySlice<UInt8>) throws(MalformedFrame) {
        var reader = FrameReader(payload)
        guard let kind = Kind(rawValue: try reader.byte()) else { throw MalformedFrame("unknown message type") }
        switch kind {
        case .createInstance:
            self = .createInstance(id: try reader.u32(), options: try reader.bytes())
        case .destroyInstance:
            self = .destroyInstance(id: try reader.u32())
        case .call:
            self = .call(
                id: try reader.u64(), operation: try reader.byte(), instance: try reader.u32(), document: try reader.bytes(),
                body: try reader.bytes(), contentType: try reader.bytes())
        case .loaded:
            let file = try reader.text()
            let name = try reader.text()
            let version = try reader.text()
            self = .loaded(
                LoadedPlugin(name: name, version: version, capabilities: try reader.u32(), abiVersion: try reader.u32(), file: file))
        case .refused:
            self = .refused(PluginRefusal(file: try reader.text(), reason: try reader.text()))
        case .probeDone:
            self = .probeDone
        case .instanceCreated:
            self = .instanceCreated(id: try reader.u32(), ok: try reader.byte() == 1, error: try reader.text())
        case .result:
            let id = try reader.u64()
            var output = PluginOutput(status: try reader.u32())
            output.body = try reader.bytes()
            output.contentType = try reader.text()
            let count = try reader.u32()
            guard count <= UInt32(NativePlugin.maximumHeaders) else { throw MalformedFrame("\(count) headers") }
            for _ in 0..<count { output.headers.append((try reader.text(), try reader.text())) }
            output.error = try reader.text()
            self = .result(id: id, output: output)
        case .log:
            self = .log(level: try reader.byte(), text: try reader.text())
        }
        guard reader.isAtEnd else { throw MalformedFrame("bytes after the message") }
    }

    /// Takes the first complete frame off `buffer` (from `start`), if there is one: the message and where the next frame
    /// starts. Throws when the frame is malformed or longer than `maximum`.
    static func next(in buffer: [UInt8], from start: Int, maximum: Int) throws(MalformedFrame) -> (WorkerMessage, next: Int)? {
        guard buffer.count - start >= 4 else { return nil }
        let length =
            Int(buffer[start]) | Int(buffer[start + 1]) << 8 | Int(buffer[start + 2]) << 16 | Int(buffer[start + 3]) << 24
        guard length >= 1, length <= maximum else { throw MalformedFrame("a frame of \(length) bytes") }
        guard buffer.count - start - 4 >= length else { return nil }
        let payload = buffer[(start + 4)..<(start + 4 + length)]
        return (try WorkerMessage(payload: payload), start + 4 + length)
    }
}

/// A frame that does not follow the protocol.
struct MalformedFrame: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = "malformed message from the plugin worker: \(description)" }
}

/// Builds one frame.
struct FrameWriter {
    private var storage: [UInt8] = [0, 0, 0, 0]

    mutating func byte(_ value: UInt8) { storage.append(value) }

    mutating func u32(_ value: UInt32) {
        for shift in stride(from: 0, to: 32, by: 8) { storage.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func u64(_ value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { storage.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func bytes(_ value: [UInt8]) {
        u32(UInt32(clamping: value.count))
        storage += value.prefix(Int(UInt32.max))
    }

    mutating func text(_ value: String) { bytes(Array(value.utf8)) }

    /// The frame with its length filled in.
    mutating func finished() -> [UInt8] {
        let length = UInt32(clamping: storage.count - 4)
        for index in 0..<4 { storage[index] = UInt8(truncatingIfNeeded: length >> UInt32(8 * index)) }
        return storage
    }
}

/// Reads a frame's fields, checking every length against what is left.
struct FrameReader {
    private let storage: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        storage = bytes
        position = bytes.startIndex
    }

    var isAtEnd: Bool { position == storage.endIndex }

    private mutating func take(_ count: Int) throws(MalformedFrame) -> ArraySlice<UInt8> {
        guard count >= 0, storage.endIndex - position >= count else { throw MalformedFrame("a field runs past the end of its frame") }
        defer { position += count }
        return storage[position..<(position + count)]
    }

    mutating func byte() throws(MalformedFrame) -> UInt8 {
        let slice = try take(1)
        return slice[slice.startIndex]
    }

    mutating func u32() throws(MalformedFrame) -> UInt32 {
        try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func u64() throws(MalformedFrame) -> UInt64 {
        try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    mutating func bytes() throws(MalformedFrame) -> [UInt8] {
        Array(try take(Int(try u32())))
    }

    mutating func text() throws(MalformedFrame) -> String {
        String(decoding: try take(Int(try u32())), as: UTF8.self)
    }
}
