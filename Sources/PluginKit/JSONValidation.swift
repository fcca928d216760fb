extension JSONValue {
    /// Whether `bytes` is one JSON document that ``init(parsing:maximumDepth:)`` accepts, checked without building any
    /// value. Strict: a document with `\u` escapes is reported invalid (callers fall back to parsing it).
    public static func isPlainValidDocument(_ bytes: [UInt8], maximumDepth: Int = defaultMaximumDepth) -> Bool {
        bytes.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(bytes: buffer, maximumDepth: maximumDepth)
            parser.refusesUnicodeEscapes = true
            return parser.checksDocument()
        }
    }
}
