extension JSONValue {
    /// Whether `bytes` is one JSON document that ``init(parsing:maximumDepth:)`` accepts, checked without building any
    /// value. Strict: a document with `\u` escapes is reported invalid (callers fall back to parsing it).
    public static func isPlainValidDocument(_ bytes: [UInt8], maximumDepth: Int = defaultMaximumDepth) -> Bool {
        // Everything outside strings is ASCII, so valid UTF-8 overall is valid UTF-8 in every string.
        guard String(validating: bytes, as: UTF8.self) != nil else { return false }
        return bytes.withUnsafeBufferPointer { buffer in
            var scanner = JSONScanner(bytes: buffer, maximumDepth: maximumDepth)
            guard scanner.value(depth: 0) else { return false }
            scanner.skipWhitespace()
            return scanner.position == buffer.count
        }
    }
}

/// Walks a JSON document without building values: the grammar of ``JSONParser``.
private struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    let maximumDepth: Int
    var position = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
    }

    mutating func skipWhitespace() {
        while position < bytes.count,
            bytes[position] == 0x20 || bytes[position] == 0x0A || bytes[position] == 0x0D || bytes[position] == 0x09
        {
            position += 1
        }
    }

    mutating func value(depth: Int) -> Bool {
        skipWhitespace()
        guard position < bytes.count else { return false }
        switch bytes[position] {
        case UInt8(ascii: "{"): return container(depth: depth + 1, close: UInt8(ascii: "}"), keyed: true)
        case UInt8(ascii: "["): return container(depth: depth + 1, close: UInt8(ascii: "]"), keyed: false)
        case UInt8(ascii: "\""): return string()
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        default: return number()
        }
    }

    private mutating func container(depth: Int, close: UInt8, keyed: Bool) -> Bool {
        guard depth <= maximumDepth else { return false }
        position += 1
        skipWhitespace()
        if position < bytes.count, bytes[position] == close {
            position += 1
            return true
        }
        while true {
            if keyed {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\""), string() else { return false }
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { return false }
                position += 1
            }
            guard value(depth: depth) else { return false }
            skipWhitespace()
            guard position < bytes.count else { return false }
            if bytes[position] == UInt8(ascii: ",") {
                position += 1
            } else if bytes[position] == close {
                position += 1
                return true
            } else {
                return false
            }
        }
    }

    private mutating func string() -> Bool {
        position += 1
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""): return true
            case UInt8(ascii: "\\"):
                guard position < bytes.count else { return false }
                // Simple escapes only; `\u` sends the caller to the full parser.
                guard "\"\\/bfnrt".utf8.contains(bytes[position]) else { return false }
                position += 1
            default:
                if byte < 0x20 { return false }
            }
        }
        return false
    }

    private mutating func literal(_ text: StaticString) -> Bool {
        let count = text.utf8CodeUnitCount
        guard position + count <= bytes.count else { return false }
        for offset in 0..<count where bytes[position + offset] != text.utf8Start[offset] { return false }
        position += count
        return true
    }

    private mutating func number() -> Bool {
        if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard digits(leadingZeroAlone: true) else { return false }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard digits(leadingZeroAlone: false) else { return false }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard digits(leadingZeroAlone: false) else { return false }
        }
        return true
    }

    /// One or more digits; with `leadingZeroAlone`, a leading 0 is the whole integer part.
    private mutating func digits(leadingZeroAlone: Bool) -> Bool {
        guard position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 else { return false }
        if leadingZeroAlone, bytes[position] == 0x30 {
            position += 1
            return true
        }
        while position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 { position += 1 }
        return true
    }
}
