import Foundation
import SentinelTestSupport
import Testing

@testable import CMCD
import SentinelJSON

/// The record parser's typed-only decode must agree with the full decode on every typed
/// view, on success and failure alike.
struct TypedDecodeTests {
    static func typedViews(_ p: CMCDPayload) -> String {
        let measures: [(String, CMCDMeasure?)] = [
            ("bl", p.bufferLength), ("br", p.encodedBitrate), ("tb", p.topBitrate), ("mtp", p.measuredThroughput),
            ("pb", p.playheadBitrate), ("tbl", p.targetBufferLength), ("bsa", p.starvationCount),
            ("bsd", p.starvationDuration), ("bsda", p.starvationDurationTotal),
        ]
        var parts = [
            "v=\(p.version)", "sid=\(p.sessionID ?? "-")", "cid=\(p.contentID ?? "-")", "ot=\(p.objectType?.rawValue ?? "-")",
            "sf=\(p.streamingFormat ?? "-")", "st=\(p.streamType ?? "-")", "sta=\(p.state?.rawValue ?? "-")", "e=\(p.event ?? "-")",
            "su=\(p.startup)", "bs=\(p.bufferStarvation)", "bg=\(p.backgrounded)", "nr=\(p.nonRendered)",
            "d=\(p.objectDuration.map(String.init) ?? "-")", "dl=\(p.deadline.map(String.init) ?? "-")",
            "rtp=\(p.requestedMaxThroughput.map(String.init) ?? "-")", "msd=\(p.mediaStartDelay.map(String.init) ?? "-")",
            "pt=\(p.playheadTime.map(String.init) ?? "-")", "sn=\(p.sequenceNumber.map(String.init) ?? "-")",
            "ts=\(p.timestamp.map(String.init) ?? "-")", "ltc=\(p.liveLatency.map(String.init) ?? "-")",
            "dfa=\(p.droppedFrames.map(String.init) ?? "-")", "pr=\(p.playbackRate.map { "\($0)" } ?? "-")",
        ]
        for (key, m) in measures {
            parts.append("\(key)=" + (m?.components.map { "\($0.value)\($0.objectType.map { ";" + $0.rawValue } ?? "")" }.joined(separator: " ") ?? "-"))
        }
        return parts.joined(separator: ",")
    }

    func agree(_ input: String) -> Bool {
        let full = Result { () throws(CMCDDecodingError) in try CMCDPayload(raw: input) }
        var copy = input
        let typed = copy.withUTF8 { b in Result { () throws(CMCDDecodingError) in try CMCDPayload(typedFrom: b) } }
        switch (full, typed) {
        case (.success(let f), .success(let t)):
            return Self.typedViews(f) == Self.typedViews(t) && f.entries == t.entries && f.ignored == t.ignored
        case (.failure(let a), .failure(let b)):
            if case .unsupportedVersion = a { return a == b }
            if case .syntax = a, case .syntax = b { return true }
            return false
        default:
            return false
        }
    }

    @Test func agreesOnTheVectorsRawInputs() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vectors/cmcd-vectors.json")
        guard case .array(let all) = try JSONParser.parse(try String(contentsOf: url, encoding: .utf8), limits: .init(maxDepth: 64, maxElements: 10_000_000)) else {
            Issue.record("bad vectors file")
            return
        }
        var checked = 0
        for v in all {
            guard case .string(let input)? = v["input"] else { continue }
            for line in input.split(separator: "\n") where !line.contains("CMCD=") {
                #expect(agree(String(line)), "\(line)")
                checked += 1
            }
        }
        #expect(checked > 150)
    }

    @Test(arguments: [
        #"bl=1000,bl="x""#, #"bl="x",bl=1000"#, "su,su=?0", "ot=v,ot=zz", #"sid="a",sid="b""#, "pr=1.5,pr=x",
        "bs=true,su=false", #"sta="p""#, "bl=(1;v 2;a),v=2", "v=3", "v=0,bl=1", "v=2,nor=(\"a\")", #"com.x-y=(1 2);p,bl=5"#,
        "a=1&", "bl=(1 2", #"sid="""#, "d=1.5,d=2",
    ])
    func agreesOnEdgeCases(_ input: String) {
        #expect(agree(input))
    }

    @Test(.ownThread) func agreesOnRandomInput() {
        var rng = SplitMix64(seed: 99)
        let pieces = [
            "bl", "sid", "ot", "su", "bs", "pr", "v", "=", ",", "(", ")", ";", "\"x\"", "1", "2.5", "?0", "av", "true", " ", "com.a-b", "nor",
            "bsa", "sta", "p", "3", "sf", "st", "h", "ll", "tt", "cid", "e", "-", "\"a\\\"b\"", "?1", "\t", "d", "zz", "x",
        ]
        for _ in 0..<20_000 {
            let input = (0..<Int(rng.next() % 12)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined()
            #expect(agree(input), "\(input)")
        }
    }

    /// `signals` gives what the individual views give.
    @Test(arguments: [
        "bl=(1000;v 200;a),ot=a,bsa=(2 7),bsd=(0 30),sta=r,msd=250,su,bs", "bl=(1000;v 200;a),ot=v", "bl=(1000 200)", "bl=500,ot=i",
        "ot=m", "", "bs=?0,su=?0,sta=p",
    ])
    func signalsAreTheViews(_ input: String) throws {
        let p = try CMCDPayload(raw: input)
        let s = p.signals
        #expect(s.objectType == p.objectType && s.bufferLength == p.bufferLength?.value(for: p.objectType))
        #expect(s.isMediaRequest == (p.objectType?.isMedia ?? true) && s.startup == p.startup && s.bufferStarvation == p.bufferStarvation)
        #expect(s.starvationCount == p.starvationCount?.maximum && s.starvationDuration == p.starvationDuration?.maximum)
        #expect(s.state == p.state && s.mediaStartDelay == p.mediaStartDelay)
        if input.hasPrefix("bl=(1000;v 200;a),ot=a") {
            #expect(s.bufferLength == 200 && s.starvationCount == 7 && s.starvationDuration == 30 && s.state == .rebuffering)
            #expect(s.mediaStartDelay == 250 && s.startup && s.bufferStarvation && s.isMediaRequest)
        }
    }

    /// The byte-level token tables agree with the enums and lists they are built from.
    @Test func tokenTablesMatchTheirTypes() throws {
        for ot in CMCDObjectType.allCases {
            #expect(CMCDObjectType(packedCode: try #require(CMCDKeys.packedCode(ot.rawValue))) == ot)
        }
        for state in CMCDPlayerState.allCases {
            #expect(CMCDPlayerState(packedCode: try #require(CMCDKeys.packedCode(state.rawValue))) == state)
        }
        #expect(CMCDKeys.allowedTokens(for: "sf") == ["d", "h", "e", "s", "o"])
        #expect(CMCDKeys.allowedTokens(for: "st") == ["v", "l", "ll"])
        #expect(CMCDKeys.allowedTokens(for: "ot") == Set(CMCDObjectType.allCases.map(\.rawValue)))
        #expect(CMCDKeys.allowedTokens(for: "e") == nil)
        for (input, expected) in [("sf=h", "h"), ("sf=zz", "-"), ("st=ll", "ll"), ("st=lll", "-")] {
            var copy = input
            let payload = try copy.withUTF8 { try CMCDPayload(typedFrom: $0) }
            #expect((payload.streamingFormat ?? payload.streamType ?? "-") == expected, "\(input)")
        }
    }

    /// Measures sent as inner lists keep every component (the payload stores the first
    /// apart from the others); a later value of the same key replaces all of them.
    @Test func innerListMeasuresKeepTheirComponents() throws {
        let cases: [(String, [Int64], audio: Int64?, maximum: Int64?)] = [
            ("bl=(2100;v 1800;a),ot=a", [2100, 1800], 1800, 2100),
            ("bl=(2100;v 1800;a),bl=500,ot=a", [500], 500, 500),
            ("bl=500,bl=(2100;v 1800;a),ot=a", [2100, 1800], 1800, 2100),
            ("bl=(2100;v 1800;a),br=(3000;v 128;a),bl=(700;v),ot=a", [700], 700, 700),
            ("bsa=(1;v 3;a),bl=(400;v),ot=v", [400], 400, 400),
        ]
        for (input, components, audio, maximum) in cases {
            for typed in [false, true] {
                var copy = input
                let payload = try copy.withUTF8 { bytes in
                    typed ? try CMCDPayload(typedFrom: bytes) : try CMCDPayload(rawBytes: bytes)
                }
                let bl = try #require(payload.bufferLength, "\(input)")
                #expect(bl.components.map(\.value) == components, "\(input)")
                #expect(payload.signals.bufferLength == bl.value(for: payload.objectType), "\(input)")
                if payload.objectType == .audio { #expect(bl.value(for: .audio) == audio && bl.maximum == maximum, "\(input)") }
            }
        }
        var copy = "bsa=(1;v 3;a),bsd=(10;v 250;a),br=(3000;v 128;a)"
        let payload = try copy.withUTF8 { try CMCDPayload(typedFrom: $0) }
        #expect(payload.signals.starvationCount == 3 && payload.signals.starvationDuration == 250)
        #expect(payload.encodedBitrate?.components.map(\.value) == [3000, 128])
        #expect(payload.convertedToLatest().starvationCount?.components.map(\.value) == [1, 3])
    }

    /// Shared strings: equal text gives the same string, other text is never confused with
    /// it, and the cache stays within its size whatever it is fed.
    @Test func internedStringsAreExact() {
        var strings = InternedStrings(capacity: 4)
        func intern(_ text: String) -> String {
            var copy = text
            return copy.withUTF8 { strings.string($0) }
        }
        var seen: [String: String] = [:]
        for i in 0..<2_000 {
            let text = "content-\(i % 37)-" + String(repeating: "x", count: i % 5)
            let shared = intern(text)
            #expect(shared == text)
            seen[text] = shared
        }
        #expect(intern("") == "")
        #expect(intern(String(repeating: "y", count: 300)) == String(repeating: "y", count: 300))
        #expect(seen.count == 185)
        // Texts that hash alike (same first and last eight bytes, same length) or that are
        // prefixes of one another stay apart.
        for _ in 0..<3 {
            for text in ["aaaaaaaa-1-bbbbbbbb", "aaaaaaaa-2-bbbbbbbb", "aaaaaaaa-1-bbbbbbb", "abc", "ab", "abcd", "", "a\u{0}"] {
                #expect(intern(text) == text)
            }
        }
    }
}
