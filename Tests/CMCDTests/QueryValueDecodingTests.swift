import Foundation
import SentinelTestSupport
import Testing

@testable import CMCD

/// The `CMCD=` value read as it stands (`CMCDPayload(typedFromQueryValue:)`) must give exactly
/// what percent-decoding then decoding gives, or nothing (and the general path decides).
struct QueryValueDecodingTests {
    /// The fast reader's payload, or nil when it leaves the value to the general path.
    static func fast(_ value: String) -> CMCDPayload? {
        var copy = value
        var strings = InternedStrings(capacity: 16)
        return copy.withUTF8 { CMCDPayload(typedFromQueryValue: $0, strings: &strings) }
    }

    /// The general path: the value URL-decoded, then decoded in full.
    static func general(_ value: String) -> Result<CMCDPayload, CMCDDecodingError> {
        var copy = value
        var buffers = CMCDDecoder.DecodingBuffers(internedStrings: 0)
        return copy.withUTF8 { bytes in
            Result { () throws(CMCDDecodingError) in try CMCDDecoder.decodeQueryValue(bytes, typedOnly: false, buffers: &buffers) }
        }
    }

    /// Whether the fast reader agrees with the general path; true when it declines.
    static func agree(_ value: String) -> Bool {
        guard let fast = fast(value) else { return true }
        guard case .success(let full) = general(value) else { return false }
        return TypedDecodeTests.typedViews(fast) == TypedDecodeTests.typedViews(full) && fast.entries == full.entries
            && fast.ignored == full.ignored
    }

    @Test(arguments: [
        // CloudFront's usual form, and the benchmark's.
        "bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22faec5fc2-ac30-11ea-bb37-0242ac130002%22%2Cd%3D4004%2Cmtp%3D25400%2Cot%3Dv%2Crtp%3D15000%2Csf%3Dd%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22%2Cst%3Dv%2Ctb%3D6000",
        "bl%3d21300%2cbr%3d3200%2csid%3d%22abc%22",  // lower-case hex
        #"bl=21300,br=3200,sid="abc",su"#,  // not encoded at all
        "sid%3D%22a%22%2Cv%3D2%2Csta%3Dp%2Cmsd%3D1200",
        "su%2Cbs%3D%3F0%2Cnr%3D%3F1%2Cpr%3D2",  // `?0` stays literal in a query: `%3F` is left to the general path
        "su,bs,nr,ot=m,e=ps,sid=\"x\"",
        "com.example-key%3D%22v%22%2Csid%3D%22s%22%2Cnor%3D%22seg.m4s%22",
        "ot%3Dzz%2Csid%3D%22s%22",  // a token outside the allowed set clears the view, as in the general path
    ])
    func readsThePlainForms(_ value: String) {
        let accepted = ["bl%3D21300", "bl%3d21300", #"bl=21300"#, "sid%3D%22a%22", "su,bs", "com.example", "ot%3Dzz"]
        if accepted.contains(where: value.hasPrefix) { #expect(Self.fast(value) != nil, "\(value)") }
        #expect(Self.agree(value), "\(value)")
    }

    @Test(arguments: [
        "bl%253D21300%252Csid%253D%2522a%2522",  // double encoding
        "sid%3D%22a+b%22",  // `+` is a space in a form
        "sid%3D%22a%20b%22",  // another escape
        "sid%3D%22a%5C%22b%22",  // a backslash escape in the string
        "v%3D3%2Csid%3D%22a%22",  // unsupported version: the general path rejects the payload
        "bl%3D1%2C",  // trailing comma
        "bl%3D1%2C%20br%3D2",  // a space after the comma
        "br%3D(5000%3Bv%20320)%2Csid%3D%22a%22",  // an inner list
        "bl%3D1%3Bx%2Csid%3D%22a%22",  // parameters
        "pr%3D1.5%2Csid%3D%22a%22",  // a decimal
        "bl%3D%22x%22%2Csid%3D%22a%22",  // a string where an integer belongs
        "bl%3D1234567890123456",  // more digits than the plain reader takes
        "",
        "%",
        "bl%3",
        "sid%3D%22abc",  // unterminated string
        // The URL's own delimiters, which decide where the value ends.
        "su,bs=?0,nr=?1,sid=\"x\"",
        "sid%3D%22a?b%22",
        "sid%3D%22a#b%22",
        "sid%3D%22a&b%22",
        "ot%3Dv#x%2Csid%3D%22a%22",
        "ot%3Dv&x%2Csid%3D%22a%22",
        "sid%3D%22abcdefgh?%22",
    ])
    func leavesEverythingElseToTheGeneralPath(_ value: String) {
        #expect(Self.fast(value) == nil, "\(value)")
    }

    @Test func respectsTheLimits() {
        let limits = SFDictionaryParser.Limits()
        let many = (0...limits.maxMembers).map { "k\($0)%3D1" }.joined(separator: "%2C")
        #expect(Self.fast(many) == nil)
        let long = "sid%3D%22" + String(repeating: "a", count: limits.maxStringBytes + 1) + "%22"
        #expect(Self.fast(long) == nil)
        let longest = "sid%3D%22" + String(repeating: "a", count: limits.maxStringBytes) + "%22"
        #expect(Self.fast(longest) != nil)
        #expect(Self.agree(longest))
    }

    /// The table of encoded reserved keys: every reserved key of up to four letters, followed
    /// by `%3D` (`%2C` for boolean keys), is found with its packed code, length and separator,
    /// and nothing else is: not other letter runs, and not other bytes (random words, half of
    /// them made of the table's own pieces).
    @Test(.ownThread) func encodedKeysAreExactlyTheReservedOnes() {
        func word(_ text: String) -> UInt64 {
            var bytes = Array(text.utf8.prefix(8))
            while bytes.count < 8 { bytes.append(UInt8(ascii: "1")) }
            return bytes.withUnsafeBufferPointer { ByteWords.load($0.baseAddress!) }
        }
        let letters = (UInt8(ascii: "a")...UInt8(ascii: "z")).map { String(UnicodeScalar($0)) }
        var byLength = [letters]
        for _ in 1..<4 { byLength.append(byLength.last!.flatMap { k in letters.map { k + $0 } }) }
        var found = 0
        for key in byLength.joined() {
            let kind = CMCDKeys.kind(of: key)
            for (separator, encoded) in [(UInt8(ascii: "="), "%3D"), (UInt8(ascii: ","), "%2C")] {
                let known = QueryDictionaryReader.encodedKey(word(key + encoded))
                let expected = kind != nil && (kind == .boolean) == (separator == UInt8(ascii: ","))
                #expect((known != 0) == expected, "\(key)\(encoded)")
                guard known != 0 else { continue }
                found += 1
                #expect(known & 0xFFFF_FFFF == CMCDKeys.packedCode(key))
                #expect(Int(known >> 32 & 0xFF) == key.utf8.count + 3 && UInt8(truncatingIfNeeded: known >> 40) == separator)
                // Lower-case hex and literal separators are left to the byte-class reader.
                #expect(QueryDictionaryReader.encodedKey(word(key + encoded.lowercased())) == 0 || encoded == encoded.lowercased())
                #expect(QueryDictionaryReader.encodedKey(word(key + String(UnicodeScalar(separator)))) == 0)
            }
        }
        #expect(found == 49)
        var rng = SplitMix64(seed: 99)
        let pieces = Array("%3D2Cbldsimtpnorv=,".utf8)
        for round in 0..<200_000 {
            var x = rng.next()
            if round % 2 == 0 {
                x = (0..<8).reduce(0) { w, k in w | UInt64(pieces[Int(rng.next() % UInt64(pieces.count))]) << (8 * UInt64(k)) }
            }
            let known = QueryDictionaryReader.encodedKey(x)
            guard known != 0 else { continue }
            let length = Int(known >> 32 & 0xFF)
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: x >> (8 * UInt64($0))) }
            let key = String(decoding: bytes.dropLast(3), as: UTF8.self)
            #expect(CMCDKeys.packedCode(key) == known & 0xFFFF_FFFF && CMCDKeys.kind(of: key) != nil, "\(bytes)")
            #expect(bytes.suffix(3) == Array((CMCDKeys.kind(of: key) == .boolean ? "%2C" : "%3D").utf8), "\(bytes)")
        }
    }

    /// Quoted strings are scanned sixteen, then eight bytes at a time: every length around
    /// those blocks, with each byte the scan must stop at (and a few it must not) in every
    /// position, reads as the general path does, or is left to it.
    @Test(.ownThread) func stringsOfEveryLengthWithEveryStopByte() {
        let specials: [String] = ["\\", "?", "+", "#", "&", "%22", "%2C", "%25", "\"", ",", " ", "\u{7F}", "é", "\u{1}", "-", "~", ".", "_"]
        var declined = 0
        for length in 0...48 {
            let plain = String((0..<length).map { Character(UnicodeScalar(UInt8(ascii: "a") + UInt8($0 % 26))) })
            #expect(Self.fast("sid%3D%22\(plain)%22%2Cbl%3D100") != nil)
            for position in 0...length {
                for special in specials {
                    var text = plain
                    text.insert(contentsOf: special, at: text.index(text.startIndex, offsetBy: position))
                    for value in ["sid%3D%22\(text)%22%2Cbl%3D100", "bl%3D100%2Cnor%3D%22\(text)%22"] {
                        if Self.fast(value) == nil { declined += 1 }
                        #expect(Self.agree(value), "\(value)")
                    }
                }
            }
        }
        #expect(declined > 0)
    }

    /// Random dictionaries in random encodings: whatever the fast reader accepts, it reads as
    /// the general path does, and it accepts the common forms often enough to matter.
    @Test(.ownThread) func agreesOnRandomInput() {
        var rng = SplitMix64(seed: 2026)
        func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
        let keys = ["bl", "br", "sid", "cid", "ot", "su", "bs", "v", "nor", "sta", "pr", "d", "msd", "bsa", "sf", "st", "com.a-b", "X", "tb", "e"]
        let values = [
            "", "=1", "=0", "=-5", "=21300", "=\"abc\"", "=\"a b\"", "=\"\"", "=v", "=av", "=m", "=p", "=r", "=zz", "=?0", "=?1", "=1.5",
            "=(1 2)", "=1;a", "=\"a\\\"b\"", "=\"x%y\"", "=\"a+b\"", "=3", "=2", "=123456789012345", "=1234567890123456", "=*t",
            "=h", "=ll", "=\"seg_1.m4s\"", "=\"a!#$&'()*,b\"", "=\"~}|{`^]_\"", "=\"Ünï\"", "=\"abcdefghij klmnopqrstuvwxyz\"",
            "=\"abcdefgh\u{01}ijk\"", "=\"abcdefghijklmnop\"", "=\"abcdefghijklmno\\\"p\"",
            // Tokens around the word-at-a-time reader's edges: long, with other token
            // characters, upper case, and followed by parameters.
            "=tt", "=video", "=abcdef", "=a:b", "=a/b", "=Av", "=v1", "=k;x", "=av;y=1", "=ll*",
        ]
        // Members in the forms players send, each of the type its key takes.
        let plainMembers = [
            "bl=21300", "br=3200", "sid=\"abc\"", "cid=\"c-1\"", "ot=v", "ot=zz", "su", "bs=?0", "v=2", "v=1", "nor=\"seg_1.m4s\"",
            "sta=p", "pr=2", "d=4004", "msd=0", "bsa=3", "sf=h", "st=ll", "com.a-b=*t", "X=?1", "tb=-5", "e=ps", "sid=\"\"",
            "mtp=123456789012345", "bs", "nrr=\"0-99\"", "cid=\"abcdefghij klmnopqrstu\"", "nor=\"a!#$&'()*,b~}|{`^]_\"",
            "ot=av", "ot=tt", "ot=video", "sta=r", "sta=pp", "sf=d", "st=l", "st=lll", "ot=m",
        ]
        var accepted = 0
        let runs = 20_000
        for _ in 0..<runs {
            // Half the runs in the forms players send, half anything.
            let plain = rng.next() % 2 == 0
            let members = (0..<(1 + Int(rng.next() % 8))).map { _ in plain ? pick(plainMembers) : pick(keys) + pick(values) }
            var text = members.joined(separator: plain ? "," : pick([",", ",", ",", ", "]))
            if !plain, rng.next() % 20 == 0 { text += "," }
            // Encode the way clients and CDNs do, sometimes oddly.
            var encoded = ""
            let style = plain ? rng.next() % 5 : rng.next() % 6
            for ch in text {
                switch (ch, style) {
                case (_, 0): encoded.append(ch)  // not encoded
                case ("=", _): encoded += pick(["%3D", "%3D", "%3d", "="])
                case (",", _): encoded += pick(["%2C", "%2C", "%2c", ","])
                case ("\"", _): encoded += pick(["%22", "%22", "\""])
                case (" ", _): encoded += pick(["%20", "+", " "])
                case ("%", _): encoded += "%25"
                case ("+", _): encoded += "%2B"
                case (";", _): encoded += pick(["%3B", ";"])
                default: encoded.append(ch)
                }
            }
            if style == 5 {  // encoded twice
                encoded = encoded.replacingOccurrences(of: "%", with: "%25")
            }
            if Self.fast(encoded) != nil { accepted += 1 }
            #expect(Self.agree(encoded), "\(encoded)")
        }
        #expect(accepted > runs / 5, "the fast reader took \(accepted) of \(runs)")
    }

    /// A query that is the CMCD argument alone is read without searching it for the URL's
    /// delimiters; wherever they are, the result is the general path's.
    @Test func queriesWithDelimitersDecodeAsTheGeneralPathDoes() throws {
        let queries = [
            "CMCD=bl%3D21300%2Csid%3D%22a%22",
            "CMCD=bl%3D21300%2Csid%3D%22a%22&other=1",
            "CMCD=bl%3D21300%2Csid%3D%22a%22#frag",
            "CMCD=sid%3D%22a&b%22",
            "CMCD=sid%3D%22a#b%22",
            "CMCD=sid%3D%22a?b%22",
            "CMCD=sid%3D%22x%22?CMCD=sid%3D%22y%22",
            "CMCD=ot%3Dv&CMCD=sid%3D%22z%22",
            "CMCD=bs%3D?1%2Csid%3D%22a%22",
            "CMCD=sid%3D%22a%22%2Cot%3Dv#",
            "CMCD=",
            "CMCD=%",
        ]
        for query in queries {
            var copy = query
            var fastBuffers = CMCDDecoder.DecodingBuffers()
            var generalBuffers = CMCDDecoder.DecodingBuffers()
            let (fast, general) = copy.withUTF8 { bytes in
                (
                    Result { () throws(CMCDDecodingError) in
                        try CMCDDecoder.decodeQuery(bytes: bytes, allowBareValue: false, typedOnly: true, buffers: &fastBuffers)
                    },
                    Result { () throws(CMCDDecodingError) in
                        try CMCDDecoder.decodeQuery(bytes: bytes, allowBareValue: false, typedOnly: false, buffers: &generalBuffers)
                    }
                )
            }
            switch (fast, general) {
            case (.success(let a?), .success(let b?)):
                #expect(TypedDecodeTests.typedViews(a) == TypedDecodeTests.typedViews(b) && a.entries == b.entries, "\(query)")
            case (.success(nil), .success(nil)), (.failure, .failure):
                break
            default:
                Issue.record("\(query): \(fast) vs \(general)")
            }
        }
    }

    /// The full view of a fast-read payload is rebuilt from the kept (still encoded) text.
    @Test func rebuildsTheFullViewFromTheEncodedText() throws {
        let payload = try #require(Self.fast("sid%3D%22a%22%2Ccom.x-y%3D7%2Cot%3Dzz"))
        #expect(payload.entries.map(\.key) == ["sid", "com.x-y", "ot"])
        #expect(payload.ignored.map(\.key) == ["ot"])
        #expect(payload.objectType == nil)
    }

    /// A decoder lends a payload's storage to the next payload only once nothing holds the
    /// first: payloads still held keep their values whatever is decoded after them.
    @Test func storageIsReusedOnlyWhenFree() throws {
        var buffers = CMCDDecoder.DecodingBuffers(internedStrings: 0)
        func decode(_ value: String) throws -> CMCDPayload {
            var copy = "CMCD=" + value
            return try copy.withUTF8 { bytes in
                try #require(try CMCDDecoder.decodeQuery(bytes: bytes, allowBareValue: false, typedOnly: true, buffers: &buffers))
            }
        }
        func box(_ p: CMCDPayload) -> ObjectIdentifier { ObjectIdentifier(p.box) }
        var held: [CMCDPayload] = []
        var identities = Set<ObjectIdentifier>()
        for k in 0..<50 {
            let payload = try decode("bl%3D\(k * 100)%2Csid%3D%22s\(k)%22%2Cot%3Dv")
            identities.insert(box(payload))
            if k % 2 == 0 { held.append(payload) }  // every other one is kept
        }
        for (n, payload) in held.enumerated() {
            let k = n * 2
            #expect(payload.bufferLength?.value(for: nil) == Int64(k * 100) && payload.sessionID == "s\(k)" && payload.objectType == .video)
            #expect(payload.entries.map(\.key) == ["bl", "sid", "ot"])
        }
        #expect(identities.count == 26)  // 25 held, and one reused for every one let go
        // A value longer than the storage gets storage of its own; later short ones reuse it.
        let long = try decode("sid%3D%22" + String(repeating: "x", count: 60) + "%22%2Cnor%3D%22" + String(repeating: "y", count: 2000) + "%22")
        #expect(long.sessionID == String(repeating: "x", count: 60))
        let longBox = box(long)
        _ = consume long
        let short = try decode("bl%3D5%2Csid%3D%22t%22")
        #expect(box(short) == longBox && short.sessionID == "t" && short.bufferLength?.value(for: nil) == 5 && short.objectType == nil)
        #expect(short.entries.map(\.key) == ["bl", "sid"])
    }
}

