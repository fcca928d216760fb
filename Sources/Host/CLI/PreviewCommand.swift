import ArgumentParser
import Foundation
import Logging
import PluginKit

/// `hookproxy preview --source S --payload FILE`: runs a payload through the source's mapping and each destination's
/// formatter, and prints the requests hookproxy would send. Sends nothing, stores nothing, needs no server.
struct PreviewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preview",
        abstract: "Show the requests a payload would produce (mapping + formatter), without sending or storing anything.",
        discussion: """
            The signature check is skipped (a saved payload has no valid signature). Destination URLs and the values of \
            headers set in sources.yaml are shown redacted: they often carry credentials.
            """)

    @OptionGroup var options: GlobalOptions

    @Option(help: "The source the payload arrives at.")
    var source: String

    @Option(help: "The file holding the request body (- for standard input).")
    var payload: String

    @Option(name: .customLong("header"), help: "A request header, 'Name: value' (repeatable), e.g. 'X-GitHub-Event: push'.")
    var headers: [String] = []

    @Option(help: "The body's Content-Type.")
    var contentType = "application/json"

    @Option(help: "Only this destination (default: every destination of the source).")
    var destination: String?

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func validate() throws {
        for header in headers where !header.contains(":") { throw ValidationError("--header must be 'Name: value', not '\(header)'") }
    }

    func run() async throws {
        var logger = options.bootstrapLogging()
        logger.logLevel = .warning
        let runtime = try await options.loadRuntime(logger: logger)
        defer { runtime.plugins.shutdown() }
        guard let sourceConfig = runtime.config.sources[source] else {
            throw CLIFailure.usage("no source named '\(source)' in \(runtime.config.file)")
        }
        let body: [UInt8]
        if payload == "-" {
            do {
                body = try ReadToEnd.bytes(of: FileHandle.standardInput.fileDescriptor)
            } catch {
                throw CLIFailure.usage("standard input: \(error)")
            }
        } else {
            guard let data = FileManager.default.contents(atPath: payload) else { throw CLIFailure.usage("cannot read \(payload)") }
            body = Array(data)
        }
        var requestHeaders: [(name: String, value: String)] = []
        for header in headers {
            let colon = header.firstIndex(of: ":") ?? header.endIndex
            let name = header[..<colon].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { throw CLIFailure.usage("--header '\(header)' needs a name: NAME: VALUE") }
            let value = colon < header.endIndex ? header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces) : ""
            requestHeaders.append((name: name, value: value))
        }
        let prepared: NewEvent
        do {
            prepared = try await Ingestor.prepare(
                runtime: runtime, source: source, headers: requestHeaders + [("Content-Type", contentType)], body: body,
                contentType: contentType, requestID: "preview", verify: false, logger: logger)
        } catch {
            throw CLIFailure.runtime("the payload would be refused with HTTP \(error.status.code): \(error.detail)")
        }
        let routes = sourceConfig.routes.filter { destination == nil || $0.destination == destination }
        if let destination, routes.isEmpty {
            throw CLIFailure.usage("source '\(source)' does not send to a destination named '\(destination)'")
        }
        var previews: [JSONValue] = []
        for route in routes {
            guard let destinationConfig = runtime.config.destinations[route.destination],
                let formatter = runtime.instances.formatter(source: source, destination: route.destination)
            else { continue }
            let delivery = ClaimedDelivery(id: EventID.make(), destination: route.destination, attempts: 0, event: prepared.event)
            let redactedHeaders = Set(destinationConfig.headers.map { $0.name.lowercased() })
            let head: [(String, JSONValue)] = [("destination", .string(route.destination)), ("formatter", .string(formatter.plugin.name))]
            switch await Attempt.prepare(delivery, destination: destinationConfig, formatter: formatter) {
            case .send(let parts):
                // One entry per request (a formatter may send several for one event).
                for (index, part) in parts.enumerated() {
                    var preview = head
                    if parts.count > 1 { preview.append(("request", .string("\(index + 1) of \(parts.count)"))) }
                    preview += [
                        ("action", "send"), ("method", "POST"), ("url", .string(ConfigJSON.url(part.url))),
                        (
                            "headers",
                            .array(
                                part.headers.map { header in
                                    [
                                        "name": .string(header.name),
                                        "value": redactedHeaders.contains(header.name.lowercased())
                                            ? ConfigJSON.redacted : .string(header.value),
                                    ]
                                })
                        ),
                        ("body", .string(String(decoding: part.body, as: UTF8.self))),
                    ]
                    previews.append(.object(JSONObject(preview)))
                }
            case .sendsNothing(.skip(let reason)):
                previews.append(.object(JSONObject(head + [("action", "skip"), ("reason", .string(reason))])))
            case .sendsNothing(.failed(let message, let permanent)):
                previews.append(
                    .object(JSONObject(head + [("action", "fail"), ("reason", .string(message)), ("permanent", .bool(permanent))])))
            case .sendsNothing(.aborted(let reason)), .sendsNothing(.unavailable(let reason)):
                previews.append(
                    .object(JSONObject(head + [("action", "fail"), ("reason", .string(reason)), ("permanent", .bool(false))])))
            case .sendsNothing(.cancelled):
                throw CLIFailure.runtime("preview was interrupted")
            }
        }
        let fields = (try? JSONValue(parsing: prepared.event.fieldsJSON)) ?? [:]
        if json {
            print(
                JSONValue.object(JSONObject([("source", .string(source)), ("fields", fields), ("requests", .array(previews))])).serialized()
            )
            return
        }
        var lines = ["source \(source): fields \(fields.serialized())"]
        for preview in previews {
            lines.append("")
            let part = preview["request"].map { ", request \($0.textValue)" } ?? ""
            lines.append("=== \(preview["destination"]?.textValue ?? "") (formatter \(preview["formatter"]?.textValue ?? "")\(part))")
            switch preview["action"]?.textValue {
            case "send":
                lines.append("\(preview["method"]?.textValue ?? "POST") \(preview["url"]?.textValue ?? "")")
                for header in preview["headers"]?.arrayValue ?? [] {
                    lines.append("\(header["name"]?.textValue ?? ""): \(header["value"]?.textValue ?? "")")
                }
                lines.append("")
                lines.append(preview["body"]?.textValue ?? "")
            case "skip": lines.append("skipped by the formatter: \(preview["reason"]?.textValue ?? "")")
            default:
                let permanent = preview["permanent"]?.boolValue == true
                lines.append(
                    "the formatter failed (\(permanent ? "permanent: dead at once" : "retried")): \(preview["reason"]?.textValue ?? "")")
            }
        }
        print(lines.joined(separator: "\n"))
    }
}
