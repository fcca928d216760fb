/// One thing wrong with a configuration, located as precisely as the file allows.
struct ConfigProblem: Sendable, Hashable, CustomStringConvertible {
    var file: String
    /// 1-based line, when known.
    var line: Int?
    /// The dotted key the problem is about (`destinations.ops-discord.url`).
    var key: String
    var message: String

    var description: String {
        let place = line.map { "\(file):\($0)" } ?? file
        return key.isEmpty ? "\(place): \(message)" : "\(place): \(key): \(message)"
    }
}

/// A configuration that cannot be used, with every problem found in it.
struct ConfigError: Error, CustomStringConvertible, Sendable {
    var problems: [ConfigProblem]

    init(_ problems: [ConfigProblem]) { self.problems = problems }

    var description: String { problems.map(\.description).joined(separator: "\n") }
}
