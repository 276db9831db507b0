/// The structured type a reserved CMCD key must carry (CTA-5004 and CTA-5004-A/-B Table 1).
public enum CMCDValueKind: Sendable, Equatable {
    /// v2 inner list of integers (with optional object-type parameters); v1 sends a bare integer.
    case integerList
    case integer
    /// Decimal; an integer is accepted (`pr=0`).
    case decimal
    case boolean
    case string
    case token
    /// Inner list of strings (`ec`).
    case stringList
    /// v1 string or v2 inner list of strings, with an optional `r` parameter (`nor`).
    case objectRequests
    /// String, or an integer as early v2 drafts sent (`cs`).
    case stringOrInteger
}

/// The reserved CMCD keys this decoder knows, with their types.
///
/// Draft-era keys that did not survive into the published tables (`df`, `cdn`, `nrr` from v1)
/// are included so that real traffic from older players still decodes.
public enum CMCDKeys {
    public static func kind(of key: String) -> CMCDValueKind? {
        guard let code = packedCode(key) else { return nil }
        return kind(code: code)
    }

    /// Reserved keys are at most 5 ASCII letters: packed into an integer they are looked up
    /// without string comparisons (this runs for every key of every record).
    static func packedCode(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> UInt64? {
        guard range.count <= 5 else { return nil }
        var code: UInt64 = 0
        for i in range { code = code << 8 | UInt64(bytes[i]) }
        return code
    }

    static func packedCode(_ key: String) -> UInt64? {
        var code: UInt64 = 0
        var count = 0
        for byte in key.utf8 {
            count += 1
            if count > 5 { return nil }
            code = code << 8 | UInt64(byte)
        }
        return code
    }

    /// The kind of a reserved key from its packed code (a switch: no hashing per key).
    static func kind(code: UInt64) -> CMCDValueKind? {
        switch code {
        case 0x6162 /* ab */, 0x626C /* bl */, 0x6272 /* br */, 0x627361 /* bsa */, 0x627364 /* bsd */, 0x62736461 /* bsda */, 0x6C6162 /* lab */, 0x6C62 /* lb */, 0x6D7470 /* mtp */, 0x7062 /* pb */, 0x746162 /* tab */, 0x7462 /* tb */, 0x74626C /* tbl */, 0x747062 /* tpb */: return .integerList
        case 0x64 /* d */, 0x646661 /* dfa */, 0x6466 /* df */, 0x646C /* dl */, 0x6C7463 /* ltc */, 0x6D7364 /* msd */, 0x7074 /* pt */, 0x7263 /* rc */, 0x727470 /* rtp */, 0x736E /* sn */, 0x7473 /* ts */, 0x74746662 /* ttfb */, 0x7474666262 /* ttfbb */, 0x74746C62 /* ttlb */, 0x76 /* v */: return .integer
        case 0x7072 /* pr */: return .decimal
        case 0x6267 /* bg */, 0x6273 /* bs */, 0x6E72 /* nr */, 0x7375 /* su */: return .boolean
        case 0x63656E /* cen */, 0x636964 /* cid */, 0x636D736464 /* cmsdd */, 0x636D736473 /* cmsds */, 0x68 /* h */, 0x736964 /* sid */, 0x736D7274 /* smrt */, 0x75726C /* url */, 0x6E7272 /* nrr */, 0x63646E /* cdn */: return .string
        case 0x6373 /* cs */: return .stringOrInteger
        case 0x65 /* e */, 0x6F74 /* ot */, 0x7366 /* sf */, 0x7374 /* st */, 0x737461 /* sta */: return .token
        case 0x6563 /* ec */: return .stringList
        case 0x6E6F72 /* nor */: return .objectRequests
        default: return nil
        }
    }

    /// A custom key carries a hyphenated prefix (`com.example-key`).
    public static func isCustom(_ key: String) -> Bool {
        key.utf8.contains(UInt8(ascii: "-"))
    }

    /// Allowed values of the token keys; anything else is ignored.
    public static func allowedTokens(for key: String) -> Set<String>? {
        packedCode(key).flatMap(tokens(code:)).map { Set($0.entries.map(\.value)) }
    }

    /// The allowed tokens of a token key (`e` and future tokens are kept as sent: nil).
    static func tokens(code: UInt64) -> TokenTable? {
        switch code {
        case 0x6F74 /* ot */: return objectTypeTokens
        case 0x7366 /* sf */: return streamingFormatTokens
        case 0x7374 /* st */: return streamTypeTokens
        case 0x737461 /* sta */: return stateTokens
        default: return nil
        }
    }

    /// A key's allowed tokens, each with its packed code so that bytes are matched without
    /// building a string.
    struct TokenTable: Sendable {
        let entries: [(code: UInt64, value: String)]
        init(_ tokens: [String]) { entries = tokens.map { (CMCDKeys.packedCode($0) ?? 0, $0) } }
        /// The token's text when it is allowed.
        func text(packedCode code: UInt64) -> String? { text(number: number(packedCode: code)) }
        func contains(_ token: String) -> Bool { number(token) != 0 }
        /// The token's number: 1 + its place in the table, 0 when it is not allowed.
        func number(packedCode code: UInt64) -> UInt8 {
            for k in entries.indices where entries[k].code == code { return UInt8(k + 1) }
            return 0
        }
        /// The number of a token's text (0 for nil or a token not allowed).
        func number(_ text: String?) -> UInt8 { text.flatMap(CMCDKeys.packedCode).map(number(packedCode:)) ?? 0 }
        /// The text of a token's number (nil for 0).
        func text(number: UInt8) -> String? { number == 0 || Int(number) > entries.count ? nil : entries[Int(number) - 1].value }
    }

    static let objectTypeTokens = TokenTable(CMCDObjectType.allCases.map(\.rawValue))
    static let streamingFormatTokens = TokenTable(["d", "h", "e", "s", "o"])
    static let streamTypeTokens = TokenTable(["v", "l", "ll"])
    static let stateTokens = TokenTable(CMCDPlayerState.allCases.map(\.rawValue))

    /// Spec length limits of string keys, in bytes.
    static func maxLength(code: UInt64) -> Int? {
        switch code {
        case 0x736964 /* sid */, 0x63656E /* cen */: return 64
        case 0x636964 /* cid */, 0x68 /* h */: return 128
        default: return nil
        }
    }

    /// Whether an integer is a believable value of reserved key `code`: no CMCD number is
    /// negative, and no buffer, duration or deadline exceeds a day, nor a bitrate 100 Gbit/s.
    /// A value that fails is dropped as its member, not passed to the detectors.
    @inline(__always)
    static func isPlausible(code: UInt64, _ n: Int64) -> Bool {
        guard n >= 0 else { return false }
        switch code {
        case 0x626C /* bl */, 0x74626C /* tbl */, 0x64 /* d */, 0x646C /* dl */: return n <= maxDurationMs
        case 0x6272 /* br */, 0x7462 /* tb */, 0x6D7470 /* mtp */, 0x727470 /* rtp */, 0x7062 /* pb */, 0x6162 /* ab */,
            0x6C6162 /* lab */, 0x6C62 /* lb */, 0x746162 /* tab */, 0x747062 /* tpb */:
            return n <= maxBitrateKbps
        default: return true
        }
    }

    /// The largest believable buffer, duration or deadline (a day), and bitrate (100 Gbit/s).
    static let maxDurationMs: Int64 = 86_400_000
    static let maxBitrateKbps: Int64 = 100_000_000

    /// A dropped member's key as a metric label, from a bounded set whatever a viewer sent:
    /// the reserved key itself, `custom` for a hyphenated custom key, else `unknown`.
    public static func metricLabel(forDroppedKey key: String) -> String {
        if let code = packedCode(key), kind(code: code) != nil { return key }
        if !key.isEmpty, isCustom(key) { return "custom" }
        return "unknown"
    }

    /// The header shard each reserved key belongs to in request mode (CTA-5004-A/-B).
    public static let headerNames = ["CMCD-Request", "CMCD-Object", "CMCD-Status", "CMCD-Session"]
}

/// Media object type (`ot`).
public enum CMCDObjectType: String, Sendable, Hashable, CaseIterable {
    case manifest = "m"
    case audio = "a"
    case video = "v"
    case muxed = "av"
    case initSegment = "i"
    case caption = "c"
    case timedText = "tt"
    case key = "k"
    case other = "o"

    /// Audio, video or muxed media: the objects whose requests report the media buffer.
    public var isMedia: Bool { self == .audio || self == .video || self == .muxed }
}

/// Player state (`sta`, v2).
public enum CMCDPlayerState: String, Sendable, Hashable, CaseIterable {
    case starting = "s"
    case playing = "p"
    case seeking = "k"
    case rebuffering = "r"
    case paused = "a"
    case waiting = "w"
    case ended = "e"
    case fatalError = "f"
    case quit = "q"
    case preloading = "d"
}

// The token lookups below run for every request a player makes. They are switches over the
// tokens' packed codes rather than searches of a table made from the raw values, because a
// table is a lazily made global and reaching one costs a call on every use;
// `TokenLookupTests` checks each against the raw values and token tables it mirrors.

extension CMCDObjectType {
    /// The object type of a token packed as by `CMCDKeys.packedCode`.
    init?(packedCode code: UInt64) {
        switch code {
        case 0x6D /* m */: self = .manifest
        case 0x61 /* a */: self = .audio
        case 0x76 /* v */: self = .video
        case 0x6176 /* av */: self = .muxed
        case 0x69 /* i */: self = .initSegment
        case 0x63 /* c */: self = .caption
        case 0x7474 /* tt */: self = .timedText
        case 0x6B /* k */: self = .key
        case 0x6F /* o */: self = .other
        default: return nil
        }
    }
}

extension CMCDPlayerState {
    /// The state of a token packed as by `CMCDKeys.packedCode`.
    init?(packedCode code: UInt64) {
        switch code {
        case 0x73 /* s */: self = .starting
        case 0x70 /* p */: self = .playing
        case 0x6B /* k */: self = .seeking
        case 0x72 /* r */: self = .rebuffering
        case 0x61 /* a */: self = .paused
        case 0x77 /* w */: self = .waiting
        case 0x65 /* e */: self = .ended
        case 0x66 /* f */: self = .fatalError
        case 0x71 /* q */: self = .quit
        case 0x64 /* d */: self = .preloading
        default: return nil
        }
    }
}

extension CMCDKeys {
    /// `streamingFormatTokens.number(packedCode:)`.
    static func streamingFormatNumber(packedCode code: UInt64) -> UInt8 {
        switch code {
        case 0x64 /* d */: return 1
        case 0x68 /* h */: return 2
        case 0x65 /* e */: return 3
        case 0x73 /* s */: return 4
        case 0x6F /* o */: return 5
        default: return 0
        }
    }

    /// `streamTypeTokens.number(packedCode:)`.
    static func streamTypeNumber(packedCode code: UInt64) -> UInt8 {
        switch code {
        case 0x76 /* v */: return 1
        case 0x6C /* l */: return 2
        case 0x6C6C /* ll */: return 3
        default: return 0
        }
    }
}
