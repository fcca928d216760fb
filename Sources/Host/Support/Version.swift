/// hookproxy's own version, sent as `User-Agent: hookproxy/<version>` and shown by `--version`.
enum HookproxyVersion {
    static let current = "0.1.0"
}
