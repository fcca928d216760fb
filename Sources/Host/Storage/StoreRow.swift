/// A row as either backend returns it, read by column name. Every read is checked: a column that is missing, NULL
/// where a value is required, or of another type fails with ``StoreError/readFailed(_:)`` naming the column, never a
/// trap. A database edited by hand or damaged on disk must not stop the process, and certainly not on every start.
///
/// The rows are what both backends' SQL returns; everything above them (``StoredEvent``, ``EventDetail``, a page of
/// ``DeliverySummary``, the order of a claim) is assembled once, in `StoreAssembly.swift`.
protocol StoreRow {
    /// The column's text; nil when it is NULL.
    func optionalText(_ column: String) throws(StoreError) -> String?
    /// The column's integer; nil when it is NULL.
    func optionalInteger(_ column: String) throws(StoreError) -> Int64?
    /// The column's bytes; nil when it is NULL.
    func optionalBytes(_ column: String) throws(StoreError) -> [UInt8]?
}

extension StoreRow {
    func text(_ column: String) throws(StoreError) -> String {
        guard let value = try optionalText(column) else { throw StoreError.malformedRow(column, "is NULL") }
        return value
    }

    func integer(_ column: String) throws(StoreError) -> Int64 {
        guard let value = try optionalInteger(column) else { throw StoreError.malformedRow(column, "is NULL") }
        return value
    }

    /// A count or a number of attempts: an integer that fits `Int` and is not negative.
    func count(_ column: String) throws(StoreError) -> Int {
        guard let value = Int(exactly: try integer(column)), value >= 0 else {
            throw StoreError.malformedRow(column, "is not a count")
        }
        return value
    }

    func optionalInt(_ column: String) throws(StoreError) -> Int? {
        guard let value = try optionalInteger(column) else { return nil }
        guard let int = Int(exactly: value) else { throw StoreError.malformedRow(column, "does not fit an integer") }
        return int
    }

    func bytes(_ column: String) throws(StoreError) -> [UInt8] {
        guard let value = try optionalBytes(column) else { throw StoreError.malformedRow(column, "is NULL") }
        return value
    }

    func status(_ column: String) throws(StoreError) -> DeliveryStatus {
        let text = try text(column)
        guard let status = DeliveryStatus(rawValue: text) else {
            throw StoreError.malformedRow(column, "holds the unknown delivery status '\(text.prefix(40))'")
        }
        return status
    }
}

extension StoreError {
    /// A stored row that does not hold what the schema says (a hand edit, a damaged file).
    static func malformedRow(_ column: String, _ problem: String) -> StoreError {
        .readFailed("a stored row is malformed: column \(column) \(problem)")
    }
}
