import CMCD
import CMCDDetection
import CMCDRecords
import NIOCore
import SentinelJSON
import SentinelTestSupport
import Testing

@testable import SentinelInflux

/// Line protocol encoding: escaping per the protocol's rules, hostile strings made harmless.
struct LineProtocolTests {
    func line(_ sample: Sample) -> String {
        var out: [UInt8] = []
        InfluxPoints.append(sample, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    func sample(sid: String, cid: String?, edge: String?, cmcd: String) throws -> Sample {
        Sample(time: 1_720_015_623_481, sessionID: sid, contentID: cid, edgeLocation: edge, httpStatus: 200, timeTaken: 0.012, cmcd: try CMCDPayload(raw: cmcd))
    }

    @Test func aSegmentRequestIsOnePointWithIntegerFieldsAndMillisecondTime() throws {
        let text = line(try sample(sid: "s1", cid: "movie", edge: "IAD89-P1", cmcd: #"bl=21300,br=3200,d=4004,mtp=25400,ot=v,sf=h,st=v,tb=6000,su"#))
        #expect(
            text
                == "cloudfront_logs,cmcd_cid=movie,cmcd_ot=v,cmcd_sf=h,cmcd_sid=s1,cmcd_st=v,edge_location=IAD89-P1 cmcd_bl=21300i,cmcd_br=3200i,cmcd_tb=6000i,cmcd_mtp=25400i,cmcd_d=4004i,cmcd_v=1i,cmcd_su=true,time_taken=0.012,sc_status=200i 1720015623481\n"
        )
    }

    @Test func tagValuesEscapeCommasEqualsAndSpacesAndReplaceBackslashes() {
        var out: [UInt8] = []
        LineProtocol.appendTag("k", #"a,b=c d\"#, to: &out)
        #expect(String(decoding: out, as: UTF8.self) == #",k=a\,b\=c\ d?"#)
    }

    @Test func stringFieldsEscapeQuotesAndBackslashes() {
        var fields = LineProtocol.Fields()
        fields.string("summary", #"say "hi" \ bye\"#)
        #expect(String(decoding: fields.bytes, as: UTF8.self) == #"summary="say \"hi\" \\ bye\\""#)
    }

    @Test func controlCharactersCannotStartANewPoint() throws {
        let text = line(try sample(sid: "x\ny,z", cid: "c\r\nevil_measurement value=1i 0", edge: "e\tf", cmcd: "bl=100"))
        #expect(text.filter { $0 == "\n" }.count == 1, "one point, one line: \(text)")
        #expect(text.hasSuffix("1720015623481\n"))
        #expect(!text.contains("\r") && !text.contains("\t"))
    }

    /// The writer's pointer path writes what the array path does, and the longest point (every
    /// field, every viewer value at its cut, each byte escaped) fits the room it is given.
    @Test func thePointerPathWritesTheSamePointWithinItsRoom() throws {
        let escaped = String(repeating: ",", count: 1_000)
        let samples = [
            try sample(sid: "s1", cid: "movie", edge: "IAD89-P1", cmcd: #"bl=21300,br=3200,d=4004,mtp=25400,ot=v,sf=h,st=v,tb=6000,su"#),
            try sample(
                sid: escaped, cid: escaped, edge: escaped,
                cmcd: "bl=-9223372036854775808,br=9223372036854775807,tb=9223372036854775807,mtp=9223372036854775807,d=9223372036854775807,"
                    + "dl=9223372036854775807,rtp=9223372036854775807,msd=9223372036854775807,bsa=9223372036854775807,bsd=9223372036854775807,"
                    + "pr=1.2345678901234567,ot=v,sf=h,st=v,sta=r,su,bs,v=2"),
        ]
        for sample in samples {
            var array: [UInt8] = []
            InfluxPoints.append(sample, to: &array)
            let room = UnsafeMutablePointer<UInt8>.allocate(capacity: InfluxPoints.maxRequestPointBytes)
            room.initialize(repeating: 0, count: InfluxPoints.maxRequestPointBytes)
            defer { room.deallocate() }
            let count = InfluxPoints.write(sample, at: room)
            #expect(Array(UnsafeBufferPointer(start: room, count: count)) == array)
            #expect(count <= InfluxPoints.maxRequestPointBytes / 2, "\(count) bytes: the room has a margin of two")
        }
    }

    @Test func longValuesAreCut() throws {
        let long = String(repeating: "é", count: 400)
        var out: [UInt8] = []
        LineProtocol.appendTag("k", long, to: &out)
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.utf8.count <= LineProtocol.maxValueBytes + 3)
        #expect(text.hasSuffix("é"), "cut at a character boundary")
    }

    @Test func playerStateIsAStringFieldAndFlagsAreBooleans() throws {
        let text = line(try sample(sid: "s", cid: nil, edge: nil, cmcd: "bl=(0),bs,su,sta=r,v=2"))
        #expect(text.contains(" cmcd_bl=0i,cmcd_v=2i,cmcd_su=true,cmcd_bs=true,cmcd_sta=\"r\",time_taken=0.012,sc_status=200i "), "\(text)")
    }

    @Test func lowLatencyLiveIsTagged() throws {
        let text = line(try sample(sid: "s", cid: nil, edge: nil, cmcd: "bl=1,sf=d,st=ll,ot=v"))
        #expect(text.contains(",cmcd_sf=d,") && text.contains(",cmcd_st=ll "))
    }

    @Test func unknownStreamingFormatsAndTypesAreNotTags() throws {
        let text = line(try sample(sid: "s", cid: nil, edge: nil, cmcd: "bl=1,sf=zz,st=qq,ot=v"))
        #expect(!text.contains("cmcd_sf") && !text.contains("cmcd_st"))
        #expect(!text.contains("cmcd_cid") && !text.contains("edge_location"), "missing values are left out, not empty")
    }

    @Test func findingsCarryIdSummaryAndNumericDetails() {
        let finding = Finding(
            type: .bufferDrop, status: .firing, severity: .critical, sessionID: "s1", contentID: "m", edgeLocation: "FRA56-P3",
            startedAt: 1_000, detectedAt: 2_000, summary: #"Buffer dropped "85.7%""#,
            details: [("reference_bl_ms", .int(21000)), ("drop_percent", .double(85.7)), ("object_type", .string("av")), ("escalated", .bool(false))])
        var out: [UInt8] = []
        InfluxPoints.append(finding, to: &out)
        #expect(
            String(decoding: out, as: UTF8.self)
                == #"cmcd_anomalies,cmcd_cid=m,cmcd_sid=s1,edge_location=FRA56-P3,severity=critical,status=firing,type=buffer_drop id="\#(finding.id)",summary="Buffer dropped \"85.7%\"",started_at_ms=1000i,reference_bl_ms=21000i,drop_percent=85.7,object_type="av",escalated=false 2000"#
                + "\n")
    }

    /// The escaping rules, byte by byte, as the protocol states them: the model the writer's
    /// fast path (text appended as it is when nothing in it needs escaping) must agree with.
    static func modelEscaped(_ text: [UInt8], escaping: [UInt8], backslash: Bool) -> [UInt8] {
        var out: [UInt8] = []
        var written = 0
        for byte in text {
            if written >= LineProtocol.maxValueBytes, byte & 0xC0 != 0x80 { break }
            written += 1
            if byte < 0x20 || byte == 0x7F {
                out.append(UInt8(ascii: "?"))
            } else if byte == UInt8(ascii: "\\") {
                out += backslash ? [UInt8(ascii: "\\"), UInt8(ascii: "\\")] : [UInt8(ascii: "?")]
            } else {
                if escaping.contains(byte) { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
        }
        return out
    }

    @Test(.ownThread) func escapingAgreesWithTheRulesOnRandomText() {
        var rng = SystemRandomNumberGenerator()
        let contexts: [(LineProtocol.Context, [UInt8], Bool)] = [
            (.measurement, [UInt8(ascii: ","), UInt8(ascii: " ")], false),
            (.key, [UInt8(ascii: ","), UInt8(ascii: "="), UInt8(ascii: " ")], false),
            (.stringField, [UInt8(ascii: "\"")], true),
        ]
        // Mostly plain id characters, sometimes one of every kind of special byte, any length
        // around the cut.
        let plain = Array("abcXYZ019-_.:/~".utf8)
        let special: [UInt8] = [0, 0x09, 0x0A, 0x1F, 0x20, 0x22, 0x2C, 0x3D, 0x5C, 0x7F, 0xC3, 0xA9, 0xE2, 0x80, 0xA8]
        for round in 0..<20_000 {
            let length = round % 10 == 0 ? Int.random(in: 250...270, using: &rng) : Int.random(in: 0...40, using: &rng)
            let text: [UInt8] = (0..<length).map { _ in
                Int.random(in: 0..<20, using: &rng) == 0 ? special.randomElement(using: &rng)! : plain.randomElement(using: &rng)!
            }
            for (context, escaping, backslash) in contexts {
                var out: [UInt8] = [1, 2]
                text.withUnsafeBufferPointer { LineProtocol.appendEscaped($0, context, to: &out) }
                #expect(Array(out.dropFirst(2)) == Self.modelEscaped(text, escaping: escaping, backslash: backslash), "\(text) \(context)")
            }
        }
    }

    @Test func integersAndDoublesAreWrittenAsBefore() {
        var rng = SystemRandomNumberGenerator()
        var integers: [Int64] = [0, 1, -1, 9, 10, 99, 100, .max, .min, .max - 1, .min + 1, 1_720_015_623_481]
        for _ in 0..<20_000 { integers.append(Int64.random(in: .min ... .max, using: &rng) >> Int64.random(in: 0...63, using: &rng)) }
        let room = UnsafeMutablePointer<UInt8>.allocate(capacity: 64)
        defer { room.deallocate() }
        for n in integers {
            var out: [UInt8] = []
            LineProtocol.appendDecimal(n, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(n))
            // The pointer path (digits written in place) writes the same, and nothing beyond.
            room.initialize(repeating: 0xFF, count: 64)
            var cursor = PointCursor(room)
            LineProtocol.appendDecimal(n, to: &cursor)
            #expect(Array(UnsafeBufferPointer(start: room, count: cursor.count)) == out)
            #expect(room[cursor.count] == 0xFF)
        }
        // Thousandths (CloudFront's time-taken) take the fast path; anything else the general one.
        var doubles: [Double] = [0, -0.0, 0.001, 0.0005, 0.213, 1.5, -0.5, -2.25, 12.0, 999_999_999.999, 1e9, 1e-7, 1.0 / 3, 0.1 + 0.2, 6.02e23, -1e-300]
        for _ in 0..<20_000 {
            doubles.append(Double(Int64.random(in: -2_000_000_000_000...2_000_000_000_000, using: &rng) >> Int64.random(in: 0...40, using: &rng)) / 1000)
            doubles.append(Double.random(in: -1e6...1e6, using: &rng))
        }
        for d in doubles {
            var out: [UInt8] = []
            LineProtocol.appendDouble(d, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == JSONWriter.formatDouble(d), "\(d)")
        }
    }

    @Test func gzipRoundTripsThroughZlib() throws {
        let input = Array(String(repeating: "cloudfront_logs,cmcd_sid=s cmcd_bl=1i 1\n", count: 100).utf8)
        let compressed = Array(try #require(Gzip.compress(ByteBuffer(bytes: input))).readableBytesView)
        #expect(compressed.count < input.count / 5)
        #expect(compressed.prefix(2) == [0x1f, 0x8b], "gzip magic")
    }
}

extension LineProtocolTests {
    /// A cohort's closed window is one `cmcd_qoe` point: the group and the dimensions as tags
    /// (escaped like every viewer's value), the series as fields, the window's start as time.
    @Test func aCohortWindowIsOneQoEPoint() {
        var window = CohortWindow()
        window.start = 1_720_015_620_000
        window.requests = 40
        window.sessions = 10
        window.stalledSessions = 2
        window.watchedMs = 100_000
        window.stalledMs = 5_000
        window.startups = [900, 1_100, 4_000]
        var out: [UInt8] = []
        InfluxPoints.append(CohortRollup(scope: [(.edgeLocation, "FRA56-C2"), (.contentID, "news, live")], window: window), to: &out)
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.hasPrefix(#"cmcd_qoe,cohort=edge_location+content_id,content_id=news\,\ live,edge_location=FRA56-C2 sessions=10i,requests=40i,"#), "\(text)")
        #expect(text.contains(",rebuffer_ratio=0.05,starving_share=0.2,"), "\(text)")
        #expect(text.contains(",startup_p50_ms=1100,startup_p95_ms=4000"), "\(text)")
        #expect(text.contains(",error_share=0,"), "no request failed: the share is 0, and written")
        #expect(!text.contains("average_bitrate_kbps"), "no bitrate was reported: nothing is written")
        #expect(text.hasSuffix(" 1720015620000\n"))
    }
}

/// The writer's batches reuse the memory of written ones.
struct InfluxBatchBufferTests {
    @Test func aWrittenBatchsBufferIsReusedEmptyByTheNextBatch() {
        var state = InfluxWriter.State()
        state.filling.write(maxBytes: 100_000) { target in
            target.update(repeating: UInt8(ascii: "x"), count: 100_000)
            return 100_000
        }
        #expect(state.filling.points == 1 && state.filling.length == 100_000)
        state.seal()
        #expect(state.sealed.first?.bytes.readableBytes == 100_000, "sealed, a batch holds its lines alone")
        #expect(state.filling.bytes.readableBytes == 0 && state.filling.bytes.capacity >= 100_000, "a new buffer reserves what the largest batch took")
        var written = state.sealed.removeFirst().bytes
        let memory = written.withUnsafeReadableBytes { $0.baseAddress }
        state.recycle(&written)
        #expect(written.readableBytes == 0 && written.capacity == 0, "the written batch gives its buffer up")
        state.filling.write(maxBytes: 10) { target in
            target.initialize(to: 1)
            return 1
        }
        state.seal()
        #expect(state.filling.bytes.readableBytes == 0)
        #expect(state.filling.bytes.withUnsafeReadableBytes { $0.baseAddress } == memory, "the same memory, not a copy")
        #expect(state.sealed.map { Array($0.bytes.readableBytesView) } == [[1]])
    }
}
