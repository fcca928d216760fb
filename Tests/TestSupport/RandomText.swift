/// Random text with the characters that break naive code: multi-byte scalars, emoji sequences, combining marks, CJK,
/// control characters, quotes and backslashes.
public enum RandomText {
    public static let pieces: [String] = [
        "a", "Z", " ", "\n", "\t", "\"", "\\", "<", ">", "&", "*", "_", "`", "@everyone", "é", "e\u{301}", "ñ", "日本語", "中",
        "😀", "👩‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "\u{200B}", "\u{0001}", "\u{2028}", "Ω", "𝄞", "ק", "ع",
    ]

    public static func make(maximumLength: Int, using generator: inout some RandomNumberGenerator) -> String {
        let count = Int.random(in: 0...maximumLength, using: &generator)
        var text = ""
        for _ in 0..<count { text += pieces.randomElement(using: &generator)! }
        return text
    }
}
