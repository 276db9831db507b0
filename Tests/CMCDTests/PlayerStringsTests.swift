import Testing

@testable import CMCD

/// CMCD exactly as production players emit it, quoted from their own unit tests (or, where a
/// player's tests build the value at run time, from `shared/reference/player-behaviour.md`):
/// every member that can be read is kept, and one sloppy member never costs the others.
struct PlayerStringsTests {
    /// androidx/media `HlsChunkSourceTest`
    /// `getNextChunk_chunkSourceWithDefaultCmcdConfiguration_setsCmcdHttpRequestHeaders`.
    @Test func media3HeadersDecodeWhole() throws {
        let payload = try #require(
            try CMCDDecoder.decodeHeaders([
                ("CMCD-Object", "br=800,d=4000,ot=v,tb=800"),
                ("CMCD-Request", #"bl=0,dl=0,nor="..%2F3.mp4",nrr="0-",su"#),
                ("CMCD-Session", #"cid="mediaId",sf=h,sid="1b2f6c2e-3f1d-4f6e-9d27-5a1c3e9f0b7a",st=v"#),
            ]))
        #expect(payload.droppedMembers.isEmpty)
        #expect(payload.sessionID == "1b2f6c2e-3f1d-4f6e-9d27-5a1c3e9f0b7a" && payload.contentID == "mediaId")
        #expect(payload.startup && payload.bufferLength?.value(for: .video) == 0 && payload.objectType == .video)
        #expect(payload.nextObjectRequests == ["../3.mp4"])
    }

    /// The same test's custom data: `com.example.test-key4=5.0` in CMCD-Status,
    /// `key-2="stringValue"` in CMCD-Request, and `pr=1.25` at 1.25x.
    @Test func media3CustomDataAndPlaybackRate() throws {
        let payload = try #require(
            try CMCDDecoder.decodeHeaders([
                ("CMCD-Object", "br=800,d=4000,key-1=1,ot=v,tb=800"),
                ("CMCD-Request", #"bl=1000,dl=800,key-2="stringValue",nor="..%2F3.mp4",nrr="0-""#),
                ("CMCD-Session", #"cid="mediaId",com.example-key3=3,pr=1.25,sf=h,sid="s",st=v"#),
                ("CMCD-Status", "com.example.test-key4=5.0"),
            ]))
        #expect(payload.droppedMembers.isEmpty)
        #expect(payload.playbackRate == 1.25 && payload["com.example.test-key4"] == .bare(.decimal(5)))
    }

    /// Media3 passes the media item's id through as `cid`; ids are UTF-8 in real catalogues.
    @Test func utf8ContentIDIsKept() throws {
        let payload = try CMCDPayload(raw: "cid=\"Caf\u{e9} \u{30c6}\u{30b9}\u{30c8}\",sid=\"s\",bl=4000")
        #expect(payload.contentID == "Caf\u{e9} \u{30c6}\u{30b9}\u{30c8}" && payload.droppedMembers.isEmpty)
        #expect(throws: CMCDDecodingError.self) { try CMCDPayload(raw: "cid=\"Caf\u{e9}\",sid=\"s\"", strict: true) }
    }

    /// dash.js in low-latency catch-up sends the playback rate as JavaScript prints it
    /// (player-behaviour.md: `pr=1.0500013331200346`; issue 27: `pr=0.9900013331200346`).
    @Test(arguments: [("1.0500013331200346", 1.05), ("0.9900013331200346", 0.99), ("0.9995", 1.0), ("2.0004999", 2.0)])
    func dashjsPlaybackRateIsRounded(_ sent: String, _ expected: Double) throws {
        let payload = try CMCDPayload(raw: "bl=1500,pr=\(sent),sid=\"s\",st=l")
        #expect(payload.playbackRate == expected)
        #expect(payload.droppedMembers.isEmpty && payload.sessionID == "s")
        #expect(throws: CMCDDecodingError.self) { try CMCDPayload(raw: "pr=\(sent)", strict: true) }
    }

    /// The SVTA Common Media Library's (cmcd.js) serialisation test: double-encoded `nor`,
    /// `nrr`, custom string, integer, flag and token keys.
    @Test func commonMediaLibraryQuery() throws {
        let query =
            "CMCD=br%3D200%2Cd%3D325%2Cmtp%3D10000%2Cnor%3D%22..%252Ftesting%252F3.m4v%22%2Cnrr%3D%220-99%22%2Ccid%3D%22content-id%22%2Csid%3D%22session-id%22%2Cbs%2Ccom.example-hello%3D%22world%22%2Ccom.example-testing%3D1234%2Ccom.example-exists%2Ccom.example-token%3Ds"
        let payload = try CMCDDecoder.decodeQuery(query)
        #expect(payload.droppedMembers.isEmpty && payload.sessionID == "session-id" && payload.bufferStarvation)
        #expect(payload["com.example-token"] == .bare(.token("s")))
    }

    /// bitmovin-player-web-integrations `CmcdIntegration` test: custom keys with capitals
    /// (`com.example-myNumericKey`, as in the CTA-5004 example itself).
    @Test func bitmovinUpperCaseCustomKeys() throws {
        let payload = try CMCDPayload(raw: #"br=1000,com.example-myNumericKey=500,com.example-myStringKey="myStringValue",d=4004,tb=2000"#)
        #expect(payload.droppedMembers.isEmpty && payload["com.example-myNumericKey"] == .bare(.integer(500)))
    }

    /// THEOplayer web-connectors `CMCDPayloadUtils` test, "example 9": every token quoted
    /// (`ot="v"`, `sf="d"`, `st="v"`), and elsewhere in the same test `bs=false`.
    @Test func theoplayerQuotedTokens() throws {
        let payload = try CMCDPayload(
            raw: #"bl=21300,br=3200,bs,cid="faec5fc2-ac30-11ea-bb37-0242ac130002",d=4004,dl=18500,mtp=48100,nor="..%2F300kbps%2Ftrack.m4v",nrr="12323-48763",ot="v",pr=1.08,rtp=12000,sf="d",sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st="v",su,tb=6000"#)
        #expect(payload.droppedMembers.isEmpty)
        #expect(payload.objectType == .video && payload.streamingFormat == "d" && payload.streamType == "v" && payload.playbackRate == 1.08)
        #expect(try CMCDPayload(raw: "bs=false").bufferStarvation == false)
    }

    /// Pre-CML shaka-player v2 reports quoted tokens; early v1 players send `bs=false`.
    @Test func quotedTokensAndFalseLiterals() throws {
        let payload = try CMCDPayload(raw: #"e="ps",sid="s",sta="s",ts=1764752400000,v=2,bs=false,su=true"#)
        #expect(payload.state == .starting && payload.event == "ps" && !payload.bufferStarvation && payload.startup)
        #expect(payload.droppedMembers.isEmpty)
    }

    /// One unreadable member is left out alone, with its key and reason.
    @Test(arguments: [
        #"bl=21300,com.example-ver=1.2.3,sid="s""#, #"bl=21300,com.example-ver=1.2.3,sid="s",v=2"#,
        #"com.example-ver=1.2.3,bl=21300,sid="s""#,
    ])
    func oneBadMemberIsDroppedAlone(_ raw: String) throws {
        for payload in [try CMCDPayload(raw: raw), try raw.utf8CString.withUnsafeBufferPointer { chars in
            try chars.withMemoryRebound(to: UInt8.self) { try CMCDPayload(typedFrom: UnsafeBufferPointer(rebasing: $0.dropLast())) }
        }] {
            #expect(payload.sessionID == "s" && payload.bufferLength?.value(for: nil) == 21300)
            #expect(payload.droppedMembers.map(\.key) == ["com.example-ver"])
        }
    }

    /// Negative or absurd numbers are dropped as their member, not handed to the detectors.
    @Test func implausibleNumbersAreDropped() throws {
        for raw in [#"bl=-5000,br=3000,sid="s""#, #"bl=90000000,br=3000,sid="s""#] {
            let payload = try CMCDPayload(raw: raw)
            #expect(payload.bufferLength == nil && payload.encodedBitrate?.value(for: nil) == 3000)
            #expect(payload.droppedMembers.map(\.key) == ["bl"])
            let query = try CMCDDecoder.decodeQuery("CMCD=" + raw.replacingOccurrences(of: ",", with: "%2C").replacingOccurrences(of: "\"", with: "%22").replacingOccurrences(of: "=", with: "%3D"))
            #expect(query.bufferLength == nil && query.sessionID == "s")
        }
    }
}
