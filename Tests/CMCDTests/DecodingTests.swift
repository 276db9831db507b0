import SentinelTestSupport
import Testing

@testable import CMCD
import SentinelJSON

/// Decoding rules from the reference (section 1.3) and each transmission form.
struct DecodingTests {
    func json(_ p: CMCDPayload) -> String { JSONWriter.string(p.jsonValue()) }

    @Test func queryAcceptsFullURLQueryStringAndBareValue() throws {
        let encoded = "bl%3D21300%2Cot%3Dav%2Csid%3D%22s1%22"
        for input in ["https://cdn.example/seg.ts?foo=1&CMCD=\(encoded)#frag", "foo=1&CMCD=\(encoded)", "CMCD=\(encoded)", encoded] {
            let p = try CMCDDecoder.decodeQuery(input)
            #expect(p.sessionID == "s1", "\(input)")
            #expect(p.bufferLength?.value(for: .muxed) == 21300)
            #expect(p.objectType == .muxed)
        }
    }

    /// RFC 3986 allows a literal `?` in a query: in a query string it is part of a value, and
    /// only a URL's or path's first `?` begins the query.
    @Test func aLiteralQuestionMarkInAQueryStringIsPartOfAValue() throws {
        let encoded = "nor%3D%22seg_2.ts?part%3D1%22%2Csid%3D%22s1%22"
        for input in [
            "CMCD=\(encoded)", "foo=1&CMCD=\(encoded)", "https://cdn.example/seg.ts?CMCD=\(encoded)",
            "https://cdn.example/a=b/seg.ts?foo=1&CMCD=\(encoded)", "/a=b/seg.ts?CMCD=\(encoded)", "?CMCD=\(encoded)",
        ] {
            let p = try CMCDDecoder.decodeQuery(input)
            #expect(p.sessionID == "s1", "\(input)")
            #expect(json(p).contains(#""nor":"seg_2.ts?part=1""#), "\(input): \(json(p))")
        }
        // In a query string that is not the argument, a `?` is no boundary either.
        #expect(throws: CMCDDecodingError.self) { try CMCDDecoder.decodeQuery("a=1?CMCD=bl%3D100&b=2") }
    }

    @Test func queryToleratesDoubleAndTripleEncoding() throws {
        let once = "bl%3D100%2Csid%3D%22a%20b%22"
        let twice = "bl%253D100%252Csid%253D%2522a%2520b%2522"
        let thrice = "bl%25253D100%25252Csid%25253D%252522a%252520b%252522"
        for value in [once, twice, thrice] {
            let p = try CMCDDecoder.decodeQuery("CMCD=\(value)")
            #expect(p.sessionID == "a b")
            #expect(p.bufferLength?.components.first?.value == 100)
        }
    }

    @Test func queryFormDecodesPlusAsSpace() throws {
        let p = try CMCDDecoder.decodeQuery("CMCD=br%3D(5000%3Bv+320%3Ba)%2Csid%3D%22x%22")
        #expect(p.encodedBitrate?.value(for: .audio) == 320)
        #expect(p.encodedBitrate?.value(for: .video) == 5000)
    }

    @Test func queryWithoutCMCDArgumentIsReported() {
        #expect(throws: CMCDDecodingError.self) { try CMCDDecoder.decodeQuery("a=1&b=2") }
    }

    @Test func headersMergeCaseInsensitively() throws {
        let p = try CMCDDecoder.decodeHeaderLines("""
            Host: example.com
            cmcd-request: bl=2000,su
            CMCD-OBJECT: ot=v
            Cmcd-Session: sid="abc",v=2
            """)
        #expect(p.sessionID == "abc")
        #expect(p.startup)
        #expect(p.objectType == .video)
        #expect(p.version == 2)
    }

    @Test func headerLinesWithoutCMCDFail() {
        #expect(throws: CMCDDecodingError.self) { try CMCDDecoder.decodeHeaderLines("Host: a\nAccept: */*") }
    }

    @Test func bodyIgnoresSurroundingSpacesAndBlankLines() throws {
        let records = try CMCDDecoder.decodeBody("  e=t,sid=\"a\",ts=1764752400000,v=2  \n\n\te=ps,sta=p,sid=\"a\",ts=1764752401000,v=2\r\n")
        #expect(records.count == 2)
        #expect(records[1].state == .playing)
        #expect(records[0].timestamp == 1_764_752_400_000)
    }

    @Test func bodyReportsTheBadLine() {
        #expect {
            try CMCDDecoder.decodeBody("e=t,v=2\ne=t,sid=\"unterminated", strict: true)
        } throws: { error in
            "\(error)".contains("line 2")
        }
    }

    @Test func jsonObjectsDecodeWithTypes() throws {
        let payloads = try CMCDDecoder.decodeJSON(text: #"{"bs":true,"rtp":15000,"sid":"6e2f","ot":"v","br":[3000,128],"pr":1.5}"#)
        let p = try #require(payloads.first)
        #expect(p.bufferStarvation)
        #expect(p.requestedMaxThroughput == 15000)
        #expect(p.objectType == .video)
        #expect(p.playbackRate == 1.5)
        #expect(p.encodedBitrate?.components.count == 2)
        #expect(try CMCDDecoder.decodeJSON(text: #"[{"sid":"a"},{"sid":"b"}]"#).map(\.sessionID) == ["a", "b"])
    }

    @Test func wrongTypesAreIgnoredWithoutLosingTheRest() throws {
        let p = try CMCDPayload(raw: #"bl="lots",ot=zz,sid="s",br=3000,su=?0,d=1.5"#)
        #expect(p.bufferLength == nil)
        #expect(p.objectType == nil)
        #expect(p.objectDuration == nil)
        #expect(p.sessionID == "s")
        #expect(p.encodedBitrate?.components.first?.value == 3000)
        #expect(!p.startup)
        #expect(Set(p.ignored.map(\.key)) == ["bl", "ot", "d"])
        #expect(p["bl"] == nil)
        #expect(p.jsonValue(validOnly: true)["bl"] == nil)
    }

    @Test func lenientWhereRealPlayersAreSloppy() throws {
        let p = try CMCDPayload(raw: #"bs=true,su=false,sta="s",e="ps",sid="x""#)
        #expect(p.bufferStarvation)
        #expect(!p.startup)
        #expect(p.state == .starting)
        #expect(p.event == "ps")
        #expect(p.ignored.isEmpty)
    }

    @Test func versionAboveTwoRejectsThePayload() {
        #expect(throws: CMCDDecodingError.unsupportedVersion(3)) { try CMCDPayload(raw: #"sid="a",v=3"#) }
    }

    @Test func stringsKeepCommasAndEscapes() throws {
        let p = try CMCDPayload(raw: #"cid="a,b \"c\" \\ d",sid="s""#)
        #expect(p.contentID == #"a,b "c" \ d"#)
    }

    @Test func innerListsWithParameters() throws {
        let p = try CMCDPayload(raw: #"nor=("a.m4s" "b.m4s";r="0-99"),bl=(0;v 2000;a),ec=("E1" "E2"),v=2"#)
        #expect(p.nextObjectRequests == ["a.m4s", "b.m4s"])
        #expect(p.bufferLength?.value(for: .video) == 0)
        #expect(p.bufferLength?.value(for: .audio) == 2000)
        #expect(p.bufferLength?.value(for: nil) == 0, "untagged lookups take the limiting track")
        #expect(p.errorCodes == ["E1", "E2"])
        #expect(json(p).contains(#"{"value":"b.m4s","params":{"r":"0-99"}}"#))
    }

    @Test func v1NextObjectRequestIsPercentDecoded() throws {
        #expect(try CMCDPayload(raw: #"nor="..%2Fseg%2F3.m4v""#).nextObjectRequests == ["../seg/3.m4v"])
        #expect(try CMCDPayload(raw: #"nor=("..%2Fseg"),v=2"#).nextObjectRequests == ["..%2Fseg"])
    }

    @Test func customAndUnknownKeysAreKept() throws {
        let p = try CMCDPayload(raw: #"com.example-myKey=1,com.example-flag,zz=tok,sid="s""#)
        #expect(json(p) == #"{"com.example-myKey":1,"com.example-flag":true,"zz":"tok","sid":"s"}"#)
    }

    @Test(arguments: [
        #"sid="unterminated"#, "a=1,", "a=1,,b=2", "a=(1 2", "=1", "a=1 b=2", "a=?2", "a=1.2345",
        "a=1234567890123456", "a=\"caf\u{e9}\"", "a=\"tab\there\"", "a=1;", "(a)", "a=-", "a=:abc",
    ])
    func malformedSyntaxIsAnErrorWhenStrict(_ input: String) {
        #expect(throws: CMCDDecodingError.self) { try CMCDPayload(raw: input, strict: true) }
    }

    @Test func limitsBoundHostileInput() throws {
        let manyKeys = (0..<200).map { "k\($0)=1" }.joined(separator: ",")
        #expect(throws: CMCDDecodingError.self) { try CMCDPayload(raw: manyKeys) }  // lenient or not
        let longList = "a=(" + (0..<100).map(String.init).joined(separator: " ") + ")"
        #expect(throws: CMCDDecodingError.self) { try CMCDPayload(raw: longList, strict: true) }
        let longString = "sid=\"" + String(repeating: "x", count: 5000) + "\""
        #expect(throws: CMCDDecodingError.self) { try CMCDPayload(raw: longString, strict: true) }
        // Leniently, the member over a limit is left out alone.
        let lenient = try CMCDPayload(raw: longList + ",bl=100," + longString)
        #expect(lenient.bufferLength?.value(for: nil) == 100 && lenient.sessionID == nil)
        #expect(lenient.droppedMembers.map(\.key) == ["a", "sid"])
        // Over the spec's 64 characters: the key is ignored, the payload kept.
        let p = try? CMCDPayload(raw: "sid=\"" + String(repeating: "x", count: 65) + "\",bl=100")
        #expect(p?.sessionID == nil)
        #expect(p?.bufferLength != nil)
    }

    @Test(.ownThread) func randomBytesNeverCrashTheDecoder() {
        var rng = SplitMix64(seed: 42)
        let alphabet = Array("abz=,;()\" ?01-.:*%\\".utf8) + [0, 0xFF, 0x0A]
        for _ in 0..<20_000 {
            let length = Int(rng.next() % 40)
            let bytes = (0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            _ = bytes.withUnsafeBufferPointer { try? CMCDPayload(rawBytes: $0) }
            _ = bytes.withUnsafeBufferPointer { try? CMCDPayload(typedFrom: $0) }
            var buffers = CMCDDecoder.DecodingBuffers(internedStrings: 4)
            _ = bytes.withUnsafeBufferPointer { try? CMCDDecoder.decodeQuery(bytes: $0, allowBareValue: true, buffers: &buffers) }
            _ = bytes.withUnsafeBufferPointer { try? CMCDDecoder.decodeQuery(bytes: $0, allowBareValue: true, typedOnly: true, buffers: &buffers) }
        }
    }
}

