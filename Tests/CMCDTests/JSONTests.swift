import Testing

import SentinelJSON

struct JSONTests {
    @Test func roundTripsAndEscapes() throws {
        let text = #"{"a":[1,-2.5,true,null,"x\"y\\z\n\u0001é😀"],"b":{}}"#
        let value = try JSONParser.parse(text)
        #expect(JSONWriter.string(value) == #"{"a":[1,-2.5,true,null,"x\"y\\z\n\u0001é😀"],"b":{}}"#)
        #expect(JSONWriter.string(.string("line\u{2028}sep")) == #""line\u2028sep""#)
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "01", "\"\u{01}\"", "[1] x", "nul", "\"\\ud800\"", "1e", "-"])
    func rejectsInvalidJSON(_ text: String) {
        #expect(throws: JSONParser.ParseError.self) { try JSONParser.parse(text) }
    }

    /// Every kind of value as RFC 8259 text on one line, through both entry points.
    @Test func theWriterWritesOneLineOfRFC8259Text() {
        let cases: [(JSONValue, String)] = [
            (.null, "null"), (.bool(true), "true"), (.bool(false), "false"), (.int(0), "0"), (.int(-1), "-1"),
            (.int(Int64.max), "9223372036854775807"), (.int(Int64.min), "-9223372036854775808"), (.double(85.7), "85.7"), (.double(3), "3"),
            (.double(.nan), "null"), (.double(-0.0001), "-0.0001"), (.string(""), #""""#), (.string("plain"), #""plain""#),
            (.string("quote \" back \\ slash"), #""quote \" back \\ slash""#),
            (.string("line\nfeed\ttab\r\u{01}\u{1F}"), #""line\nfeed\ttab\r\u0001\u001f""#),
            (.string("sep \u{2028} \u{2029} é 🎬 \u{E2}"), #""sep \u2028 \u2029 é 🎬 \#u{E2}""#),
            (.array([]), "[]"), (.object([]), "{}"),
            (
                .object([("id", .string("b0f7")), ("details", .object([("drop_percent", .double(85.7)), ("list", .array([.int(1), .null]))]))]),
                #"{"id":"b0f7","details":{"drop_percent":85.7,"list":[1,null]}}"#
            ),
        ]
        for (value, text) in cases {
            var bytes: [UInt8] = []
            JSONWriter.write(value, into: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == text)
            #expect(JSONWriter.string(value) == text)
        }
    }

    @Test func boundsDepthAndSize() {
        #expect(throws: JSONParser.ParseError.self) { try JSONParser.parse(String(repeating: "[", count: 100) + String(repeating: "]", count: 100)) }
        let big = "[" + Array(repeating: "1", count: 5000).joined(separator: ",") + "]"
        #expect(throws: JSONParser.ParseError.self) { try JSONParser.parse(big) }
    }

    @Test func rfc3339FormatsAndParses() {
        #expect(RFC3339.format(milliseconds: 1_720_015_623_481) == "2024-07-03T14:07:03.481Z")
        #expect(RFC3339.format(milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(RFC3339.parse("2024-07-03T14:07:03.481Z") == 1_720_015_623_481)
        #expect(RFC3339.parse("2024-07-03T16:07:03.481+02:00") == 1_720_015_623_481)
        #expect(RFC3339.parse("yesterday") == nil)
        for ms in stride(from: Int64(946_684_800_000), to: 4_102_444_800_000, by: 86_400_000 * 37 + 12_345) {
            #expect(RFC3339.parse(RFC3339.format(milliseconds: ms)) == ms)
        }
    }
}
