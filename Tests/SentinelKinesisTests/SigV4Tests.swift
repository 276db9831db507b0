import Crypto
import Foundation
import Testing
@testable import SentinelKinesis

/// SigV4 against the vectors AWS publishes: its test suite's requests (credentials AKIDEXAMPLE,
/// 2015-08-30 12:36:00 UTC, us-east-1, service "service") and the signing-key example of its
/// documentation.
struct SigV4Tests {
    let credentials = SigV4.Credentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    let date = Date(timeIntervalSince1970: 1_440_938_160)  // 2015-08-30T12:36:00Z
    let signer = SigV4(region: "us-east-1", service: "service")

    func authorization(_ method: String, query: [(String, String)] = [], body: [UInt8] = []) -> String? {
        let headers = signer.sign(
            method: method, path: "/", query: query, headers: [("Host", "example.amazonaws.com")], body: body, credentials: credentials, date: date)
        #expect(headers.first { $0.0 == "x-amz-date" }?.1 == "20150830T123600Z")
        return headers.first { $0.0 == "authorization" }?.1
    }

    @Test func theTestSuitesRequestsSignAsAWSSignsThem() {
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature="
        // get-vanilla
        #expect(authorization("GET") == prefix + "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        // get-vanilla-query-order-key-case: parameters are sorted before signing.
        #expect(authorization("GET", query: [("Param2", "value2"), ("Param1", "value1")]) == prefix + "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
        // post-vanilla
        #expect(authorization("POST") == prefix + "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
    }

    @Test func theSigningKeyIsTheDocumentedOne() {
        let key = SigV4.signingKey(secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", date: "20120215", region: "us-east-1", service: "iam")
        #expect(key.withUnsafeBytes { SigV4.hex(Array($0)) } == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d")
    }

    @Test func temporaryCredentialsSignTheirTokenAndValuesAreCanonical() {
        var temporary = credentials
        temporary.sessionToken = "FQoGZXIvYXdzEXAMPLE"
        let headers = signer.sign(
            method: "POST", path: "/", headers: [("Host", "kinesis.us-east-1.amazonaws.com"), ("X-Amz-Target", "Kinesis_20131202.ListShards"),
                                                   ("Content-Type", "application/x-amz-json-1.1")],
            body: Array(#"{"StreamName":"cf-logs"}"#.utf8), credentials: temporary, date: date)
        #expect(headers.contains { $0 == ("x-amz-security-token", "FQoGZXIvYXdzEXAMPLE") })
        let authorization = headers.first { $0.0 == "authorization" }?.1 ?? ""
        #expect(authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target,"), "\(authorization)")
        #expect(SigV4.encode("a b/c~d=é") == "a%20b%2Fc~d%3D%C3%A9")
        #expect(SigV4.trimmed("  a   b  ") == "a b")
        // A different body is a different signature.
        let other = signer.sign(
            method: "POST", path: "/", headers: [("Host", "kinesis.us-east-1.amazonaws.com")], body: Array("{}".utf8), credentials: temporary, date: date)
        #expect(other.first { $0.0 == "authorization" }?.1 != authorization)
    }
}
