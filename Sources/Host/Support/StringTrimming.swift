/// Byte-level string helpers for the request path, where Foundation's `trimmingCharacters` (a bridge through NSString)
/// and `Character`-level views cost more than the work they do.
extension Substring {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
    func trimmingBlanks() -> Substring {
        let utf8 = self.utf8
        guard let first = utf8.firstIndex(where: { $0 != 0x20 && $0 != 0x09 }),
            let last = utf8.lastIndex(where: { $0 != 0x20 && $0 != 0x09 })
        else { return "" }
        return self[first...last]
    }
}

extension String {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
    func trimmingBlanks() -> Substring { Substring(self).trimmingBlanks() }

    /// Whether the bytes `part` occur in the string's UTF-8, compared byte for byte. Foundation's `contains(_:)` on two
    /// strings searches through NSString with locale rules: it was a tenth of an ingest's CPU, checking each header's
    /// name against six words (``HeaderRedaction``).
    func containsUTF8(_ part: [UInt8]) -> Bool {
        guard let first = part.first else { return true }
        var text = self
        return text.withUTF8 { bytes in
            guard bytes.count >= part.count else { return false }
            for start in 0...(bytes.count - part.count) where bytes[start] == first {
                if bytes[start..<(start + part.count)].elementsEqual(part) { return true }
            }
            return false
        }
    }

    /// ASCII letters in lowercase; the same string, not a copy, when there is nothing to change (header names usually).
    func asciiLowercased() -> String {
        utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } ? lowercased() : self
    }
}

/// What HTTP allows in header fields (RFC 9110 §5.1, §5.5), checked before a configured or plugin-made header is sent.
enum HeaderField {
    /// A token: visible ASCII except separators.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                (0x21...0x7E).contains(byte) && !#"()<>@,;:\"/[]?={} "#.utf8.contains(byte)
            }
    }

    /// No control character but horizontal tab, no DEL, and no leading or trailing whitespace.
    static func isValidValue(_ value: String) -> Bool {
        let bytes = value.utf8
        guard bytes.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else { return false }
        let blank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
        return !(bytes.first.map(blank) ?? false) && !(bytes.last.map(blank) ?? false)
    }
}
