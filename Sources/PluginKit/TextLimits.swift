/// Size-safe text for destinations with length limits (Discord, Slack).
///
/// Limits are counted in UTF-16 code units, which is how both Discord and Slack count characters and is never less than
/// the number of Unicode scalars. Text is only ever cut between grapheme clusters, so no character, emoji or combining
/// sequence is split.
public enum TextLimits {
    /// The mark appended to text that was cut.
    public static let ellipsis = "…"

    /// The length of `text` as the limits count it.
    public static func length(_ text: String) -> Int { text.utf16.count }

    /// `text` unchanged when it fits in `limit`, else its longest prefix of whole characters that fits with `…`
    /// appended.
    public static func truncate(_ text: String, to limit: Int) -> String {
        guard limit > 0 else { return "" }
        if text.utf16.count <= limit { return text }
        let ellipsisLength = ellipsis.utf16.count
        let budget = limit >= ellipsisLength ? limit - ellipsisLength : limit
        var used = 0
        var end = text.startIndex
        for character in text {
            let size = character.utf16.count
            if used + size > budget { break }
            used += size
            end = text.index(after: end)
        }
        return limit >= ellipsisLength ? String(text[..<end]) + ellipsis : String(text[..<end])
    }

    /// `text` in pieces of at most `maximumLength` each, in order, never cutting a character: each piece ends at the
    /// last line break (else space) in its second half when there is one. Empty text gives no pieces.
    public static func split(_ text: String, maximumLength: Int) -> [String] {
        guard maximumLength > 0, !text.isEmpty else { return [] }
        var pieces: [String] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            if rest.utf16.count <= maximumLength {
                pieces.append(String(rest))
                break
            }
            var used = 0
            var end = rest.startIndex
            var lineBreak: Substring.Index?
            var space: Substring.Index?
            for character in rest {
                let size = character.utf16.count
                if used + size > maximumLength { break }
                used += size
                end = rest.index(after: end)
                if used * 2 >= maximumLength {
                    if character.isNewline { lineBreak = end } else if character == " " { space = end }
                }
            }
            if end == rest.startIndex { end = rest.index(after: end) }  // one character longer than the limit
            let cut = lineBreak ?? space ?? end
            pieces.append(String(rest[..<cut]))
            rest = rest[cut...]
        }
        return pieces
    }
}
