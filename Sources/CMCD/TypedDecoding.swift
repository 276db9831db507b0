/// The record parser's hot path: a CMCD dictionary decoded for its typed views only.
///
/// Unknown, custom and untyped keys are syntax-checked but not built, and the full view
/// (`entries`, `ignored`) is rebuilt from the kept text only when asked for. The values real
/// players send (a bare integer, a plain quoted string, a token, a flag) are read straight
/// from the bytes into the typed fields; anything else (inner lists, parameters, escapes,
/// decimals, a value of the wrong type) takes the general path of parse, validate, assign.
/// Either way the typed views equal those of a full decode (`TypedDecodeTests`).
extension CMCDPayload {
    public init(typedFrom bytes: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits = .init()) throws(CMCDDecodingError) {
        var strings = InternedStrings(capacity: 0)
        try self.init(typedFrom: bytes, limits: limits, strings: &strings)
    }

    /// Like `init(typedFrom:limits:)`, sharing content-id strings through `strings`.
    public init(
        typedFrom bytes: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits = .init(), strings: inout InternedStrings
    ) throws(CMCDDecodingError) {
        var boxes = BoxCache()
        try self.init(typedFrom: bytes, limits: limits, strings: &strings, boxes: &boxes)
    }

    /// Like `init(typedFrom:limits:strings:)`, reusing storage through `boxes`.
    init(
        typedFrom bytes: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits = .init(), strings: inout InternedStrings,
        boxes: inout BoxCache
    ) throws(CMCDDecodingError) {
        // The fields are written where they will live: no copy of the whole struct.
        let box = Box.make(source: bytes, reusing: &boxes)
        let outcome = box.withUnsafeMutablePointerToHeader { payload in
            Result { () throws(CMCDDecodingError) in try Self.decodeTyped(bytes, limits: limits, into: &payload.pointee, strings: &strings) }
        }
        try outcome.get()
        shared = SharedBox(box: box)
    }

    /// Scans `bytes` into `payload`'s typed views (see `init(typedFrom:limits:strings:)`).
    private static func decodeTyped(
        _ bytes: UnsafeBufferPointer<UInt8>, limits: SFDictionaryParser.Limits, into payload: inout Fields, strings: inout InternedStrings
    ) throws(CMCDDecodingError) {
        var cursor = SFDictionaryParser.Cursor(bytes: bytes, limits: limits, lenient: true)
        var declaredVersion: Int64?
        var dropped: [CMCDIgnoredKey] = []
        // Wrong-typed reserved keys, found by the visitor (the scan itself appends to `dropped`).
        var invalid: [CMCDIgnoredKey] = []
        do throws(SFParseError) {
            try cursor.scanDictionary(dropped: &dropped) { c, keyRange throws(SFParseError) in
                guard let code = CMCDKeys.packedCode(bytes, keyRange), code == 0x76 || Self.isTyped(code) else {
                    _ = try c.parseMemberValue(materialize: false)
                    return
                }
                let start = c.index
                if let simple = c.scanSimpleValue() {
                    try c.expectMemberEnd()
                    if code == 0x76 /* v */ {
                        if case .integer(let n) = simple {
                            declaredVersion = n
                            return
                        }
                    } else if payload.assignSimple(code: code, simple, bytes, strings: &strings) {
                        return
                    }
                    c.index = start
                }
                let member = try c.parseMemberValue(materialize: true)
                try c.expectMemberEnd()
                if code == 0x76 /* v */ {
                    if case .item(let item) = member, case .integer(let n) = item.value { declaredVersion = n } else { declaredVersion = nil }
                    return
                }
                switch Self.normalize(code: code, member: member, version: 1) {
                case .keep: payload.assignTyped(code: code, value: member)
                case .replace(let value): payload.assignTyped(code: code, value: value)
                case .invalid(let reason):
                    payload.assignTyped(code: code, value: Self.clearing)  // a later invalid duplicate wins too
                    invalid.append(CMCDIgnoredKey(key: c.makeASCIIString(keyRange.lowerBound, keyRange.upperBound), reason: reason))
                }
            }
        } catch {
            // Only a strict cursor throws.
            throw .syntax(error)
        }
        if !dropped.isEmpty || !invalid.isEmpty { payload.droppedMembers = dropped + invalid }
        if let v = declaredVersion {
            if v > 2 { throw .unsupportedVersion(v) }
            if v >= 1 { payload.version = Int(v) }
        }
    }

    /// Whether `assignTyped` sets a view for this key.
    static func isTyped(_ code: UInt64) -> Bool {
        switch code {
        case 0x736964, 0x636964, 0x6F74, 0x7366, 0x7374, 0x737461, 0x65, 0x7375, 0x6273, 0x6267, 0x6E72, 0x626C, 0x6272, 0x7462, 0x6D7470, 0x7062, 0x74626C, 0x627361, 0x627364, 0x62736461, 0x64, 0x646C, 0x727470, 0x6D7364, 0x7074, 0x736E, 0x7473, 0x6C7463, 0x646661, 0x7072: return true
        default: return false
        }
    }
}

/// A member value in one of the plain forms, as byte ranges where it is text.
enum SimpleValue {
    /// A bare key (true), `?0` or `?1`.
    case flag(Bool)
    case integer(Int64)
    case token(Range<Int>)
    /// A quoted string without escapes (the range excludes the quotes).
    case string(Range<Int>)
}

extension SFDictionaryParser.Cursor {
    /// Reads the value after a key when it is in a plain form followed by the end or a
    /// separator, leaving the cursor after it; nil (cursor untouched) for anything else.
    mutating func scanSimpleValue() -> SimpleValue? {
        let n = bytes.count
        var i = index
        @inline(__always) func isSeparator(_ c: UInt8) -> Bool { c == UInt8(ascii: ",") || c == 0x20 || c == 0x09 }
        guard i < n else { return .flag(true) }
        guard bytes[i] == UInt8(ascii: "=") else { return isSeparator(bytes[i]) ? .flag(true) : nil }
        i &+= 1
        guard i < n else { return nil }
        let c = bytes[i]
        let value: SimpleValue
        if (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") {
            let negative = c == UInt8(ascii: "-")
            if negative { i &+= 1 }
            var number: Int64 = 0
            var digits = 0
            while i < n, bytes[i] &- 0x30 < 10 {
                digits &+= 1
                if digits > 15 { return nil }
                number = number &* 10 &+ Int64(bytes[i] &- 0x30)  // at most 15 digits: no overflow
                i &+= 1
            }
            guard digits > 0 else { return nil }
            value = .integer(negative ? -number : number)
        } else if c == UInt8(ascii: "\"") {
            i &+= 1
            let start = i
            while i < n {
                i = SFDictionaryParser.skipPlainStringBytes(bytes, from: i)
                guard i < n else { break }
                let b = bytes[i]
                if b == UInt8(ascii: "\"") { break }
                if b == UInt8(ascii: "\\") || b < 0x20 || b > 0x7E { return nil }
                i &+= 1
            }
            guard i < n, i - start <= limits.maxStringBytes else { return nil }
            value = .string(start..<i)
            i += 1
        } else if c == UInt8(ascii: "?") {
            guard i + 1 < n, bytes[i + 1] == UInt8(ascii: "0") || bytes[i + 1] == UInt8(ascii: "1") else { return nil }
            value = .flag(bytes[i + 1] == UInt8(ascii: "1"))
            i += 2
        } else if (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2A {
            let start = i
            i &+= 1
            while i < n, Self.isTokenChar(bytes[i]) { i &+= 1 }
            guard i - start <= limits.maxStringBytes else { return nil }
            value = .token(start..<i)
        } else {
            return nil
        }
        guard i == n || isSeparator(bytes[i]) else { return nil }
        index = i
        return value
    }
}

extension CMCDPayload.Fields {
    /// Sets a typed view from a plain value when its key takes that form, exactly as
    /// validation plus `assignTyped` would; false when the general path must decide.
    mutating func assignSimple(
        code: UInt64, _ value: SimpleValue, _ bytes: UnsafeBufferPointer<UInt8>, strings: inout InternedStrings
    ) -> Bool {
        switch value {
        case .integer(let n):
            return assignInteger(code: code, n)  // negative or implausible: the general path drops it
        case .flag(let flag):
            switch code {
            case 0x7375 /* su */: startup = flag
            case 0x6273 /* bs */: bufferStarvation = flag
            case 0x6267 /* bg */: backgrounded = flag
            case 0x6E72 /* nr */: nonRendered = flag
            default: return false
            }
        case .token(let range):
            switch code {
            case 0x6F74 /* ot */, 0x7366 /* sf */, 0x7374 /* st */, 0x737461 /* sta */:
                // A token too long to pack is in no key's set (0 packs no token).
                assignToken(code: code, CMCDKeys.packedCode(bytes, range) ?? 0)
            case 0x65 /* e */: event = String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            default: return false
            }
        case .string(let range):
            // Over the spec's length limit the view is cleared, as validation would.
            let fits = range.count <= CMCDKeys.maxLength(code: code) ?? Int.max
            switch code {
            case 0x736964 /* sid */:
                // `bytes` is the text the payload keeps: the id is read from there when asked for.
                if !fits {
                    sessionID = nil
                    sessionIDInSource = nil
                } else if range.upperBound <= Int(Int32.max) {
                    sessionID = nil
                    sessionIDInSource = Int32(range.lowerBound)..<Int32(range.upperBound)
                } else {
                    sessionID = String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
                    sessionIDInSource = nil
                }
            case 0x636964 /* cid */:
                contentID = fits ? strings.string(UnsafeBufferPointer(rebasing: bytes[range])) : nil
            default: return false
            }
        }
        return true
    }

    /// Sets the view of a token key (`ot`, `sf`, `st`, `sta`) from its token's packed code.
    /// Tokens outside a key's allowed set are invalid: the view is cleared.
    @inline(__always) mutating func assignToken(code: UInt64, _ token: UInt64) {
        switch code {
        case 0x6F74 /* ot */: objectType = CMCDObjectType(packedCode: token)
        case 0x7366 /* sf */: streamingFormat = CMCDKeys.streamingFormatNumber(packedCode: token)
        case 0x7374 /* st */: streamType = CMCDKeys.streamTypeNumber(packedCode: token)
        case 0x737461 /* sta */: state = CMCDPlayerState(packedCode: token)
        default: break
        }
    }

    /// Sets a typed view from a plain integer (see `assignSimple`).
    @inline(__always) mutating func assignInteger(code: UInt64, _ n: Int64) -> Bool {
        // Negative or absurd values (`CMCDKeys.isPlausible`) are left to the general path,
        // which drops them; the bounds sit in this switch so the usual value costs no other.
        guard n >= 0 else { return false }
        let single = CMCDMeasure.Component(value: n, objectType: nil)
        if otherComponents != nil { _ = keep(code, nil) }  // a later value replaces an inner list's
        switch code {
        case 0x626C /* bl */:
            guard n <= CMCDKeys.maxDurationMs else { return false }
            bufferLength = single
        case 0x6272 /* br */:
            guard n <= CMCDKeys.maxBitrateKbps else { return false }
            encodedBitrate = single
        case 0x7462 /* tb */:
            guard n <= CMCDKeys.maxBitrateKbps else { return false }
            topBitrate = single
        case 0x6D7470 /* mtp */:
            guard n <= CMCDKeys.maxBitrateKbps else { return false }
            measuredThroughput = single
        case 0x7062 /* pb */:
            guard n <= CMCDKeys.maxBitrateKbps else { return false }
            playheadBitrate = single
        case 0x74626C /* tbl */:
            guard n <= CMCDKeys.maxDurationMs else { return false }
            targetBufferLength = single
        case 0x627361 /* bsa */: starvationCount = single
        case 0x627364 /* bsd */: starvationDuration = single
        case 0x62736461 /* bsda */: starvationDurationTotal = single
        case 0x64 /* d */:
            guard n <= CMCDKeys.maxDurationMs else { return false }
            objectDuration = n
        case 0x646C /* dl */:
            guard n <= CMCDKeys.maxDurationMs else { return false }
            deadline = n
        case 0x727470 /* rtp */:
            guard n <= CMCDKeys.maxBitrateKbps else { return false }
            requestedMaxThroughput = n
        case 0x6D7364 /* msd */: mediaStartDelay = n
        case 0x7074 /* pt */: playheadTime = n
        case 0x736E /* sn */: sequenceNumber = n
        case 0x7473 /* ts */: timestamp = n
        case 0x6C7463 /* ltc */: liveLatency = n
        case 0x646661 /* dfa */: droppedFrames = n
        case 0x7072 /* pr */: playbackRate = Double(n)
        default: return false
        }
        return true
    }
}
