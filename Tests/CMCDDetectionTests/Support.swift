import CMCD
import CMCDRecords
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
