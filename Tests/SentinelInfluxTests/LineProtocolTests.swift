import CMCD
import CMCDDetection
import CMCDRecords
import SentinelJSON
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

    @Test func longValuesAreCut() throws {
        let long = String(repeating: "é", count: 400)
        var out: [UInt8] = []
        LineProtocol.appendTag("k", long, to: &out)
        let text = String(decoding: out, as: UTF8.self)
        #expect(text.utf8.count <= LineProtocol.maxValueBytes + 3)
        #expect(text.hasSuffix("é"), "cut at a character boundary")
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

    @Test func gzipRoundTripsThroughZlib() {
        let input = Array(String(repeating: "cloudfront_logs,cmcd_sid=s cmcd_bl=1i 1\n", count: 100).utf8)
        let compressed = Gzip.compress(input)
        #expect(compressed.count < input.count / 5)
        #expect(compressed.prefix(2) == [0x1f, 0x8b], "gzip magic")
    }
}
