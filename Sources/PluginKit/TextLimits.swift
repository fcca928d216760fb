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
}
