/// SQL that both backends run as it is, with its values bound, never spliced: written with string interpolation, each
/// interpolated value becomes a parameter (`?` on SQLite, `$n` on PostgreSQL) and a list becomes a set to test with
/// `IN`. ``unescaped(_:)`` splices SQL text written here (column lists, conditions), never a value.
struct StoreSQL: ExpressibleByStringInterpolation, Sendable {
    enum Value: Sendable, Equatable {
        case text(String)
        case integer(Int64)
        /// Rendered as a parenthesised set after `IN`.
        case textList([String])
    }

    enum Part: Sendable, Equatable {
        case sql(String)
        case value(Value)
    }

    private(set) var parts: [Part] = []

    init(stringLiteral value: String) { parts = [.sql(value)] }

    init(stringInterpolation: Interpolation) { parts = stringInterpolation.parts }

    struct Interpolation: StringInterpolationProtocol {
        var parts: [Part] = []

        init(literalCapacity: Int, interpolationCount: Int) { parts.reserveCapacity(interpolationCount * 2 + 1) }

        mutating func appendLiteral(_ literal: String) { if !literal.isEmpty { parts.append(.sql(literal)) } }
        mutating func appendInterpolation(_ value: String) { parts.append(.value(.text(value))) }
        mutating func appendInterpolation(_ value: Int64) { parts.append(.value(.integer(value))) }
        mutating func appendInterpolation(_ value: Int) { parts.append(.value(.integer(Int64(value)))) }
        /// A set of texts, for `column IN \(list: ids)`.
        mutating func appendInterpolation(list: [String]) { parts.append(.value(.textList(list))) }
        /// SQL text written in this program; never a value that came from outside.
        mutating func appendInterpolation(unescaped sql: String) { parts.append(.sql(sql)) }
        mutating func appendInterpolation(_ sql: StoreSQL) { parts += sql.parts }
    }

    /// `parts` joined by `separator` (conditions joined by `AND`).
    static func joined(_ pieces: [StoreSQL], separator: String) -> StoreSQL {
        var joined = StoreSQL(stringLiteral: "")
        for (index, piece) in pieces.enumerated() {
            if index > 0 { joined.parts.append(.sql(separator)) }
            joined.parts += piece.parts
        }
        return joined
    }

    /// The SQL text with each value replaced by what `placeholder` returns for it (and for its position among them).
    func render(placeholder: (Value, Int) -> String) -> String {
        var text = ""
        var index = 0
        for part in parts {
            switch part {
            case .sql(let sql): text += sql
            case .value(let value):
                index += 1
                text += placeholder(value, index)
            }
        }
        return text
    }

    /// The values in the order they appear.
    var values: [Value] {
        parts.compactMap { part in
            if case .value(let value) = part { return value }
            return nil
        }
    }
}
