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
        // Few distinct hashes, all landing near each other and near the end of the table (the
        // table files a hash under its high half: the same pattern stands in both halves).
        func hash(for slot: Int32) -> UInt64 {
            let h = (UInt64(slot) % 5) &* spread | 1
            return h << 32 | h & 0xFFFF_FFFF
        }
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

    /// A hash whose high half is 0 is filed under the tag 1 (0 marks an empty bucket): it
    /// shares that tag with hashes whose high half is 1, and the caller tells them apart.
    @Test func aZeroHighHalfSharesTheTagOfOne() {
        var table = SessionTable()
        let hashes: [UInt64] = [0x0000_0000_0000_0005, 0x0000_0001_0000_0005, 0x0000_0000_FFFF_0000, 0x0000_0001_0000_0001]
        for (slot, hash) in hashes.enumerated() { table.insert(hash: hash, slot: Int32(slot)) }
        for (slot, hash) in hashes.enumerated() {
            #expect(table.find(hash: hash, matches: { $0 == Int32(slot) }) == Int32(slot))
        }
        table.remove(hash: hashes[0], slot: 0)
        #expect(table.find(hash: hashes[0], matches: { $0 == 0 }) == nil)
        for (slot, hash) in hashes.enumerated().dropFirst() {
            #expect(table.find(hash: hash, matches: { $0 == Int32(slot) }) == Int32(slot))
        }
        #expect(table.count == 3)
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

/// A session's lookback window keeps exactly what the simple rule says: insert in time order
/// (after equal times), drop entries older than the cut-off, then keep at most `capacity`.
struct LookbackWindowTests {
    @Test func matchesTheSimpleRule() {
        var state: UInt64 = 3
        func next(_ bound: UInt64) -> Int64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int64((state >> 33) % bound)
        }
        for round in 0..<200 {
            var session = SessionState(sessionID: "s", key: SessionKey("s"), firstTime: 0, startup: .done)
            var model: [BufferObservation] = []
            let capacity = round % 4 == 0 ? 3 : 64
            var time: Int64 = 10_000
            for step in 0..<300 {
                // Mostly in order, sometimes late, sometimes a jump; the cut-off trails the newest.
                switch next(10) {
                case 0: time -= next(3_000)
                case 1: time += next(20_000)
                default: time += next(4_000)
                }
                let observation = BufferObservation(time: time, position: Int64(step), bufferLength: Int32(next(30_000)), objectClass: UInt8(next(3)))
                let oldest = time - 10_000 - next(4) * 1_000 + (next(20) == 0 ? 15_000 : 0)
                session.remember(observation, keepFrom: oldest, capacity: capacity)
                var i = model.count
                while i > 0, model[i - 1].time > observation.time { i -= 1 }
                model.insert(observation, at: i)
                model.removeAll { $0.time < oldest }  // sorted: these are the leading ones
                if model.count > capacity { model.removeFirst(model.count - capacity) }
                #expect(session.window.map(\.position) == model.map(\.position), "round \(round) step \(step)")
            }
        }
    }

    /// The first observations live in the session's state; more move to an array, and back
    /// once the window has shrunk; a window restored from a checkpoint takes either form.
    @Test func outgrowsItsInlineRoomAndComesBack() {
        func observation(_ i: Int) -> BufferObservation {
            BufferObservation(time: Int64(i) * 1_000, position: Int64(i), bufferLength: Int32(i * 100), objectClass: 2)
        }
        let inline = BufferWindow.inlineCapacity
        var window = BufferWindow()
        for i in 0..<inline { window.insert(observation(i), keepFrom: 0, capacity: 64) }
        #expect(window.map(\.position) == Array(0..<Int64(inline)))
        #expect(!window.isSpilled)
        // One more, older than the newest: inserted in order as the window spills.
        window.insert(BufferObservation(time: 2_500, position: 99, bufferLength: 1, objectClass: 2), keepFrom: 0, capacity: 64)
        #expect(window.map(\.position) == [0, 1, 2, 99] + Array(3..<Int64(inline)))
        #expect(window.isSpilled)
        for i in inline..<20 { window.insert(observation(i), keepFrom: Int64(i - 9) * 1_000, capacity: 64) }
        #expect(window.map(\.position) == Array(10..<20))
        #expect(window.withElements { $0.map(\.bufferLength) } == (10..<20).map { Int32($0 * 100) })
        // Shrunk to two short of the inline room: back inline.
        window.insert(observation(20), keepFrom: Int64(21 - BufferWindow.unspillCount) * 1_000, capacity: 64)
        #expect(window.map(\.position) == Array(Int64(21 - BufferWindow.unspillCount)...20))
        #expect(!window.isSpilled)
        window.insert(observation(21), keepFrom: 0, capacity: 64)
        #expect(window.map(\.position) == Array(Int64(21 - BufferWindow.unspillCount)...21))
        window.removeAll()
        #expect(window.isEmpty)
        window.insert(observation(30), keepFrom: 0, capacity: 64)
        #expect(window.map(\.position) == [30])
        // Too old to keep: not kept, and what it made too old goes too.
        window.insert(observation(1), keepFrom: 29_000, capacity: 64)
        #expect(window.map(\.position) == [30])
        var restored = BufferWindow()
        for i in 0..<(inline + 2) { restored.append(observation(i)) }
        #expect(restored.map(\.position) == Array(0..<Int64(inline + 2)))
        #expect(restored.isSpilled)
        restored.insert(observation(inline + 2), keepFrom: 3_000, capacity: 3)
        #expect(restored.map(\.position) == Array(Int64(inline)...Int64(inline + 2)))
        #expect(!restored.isSpilled)
    }
}
