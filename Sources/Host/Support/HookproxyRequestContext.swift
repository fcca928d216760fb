import Hummingbird

/// The request context of both listeners: Hummingbird's core storage plus the request id every answer and log line
/// carries.
struct HookproxyRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    /// Set by ``RequestIDMiddleware`` before any route runs.
    var requestID = ""

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }
}
