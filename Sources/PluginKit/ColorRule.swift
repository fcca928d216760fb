/// A message colour: fixed (`color: "#2b90d9"`), or chosen by a mapped field's value (`color_by: status`, or
/// `color_by: {field: status, colors: {passed: "#00ff00", failed: "#ff0000"}, default: "#999999"}`). With no option, a
/// field `status` with one of the standard values picks the standard colour, so mappers that set `status` (like the
/// shipped `github` mapper) get coloured messages with no configuration.
public struct ColorRule: Sendable {
    /// The standard colours of `status` values.
    public static let palette: [String: Int] = [
        "success": 0x2ECC71, "failure": 0xE74C3C, "warning": 0xF1C40F, "info": 0x3498DB, "neutral": 0x95A5A6,
    ]

    let fixed: Int?
    let field: String?
    let colors: [String: Int]
    let fallback: Int?

    /// Reads `color` and `color_by` from `options`; `automatic` makes a missing option fall back to the `status` field.
    public init(_ options: PluginOptions, plugin: String, automatic: Bool = true) throws {
        fixed = try options.string("color").map { try Self.parse($0, plugin: plugin, option: "color") }
        switch options.raw("color_by") {
        case nil, .null?:
            field = automatic && fixed == nil ? "status" : nil
            colors = Self.palette
            fallback = nil
        case .string(let name)?:
            field = name
            colors = Self.palette
            fallback = nil
        case .object(let object)?:
            let rule = try PluginOptions(.object(object), plugin: "\(plugin): color_by", known: ["field", "colors", "default"])
            guard let name = try rule.string("field") else { throw PluginError.permanent("\(plugin): option 'color_by' needs 'field'") }
            field = name
            var colors: [String: Int] = [:]
            for (value, color) in try rule.stringPairs("colors") {
                colors[value] = try Self.parse(color, plugin: plugin, option: "color_by.colors.\(value)")
            }
            self.colors = colors
            fallback = try rule.string("default").map { try Self.parse($0, plugin: plugin, option: "color_by.default") }
        default:
            throw PluginError.permanent("\(plugin): option 'color_by' must be a field name or {field, colors, default}")
        }
    }

    /// The colour for an event with these mapped fields, as 0xRRGGBB; nil when none applies.
    public func color(for fields: JSONObject) -> Int? {
        if let fixed { return fixed }
        return field.flatMap { fields[$0]?.textValue }.flatMap { colors[$0] } ?? fallback
    }

    /// `#RRGGBB`, `0xRRGGBB` or a decimal number up to 0xFFFFFF.
    public static func parse(_ text: String, plugin: String, option: String) throws -> Int {
        let value: Int?
        if text.hasPrefix("#") {
            value = Int(text.dropFirst(), radix: 16)
        } else if text.hasPrefix("0x") {
            value = Int(text.dropFirst(2), radix: 16)
        } else {
            value = Int(text)
        }
        guard let value, (0...0xFF_FFFF).contains(value) else {
            throw PluginError.permanent("\(plugin): option '\(option)' must be #RRGGBB, 0xRRGGBB or a number up to 16777215, not '\(text)'")
        }
        return value
    }

    /// `#rrggbb`.
    public static func hex(_ color: Int) -> String {
        let digits = String(color, radix: 16)
        return "#" + String(repeating: "0", count: max(0, 6 - digits.count)) + digits
    }
}
