import Foundation

/// CloudFront real-time log lines of a PoP outage, for the incident tests: the storm test
/// through the daemon and `detect` on a file.
public enum OutageLines {
    public static let t0: Int64 = 1_720_015_600_000
    static let contents = ["news", "film", "match", "quiz"]

    /// CloudFront lines of `perEdge` viewers on each edge, a segment request every 4 s from
    /// a staggered start to 240 s; those on the failing edge have an empty buffer from 60 s
    /// to 120 s (the first request of the stall says `bs`, as v1 players do) and go on
    /// requesting. Sorted by time.
    public static func cloudFront(perEdge: Int, failing: String, healthy: String) -> [(time: Int64, line: String)] {
        var out: [(Int64, String)] = []
        for edge in [failing, healthy] {
            for i in 0..<perEdge {
                let sid = "\(edge)-\(i)"
                let cid = contents[i % contents.count]
                let start = t0 + Int64(i % 4_000)
                func add(_ t: Int64, _ cmcd: String) {
                    let encoded = (cmcd + ",cid=\"\(cid)\",sid=\"\(sid)\"").replacingOccurrences(of: "=", with: "%3D")
                        .replacingOccurrences(of: ",", with: "%2C").replacingOccurrences(of: "\"", with: "%22")
                    out.append((t, "\(t / 1000).\(String(t % 1000 + 1000).dropFirst())\t203.0.113.9\t200\tGET\t/v.ts\t\(edge)\tr\t0.1\tCMCD=\(encoded)\t-"))
                }
                add(start, "ot=m,su")
                add(start + 400, "bl=800,ot=av,su")
                var t = start + 1_000
                var saidStarved = false
                while t < t0 + 240_000 {
                    if edge == failing, (t0 + 60_000)..<(t0 + 120_000) ~= t {
                        add(t, saidStarved ? "bl=0,ot=av" : "bl=0,bs,ot=av")
                        saidStarved = true
                    } else {
                        add(t, "bl=20000,br=3000,mtp=25000,ot=av")
                    }
                    t += 4_000
                }
            }
        }
        return out.sorted { $0.0 < $1.0 }
    }
}
