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
        return kinds[code]
    }

    /// Reserved keys are at most 5 ASCII letters: packed into an integer they are looked up
    /// without string comparisons (this runs for every key of every record).
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

    static let kinds: [UInt64: CMCDValueKind] = {
        var table: [UInt64: CMCDValueKind] = [:]
        func add(_ kind: CMCDValueKind, _ keys: [String]) {
            for key in keys { table[packedCode(key)!] = kind }
        }
        add(.integerList, ["ab", "bl", "br", "bsa", "bsd", "bsda", "lab", "lb", "mtp", "pb", "tab", "tb", "tbl", "tpb"])
        add(.integer, ["d", "dfa", "df", "dl", "ltc", "msd", "pt", "rc", "rtp", "sn", "ts", "ttfb", "ttfbb", "ttlb", "v"])
        add(.decimal, ["pr"])
        add(.boolean, ["bg", "bs", "nr", "su"])
        add(.string, ["cen", "cid", "cmsdd", "cmsds", "h", "sid", "smrt", "url", "nrr", "cdn"])
        add(.stringOrInteger, ["cs"])
        add(.token, ["e", "ot", "sf", "st", "sta"])
        add(.stringList, ["ec"])
        add(.objectRequests, ["nor"])
        return table
    }()

    /// A custom key carries a hyphenated prefix (`com.example-key`).
    public static func isCustom(_ key: String) -> Bool {
        key.utf8.contains(UInt8(ascii: "-"))
    }

    /// Allowed values of the token keys; anything else is ignored.
    public static func allowedTokens(for key: String) -> Set<String>? {
        switch key {
        case "ot": return objectTypeTokens
        case "sf": return streamingFormatTokens
        case "st": return streamTypeTokens
        case "sta": return stateTokens
        default: return nil  // `e` and future tokens are kept as sent
        }
    }

    static let objectTypeTokens: Set<String> = ["m", "a", "v", "av", "i", "c", "tt", "k", "o"]
    static let streamingFormatTokens: Set<String> = ["d", "h", "e", "s", "o"]
    static let streamTypeTokens: Set<String> = ["v", "l", "ll"]
    static let stateTokens: Set<String> = ["s", "p", "k", "r", "a", "w", "e", "f", "q", "d"]

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
public enum CMCDPlayerState: String, Sendable, Hashable {
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
