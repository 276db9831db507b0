import CMCD
import CMCDRecords
import SentinelTestSupport
@testable import CMCDDetection

let t0: Int64 = 1_720_015_600_000

/// A sample built from a raw CMCD dictionary (the session id is added).
func sample(_ sid: String, at t: Int64, _ cmcd: String = "", cid: String? = "movie", edge: String? = "FRA56-P3") -> Sample {
    let raw = ([#"sid="\#(sid)""#] + (cmcd.isEmpty ? [] : [cmcd])).joined(separator: ",")
    let payload = try! CMCDPayload(raw: raw)
    return Sample(time: t, sessionID: sid, contentID: cid, edgeLocation: edge, cmcd: payload)
}

/// Feeds samples and collects findings; `finish` resolves what is open at the end.
func run(_ samples: [Sample], rules: DetectionRules = DetectionRules(), finish: Bool = false) -> (findings: [Finding], engine: DetectionEngine) {
    var engine = DetectionEngine(rules: rules)
    var findings: [Finding] = []
    for s in samples { engine.process(s, into: &findings) }
    if finish { engine.finish(into: &findings) }
    return (findings, engine)
}

/// A session that started quickly and plays with the given buffer levels every 2 s.
func playing(_ sid: String, start: Int64 = t0, buffers: [Int64], interval: Int64 = 2000, ot: String = "av") -> [Sample] {
    var out = [sample(sid, at: start, "ot=m,su"), sample(sid, at: start + 500, "ot=\(ot),bl=1000")]
    var t = start + 1000
    for bl in buffers {
        out.append(sample(sid, at: t, "ot=\(ot),bl=\(bl)"))
        t += interval
    }
    return out
}

extension Array where Element == Finding {
    func of(_ type: FindingType) -> [Finding] { filter { $0.type == type } }
    var summary: [String] { map { "\($0.type.rawValue) \($0.status.rawValue) \($0.severity.rawValue)" } }
}

/// Random viewers as players behave (see `player-behaviour.md`): a startup, then a segment
/// request every 2 or 4 s with the buffer near the player's target, broken now and then by
/// a collapse to an empty buffer (v1 players say `bs` once; v2 ones `sta=r` and a growing
/// `bsa`), a slow drain to a low buffer, or a pause (no request for a while), each followed
/// by the buffer refilling a segment at a time.
enum ViewerStreams {
    static func random(sessions: Int, seconds: Int64, using rng: inout SplitMix64) -> [Sample] {
        var all: [(Int64, Int, Sample)] = []
        for n in 0..<sessions {
            let sid = "viewer-\(n)"
            let v2 = Bool.random(using: &rng)
            let interval: Int64 = Bool.random(using: &rng) ? 2_000 : 4_000
            let target = Int64.random(in: 12_000...30_000, using: &rng)
            var t = t0 + Int64.random(in: 0..<20_000, using: &rng)
            var order = 0
            func add(_ time: Int64, _ cmcd: String) {
                all.append((time, n * 1_000_000 + order, sample(sid, at: time, cmcd)))
                order += 1
            }
            add(t, "ot=m,su")
            add(t + 300, "ot=av,bl=0,su")
            t += 1_000
            var bl = min(target, 2 * interval)
            var stalls = 0
            var empty = 0
            var draining = 0
            let end = t0 + seconds * 1_000
            while t < end {
                var cmcd = "ot=av,bl=\(bl)"
                if empty > 0 {
                    cmcd = "ot=av,bl=0" + (v2 ? ",sta=r,bsa=\(stalls)" : "")
                }
                if v2, empty == 0 { cmcd += ",sta=p,bsa=\(stalls)" }
                add(t, cmcd)
                t += interval + Int64.random(in: -300...300, using: &rng)
                if empty > 0 {
                    empty -= 1
                    if empty == 0 { bl = interval }
                    continue
                }
                if draining > 0 {
                    draining -= 1
                    bl = max(500, bl - interval / 2 - Int64.random(in: 0...1_000, using: &rng))
                    continue
                }
                let roll = Int.random(in: 0..<100, using: &rng)
                if roll < 4 {
                    // The network collapses: the buffer runs dry.
                    stalls += 1
                    empty = Int.random(in: 1...12, using: &rng)
                    add(t, "ot=av,bl=0," + (v2 ? "sta=r,bsa=\(stalls)" : "bs"))
                    t += interval
                } else if roll < 7 {
                    draining = Int.random(in: 2...8, using: &rng)
                } else if roll < 8 {
                    t += Int64.random(in: 20_000...60_000, using: &rng)
                } else {
                    bl = min(target, bl + interval + Int64.random(in: -500...500, using: &rng))
                }
            }
        }
        all.sort { ($0.0, $0.1) < ($1.0, $1.1) }
        return all.enumerated().map { i, entry in
            var s = entry.2
            s.position = Int64(i)
            return s
        }
    }
}
