import Testing

@testable import CMCD

/// The hot path's token switches agree with the raw values and token tables they mirror.
struct TokenLookupTests {
    /// Every packed code of one or two lower-case letters, plus a few others.
    static let codes: [UInt64] = {
        let letters = (UInt64(0x61)...0x7A)
        var codes: [UInt64] = [0, 0x41, 0x7B, 0x617674 /* avt */, 0x6C6C6C /* lll */]
        for a in letters {
            codes.append(a)
            for b in letters { codes.append(a << 8 | b) }
        }
        return codes
    }()

    @Test func objectTypes() {
        for code in Self.codes {
            let expected = CMCDObjectType.allCases.first { CMCDKeys.packedCode($0.rawValue) == code }
            #expect(CMCDObjectType(packedCode: code) == expected, "code \(String(code, radix: 16))")
        }
        #expect(CMCDObjectType.allCases.allSatisfy { CMCDObjectType(packedCode: CMCDKeys.packedCode($0.rawValue)!) == $0 })
    }

    @Test func playerStates() {
        for code in Self.codes {
            let expected = CMCDPlayerState.allCases.first { CMCDKeys.packedCode($0.rawValue) == code }
            #expect(CMCDPlayerState(packedCode: code) == expected, "code \(String(code, radix: 16))")
        }
        #expect(CMCDPlayerState.allCases.allSatisfy { CMCDPlayerState(packedCode: CMCDKeys.packedCode($0.rawValue)!) == $0 })
    }

    @Test func streamingFormatsAndStreamTypes() {
        for code in Self.codes {
            #expect(CMCDKeys.streamingFormatNumber(packedCode: code) == CMCDKeys.streamingFormatTokens.number(packedCode: code))
            #expect(CMCDKeys.streamTypeNumber(packedCode: code) == CMCDKeys.streamTypeTokens.number(packedCode: code))
        }
        // Every token of both tables is found (the loop above would pass on two empty lookups).
        for (k, entry) in CMCDKeys.streamingFormatTokens.entries.enumerated() {
            #expect(CMCDKeys.streamingFormatNumber(packedCode: entry.code) == UInt8(k + 1))
        }
        for (k, entry) in CMCDKeys.streamTypeTokens.entries.enumerated() {
            #expect(CMCDKeys.streamTypeNumber(packedCode: entry.code) == UInt8(k + 1))
        }
    }
}
