import CMCDRecords
import Testing

@testable import CMCDDetection

/// The engine's session index: every live key is found, removed keys are not, whatever the
/// hashes (collisions and wrap-around are forced here by choosing them).
struct SessionTableTests {
    @Test(arguments: [UInt64(1), 7, 64, 0xFFFF_FFFF_FFFF_FFC0])
    func findsEveryLiveSlotUnderCollisions(_ spread: UInt64) {
        var table = SessionTable()
        var live: [Int32: UInt64] = [:]
        var rng: UInt64 = 3
        func next() -> UInt64 {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            return rng >> 33
        }
        // Few distinct hashes, all landing near each other and near the end of the table.
        func hash(for slot: Int32) -> UInt64 { (UInt64(slot) % 5) &* spread | 1 }
        for step in 0..<5_000 {
            let slot = Int32(next() % 300)
            if let h = live[slot] {
                table.remove(hash: h, slot: slot)
                live[slot] = nil
            } else {
                table.insert(hash: hash(for: slot), slot: slot)
                live[slot] = hash(for: slot)
            }
            if step % 50 == 0 {
                for candidate in Int32(0)..<300 {
                    let found = table.find(hash: hash(for: candidate), matches: { $0 == candidate })
                    #expect(found == (live[candidate] != nil ? candidate : nil))
                }
                #expect(table.count == live.count)
            }
        }
    }

    @Test func keysCompareWholeIDs() {
        let a = SessionKey("session-a")
        #expect(a.sameBytes(as: SessionKey("session-a")) && a.isComplete)
        #expect(!a.sameBytes(as: SessionKey("session-b")))
        #expect(!a.sameBytes(as: SessionKey("session-a ")))
        let long = String(repeating: "x", count: 64)
        #expect(SessionKey(long).isComplete && !SessionKey(long + "y").isComplete)
    }

    /// Hand-built samples may carry ids longer than CMCD allows; those sharing their first
    /// 64 bytes are still separate sessions.
    @Test func longIDsSharingAPrefixAreSeparateSessions() {
        let prefix = String(repeating: "p", count: 64)
        var engine = DetectionEngine()
        var findings: [Finding] = []
        engine.process(sample(prefix + "-one", at: t0, "ot=av,bl=9000"), into: &findings)
        engine.process(sample(prefix + "-two", at: t0 + 1, "ot=av,bl=9000"), into: &findings)
        engine.process(sample(prefix + "-one", at: t0 + 2, "ot=av,bl=1000"), into: &findings)
        #expect(engine.liveSessionCount == 2)
        #expect(findings.map(\.sessionID) == [prefix + "-one"])
    }
}
