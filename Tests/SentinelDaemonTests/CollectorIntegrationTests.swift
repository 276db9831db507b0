import AsyncHTTPClient
import Foundation
import NIOCore
import SentinelTestSupport
import Testing

/// `collect` as players use it, with a real HTTP client and the real broker, feeding `run`:
/// CMCD v2 event reports reach the same detectors as CDN logs, end to end.
@Suite(.serialized, .ownThread) struct CollectorIntegrationTests {
    typealias It = DaemonIntegrationTests

    @Test func eventReportsFlowThroughKafkaIntoTheDetectors() async throws {
        let topic = try It.broker.newTopic(partitions: 2)
        let port = freePort()
        let collector = try It.start(
            ["collect", "--listen", "127.0.0.1:\(port)", "--brokers", It.broker.address, "--topic", topic, "--max-body-bytes", "4096"],
            environment: ["SENTINEL_COLLECT_TOKEN": "player-token"])
        defer { if collector.process.isRunning { kill(collector.process.processIdentifier, SIGKILL) } }
        #expect(It.waitFor(20) { (try? It.httpGet(port: port, path: "/healthz").status) == 200 }, "collect never answered: \(collector.errors.text)")

        let client = HTTPClient.shared
        func post(_ body: String, token: String? = "player-token", path: String = "/cmcd", headers: [(String, String)] = []) async throws
            -> HTTPClientResponse
        {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/cmcd")
            if let token { request.headers.add(name: "Authorization", value: "bearer \(token)") }  // the scheme in any case
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            request.body = .bytes(ByteBuffer(string: body))
            return try await client.execute(request, timeout: .seconds(15))
        }

        // Two minutes ago: within the daemon's idle timeout once it reads them.
        let t = Int64(Date().timeIntervalSince1970 * 1000) - 120_000
        // A slow startup (6.5 s from sta=s to sta=p) and, in a second session, a stall; one
        // line without a session id, one with a decimal dash.js style.
        let batch = [
            "e=ps,sid=\"slow-start\",sta=s,ts=\(t),v=2",
            "e=rr,bl=(0),ot=v,sid=\"slow-start\",sta=s,ts=\(t + 300),v=2",
            "e=ps,sid=\"slow-start\",sta=p,ts=\(t + 6500),v=2",
            "e=ps,sid=\"stalls\",sta=s,ts=\(t + 100),v=2",
            "e=ps,sid=\"stalls\",sta=p,ts=\(t + 900),v=2",
            "e=rr,bl=(9000),ot=v,pr=1.0500013331200346,sid=\"stalls\",sta=p,ts=\(t + 5000),v=2",
            "e=t,sta=p,ts=\(t + 5100),v=2",
            "e=ps,sid=\"stalls\",sta=r,ts=\(t + 20000),v=2",
            "e=rr,bl=(6000),ot=v,sid=\"stalls\",sta=p,ts=\(t + 24000),v=2",
        ].joined(separator: "\r\n") + "\n"
        let refused = try await post(batch, token: nil)
        #expect(refused.status.code == 401)
        let accepted = try await post(batch)
        #expect(accepted.status.code == 204)
        #expect(accepted.headers.first(name: "CMCD-Rejected")?.hasPrefix("1; line 7: no session id") == true, "\(accepted.headers)")
        // v2 request-mode data sent to the collector as headers; ts is set on arrival.
        let headers = try await post(
            "", headers: [("CMCD-Request", "bl=(4000),su"), ("CMCD-Session", #"sid="by-header",v=2"#), ("CMCD-Object", "ot=v")])
        #expect(headers.status.code == 204)
        let tooLarge = try await post(String(repeating: "e=t,sid=\"x\",ts=1,v=2\n", count: 400))
        #expect(tooLarge.status.code == 413)
        let nothing = try await post("e=t,ts=\(t),v=2\n")
        #expect(nothing.status.code == 400)

        kill(collector.process.processIdentifier, SIGTERM)
        #expect(It.waitFor(10) { !collector.process.isRunning }, "collect did not stop on SIGTERM")
        #expect(collector.process.terminationStatus == 0, "\(collector.errors.text)")

        let run = try It.run(
            ["run", "--brokers", It.broker.address, "--topic", topic, "--group", "g-\(topic)", "--partitions", "0,1", "--exit-when-idle", "3"],
            environment: ["SENTINEL_INPUT_FORMAT": "cmcd"])
        #expect(run.status == 0, "\(run.stderr)")
        let firing = run.lines.filter { $0.contains(#""status":"firing""#) }
        #expect(firing.filter { $0.contains(#""session_id":"slow-start""#) && $0.contains(#""type":"startup_delay""#) && $0.contains(#""severity":"critical""#) }.count == 1, "\(run.lines)")
        #expect(firing.filter { $0.contains(#""session_id":"stalls""#) && $0.contains(#""type":"buffer_starvation""#) }.count == 1, "\(run.lines)")
        #expect(firing.count == 2, "\(firing)")
        #expect(run.stderr.contains("stopped after 9 records"), "9 event lines less the one rejected, and the header report: \(run.stderr)")
    }
}
