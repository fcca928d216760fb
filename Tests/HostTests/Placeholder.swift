import Testing

@testable import Host

@Test func placeholder() { #expect(Bool(true)) }
