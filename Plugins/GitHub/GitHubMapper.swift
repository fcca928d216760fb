import PluginKit

/// Maps GitHub webhooks to the fields formatters show, from `X-GitHub-Event` and the payload, so that `mapper: github`
/// with a Discord or Slack destination gives good messages without a hand-written mapping.
///
/// Fields: `title`, `summary`, `url`, `actor`, `status` (`success`, `failure`, `warning`, `info` or `neutral`, for
/// colour rules), and `event`, `action`, `repo`, `branch`, `number` where they apply. Known events: ping, push,
/// pull_request, pull_request_review, issues, issue_comment, release, workflow_run, workflow_job, check_run,
/// check_suite, create, delete, star, fork; any other event gets a generic title.
///
/// Options: `max_commits` (commits listed for a push, default 5), `summary_length` (characters of a body shown,
/// default 300).
struct GitHubMapper: MapperPlugin {
    static let name = "github"
    static let version = "1.0.0"

    let maxCommits: Int
    let summaryLength: Int

    init(options: JSONValue) throws {
        let options = try PluginOptions(options, plugin: Self.name, known: ["max_commits", "summary_length"])
        maxCommits = try Self.positive(options, "max_commits") ?? 5
        summaryLength = try Self.positive(options, "summary_length") ?? 300
    }

    private static func positive(_ options: PluginOptions, _ key: String) throws -> Int? {
        guard let text = try options.string(key) else { return nil }
        guard let value = Int(text), value > 0 else { throw PluginError.permanent("github: option '\(key)' must be a positive number") }
        return value
    }

    func map(_ request: MapperRequest) throws -> JSONObject {
        let payload = request.payload
        guard payload.objectValue != nil else {
            throw PluginError.permanent("github: the body is not a JSON object (send application/json, or form-encoded payload=)")
        }
        guard let event = request.headers["x-github-event"]?.stringValue, !event.isEmpty else {
            throw PluginError.permanent("github: the X-GitHub-Event header is missing")
        }
        let p = Payload(payload)
        let repo = p.text("repository.full_name") ?? p.text("organization.login") ?? "GitHub"
        var fields = Fields(
            event: event, action: p.text("action"), repo: repo, actor: p.text("sender.login"),
            url: p.text("repository.html_url"))

        switch event {
        case "ping":
            fields.title = "\(repo): webhook ping"
            fields.summary = p.text("zen") ?? "The webhook is set up."
            fields.status = "info"
        case "push": push(p, &fields)
        case "pull_request": pullRequest(p, &fields)
        case "pull_request_review":
            let number = p.int("pull_request.number")
            let state = p.text("review.state").map(spaced) ?? "reviewed"
            fields.number = number
            fields.title = "\(repo): PR #\(number.map(String.init) ?? "?") review \(state): \(p.text("pull_request.title") ?? "")"
            fields.summary = clip(p.text("review.body"))
            fields.url = p.text("review.html_url") ?? p.text("pull_request.html_url") ?? fields.url
            fields.status = state == "approved" ? "success" : state == "changes requested" ? "warning" : "info"
        case "issues":
            let number = p.int("issue.number")
            fields.number = number
            fields.title = "\(repo): issue #\(number.map(String.init) ?? "?") \(fields.action ?? "updated"): \(p.text("issue.title") ?? "")"
            if fields.action == "opened" { fields.summary = clip(p.text("issue.body")) }
            fields.url = p.text("issue.html_url") ?? fields.url
            fields.status = fields.action == "closed" ? "success" : "info"
        case "issue_comment":
            let number = p.int("issue.number")
            let kind = p.value("issue.pull_request") != nil ? "PR" : "issue"
            fields.number = number
            fields.title = "\(repo): new comment on \(kind) #\(number.map(String.init) ?? "?"): \(p.text("issue.title") ?? "")"
            fields.summary = clip(p.text("comment.body"))
            fields.url = p.text("comment.html_url") ?? p.text("issue.html_url") ?? fields.url
            fields.status = "info"
        case "release":
            let tag = p.text("release.tag_name") ?? "?"
            let name = p.text("release.name").flatMap { $0.isEmpty || $0 == tag ? nil : $0 }
            let kind = p.bool("release.prerelease") == true ? "pre-release" : "release"
            fields.title = "\(repo): \(kind) \(tag)\(name.map { " (\($0))" } ?? "") \(fields.action ?? "updated")"
            fields.summary = clip(p.text("release.body"))
            fields.url = p.text("release.html_url") ?? fields.url
            fields.status = fields.action == "published" || fields.action == "released" ? "success" : "info"
        case "workflow_run": run(p, &fields, key: "workflow_run", noun: "workflow")
        case "workflow_job": run(p, &fields, key: "workflow_job", noun: "job")
        case "check_run": run(p, &fields, key: "check_run", noun: "check")
        case "check_suite": run(p, &fields, key: "check_suite", noun: "check suite")
        case "create", "delete":
            let kind = p.text("ref_type") ?? "ref"
            let ref = p.text("ref") ?? "?"
            fields.title = "\(repo): \(kind) \(ref) \(event == "create" ? "created" : "deleted")"
            if kind == "branch" { fields.branch = ref }
            fields.status = event == "create" ? "info" : "neutral"
        case "star":
            fields.title = "\(repo): \(fields.action == "deleted" ? "unstarred" : "starred") by \(fields.actor ?? "someone")"
            if let count = p.int("repository.stargazers_count") { fields.summary = "\(count) stars" }
            fields.status = "info"
        case "fork":
            fields.title = "\(repo): forked to \(p.text("forkee.full_name") ?? "?")"
            fields.url = p.text("forkee.html_url") ?? fields.url
            fields.status = "info"
        default:
            fields.title = "\(repo): \(spaced(event))\(fields.action.map { " \($0)" } ?? "")"
            fields.status = "info"
        }
        return fields.object
    }

    private func push(_ p: Payload, _ fields: inout Fields) {
        let ref = p.text("ref") ?? ""
        let isTag = ref.hasPrefix("refs/tags/")
        let name = ref.hasPrefix("refs/heads/") ? String(ref.dropFirst(11)) : isTag ? String(ref.dropFirst(10)) : ref
        if !isTag { fields.branch = name }
        let commits = p.value("commits")?.arrayValue ?? []
        fields.url = p.text("compare") ?? fields.url
        fields.status = "info"
        if p.bool("deleted") == true {
            fields.title = "\(fields.repo): \(isTag ? "tag" : "branch") \(name) deleted"
            fields.status = "neutral"
            return
        }
        if isTag {
            fields.title = "\(fields.repo): tag \(name) pushed"
            return
        }
        let count = commits.count
        if p.bool("created") == true, count == 0 {
            fields.title = "\(fields.repo): branch \(name) created"
            return
        }
        fields.title =
            "\(fields.repo): \(count) new commit\(count == 1 ? "" : "s") to \(name)\(p.bool("forced") == true ? " (force-pushed)" : "")"
        if p.bool("forced") == true { fields.status = "warning" }
        var lines: [String] = []
        for commit in commits.prefix(maxCommits) {
            let id = String((commit["id"]?.stringValue ?? "").prefix(7))
            let message =
                commit["message"]?.stringValue?.split(separator: "\n", omittingEmptySubsequences: true).first.map(String.init) ?? ""
            let author = commit["author"]?["username"]?.stringValue ?? commit["author"]?["name"]?.stringValue
            lines.append("`\(id)` \(TextLimits.truncate(message, to: 100))\(author.map { " — \($0)" } ?? "")")
        }
        if count > maxCommits { lines.append("… and \(count - maxCommits) more") }
        fields.summary = lines.joined(separator: "\n")
    }

    private func pullRequest(_ p: Payload, _ fields: inout Fields) {
        let number = p.int("pull_request.number") ?? p.int("number")
        let merged = p.bool("pull_request.merged") == true
        var action = fields.action ?? "updated"
        if action == "closed", merged { action = "merged" }
        if action == "synchronize" { action = "updated" }
        action = spaced(action)
        fields.number = number
        fields.branch = p.text("pull_request.base.ref")
        fields.title = "\(fields.repo): PR #\(number.map(String.init) ?? "?") \(action): \(p.text("pull_request.title") ?? "")"
        if fields.action == "opened" || fields.action == "ready_for_review" { fields.summary = clip(p.text("pull_request.body")) }
        if let head = p.text("pull_request.head.ref"), let base = fields.branch {
            let line = "\(head) → \(base)"
            fields.summary = fields.summary.map { $0.isEmpty ? line : "\(line)\n\($0)" } ?? line
        }
        fields.url = p.text("pull_request.html_url") ?? fields.url
        switch action {
        case "merged": fields.status = "success"
        case "closed": fields.status = "neutral"
        default: fields.status = "info"
        }
    }

    /// workflow_run, workflow_job, check_run and check_suite share a shape: a name, a status and, once completed, a
    /// conclusion.
    private func run(_ p: Payload, _ fields: inout Fields, key: String, noun: String) {
        let name = p.text("\(key).name") ?? p.text("\(key).app.name") ?? noun
        let state = p.text("\(key).status") ?? fields.action ?? "updated"
        let conclusion = p.text("\(key).conclusion")
        let outcome = (state == "completed" ? conclusion : nil) ?? state
        fields.branch = p.text("\(key).head_branch") ?? p.text("\(key).check_suite.head_branch")
        let on = fields.branch.map { " on \($0)" } ?? ""
        fields.title = "\(fields.repo): \(noun) \(name) \(Self.describe(outcome))\(on)"
        var details: [String] = []
        if let number = p.int("\(key).run_number") { details.append("run #\(number)") }
        if let trigger = p.text("\(key).event") { details.append("triggered by \(trigger)") }
        if let actor = p.text("\(key).triggering_actor.login") ?? p.text("\(key).actor.login") { fields.actor = actor }
        if let title = p.text("\(key).output.title") { details.append(title) }
        if let message = p.text("\(key).head_commit.message")?.split(separator: "\n").first {
            details.append("“\(TextLimits.truncate(String(message), to: 100))”")
        }
        fields.summary = details.isEmpty ? nil : details.joined(separator: ", ")
        fields.url = p.text("\(key).html_url") ?? p.text("\(key).details_url") ?? fields.url
        switch outcome {
        case "success": fields.status = "success"
        case "failure", "timed_out", "startup_failure", "action_required": fields.status = "failure"
        case "cancelled", "skipped", "stale", "neutral": fields.status = "neutral"
        default: fields.status = "info"
        }
    }

    /// A run's status or conclusion as words: `failure` → `failed`.
    static func describe(_ outcome: String) -> String {
        switch outcome {
        case "success": "succeeded"
        case "failure": "failed"
        case "cancelled": "was cancelled"
        case "action_required": "needs action"
        default: spaced(outcome)
        }
    }

    private func clip(_ text: String?) -> String? {
        guard let text, !text.isEmpty else { return nil }
        // "\r\n" is one Character: drop carriage returns as scalars.
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: text.unicodeScalars.filter { $0 != "\r" })
        return TextLimits.truncate(String(scalars), to: summaryLength)
    }
}

/// `pull_request_review` → `pull request review`.
private func spaced(_ text: String) -> String { String(text.map { $0 == "_" ? " " : $0 }) }

/// The mapped fields, in a fixed order.
private struct Fields {
    var event: String
    var action: String?
    var repo: String
    var actor: String?
    var url: String?
    var title = ""
    var summary: String?
    var status = "info"
    var branch: String?
    var number: Int?

    var object: JSONObject {
        var object = JSONObject()
        object["title"] = .string(title)
        object["summary"] = summary.map(JSONValue.string) ?? .null
        object["url"] = url.map(JSONValue.string) ?? .null
        object["actor"] = actor.map(JSONValue.string) ?? .null
        object["status"] = .string(status)
        object["event"] = .string(event)
        object["action"] = action.map(JSONValue.string) ?? .null
        object["repo"] = .string(repo)
        object["branch"] = branch.map(JSONValue.string) ?? .null
        object["number"] = number.map { .int($0) } ?? .null
        return object
    }
}

/// Dotted-path reads of the payload.
private struct Payload {
    let root: JSONValue
    init(_ root: JSONValue) { self.root = root }

    func value(_ path: String) -> JSONValue? {
        guard let value = root.value(atPath: path), !value.isNull else { return nil }
        return value
    }
    func text(_ path: String) -> String? { value(path)?.stringValue }
    func int(_ path: String) -> Int? { value(path)?.intValue }
    func bool(_ path: String) -> Bool? { value(path)?.boolValue }
}
