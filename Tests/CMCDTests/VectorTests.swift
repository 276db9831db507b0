import Foundation
import Testing

@testable import CMCD
import SentinelJSON

/// The upstream CMCD test vectors (CML, Shaka, hls.js, the CTA-5004-B examples, RFC 8941
/// dictionaries): every `decode` vector must decode to exactly the expected object.
struct VectorTests {
    struct Vector: Sendable, CustomTestStringConvertible {
        let index: Int
        let form: String
        let input: JSONValue
        let options: JSONValue?
        let expected: JSONValue
        let note: String
        var testDescription: String { "#\(index) \(form): \(note.prefix(70))" }
    }

    static let decodeVectors: [Vector] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Vectors/cmcd-vectors.json")
        let text = try! String(contentsOf: url, encoding: .utf8)
        guard case .array(let all) = try! JSONParser.parse(text, limits: .init(maxDepth: 64, maxElements: 10_000_000)) else {
            fatalError("vectors file is not an array")
        }
        return all.enumerated().compactMap { index, v in
            guard v["direction"] == .string("decode") else { return nil }
            return Vector(
                index: index, form: v["form"]!.stringValue!, input: v["input"]!, options: v["options"],
                expected: v["expected"]!, note: v["note"]?.stringValue ?? "")
        }
    }()

    @Test func thereAreDecodeVectorsOfEveryForm() {
        let forms = Set(Self.decodeVectors.map(\.form))
        #expect(forms == ["raw", "query", "header", "body"])
        #expect(Self.decodeVectors.count >= 100)
    }

    /// Every vector decodes as it says under `strict`, today's RFC 8941 behaviour (the three
    /// error vectors fail); leniently, every vector that decodes gives the same object, and
    /// an error vector keeps what it can, reporting what it left out.
    @Test(arguments: decodeVectors)
    func decodesVectorStrictly(_ vector: Vector) throws {
        try check(vector, strict: true)
    }

    @Test(arguments: decodeVectors)
    func decodesVectorLeniently(_ vector: Vector) throws {
        if vector.expected["error"] == .bool(true) {
            let payload = try CMCDPayload(raw: vector.input.stringValue!)
            #expect(!payload.ignored.isEmpty, "nothing reported as left out of \(vector.input)")
            return
        }
        try check(vector, strict: false)
    }

    func check(_ vector: Vector, strict: Bool) throws {
        let convert = vector.options?["convertToLatest"] == .bool(true)
        let tokensAsObjects = vector.options?["useSymbol"] == .bool(false)
        func render(_ p: CMCDPayload) -> JSONValue {
            (convert ? p.convertedToLatest() : p).jsonValue(tokensAsObjects: tokensAsObjects)
        }
        let wantsError = vector.expected["error"] == .bool(true)
        let actual: Result<JSONValue, CMCDDecodingError>
        do {
            switch vector.form {
            case "raw":
                actual = .success(render(try CMCDPayload(raw: vector.input.stringValue!, strict: strict)))
            case "query":
                actual = .success(render(try CMCDDecoder.decodeQuery(vector.input.stringValue!, strict: strict)))
            case "header":
                let headers = vector.input.objectMembers!.map { (name: $0.key, value: $0.value.stringValue!) }
                let payload = try CMCDDecoder.decodeHeaders(headers, strict: strict)
                actual = .success(payload.map(render) ?? .object([]))
            case "body":
                let records = try CMCDDecoder.decodeBody(vector.input.stringValue!, strict: strict)
                actual = .success(.object([("records", .array(records.map(render)))]))
            default:
                Issue.record("unknown form \(vector.form)")
                return
            }
        } catch {
            actual = .failure(error)
        }
        switch actual {
        case .success(let json):
            #expect(!wantsError, "expected an error, decoded \(JSONWriter.string(json))")
            if !wantsError {
                #expect(json.semanticallyEquals(vector.expected), "got \(JSONWriter.string(json))\nwant \(JSONWriter.string(vector.expected))")
            }
        case .failure(let error):
            #expect(wantsError, "unexpected error: \(error)")
        }
    }
}
