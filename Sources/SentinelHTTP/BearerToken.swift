/// `Authorization: Bearer <token>` checks for the servers (MCP over HTTP, the collector).
public enum BearerToken {
    /// Whether the header carries `token`: the scheme in any case (RFC 9110: auth schemes
    /// are case-insensitive), the token compared in constant time. An empty token never matches.
    public static func matches(_ header: String?, token: String) -> Bool {
        guard let header else { return false }
        let bytes = Array(header.utf8)
        guard bytes.count > 7, String(decoding: bytes[0..<7], as: UTF8.self).lowercased() == "bearer " else { return false }
        var given = bytes[7...]
        while given.first == 0x20 { given.removeFirst() }
        let expected = Array(token.utf8)
        guard given.count == expected.count, !expected.isEmpty else { return false }
        return zip(given, expected).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
