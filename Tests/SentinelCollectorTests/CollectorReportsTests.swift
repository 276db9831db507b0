import CMCD
import SentinelHTTP
import Testing

@testable import SentinelCollector

struct CollectorReportsTests {
    let now: Int64 = 1_764_752_400_000

    @Test func eventBodyBecomesOneRecordPerReportKeyedBySession() {
        let body = Array("  e=ps,sid=\"a\",sta=p,ts=1764752401000,v=2  \r\n\n\te=rr,bl=(2100;v 1800;a),sid=\"b\",ts=1764752402000,v=2\n".utf8)
        let (records, rejected) = CollectorReports.fromBody(body, receivedAt: now, maxReports: 10)
        #expect(rejected.isEmpty)
        #expect(records.map(\.key) == ["a", "b"])
        #expect(records[0].line == "e=ps,sid=\"a\",sta=p,ts=1764752401000,v=2")
        #expect(records[1].line == "e=rr,bl=(2100;v 1800;a),sid=\"b\",ts=1764752402000,v=2")
    }

    @Test func badReportsAreRejectedAloneAndBadMembersDropped() {
        let body = Array(
            [
                "e=t,ts=1,v=2",  // no session
                "e=rr,pr=0.9900013331200346,com.example-ver=1.2.3,sid=\"ok\",ts=5,v=2",
                String(repeating: "x", count: CollectorReports.maxReportBytes + 1),
                "e=t,sid=\"late\",v=2",  // no ts: stamped on arrival
            ].joined(separator: "\n").utf8)
        let (records, rejected) = CollectorReports.fromBody(body, receivedAt: now, maxReports: 10)
        #expect(rejected.map(\.line) == [1, 3])
        #expect(rejected[0].reason.contains("session id"))
        #expect(records.map(\.line) == ["e=rr,pr=0.99,sid=\"ok\",ts=5,v=2", "e=t,sid=\"late\",v=2,ts=\(now)"])
    }

    @Test func aBatchIsBounded() {
        let body = Array((0..<5).map { "e=t,sid=\"s\($0)\",ts=1,v=2" }.joined(separator: "\n").utf8)
        let (records, rejected) = CollectorReports.fromBody(body, receivedAt: now, maxReports: 3)
        #expect(records.count == 3 && rejected.count == 1 && rejected[0].reason.contains("more than 3"))
    }

    @Test func requestModeFromHeadersOrQuery() throws {
        let byHeader = try #require(
            CollectorReports.fromRequest(query: nil, headers: [("cmcd-request", "bl=(4000),su"), ("CMCD-Session", #"sid="h",v=2"#)], receivedAt: now))
        #expect(try byHeader.get() == .init(key: "h", line: "bl=(4000),su,sid=\"h\",v=2,ts=\(now)"))
        let byQuery = try #require(CollectorReports.fromRequest(query: "CMCD=bl%3D300%2Csid%3D%22q%22", headers: [], receivedAt: now))
        #expect(try byQuery.get().key == "q")
        #expect(CollectorReports.fromRequest(query: "x=1", headers: [("Accept", "*/*")], receivedAt: now) == nil)
    }

    @Test func dictionaryTextRoundTrips() throws {
        for raw in [
            #"bl=(2100;v 1800;a),br=(3000),cid="a \"quoted\" \\ id",e=ps,nor=("x.m4s";r="0-99"),pr=1.25,su,bg=?0,v=2"#,
            #"bs,d=4000,mtp=12300,ot=av,sid="s",st=v,tb=6000,com.example-token=s"#,
        ] {
            let payload = try CMCDPayload(raw: raw, strict: true)
            let again = try CMCDPayload(raw: payload.dictionaryText, strict: true)
            #expect(again == payload, "\(payload.dictionaryText)")
        }
    }

    @Test func tokenBucketAdmitsTheRateAndItsBurst() {
        var bucket = TokenBucket(rate: 10, burst: 20)
        let taken = [bucket.take(20, at: 0), bucket.take(1, at: 0), bucket.take(5, at: 0.5), bucket.take(10, at: 0.6), bucket.take(20, at: 100)]
        #expect(taken == [true, false, true, false, true])
    }

    @Test func bearerSchemeInAnyCase() {
        #expect(BearerToken.matches("Bearer abc", token: "abc"))
        #expect(BearerToken.matches("bearer abc", token: "abc"))
        #expect(BearerToken.matches("BEARER  abc", token: "abc"))
        #expect(!BearerToken.matches("Basic abc", token: "abc"))
        #expect(!BearerToken.matches("Bearer abd", token: "abc"))
        #expect(!BearerToken.matches("Bearer ", token: ""))
    }
}
