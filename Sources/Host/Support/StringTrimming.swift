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

    /// ASCII letters in lowercase; the same string, not a copy, when there is nothing to change (header names usually).
    func asciiLowercased() -> String {
        utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } ? lowercased() : self
    }
}
