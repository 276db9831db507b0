/// The record parser's hot path for a `CMCD=` query value: the dictionary is read as it
/// stands in the URL, without percent-decoding it first.
///
/// It takes the form players and CDNs produce: separators `=`, `,` and `"` either as they are
/// or encoded once (`%3D`, `%2C`, `%22`, hex digits in either case), and values in the plain
/// forms (`SimpleValue`). Anything else (another escape, a `+`, spaces, double encoding,
/// parameters, inner lists, a value the typed views do not take as it is, a limit reached)
/// returns nil and the caller decodes the value the general way; so does any of the URL's
/// own delimiters `?`, `#` and `&`, so that a value this reads holds none of them. Whenever
/// this gives a payload, it is the one percent-decoding then `init(typedFrom:)` would give
/// (`QueryValueDecodingTests`).
extension CMCDPayload {
    init?(typedFromQueryValue raw: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits = .init(), strings: inout InternedStrings) {
        var boxes = BoxCache()
        self.init(typedFromQueryValue: raw, limits: limits, strings: &strings, boxes: &boxes)
    }

    /// Like `init?(typedFromQueryValue:limits:strings:)`, reusing storage through `boxes`.
    init?(
        typedFromQueryValue raw: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits = .init(), strings: inout InternedStrings,
        boxes: inout BoxCache
    ) {
        guard let base = raw.baseAddress, !raw.isEmpty else { return nil }
        let box = Box.make(source: raw, reusing: &boxes)
        let read = box.withUnsafeMutablePointerToHeader { fields -> Bool in
            fields.pointee.sourceIsQueryEncoded = true
            let reader = QueryDictionaryReader(base: base, count: raw.count, limits: limits)
            return reader.read(into: &fields.pointee, bytes: raw, strings: &strings)
        }
        guard read else { return nil }
        shared = SharedBox(box: box)
    }
}

/// Reads a query-encoded CMCD dictionary (see `CMCDPayload.init(typedFromQueryValue:)`).
///
/// One pass with the read position in a local (so it stays in a register); the helpers
/// take it `inout` and are inlined.
struct QueryDictionaryReader {
    let base: UnsafePointer<UInt8>
    let count: Int
    let limits: SFDictionaryParser.Limits

    init(base: UnsafePointer<UInt8>, count: Int, limits: SFDictionaryParser.Limits) {
        self.base = base
        self.count = count
        self.limits = limits
    }

    /// Fills `fields`; false when the input is not in the form this reader takes.
    func read(into fields: inout CMCDPayload.Fields, bytes: UnsafeBufferPointer<UInt8>, strings: inout InternedStrings) -> Bool {
        var i = 0
        var members = 0
        var declaredVersion: Int64?
        while true {
            members &+= 1
            // The key's packed code, 0 when it is longer than packed codes go.
            var key: UInt64 = 0
            // The separator after the key when the key's word held it, else -1.
            var separatorRead = -1
            guard members <= limits.maxMembers, readKey(&i, &key, &separatorRead) else { return false }
            let separator: UInt8
            if separatorRead >= 0 {
                separator = UInt8(truncatingIfNeeded: separatorRead)
            } else {
                if i == count {
                    guard assign(.flag(true), to: key, &fields, &declaredVersion, bytes, &strings) else { return false }
                    break
                }
                separator = readSeparator(&i)
            }
            if separator == UInt8(ascii: ",") {
                guard assign(.flag(true), to: key, &fields, &declaredVersion, bytes, &strings) else { return false }
            } else {
                guard separator == UInt8(ascii: "="), i < count else { return false }
                // Most values are non-negative integers: read and assigned without the
                // general value reader.
                if base[i] &- 0x30 < 10 {
                    guard let number = readDigits(&i) else { return false }
                    if key != 0, !fields.assignInteger(code: key, number) {
                        if key == 0x76 /* v */ {
                            declaredVersion = number
                        } else if CMCDPayload.isTyped(key) {
                            return false
                        }
                    }
                } else if Self.isTokenKey(key), let token = readLetters(&i) {
                    // The usual token value (`ot=v`), packed straight from the word it is in.
                    fields.assignToken(code: key, token)
                } else {
                    guard let value = readValue(&i), assign(value, to: key, &fields, &declaredVersion, bytes, &strings) else { return false }
                }
                if i == count { break }
                guard readComma(&i) else { return false }
            }
            guard i < count else { return false }  // a trailing comma
        }
        if let v = declaredVersion {
            if v > 2 { return false }
            if v >= 1 { fields.version = Int(v) }
        }
        return true
    }

    /// Assigns a member's value to its typed view (`v` to `version`); false when the general
    /// path must decide.
    @inline(__always)
    private func assign(
        _ value: SimpleValue, to key: UInt64, _ fields: inout CMCDPayload.Fields, _ declaredVersion: inout Int64?,
        _ bytes: UnsafeBufferPointer<UInt8>, _ strings: inout InternedStrings
    ) -> Bool {
        guard key != 0 else { return true }
        if key == 0x76 /* v */ {
            guard case .integer(let n) = value else { return false }
            declaredVersion = n
            return true
        }
        // `assignSimple` takes no action on a key it has no view for, so asking it first and
        // whether the key is typed only when it declines spares the usual member a lookup.
        return fields.assignSimple(code: key, value, bytes, strings: &strings) || !CMCDPayload.isTyped(key)
    }

    /// Reads a key into `code`, its packed code (left 0 when longer than packed codes go);
    /// false when there is no key here. When the word the key was read from also holds an
    /// `=` or `,` after it (as such or encoded), that is read too, into `separator`.
    @inline(__always)
    private func readKey(_ i: inout Int, _ code: inout UInt64, _ separator: inout Int) -> Bool {
        let start = i
        // The usual key: one to five lower-case letters, found in one word, with at least
        // three more bytes of that word after it.
        if i &+ 8 <= count {
            let x = ByteWords.load(base + i)
            // Most often a reserved key and its separator encoded as players send them.
            let known = Self.encodedKey(x)
            if known != 0 {
                i &+= Int(truncatingIfNeeded: known >> 32 & 0xFF)
                code = known & 0xFFFF_FFFF
                separator = Int(truncatingIfNeeded: known >> 40)
                return true
            }
            let length = ByteWords.lowercaseRun(x)
            if length > 0, length <= 5 {
                let after = x >> (8 &* UInt64(length))
                let next = UInt8(truncatingIfNeeded: after)
                if next == UInt8(ascii: "%") || next == UInt8(ascii: "=") || next == UInt8(ascii: ",")
                    || !SFDictionaryParser.Cursor.isKeyChar(next)
                {
                    i &+= length
                    code = ByteWords.packedPrefix(x, length: length)
                    if next == UInt8(ascii: "%") {
                        // `%3D` or `%2C` (either case of the letter), as `readSeparator` reads them.
                        let hex = UInt16(truncatingIfNeeded: after >> 8) | 0x2000
                        if hex == 0x6433 {
                            separator = Int(UInt8(ascii: "="))
                            i &+= 3
                        } else if hex == 0x6332 {
                            separator = Int(UInt8(ascii: ","))
                            i &+= 3
                        }
                    } else if next == UInt8(ascii: "=") || next == UInt8(ascii: ",") {
                        separator = Int(next)
                        i &+= 1
                    }
                    return true
                }
            }
        }
        guard i < count, SFDictionaryParser.Cursor.isKeyStart(base[i]) else { return false }
        i &+= 1
        while i < count, SFDictionaryParser.Cursor.isKeyChar(base[i]) { i &+= 1 }
        let length = i &- start
        guard length <= limits.maxStringBytes else { return false }
        guard length <= 5 else { return true }
        var packed: UInt64 = 0
        for k in start..<i { packed = packed << 8 | UInt64(base[k]) }
        code = packed
        return true
    }

    /// A reserved key of up to four letters followed by `%3D` (`%2C` for the boolean keys,
    /// which usually stand alone), as the first bytes of `x`: the key's packed code, the
    /// bytes of key and separator (bits 32 to 39) and the separator (bits 40 to 47); 0 for
    /// anything else, which `readKey` then reads a byte class at a time. One switch on the
    /// first four bytes and one comparison of the rest, where `readKey` spends some 50
    /// instructions. The cases are the reserved keys of `CMCDKeys.kind(code:)`; a test checks
    /// that they are exactly those, with their codes, and that nothing else matches.
    @inline(__always)
    static func encodedKey(_ x: UInt64) -> UInt64 {
        let high = x >> 32
        switch UInt32(truncatingIfNeeded: x) {
        case 0x33256261 /* ab%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500006162 : 0
        case 0x32256762 /* bg%2 */: return high & 0xFF == 0x43 /* C */ ? 0x2C0500006267 : 0
        case 0x33256C62 /* bl%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D050000626C : 0
        case 0x33257262 /* br%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500006272 : 0
        case 0x32257362 /* bs%2 */: return high & 0xFF == 0x43 /* C */ ? 0x2C0500006273 : 0
        case 0x25617362 /* bsa% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600627361 : 0
        case 0x25647362 /* bsd% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600627364 : 0
        case 0x61647362 /* bsda */: return high & 0xFFFFFF == 0x443325 /* %3D */ ? 0x3D0762736461 : 0
        case 0x256E6463 /* cdn% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D060063646E : 0
        case 0x256E6563 /* cen% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D060063656E : 0
        case 0x25646963 /* cid% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600636964 : 0
        case 0x33257363 /* cs%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500006373 : 0
        case 0x44332564 /* d%3D */: return 0x3D0400000064
        case 0x33256664 /* df%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500006466 : 0
        case 0x25616664 /* dfa% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600646661 : 0
        case 0x33256C64 /* dl%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D050000646C : 0
        case 0x44332565 /* e%3D */: return 0x3D0400000065
        case 0x33256365 /* ec%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500006563 : 0
        case 0x44332568 /* h%3D */: return 0x3D0400000068
        case 0x2562616C /* lab% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D06006C6162 : 0
        case 0x3325626C /* lb%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500006C62 : 0
        case 0x2563746C /* ltc% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D06006C7463 : 0
        case 0x2564736D /* msd% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D06006D7364 : 0
        case 0x2570746D /* mtp% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D06006D7470 : 0
        case 0x25726F6E /* nor% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D06006E6F72 : 0
        case 0x3225726E /* nr%2 */: return high & 0xFF == 0x43 /* C */ ? 0x2C0500006E72 : 0
        case 0x2572726E /* nrr% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D06006E7272 : 0
        case 0x3325746F /* ot%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500006F74 : 0
        case 0x33256270 /* pb%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007062 : 0
        case 0x33257270 /* pr%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007072 : 0
        case 0x33257470 /* pt%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007074 : 0
        case 0x33256372 /* rc%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007263 : 0
        case 0x25707472 /* rtp% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600727470 : 0
        case 0x33256673 /* sf%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007366 : 0
        case 0x25646973 /* sid% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600736964 : 0
        case 0x74726D73 /* smrt */: return high & 0xFFFFFF == 0x443325 /* %3D */ ? 0x3D07736D7274 : 0
        case 0x33256E73 /* sn%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D050000736E : 0
        case 0x33257473 /* st%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007374 : 0
        case 0x25617473 /* sta% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600737461 : 0
        case 0x32257573 /* su%2 */: return high & 0xFF == 0x43 /* C */ ? 0x2C0500007375 : 0
        case 0x25626174 /* tab% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600746162 : 0
        case 0x33256274 /* tb%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007462 : 0
        case 0x256C6274 /* tbl% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D060074626C : 0
        case 0x25627074 /* tpb% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D0600747062 : 0
        case 0x33257374 /* ts%3 */: return high & 0xFF == 0x44 /* D */ ? 0x3D0500007473 : 0
        case 0x62667474 /* ttfb */: return high & 0xFFFFFF == 0x443325 /* %3D */ ? 0x3D0774746662 : 0
        case 0x626C7474 /* ttlb */: return high & 0xFFFFFF == 0x443325 /* %3D */ ? 0x3D0774746C62 : 0
        case 0x256C7275 /* url% */: return high & 0xFFFF == 0x4433 /* 3D */ ? 0x3D060075726C : 0
        case 0x44332576 /* v%3D */: return 0x3D0400000076
        default: return 0
        }
    }

    /// The separator at `i`, decoded (`%3D` is `=`, `%2C` is `,`, `%22` is `"`), and moves
    /// past it. Any other escape reads as `%`, which no caller accepts.
    @inline(__always)
    private func readSeparator(_ i: inout Int) -> UInt8 {
        let c = base[i]
        guard c == UInt8(ascii: "%") else {
            i &+= 1
            return c
        }
        guard i &+ 2 < count else { return c }
        // The two hex digits as one little-endian word; `| 0x2000` lower-cases the second.
        let hex = UInt16(littleEndian: UnsafeRawPointer(base + (i &+ 1)).loadUnaligned(as: UInt16.self))
        let decoded: UInt8
        if hex == 0x3232 /* "22" */ {
            decoded = UInt8(ascii: "\"")
        } else if hex | 0x2000 == 0x6433 /* "3d" */ {
            decoded = UInt8(ascii: "=")
        } else if hex | 0x2000 == 0x6332 /* "2c" */ {
            decoded = UInt8(ascii: ",")
        } else {
            return c
        }
        i &+= 3
        return decoded
    }

    /// `ot`, `sf`, `st` and `sta`: the keys whose value is one of a few short tokens.
    @inline(__always)
    static func isTokenKey(_ key: UInt64) -> Bool { key == 0x6F74 || key == 0x7366 || key == 0x7374 || key == 0x737461 }

    /// One to five lower-case letters ended, within the same word, by `%` or `,` (how a
    /// token value usually stands): their packed code, moving past them; nil, not moving,
    /// for anything else (which `readValue` then reads).
    @inline(__always)
    private func readLetters(_ i: inout Int) -> UInt64? {
        guard i &+ 8 <= count else { return nil }
        let x = ByteWords.load(base + i)
        let length = ByteWords.lowercaseRun(x)
        guard length > 0, length <= 5, length <= limits.maxStringBytes else { return nil }
        let next = UInt8(truncatingIfNeeded: x >> (8 &* UInt64(length)))
        guard next == UInt8(ascii: "%") || next == UInt8(ascii: ",") else { return nil }
        i &+= length
        return ByteWords.packedPrefix(x, length: length)
    }

    /// The separator after a value, which must be a comma (as such or `%2C`, as
    /// `readSeparator` reads it), moving past it; false for anything else.
    @inline(__always)
    private func readComma(_ i: inout Int) -> Bool {
        // The usual `%2C` as one three-byte pattern; `| 0x20_0000` lower-cases the `C`.
        if i &+ 3 <= count,
            (UInt32(UnsafeRawPointer(base + i).loadUnaligned(as: UInt16.self).littleEndian) | UInt32(base[i &+ 2]) << 16) | 0x20_0000 == 0x63_3225
        {
            i &+= 3
            return true
        }
        return readSeparator(&i) == UInt8(ascii: ",")
    }

    /// One to fifteen decimal digits (more is left to the general path, which knows the
    /// integer limits).
    @inline(__always)
    private func readDigits(_ i: inout Int) -> Int64? {
        // The usual short number, ended within the next eight bytes: read as one word.
        if i &+ 8 <= count {
            let x = ByteWords.load(base + i)
            let end = ByteWords.below(x, 0x30) | ByteWords.atLeast(x, 0x3A)
            if end != 0 {
                let digits = ByteWords.firstFlagged(end)
                guard digits > 0 else { return nil }
                i &+= digits
                return Int64(ByteWords.digitsValue(x, count: digits))
            }
        }
        var number: Int64 = 0
        var j = i
        while j < count, base[j] &- 0x30 < 10 {
            number = number &* 10 &+ Int64(base[j] &- 0x30)  // wraps past 18 digits; rejected below
            j &+= 1
        }
        guard j > i, j &- i <= 15 else { return nil }
        i = j
        return number
    }

    /// A value in one of the plain forms, ending at the end or at a separator.
    @inline(__always)
    private func readValue(_ i: inout Int) -> SimpleValue? {
        guard i < count else { return nil }
        let c = base[i]
        if c &- 0x30 < 10 || c == UInt8(ascii: "-") {
            let negative = c == UInt8(ascii: "-")
            if negative { i &+= 1 }
            guard let number = readDigits(&i) else { return nil }
            return .integer(negative ? -number : number)
        }
        if c == UInt8(ascii: "%") || c == UInt8(ascii: "\"") {
            guard readSeparator(&i) == UInt8(ascii: "\"") else { return nil }
            return readString(&i)
        }
        if (c | 0x20) &- UInt8(ascii: "a") < 26 || c == UInt8(ascii: "*") {
            let start = i
            i &+= 1
            // `%` and `+` are token characters, but here they would be an escape or a space;
            // `#` and `&` would end the URL's query or argument.
            while i < count, base[i] != UInt8(ascii: "%"), base[i] != UInt8(ascii: "+"), base[i] != UInt8(ascii: "#"),
                base[i] != UInt8(ascii: "&"), SFDictionaryParser.Cursor.isTokenChar(base[i])
            {
                i &+= 1
            }
            guard i &- start <= limits.maxStringBytes else { return nil }
            return .token(start..<i)
        }
        return nil
    }

    /// The rest of a quoted string, up to and past its closing quote; nil for an escape or a
    /// byte a plain string cannot hold.
    @inline(__always)
    private func readString(_ i: inout Int) -> SimpleValue? {
        let start = i
        while true {
            // Sixteen bytes (with SSE2), then eight, at a time over the usual id and URL
            // characters ('-' to '~' but '\\' and '?'); anything else is looked at on its own below.
            scan: do {
                while ByteBlocks.isVectorized, i &+ ByteBlocks.size <= count {
                    let stops = ByteBlocks.stringStops(base + i)
                    if stops != 0 {
                        i &+= stops.trailingZeroBitCount
                        break scan
                    }
                    i &+= ByteBlocks.size
                }
                while i &+ 8 <= count {
                    let x = ByteWords.load(base + i)
                    let stop = ByteWords.below(x, UInt8(ascii: "-")) | ByteWords.equal(x, UInt8(ascii: "\\")) | ByteWords.equal(x, UInt8(ascii: "?"))
                        | ByteWords.atLeast(x, 0x7F)
                    if stop != 0 {
                        i &+= ByteWords.firstFlagged(stop)
                        break scan
                    }
                    i &+= 8
                }
            }
            guard i < count else { return nil }
            let b = base[i]
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "%") { break }
            // A backslash escape, a `+` (a space in a form), a URL delimiter or a byte a string
            // cannot hold.
            if b == UInt8(ascii: "\\") || b == UInt8(ascii: "+") || b == UInt8(ascii: "?") || b == UInt8(ascii: "#") || b == UInt8(ascii: "&")
                || b < 0x20 || b > 0x7E
            {
                return nil
            }
            i &+= 1
        }
        let end = i
        guard readSeparator(&i) == UInt8(ascii: "\""), end &- start <= limits.maxStringBytes else { return nil }
        return .string(start..<end)
    }
}
