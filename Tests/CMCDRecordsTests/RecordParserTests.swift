import Foundation
import Testing

@testable import CMCDRecords
import CMCD

struct RecordParserTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func parse(_ text: String, _ configuration: RecordParser.Configuration = .init()) -> (outcomes: [RecordOutcome], stats: ParseStatistics) {
        var parser = RecordParser(configuration: configuration)
        var outcomes: [RecordOutcome] = []
        parser.parse(message: text) { outcomes.append($0) }
        return (outcomes, parser.statistics)
    }

    func samples(_ outcomes: [RecordOutcome]) -> [Sample] {
        outcomes.compactMap { if case .sample(let s) = $0 { s } else { nil } }
    }

    func reasons(_ outcomes: [RecordOutcome]) -> [SkipReason] {
        outcomes.compactMap { if case .skipped(let r, _) = $0 { r } else { nil } }
    }

    func cloudFrontLine(time: String = "1720015641.207", query: String = "-", headers: String = "-", edge: String = "IAD89-P1") -> String {
        [time, "203.0.113.45", "200", "GET", "/v/seg.ts", edge, "rid", "0.213", query, headers].joined(separator: "\t")
    }

    @Test func parsesTheSeedSampleLines() throws {
        let text = try String(contentsOf: Self.packageRoot.appendingPathComponent("samples/cloudfront-realtime-seed-format.tsv"), encoding: .utf8)
        let (outcomes, stats) = parse(text)
        let s = samples(outcomes)
        #expect(s.count == 3)
        #expect(stats.lines == 3 && stats.samples == 3 && stats.skippedTotal == 0)
        #expect(s.allSatisfy { $0.sessionID == "session_md91ykdl5yrcwq371f5" && $0.contentID == "video-content-demo" })
        #expect(s.map(\.time) == [1_720_015_623_481, 1_720_015_641_207, 1_720_015_702_935])
        #expect(s[0].objectType == .manifest && s[0].cmcd.startup && s[0].bufferLength == nil)
        #expect(s[1].bufferLength == 21300 && s[1].cmcd.topBitrate?.components.first?.value == 8500)
        #expect(s[1].edgeLocation == "IAD89-P1" && s[1].httpStatus == 200 && s[1].timeTaken == 0.213)
        #expect(s[2].bufferLength == 0 && s[2].cmcd.bufferStarvation && s[2].cmcd.startup)
        #expect(s[1].cmcd.nextObjectRequests == ["master_1080p_00005.ts"])
    }

    /// A parsed sample reads its session id from the payload; it behaves like one given the
    /// id explicitly, and the id survives the payload's conversions.
    @Test func sessionIDIsReadFromThePayload() throws {
        let (outcomes, _) = parse(cloudFrontLine(query: "CMCD=bl%3D100%2Csid%3D%22abc-1%22%2Csid%3D%22abc-2%22"))
        let sample = try #require(samples(outcomes).first)
        #expect(sample.sessionID == "abc-2")  // the last value wins
        var bytes: [UInt8] = []
        sample.withSessionIDBytes { bytes = Array($0) }
        #expect(bytes == Array("abc-2".utf8))
        #expect(sample.cmcd.convertedToLatest().sessionID == "abc-2")
        var explicit = Sample(
            time: sample.time, sessionID: "abc-2", contentID: sample.contentID, edgeLocation: sample.edgeLocation,
            httpStatus: sample.httpStatus, timeTaken: sample.timeTaken, cmcd: sample.cmcd)
        #expect(explicit == sample && explicit.hashValue == sample.hashValue)
        explicit.sessionID = "other"
        #expect(explicit != sample && explicit.sessionID == "other")
        var renamed = sample
        renamed.sessionID = "renamed"
        bytes = []
        renamed.withSessionIDBytes { bytes = Array($0) }
        #expect(bytes == Array("renamed".utf8) && renamed.cmcd.sessionID == "abc-2")
        // An empty or over-long id is no session id.
        #expect(reasons(parse(cloudFrontLine(query: "CMCD=bl%3D100%2Csid%3D%22%22")).outcomes) == [.noSessionID])
        let long = String(repeating: "x", count: 65)
        #expect(reasons(parse(cloudFrontLine(query: "CMCD=bl%3D100%2Csid%3D%22\(long)%22")).outcomes) == [.noSessionID])
        // An id with an escape takes the general path and is a string of its own there.
        let escaped = try #require(samples(parse(cloudFrontLine(query: "CMCD=sid%3D%22a%5C%22b%22")).outcomes).first)
        #expect(escaped.sessionID == "a\"b")
    }

    /// A player that leaves a `?` unencoded in a value still has its record read: in
    /// `cs-uri-query` (a query string, no URL before it) a `?` is part of a value.
    @Test func aLiteralQuestionMarkInTheQueryIsPartOfAValue() throws {
        let (outcomes, stats) = parse(cloudFrontLine(query: "CMCD=bl%3D2100%2Cnor%3D%22seg_2.ts?part%3D1%22%2Cot%3Dv%2Csid%3D%22q-1%22"))
        let sample = try #require(samples(outcomes).first)
        #expect(stats.skippedTotal == 0)
        #expect(sample.sessionID == "q-1" && sample.bufferLength == 2100 && sample.objectType == .video)
        #expect(sample.cmcd.nextObjectRequests == ["seg_2.ts?part=1"])
    }

    @Test func epochNumbers() {
        func parse(_ text: String, scale: Int64 = 1000) -> Int64? {
            var copy = text
            return copy.withUTF8 { RecordParser.parseEpochNumber($0, scale: scale) }
        }
        #expect(parse("1720015641.207") == 1_720_015_641_207)
        #expect(parse("1720015641.2") == 1_720_015_641_200)
        #expect(parse("1720015641.27") == 1_720_015_641_270)
        #expect(parse("1720015641.2079") == 1_720_015_641_207)  // below a millisecond: dropped
        #expect(parse("1720015641.207999999") == 1_720_015_641_207)
        #expect(parse("1720015641.2079999999") == nil)  // ten fraction digits
        #expect(parse("1720015641") == 1_720_015_641_000)
        #expect(parse("1720015641207", scale: 1) == 1_720_015_641_207)
        #expect(parse("1720015641.207", scale: 1) == nil)
        for bad in ["", ".5", "1720015641.", "1720015641.2x", "x1720015641", "-1720015641", "1234567890123456", "99999999999.999", "946684799.999"] {
            #expect(parse(bad) == nil, "\(bad)")
        }
        #expect(parse("946684800.000") == 946_684_800_000)
        // The usual shape (ten digits, a point, three) is read a word at a time: it must
        // agree with the digits' value, and refuse a non-digit anywhere.
        var state: UInt64 = 5
        func next(_ bound: UInt64) -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return (state >> 33) % bound
        }
        for _ in 0..<20_000 {
            let seconds = 1_000_000_000 + Int64(next(9_000_000_000))
            let ms = Int64(next(1000))
            var text = Array("\(seconds).\(String(ms + 1000).dropFirst())".utf8)
            let expected = RecordParser.plausibleEpochMs.contains(seconds * 1000 + ms) ? seconds * 1000 + ms : nil
            #expect(parse(String(decoding: text, as: UTF8.self)) == expected, "\(text)")
            let k = Int(next(14))
            guard k != 10 else { continue }
            text[k] = [UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: "a"), 0x80, UInt8(ascii: " ")][Int(next(5))]
            #expect(parse(String(decoding: text, as: UTF8.self)) == nil, "\(text)")
        }
    }

    @Test func headersWinOverTheQueryArgument() {
        let query = "CMCD=bl%3D100%2Csid%3D%22from-query%22"
        let headers = "Host:x%0ACMCD-Request:bl=5000%0Acmcd-session:sid=%22from-headers%22%0A"
        let s = samples(parse(cloudFrontLine(query: query, headers: headers)).outcomes)
        #expect(s.first?.sessionID == "from-headers")
        #expect(s.first?.bufferLength == 5000)
        // Without CMCD headers the query is used.
        #expect(samples(parse(cloudFrontLine(query: query, headers: "Host:x%0AAccept:*/*")).outcomes).first?.sessionID == "from-query")
    }

    @Test func nativeCloudFrontFieldsWhenSelected() throws {
        let fields = try CloudFrontFields(["timestamp", "x-edge-location", "cmcd-session-id", "cmcd-buffer-length", "cmcd-object-type", "cmcd-startup", "cmcd-buffer-starvation"])
        let line = ["1720015641.207", "LHR5-C1", "abc-123", "4200", "v", "-", "true"].joined(separator: "\t")
        let s = samples(parse(line, .init(fields: fields)).outcomes)
        #expect(s.first?.sessionID == "abc-123")
        #expect(s.first?.bufferLength == 4200)
        #expect(s.first?.objectType == .video)
        #expect(s.first?.cmcd.startup == false)
        #expect(s.first?.cmcd.bufferStarvation == true)
        #expect(s.first?.edgeLocation == "LHR5-C1")
    }

    @Test func severalLinesPerMessageWithTrailingNewlineAndCRLF() {
        let q = "CMCD=sid%3D%22a%22%2Cbl%3D1000"
        let message = cloudFrontLine(query: q) + "\r\n" + cloudFrontLine(time: "1720015642.000", query: q) + "\n\n"
        let (outcomes, stats) = parse(message)
        #expect(samples(outcomes).count == 2)
        #expect(stats.lines == 2)
    }

    @Test func skippedLinesAreCountedByReason() {
        let lines = [
            cloudFrontLine(),  // no CMCD
            cloudFrontLine(query: "CMCD=bl%3D100"),  // no session id
            cloudFrontLine(query: "CMCD=sid%3D%22a"),  // its only member unreadable: dropped, so no session id
            cloudFrontLine(query: "CMCD=" + (0..<200).map { "k\($0)%3D1" }.joined(separator: "%2C")),  // malformed: too many keys
            cloudFrontLine(query: "CMCD=sid%3D%22a%22%2Cv%3D3"),  // v3
            cloudFrontLine(time: "yesterday", query: "CMCD=sid%3D%22a%22"),
            cloudFrontLine(time: "99", query: "CMCD=sid%3D%22a%22"),  // implausible time
            "1720015641.207\tonly two fields",
            cloudFrontLine(query: "CMCD=sid%3D%22a%22") + "\textra",
            cloudFrontLine(query: "CMCD=sid%3D%22ok%22"),
        ]
        let (outcomes, stats) = parse(lines.joined(separator: "\n"))
        #expect(reasons(outcomes) == [.noCMCD, .noSessionID, .noSessionID, .malformedCMCD, .unsupportedVersion, .badTimestamp, .badTimestamp, .fieldCount, .fieldCount])
        #expect(samples(outcomes).map(\.sessionID) == ["ok"])
        #expect(stats.skipped[.fieldCount] == 2 && stats.skippedTotal == 9 && stats.samples == 1 && stats.lines == 10)
        // The details go into dead-letter headers: they say what was wrong.
        let details = outcomes.compactMap { outcome -> String? in
            if case .skipped(.fieldCount, let detail) = outcome { return detail }
            return nil
        }
        #expect(details == ["expected 10 TAB-separated fields, found 2", "expected 10 TAB-separated fields, found 11+"])
    }

    @Test func overlongLinesAreSkippedUnread() {
        let long = cloudFrontLine(query: "CMCD=sid%3D%22a%22&pad=" + String(repeating: "x", count: 70_000))
        let outcomes = parse(long).outcomes
        #expect(reasons(outcomes) == [.lineTooLong])
        if case .skipped(_, let detail)? = outcomes.first {
            #expect(detail == "line of \(long.utf8.count) bytes exceeds 65536")
        }
    }

    @Test func hostileEdgeLocationIsBoundedAndPrintable() {
        let s = samples(parse(cloudFrontLine(query: "CMCD=sid%3D%22a%22", edge: "EVIL\u{1}\"," + String(repeating: "Z", count: 200))).outcomes)
        let edge = try? #require(s.first?.edgeLocation)
        #expect(edge?.count == 64)
        #expect(edge?.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F } == true)
    }

    @Test func fieldListIsValidated() {
        #expect(throws: CloudFrontFields.InvalidFieldList.self) { try CloudFrontFields(["c-ip", "cs-uri-query"]) }
        #expect(throws: CloudFrontFields.InvalidFieldList.self) { try CloudFrontFields(["timestamp", "cs-uri-querry"]) }
        #expect(throws: CloudFrontFields.InvalidFieldList.self) { try CloudFrontFields(["timestamp", "cs-uri-query", "timestamp"]) }
        #expect(throws: CloudFrontFields.InvalidFieldList.self) { try CloudFrontFields(["timestamp", "c-ip"]) }
        #expect((try? CloudFrontFields(CloudFrontFields.defaultNames)) != nil)
    }

    @Test func jsonRecords() {
        let text = """
            {"timestamp":1720015641.207,"edge_location":"IAD89-P1","cmcd":{"sid":"j1","bl":3000,"ot":"v","bs":true}}
            {"time":"2024-07-03T14:07:21.207Z","sid":"j2","bl":[3000],"su":true,"sc-status":"206"}
            {"ts":1720015641207,"sid":"j3","cmcd_unknown":1}
            [{"timestamp":1720015641207,"sid":"j4"},{"timestamp":1720015641207,"sid":"j5"}]
            {"timestamp":1720015641207,"cmcd":"bl=100,sid=\\"j6\\""}
            {"timestamp":"soon","sid":"bad"}
            {"sid":"no-time"}
            not json
            {"timestamp":1720015641207,"bl":100}
            """
        let (outcomes, _) = parse(text, .init(format: .json))
        let s = samples(outcomes)
        #expect(s.map(\.sessionID) == ["j1", "j2", "j3", "j4", "j5", "j6"])
        #expect(s.allSatisfy { $0.time == 1_720_015_641_207 })
        #expect(s[0].bufferLength == 3000 && s[0].cmcd.bufferStarvation && s[0].edgeLocation == "IAD89-P1")
        #expect(s[1].cmcd.startup && s[1].httpStatus == 206)
        #expect(reasons(outcomes) == [.badTimestamp, .badTimestamp, .malformedJSON, .noSessionID])
    }

    @Test func eventModeLines() {
        let text = """
            bl=(0),cid="c",e=t,sid="e1",sta=s,su,ts=1764752400000,v=2
              bl=(6000),e=t,msd=812,sid="e1",sta=p,ts=1764752430000,v=2
            e=t,sid="e1",v=2
            CMCD=e%3Dt%2Csid%3D%22e2%22%2Cts%3D1764752460000%2Cv%3D2
            """
        let (outcomes, _) = parse(text, .init(format: .cmcd))
        let s = samples(outcomes)
        #expect(s.map(\.sessionID) == ["e1", "e1", "e2"])
        #expect(s[1].cmcd.mediaStartDelay == 812 && s[1].time == 1_764_752_430_000)
        #expect(reasons(outcomes) == [.badTimestamp])
    }

    @Test func randomLinesNeverCrashTheParser() {
        var state: UInt64 = 7
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        let pieces = [
            "\t", "-", "CMCD=", "%22", "%2C", "%3D", "sid", "bl", "1720015641.207", "{", "}", "\"", ",", "=", "(", ")", "%", "%25", "\u{0}", "é",
            "99999999999999999999", ".", "%3D99999999999999999",
        ]
        for format in RecordFormat.allCases {
            var parser = RecordParser(configuration: .init(format: format))
            for _ in 0..<5_000 {
                let line = (0..<Int(next() % 30)).map { _ in pieces[Int(next() % UInt64(pieces.count))] }.joined()
                parser.parse(message: line) { _ in }
            }
            #expect(parser.statistics.lines > 0)
        }
    }

    /// The fields are found 64 bytes at a time, the last bytes as an overlapping block: lines
    /// of every length up to 299 (twelve of each, with up to twelve TABs at random places)
    /// split as a byte-by-byte split does (too few and too many fields included), each line
    /// in an allocation of exactly its length.
    @Test func fieldsAreFoundWhereverTheTABsFall() {
        var state: UInt64 = 5
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        var parser = RecordParser()
        var checked = 0
        for length in 0..<300 {
            for _ in 0..<12 {
                var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: length)
                let tabs = Int(next() % 13)
                for _ in 0..<tabs where length > 0 { bytes[Int(next() % UInt64(length))] = 0x09 }
                // A readable line when there are ten fields: the time first and a CMCD query.
                let fields = bytes.split(separator: 0x09, omittingEmptySubsequences: false)
                let line: [UInt8]
                if fields.count == 10 {
                    var f = fields.map(Array.init)
                    f[0] = Array("1720015641.207".utf8)
                    f[5] = Array("EDGE\(length)".utf8)
                    f[8] = Array("CMCD=sid%3D%22s\(length)%22%2Cbl%3D\(f[8].count)".utf8)
                    line = Array(f.joined(separator: [0x09]))
                } else {
                    line = bytes
                }
                let expected = line.split(separator: 0x09, omittingEmptySubsequences: false)
                let copy = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: line.count)
                _ = copy.initialize(from: line)
                var outcome: RecordOutcome?
                parser.parse(line: UnsafeBufferPointer(copy)) { outcome = $0 }
                copy.deallocate()
                switch outcome {
                case .sample(let s)?:
                    #expect(expected.count == 10)
                    #expect(s.edgeLocation.map { Array($0.utf8) } == Array(expected[5]))
                    #expect(s.sessionID == "s\(length)")
                    #expect(s.bufferLength == Int64(String(decoding: expected[8], as: UTF8.self).split(separator: "D").last!))
                    checked += 1
                case .skipped(.fieldCount, let detail)?:
                    #expect(expected.count != 10, "\(detail)")
                    #expect(detail.hasPrefix("expected 10 TAB-separated fields, found \(min(expected.count, 11))"), "\(detail)")
                default:
                    Issue.record("\(expected.count) fields gave \(String(describing: outcome))")
                }
            }
        }
        #expect(checked > 100)
    }

    /// `time-taken` is read without a string conversion when it is plain digits; the result
    /// must be the double `Double(String)` gives, and anything else must fall back to it.
    @Test(arguments: [
        "0.213", "0", "12", "0.1", "0.3", "1.005", "123456789.123456", "0.000001", "999999999999999", "9999999999999999",
        "1e3", "-1", ".5", "5.", "0.2.1", "inf", "nan", "0x10", "", "00.100", "123456789012.345", "123456789012345678901234",
        "99999999999999999999.5", "0.12345678901234567",
    ])
    func secondsAreReadExactly(_ text: String) {
        var copy = text
        let parsed = copy.withUTF8 { RecordParser.parseSeconds($0) }
        let expected = Double(text).flatMap { $0.isFinite && $0 >= 0 ? $0 : nil }
        #expect(parsed == expected, "\(text)")
    }

    @Test func randomSecondsAreReadExactly() {
        var state: UInt64 = 11
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        for _ in 0..<20_000 {
            let whole = String(next() % 100_000)
            let fraction = String(next() % 1_000_000_000).prefix(Int(next() % 10))
            let text = fraction.isEmpty ? whole : whole + "." + fraction
            var copy = text
            #expect(copy.withUTF8 { RecordParser.parseSeconds($0) } == Double(text), "\(text)")
        }
    }

    /// Repeated content ids come out as one shared string; the parser's results do not
    /// depend on whether a content id was cached.
    @Test func contentIDsAreSharedAcrossRecords() {
        let line = { (sid: String, cid: String) in
            "1720015641.207\t203.0.113.45\t200\tGET\t/v/1.ts\tIAD89-P1\tid\t0.2\tCMCD=bl%3D2000%2Ccid%3D%22\(cid)%22%2Csid%3D%22\(sid)%22\t-"
        }
        var parser = RecordParser()
        var cids: [String] = []
        for (sid, cid) in [("s1", "a-long-content-identifier-1"), ("s2", "a-long-content-identifier-1"), ("s3", "another-content-id-22"), ("s4", "a-long-content-identifier-1")] {
            parser.parse(message: line(sid, cid)) { if case .sample(let s) = $0 { cids.append(s.contentID ?? "-") } }
        }
        #expect(cids == ["a-long-content-identifier-1", "a-long-content-identifier-1", "another-content-id-22", "a-long-content-identifier-1"])
    }
}
