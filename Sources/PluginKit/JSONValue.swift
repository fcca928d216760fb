/// A JSON document as a value: what hookproxy parses from webhook bodies, hands to plugins and renders templates from.
///
/// Numbers keep the exact text they were written with, so a payload's `12345678901234567890` or `1.50` passes through
/// hookproxy unchanged. Objects keep their members in document order.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// A number, as its JSON text (always valid JSON number syntax).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// A number value from an integer.
    public static func int<I: BinaryInteger>(_ value: I) -> JSONValue { .number(String(value)) }

    /// A number value from a double; non-finite values become `null`, as JSON has no spelling for them.
    public static func double(_ value: Double) -> JSONValue {
        guard value.isFinite else { return .null }
        if value == value.rounded(), abs(value) < 1e15 { return .number(String(Int64(value))) }
        return .number(String(value))
    }

    // MARK: Access

    /// The member `key` of an object; `nil` for other values or a missing key.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let object) = self else { return nil }
        return object[key]
    }

    /// The string, for `.string`.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The object, for `.object`.
    public var objectValue: JSONObject? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// The elements, for `.array`.
    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// The number as a `Double`, for `.number`.
    public var doubleValue: Double? {
        if case .number(let text) = self { return Double(text) }
        return nil
    }

    /// The number as an `Int`, for `.number` values that are whole and in range.
    public var intValue: Int? {
        guard case .number(let text) = self else { return nil }
        if let value = Int(text) { return value }
        if let value = Double(text), value == value.rounded(), abs(value) < 9e15 { return Int(value) }
        return nil
    }

    /// The boolean, for `.bool`.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// True for `.null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// Follows a dotted path (`a.b.0.c`): object members by name, array elements by index.
    /// Returns `nil` when any step is missing.
    public func value(atPath path: some StringProtocol) -> JSONValue? {
        value(atComponents: path.split(separator: ".", omittingEmptySubsequences: false))
    }

    /// ``value(atPath:)`` with the path already split at its dots.
    public func value(atComponents components: some Sequence<some StringProtocol>) -> JSONValue? {
        var current = self
        for component in components {
            guard let next = current.child(String(component)) else { return nil }
            current = next
        }
        return current
    }

    /// One step of a path: a member of an object, or an element of an array by decimal index.
    public func child(_ component: String) -> JSONValue? {
        switch self {
        case .object(let object):
            return object[component]
        case .array(let elements):
            guard let index = Int(component), elements.indices.contains(index) else { return nil }
            return elements[index]
        default:
            return nil
        }
    }

    /// The value as text for a template or a message: strings as they are, numbers and booleans as written, `null`
    /// as the empty string, arrays and objects as compact JSON.
    public var textValue: String {
        switch self {
        case .null: return ""
        case .bool(let value): return value ? "true" : "false"
        case .number(let text): return text
        case .string(let value): return value
        case .array, .object: return serialized()
        }
    }
}

/// A JSON object: members in document order, looked up by key.
///
/// When a document repeats a key, the last occurrence wins for lookup, as in most JSON readers, and only that one is
/// kept.
public struct JSONObject: Sendable, Hashable, Sequence {
    /// The members, in order.
    public private(set) var members: [(key: String, value: JSONValue)]
    /// Each key's position in `members`, kept only above ``linearLimit`` members: a small object (most of a webhook's)
    /// is searched in order, which costs less than hashing the key.
    private var index: [String: Int]?

    /// The most members an object keeps without a hash index.
    static let linearLimit = 12

    /// An empty object.
    public init() {
        members = []
        index = nil
    }

    /// An object from members in order; a repeated key replaces the earlier value in place.
    public init(_ members: [(String, JSONValue)]) {
        self.init()
        for (key, value) in members { self[key] = value }
    }

    /// The position of `key` in `members`, or `nil`.
    private func position(of key: String) -> Int? {
        if let index { return index[key] }
        return members.firstIndex { $0.key == key }
    }

    /// Builds the index when the object has grown past ``linearLimit``, drops it when it has shrunk back.
    private mutating func reindex() {
        guard members.count > Self.linearLimit else {
            index = nil
            return
        }
        var built: [String: Int] = [:]
        built.reserveCapacity(members.count)
        for (offset, member) in members.enumerated() { built[member.key] = offset }
        index = built
    }

    /// The value of `key`, or `nil`; setting `nil` removes the member.
    public subscript(key: String) -> JSONValue? {
        get { position(of: key).map { members[$0].value } }
        set {
            if let position = position(of: key) {
                if let newValue {
                    members[position].value = newValue
                } else {
                    members.remove(at: position)
                    reindex()
                }
            } else if let newValue {
                members.append((key, newValue))
                if index != nil {
                    index?[key] = members.count - 1
                } else if members.count > Self.linearLimit {
                    reindex()
                }
            }
        }
    }

    /// The number of members.
    public var count: Int { members.count }

    /// True when the object has no members.
    public var isEmpty: Bool { members.isEmpty }

    /// The keys in order.
    public var keys: [String] { members.map(\.key) }

    public func makeIterator() -> IndexingIterator<[(key: String, value: JSONValue)]> { members.makeIterator() }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        lhs.members.count == rhs.members.count
            && zip(lhs.members, rhs.members).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(members.count)
        for member in members {
            hasher.combine(member.key)
            hasher.combine(member.value)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(String(value)) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(JSONObject(elements)) }
    public init(nilLiteral: ()) { self = .null }
}
