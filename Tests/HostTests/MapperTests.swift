import Foundation
import PluginKit
import Testing

@testable import Host

@Suite("Mapper plugins")
struct MapperTests {
    @Test("a source's mapper plugin produces fields at ingest; the declarative mapping overrides them")
    func mapperFields() async throws {
        let directory = TestPaths.temporaryDirectory("mapper")
        try FileManager.default.createDirectory(atPath: directory + "/plugins", withIntermediateDirectories: true)
        _ = try await compileCPlugin(
            into: directory + "/plugins", file: "libmapper.so", defines: ["WITH_MAPPER", "PLUGIN_NAME=\"cmapper\""])
        let sink = RecordingSink()
        try await sink.start()
        let yaml =
            testServerSection() + """
                destinations:
                  out: { formatter: generic, url: "\(sink.url)/out", options: { mode: envelope } }
                sources:
                  mapped:
                    mapper: cmapper
                    destinations: [out]
                  both:
                    mapper: cmapper
                    mapping:
                      repo: "$.repository.full_name"
                    destinations: [out]
                """
        let server = try await TestServer.start(yaml: yaml, directory: directory)
        let first = try await server.post("mapped", json: #"{"repository":{"full_name":"acme/api"}}"#)
        #expect(first.status == 202)
        let second = try await server.post("both", json: #"{"repository":{"full_name":"acme/api"}}"#)
        #expect(second.status == 202)
        try await waitUntil("two envelopes") { sink.requests("/out").count == 2 }
        let fields = sink.requests("/out").compactMap { $0.json?["fields"] }
        #expect(fields.contains(["from_mapper": "application/json", "repo": "mapper-repo"]))
        #expect(fields.contains(["from_mapper": "application/json", "repo": "acme/api"]))
        // A slow mapper call is counted as the docs say (past 500 ms), like a slow formatter call.
        #expect(try await server.post("mapped", json: #"{"SLOW_MAP":true}"#).status == 202)
        let metrics = try PrometheusText(try await send(.GET, server.adminURL + "/metrics"))
        #expect(metrics.value("hookproxy_plugin_slow_calls_total", ["plugin": "cmapper", "operation": "map"]) == 1)
        try await server.stop()
        try await sink.stop()
    }
}
