import Foundation
import SentinelJSON
import SentinelTestSupport
import Testing

/// The silences API on the running daemon's HTTP port, through a real HTTP client (Python's
/// urllib), against the alerts table the `silence` command reads.
@Suite(.serialized, .ownThread) struct SilenceAPITests {
    typealias IT = DaemonIntegrationTests
    static let token = "ops-token-0123456789abcdef"

    /// One request: status and parsed JSON body.
    static func request(
        port: Int, _ method: String, _ path: String, token: String? = SilenceAPITests.token, body: String? = nil
    ) throws -> (status: Int, json: JSONValue?) {
        let script = """
            import sys, urllib.request
            method, url, token, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
            request = urllib.request.Request(url, method=method, data=body.encode() if body else None)
            if token: request.add_header('Authorization', 'Bearer ' + token)
            if body: request.add_header('Content-Type', 'application/json')
            try:
                r = urllib.request.urlopen(request, timeout=5); print(r.status); print(r.read().decode())
            except urllib.error.HTTPError as e:
                print(e.code); print(e.read().decode())
            """
        let result = try IT.run(["-c", script, method, "http://127.0.0.1:\(port)\(path)", token ?? "", body ?? ""], python: true)
        let lines = result.stdout.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        let text = lines.count > 1 ? String(lines[1]) : ""
        return (Int(lines.first ?? "") ?? 0, try? JSONParser.parse(text))
    }

    static func string(_ value: JSONValue?) -> String? { value?.stringValue }

    @Test func operatorsSilenceThroughTheDaemonsHTTPPort() async throws {
        let alerts = "sqlite:" + TestScratch.directory.appendingPathComponent("silence-api-\(UUID().uuidString).db").path
        let topic = try IT.broker.newTopic(partitions: 1)
        let environment = ["SENTINEL_ALERTS_URL": alerts, "SENTINEL_HTTP_TOKENS": "ops=\(Self.token),bot=bot-token-0123456789abcdef"]
        let (daemon, port) = try IT.startServing(
            ["run", "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0"], environment: environment)
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        let api = "/api/v1/silences"

        // No token, a wrong one: 401 with the scheme to use.
        #expect(try Self.request(port: port, "GET", api, token: nil).status == 401)
        #expect(try Self.request(port: port, "GET", api, token: "wrong-token-0123456789abcdef").status == 401)
        // Bad bodies get a reason, and nothing is added.
        let badMatcher = try Self.request(port: port, "POST", api, body: #"{"matchers":{"cdn":"x"},"duration":"1h"}"#)
        #expect(badMatcher.status == 400)
        #expect(Self.string(badMatcher.json?["error"])?.contains("not a silence matcher") == true, "\(String(describing: badMatcher.json))")
        #expect(try Self.request(port: port, "POST", api, body: #"{"matchers":{"type":"incident"}}"#).status == 400)
        #expect(try Self.request(port: port, "POST", api, body: "not json").status == 400)
        #expect(try Self.request(port: port, "POST", api, body: #"{"matchers":{"type":"incident"},"duration":"1h","every":"sat 02:00-04:00","time_zone":"Mars/Olympus"}"#).status == 400)
        let huge = #"{"matchers":{"type":"incident"},"duration":"1h","comment":""# + String(repeating: "x", count: 20_000) + #""}"#
        #expect(try Self.request(port: port, "POST", api, body: huge).status == 413)

        // A silence for an edge, recorded with the token's name.
        let created = try Self.request(
            port: port, "POST", api, body: #"{"matchers":{"edge_location":"FRA56-C2","type":"incident"},"duration":"2h","comment":"PoP failover"}"#)
        #expect(created.status == 201, "\(String(describing: created.json))")
        let id = try #require(Self.string(created.json?["silence"]?["id"]))
        #expect(Self.string(created.json?["silence"]?["created_by"]) == "http:ops")
        #expect(Self.string(created.json?["silence"]?["state"]) == "active")
        // A maintenance window in a time zone, by the other token.
        let window = try Self.request(
            port: port, "POST", api, token: "bot-token-0123456789abcdef",
            body: #"{"matchers":{"content_id":"live-news-1"},"duration":"30d","every":"sun 02:00-04:00","time_zone":"Europe/Berlin"}"#)
        #expect(window.status == 201)
        #expect(Self.string(window.json?["silence"]?["every"]) == "sun 02:00-04:00 Europe/Berlin")
        #expect(Self.string(window.json?["silence"]?["created_by"]) == "http:bot")

        // Listed by the API and by the command on the same table.
        let listed = try Self.request(port: port, "GET", api)
        #expect(listed.status == 200)
        if case .array(let items)? = listed.json?["silences"] { #expect(items.count == 2) } else { Issue.record("no silences array") }
        #expect(Self.string(try Self.request(port: port, "GET", "\(api)/\(id)").json?["silence"]?["comment"]) == "PoP failover")
        let command = try IT.run(["silence", "list"], environment: ["SENTINEL_ALERTS_URL": alerts])
        #expect(command.stdout.contains("\(id)\tactive\ttype=incident,edge_location=FRA56-C2"), "\(command.stdout)")

        // Ended by DELETE, once; unknown ids and paths are 404.
        #expect(try Self.request(port: port, "DELETE", "\(api)/\(id)").status == 200)
        #expect(try Self.request(port: port, "DELETE", "\(api)/\(id)").status == 404)
        #expect(Self.string(try Self.request(port: port, "GET", "\(api)/\(id)").json?["silence"]?["state"]) == "expired")
        #expect(try Self.request(port: port, "GET", "\(api)/sil_nosuch").status == 404)
        #expect(try Self.request(port: port, "GET", "\(api)/..%2F..%2Fetc").status == 404)
        // /metrics is unaffected and needs no token.
        #expect(try IT.httpGet(port: port, path: "/metrics").status == 200)

        kill(daemon.process.processIdentifier, SIGTERM)
        daemon.process.waitUntilExit()
        #expect(daemon.process.terminationStatus == 0)
    }

    @Test func withoutTokensTheAPIIsOff() async throws {
        let topic = try IT.broker.newTopic(partitions: 1)
        let (daemon, port) = try IT.startServing(["run", "--brokers", IT.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0"])
        defer { if daemon.process.isRunning { kill(daemon.process.processIdentifier, SIGKILL) } }
        let answer = try Self.request(port: port, "POST", "/api/v1/silences", body: #"{"matchers":{"type":"incident"},"duration":"1h"}"#)
        #expect(answer.status == 403)
        #expect(Self.string(answer.json?["error"])?.contains("http.tokens") == true)
        kill(daemon.process.processIdentifier, SIGTERM)
        daemon.process.waitUntilExit()
    }
}
