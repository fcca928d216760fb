import Hummingbird
import NIOCore

/// The request context of both listeners: Hummingbird's core storage plus the request id every answer and log line
/// carries.
struct HookproxyRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set by ``RequestIDMiddleware`` before any route runs.
    var requestID = ""
    /// The connection, so a request cut off mid-body (408) can stop its reading.
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
