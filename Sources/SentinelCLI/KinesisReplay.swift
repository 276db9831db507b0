import AsyncHTTPClient
import CMCDRecords
import SentinelHTTP
import SentinelKinesis

#if canImport(Glibc)
import Glibc
#endif

extension ReplayCommand {
    /// Puts the lines to a Kinesis stream with `PutRecords`, up to 500 records (5 MB) a call,
    /// partition key = session id. Records Kinesis refuses (a shard's throughput exceeded) are
    /// put again with backoff before the next lines are read.
    func replayToKinesis() async throws {
        Interrupt.install()
        let environment = ProcessEnvironment.current
        let stream = self.stream ?? environment["SENTINEL_KINESIS_STREAM"] ?? "cmcd-logs"
        let region = self.region ?? KinesisClient.defaultRegion(environment)
        let endpoint = self.endpoint ?? environment["SENTINEL_KINESIS_ENDPOINT"]
        let configuration = try parserConfiguration
        let http = HTTPClientOptions(timeoutMs: 30_000).makeClient()
        do {
            try await replay(to: stream, region: region, endpoint: endpoint, configuration: configuration, environment: environment, http: http)
            try await http.shutdown()
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    private func replay(
        to stream: String, region: String, endpoint: String?, configuration: RecordParser.Configuration, environment: [String: String], http: HTTPClient
    ) async throws {
        let credentials = AWSCredentialChain(environment: environment, http: http)
        let kinesis: KinesisClient
        do { kinesis = try KinesisClient(region: region, endpoint: endpoint, credentials: credentials, http: http) } catch {
            throw CommandFailure.usage("replay: \(error)")
        }
        if let createShards {
            do {
                try await kinesis.createStream(stream, shardCount: createShards)
                printError("replay: created stream \(stream) with \(createShards) shards")
            } catch let error as AWSError where error.type == "ResourceInUseException" {
                // It exists already.
            }
        }
        do { try await kinesis.waitUntilActive(stream, timeoutSeconds: 120) } catch {
            throw CommandFailure.runtime("replay: stream \(stream): \(error)")
        }

        var parser = RecordParser(configuration: configuration)
        var sent = 0
        var tooLong = 0
        let started = monotonicSeconds()
        var lastProgress = started
        var pending: [(partitionKey: String, data: [UInt8])] = []
        var pendingBytes = 0

        /// Puts `pending`, again and again for what Kinesis refuses, with backoff.
        func flush() async throws {
            var entries = pending
            pending.removeAll(keepingCapacity: true)
            pendingBytes = 0
            let backoff = Backoff(baseMs: 100, capMs: 5_000)
            var attempts = 0
            while !entries.isEmpty {
                let failed = try await kinesis.putRecords(stream, entries)
                sent += entries.count - failed.count
                guard !failed.isEmpty else { break }
                attempts += 1
                if attempts >= 20 {
                    throw CommandFailure.runtime("replay: \(failed.count) records refused 20 times, the last for \(failed[0].error)")
                }
                entries = failed.map { entries[$0.index] }
                try await Task.sleep(for: .milliseconds(backoff.delayMs(afterAttempts: attempts)))
            }
            if let rate {
                let due = started + Double(sent) / rate
                let now = monotonicSeconds()
                if due > now { try await Task.sleep(for: .milliseconds(Int64((due - now) * 1000))) }
            }
            let now = monotonicSeconds()
            if now - lastProgress >= 1 {
                lastProgress = now
                printError("replay: \(sent) records put (\(Int(Double(sent) / (now - started)))/s)")
            }
        }

        // With a rate, calls are smaller so that records go out evenly.
        let perCall = rate.map { max(1, min(500, Int($0 / 10))) } ?? 500
        repeat {
            let fd = path == "-" ? 0 : open(path, O_RDONLY)
            guard fd >= 0 else { throw CommandFailure.runtime("\(path): cannot open: \(String(cString: strerror(errno)))") }
            defer { if fd != 0 { close(fd) } }
            let reader = LineReader(fd: fd, maxLineBytes: min(configuration.maxLineBytes, 1_000_000))
            while !Interrupt.requested {
                let lines = try reader.read(upTo: perCall - pending.count) { line in
                    guard case .line(let bytes) = line else {
                        tooLong += 1  // counted and reported: never dropped silently
                        return
                    }
                    guard !bytes.isEmpty else { return }
                    pending.append((Self.partitionKey(of: bytes, keying: partitionKey, parser: &parser), Array(bytes)))
                    pendingBytes += bytes.count + 256
                }
                if lines == 0 { break }
                if pending.count >= perCall || pendingBytes >= 4_000_000 { try await flush() }
            }
            if !pending.isEmpty { try await flush() }
        } while loop && !Interrupt.requested
        printError(
            "replay: \(sent) records put to Kinesis stream \(stream)"
                + (tooLong > 0 ? ", \(tooLong) lines over \(configuration.maxLineBytes) bytes skipped" : ""))
        if tooLong > 0 { throw CommandFailure.runtime("replay: \(tooLong) lines longer than \(configuration.maxLineBytes) bytes were not sent") }
    }

    /// A line's partition key: a random one (the line is not parsed), or its session id (at
    /// most 256 characters, as Kinesis allows), else the line's own hash.
    static func partitionKey(of line: UnsafeBufferPointer<UInt8>, keying: PartitionKeying, parser: inout RecordParser) -> String {
        if keying == .random { return String(UInt64.random(in: 0...UInt64.max), radix: 16) }
        var sessionID: String?
        parser.parse(line: line) { outcome in
            if sessionID == nil, case .sample(let sample) = outcome, !sample.sessionID.isEmpty { sessionID = sample.sessionID }
        }
        if let sessionID { return String(sessionID.prefix(256)) }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in line { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16)
    }
}
