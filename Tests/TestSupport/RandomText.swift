/// Random text with the characters that break naive code: multi-byte scalars, emoji sequences, combining marks, CJK,
/// control characters, quotes and backslashes.
public enum RandomText {
    public static let pieces: [String] = [
        "a", "Z", " ", "\n", "\t", "\"", "\\", "<", ">", "&", "*", "_", "`", "@everyone", "é", "e\u{301}", "ñ", "日本語", "中",
        "😀", "👩‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "\u{200B}", "\u{0001}", "\u{2028}", "Ω", "𝄞", "ק", "ع",
    ]
    /// The pieces as UTF-8: text is built as bytes and made a String once. Appending pieces to a String one by one
    /// checks grapheme boundaries at every append, which in a debug build made the formatter tests' inputs take seconds
    /// of a shared thread.
    private static let pieceBytes: [[UInt8]] = pieces.map { Array($0.utf8) }

    public static func make(maximumLength: Int, using generator: inout some RandomNumberGenerator) -> String {
        let count = Int.random(in: 0...maximumLength, using: &generator)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count * 4)
        for _ in 0..<count { bytes += pieceBytes[Int.random(in: 0..<pieceBytes.count, using: &generator)] }
        return String(decoding: bytes, as: UTF8.self)
    }
}
