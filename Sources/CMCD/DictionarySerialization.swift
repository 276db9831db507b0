/// RFC 8941 serialisation of a payload's members: the canonical text of what was decoded.
extension CMCDPayload {
    /// The valid members as one CMCD dictionary (`bl=(2100;v),sid="a",su`), in wire order;
    /// members that were left out (`ignored`) are not written. The text has no CR or LF.
    public var dictionaryText: String {
        var out = ""
        for entry in entries where entry.isValid {
            if !out.isEmpty { out += "," }
            out += entry.key
            switch entry.value {
            case .item(let item):
                if case .boolean(true) = item.value {
                    Self.appendParameters(item.parameters, to: &out)
                } else {
                    out += "="
                    Self.append(item, to: &out)
                }
            case .innerList(let items, let parameters):
                out += "=("
                for (i, item) in items.enumerated() {
                    if i > 0 { out += " " }
                    Self.append(item, to: &out)
                }
                out += ")"
                Self.appendParameters(parameters, to: &out)
            }
        }
        return out
    }

    static func append(_ item: SFItem, to out: inout String) {
        append(item.value, to: &out)
        appendParameters(item.parameters, to: &out)
    }

    static func appendParameters(_ parameters: [SFParameter], to out: inout String) {
        for p in parameters {
            out += ";" + p.key
            if case .boolean(true) = p.value { continue }
            out += "="
            append(p.value, to: &out)
        }
    }

    static func append(_ bare: SFBareItem, to out: inout String) {
        switch bare {
        case .integer(let n): out += String(n)
        case .decimal(let d):
            // At most three fractional digits, at least one (RFC 8941 sf-decimal).
            let thousandths = Int64((d * 1000).rounded())
            let sign = thousandths < 0 ? "-" : ""
            let magnitude = thousandths.magnitude
            var fraction = String(magnitude % 1000)
            while fraction.count < 3 { fraction = "0" + fraction }
            while fraction.count > 1, fraction.hasSuffix("0") { fraction.removeLast() }
            out += "\(sign)\(magnitude / 1000).\(fraction)"
        case .string(let s):
            out += "\""
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n", "\r": out += " "  // a record is one line
                default: out.unicodeScalars.append(scalar)
                }
            }
            out += "\""
        case .token(let t): out += t
        case .boolean(let b): out += b ? "?1" : "?0"
        case .byteSequence(let b): out += ":\(b):"
        }
    }
}
