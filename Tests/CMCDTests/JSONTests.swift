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
