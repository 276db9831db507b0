import CMCDRecords
import Testing
@testable import CMCDDetection

/// Checkpoints of an engine's state: compact, and a damaged one refused whole.
struct CheckpointTests {
    /// An engine with sessions in every state a checkpoint carries.
    static func busyEngine() -> DetectionEngine {
        var engine = DetectionEngine()
        var t: Int64 = 1_764_752_400_000
        for i in 0..<50 {
            let sid = "session-\(i)"
            _ = engine.process(sample(sid, at: t, "ot=m,su,sf=d,br=3000,bl=0"))
            if i % 5 != 0 {
                for k in 1...4 {
                    _ = engine.process(sample(sid, at: t + Int64(k) * 2_000, "ot=v,br=3000,d=4000,bl=\(8_000 + k * 2_000)"))
                }
            }
            if i % 7 == 0 { _ = engine.process(sample(sid, at: t + 9_000, "ot=v,br=3000,d=4000,bl=600,bs")) }
            t += 300
        }
        return engine
    }

    @Test func aCheckpointIsCompactAndRestoresEverySession() throws {
        let engine = Self.busyEngine()
        let bytes = engine.checkpoint()
        #expect(engine.liveSessionCount == 50)
        #expect(bytes.count < 50 * 200, "\(bytes.count) bytes for 50 sessions")
        let restored = try DetectionEngine(checkpoint: bytes)
        #expect(restored.liveSessionCount == 50)
        #expect(restored.watermark == engine.watermark)
        #expect(restored.restartPosition() == engine.restartPosition())
        #expect(restored.checkpoint() == bytes, "a restored engine checkpoints to the same bytes")
        #expect(restored.qualityOfExperience(sessionID: "session-7") == engine.qualityOfExperience(sessionID: "session-7"))
    }

    @Test func aCheckpointOfTheLastVersionStillRestores() throws {
        // Version 1 lacked only the open drops' reference positions: a daemon upgraded in
        // the middle of the stream resumes from the checkpoint its predecessor left.
        var engine = DetectionEngine()
        for i in 0..<20 { _ = engine.process(sample("s\(i)", at: t0 + Int64(i) * 2_000, "ot=av,bl=\(4_000 + i * 100)")) }
        var bytes = engine.checkpoint()
        #expect(bytes[4] == EngineCheckpoint.version && EngineCheckpoint.version == 2)
        bytes[4] = 1
        let restored = try DetectionEngine(checkpoint: bytes)
        #expect(restored.liveSessionCount == 20 && restored.restartPosition() == engine.restartPosition())
        bytes[4] = 3
        #expect(throws: EngineCheckpoint.Invalid.self) { try DetectionEngine(checkpoint: bytes) }
    }

    @Test func aDamagedCheckpointIsRefused() {
        let bytes = Self.busyEngine().checkpoint()
        #expect(throws: EngineCheckpoint.Invalid.self) { try DetectionEngine(checkpoint: Array(bytes.dropLast())) }
        #expect(throws: EngineCheckpoint.Invalid.self) { try DetectionEngine(checkpoint: bytes + [0]) }
        #expect(throws: EngineCheckpoint.Invalid.self) { try DetectionEngine(checkpoint: Array("CSCK".utf8) + [99]) }
        #expect(throws: EngineCheckpoint.Invalid.self) { try DetectionEngine(checkpoint: [1, 2, 3]) }
        // Any single flipped byte is refused or restores some engine: never a crash.
        for i in stride(from: 5, to: bytes.count, by: max(1, bytes.count / 300)) {
            var damaged = bytes
            damaged[i] ^= 0xFF
            _ = try? DetectionEngine(checkpoint: damaged)
        }
    }
}
