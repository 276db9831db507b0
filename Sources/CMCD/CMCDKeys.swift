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
        switch key {
        case "ab", "bl", "br", "bsa", "bsd", "bsda", "lab", "lb", "mtp", "pb", "tab", "tb", "tbl", "tpb":
            return .integerList
        case "d", "dfa", "df", "dl", "ltc", "msd", "pt", "rc", "rtp", "sn", "ts", "ttfb", "ttfbb", "ttlb", "v":
            return .integer
        case "pr": return .decimal
        case "bg", "bs", "nr", "su": return .boolean
        case "cen", "cid", "cmsdd", "cmsds", "h", "sid", "smrt", "url", "nrr", "cdn": return .string
        case "cs": return .stringOrInteger
        case "e", "ot", "sf", "st", "sta": return .token
        case "ec": return .stringList
        case "nor": return .objectRequests
        default: return nil
        }
    }

    /// A custom key carries a hyphenated prefix (`com.example-key`).
    public static func isCustom(_ key: String) -> Bool {
        key.utf8.contains(UInt8(ascii: "-"))
    }

    /// Allowed values of the token keys; anything else is ignored.
    public static func allowedTokens(for key: String) -> Set<String>? {
        switch key {
        case "ot": return ["m", "a", "v", "av", "i", "c", "tt", "k", "o"]
        case "sf": return ["d", "h", "e", "s", "o"]
        case "st": return ["v", "l", "ll"]
        case "sta": return ["s", "p", "k", "r", "a", "w", "e", "f", "q", "d"]
        default: return nil  // `e` and future tokens are kept as sent
        }
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
