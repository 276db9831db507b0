import AsyncHTTPClient
import Foundation
import SentinelHTTP
import SentinelTestSupport
import Testing

@testable import SentinelKinesis

/// The Kinesis client against a real implementation of the API (moto's server mode).
@Suite(.ownThread) final class KinesisClientTests {
    let http = HTTPClientOptions(timeoutMs: 10_000).makeClient()

    deinit { http.shutdown { _ in } }

    func client() throws -> KinesisClient {
        let credentials = AWSCredentialChain(environment: MotoServer.credentialsEnvironment, http: http)
        return try KinesisClient(region: "us-east-1", endpoint: MotoServer.shared.endpoint, credentials: credentials, http: http)
    }

    func newStream(_ kinesis: KinesisClient, shards: Int) async throws -> String {
        let stream = "test-\(UUID().uuidString.prefix(8).lowercased())"
        try await kinesis.createStream(stream, shardCount: shards)
        try await kinesis.waitUntilActive(stream)
        return stream
    }

    /// Every record of every shard, from the start, in each shard's order.
    func readAll(_ kinesis: KinesisClient, _ stream: String) async throws -> [String: [KinesisClient.Record]] {
        var result: [String: [KinesisClient.Record]] = [:]
        for shard in try await kinesis.listShards(stream) {
            var iterator: String? = try await kinesis.shardIterator(stream, shard: shard.id, from: .trimHorizon)
            var records: [KinesisClient.Record] = []
            while let current = iterator {
                let page = try await kinesis.records(current, limit: 100)
                records += page.records
                // An open shard's iterator never ends: stop once it is caught up.
                if page.records.isEmpty, shard.isOpen || page.millisBehindLatest == 0 { break }
                iterator = page.nextIterator
            }
            result[shard.id] = records
        }
        return result
    }

    @Test func putRecordsComeBackFromTheirShardsInOrder() async throws {
        let kinesis = try client()
        let stream = try await newStream(kinesis, shards: 4)
        let summary = try await kinesis.describeStreamSummary(stream)
        #expect(summary.status == "ACTIVE")
        #expect(summary.openShardCount == 4)
        // 30 sessions of 20 records each, keyed by session: binary data survives the trip.
        var sent: [String: [[UInt8]]] = [:]
        for round in 0..<20 {
            var entries: [(partitionKey: String, data: [UInt8])] = []
            for session in 0..<30 {
                let data = Array("session-\(session)\trecord \(round)\t\u{e9}".utf8) + [0, 0xFF, 0x0A]
                entries.append((partitionKey: "session-\(session)", data: data))
                sent["session-\(session)", default: []].append(data)
            }
            let failed = try await kinesis.putRecords(stream, entries)
            #expect(failed.isEmpty)
        }
        let shards = try await readAll(kinesis, stream)
        #expect(shards.count == 4)
        var received: [String: [[UInt8]]] = [:]
        for (_, records) in shards {
            for record in records { received[record.partitionKey, default: []].append(record.data) }
        }
        // Each session's records on one shard, in the order they were put.
        #expect(received == sent)
        for (_, records) in shards {
            let keys = Set(records.map(\.partitionKey))
            for key in keys { #expect(shards.values.filter { $0.contains { $0.partitionKey == key } }.count == 1) }
        }
    }

    @Test func aSplitClosesTheParentAndNamesItInTheChildren() async throws {
        let kinesis = try client()
        let stream = try await newStream(kinesis, shards: 1)
        _ = try await kinesis.putRecords(stream, [(partitionKey: "a", data: Array("before".utf8))])
        let parent = try #require(try await kinesis.listShards(stream).first)
        try await kinesis.splitShard(stream, shard: parent.id, newStartingHashKey: "170141183460469231731687303715884105728")
        try await kinesis.waitUntilActive(stream)
        let shards = try await kinesis.listShards(stream)
        #expect(shards.count == 3)
        #expect(shards.first { $0.id == parent.id }?.isOpen == false)
        let children = shards.filter { $0.parent == parent.id }
        #expect(children.count == 2)
        #expect(children.allSatisfy { $0.isOpen })
    }

    @Test func errorsCarryTheirTypeAndAreNotRetried() async throws {
        let kinesis = try client()
        let missing = "no-such-stream-\(UUID().uuidString.prefix(8))"
        let error = await #expect(throws: AWSError.self) { try await kinesis.listShards(missing) }
        #expect(error?.type == "ResourceNotFoundException")
        #expect(error?.isRetryable == false)
        #expect(error?.status == 400)
    }

    @Test func anUnreachableEndpointIsRetriedThenReported() async throws {
        let refused = RefusedPort()
        let credentials = AWSCredentialChain(environment: MotoServer.credentialsEnvironment, http: http)
        var kinesis = try KinesisClient(region: "us-east-1", endpoint: "http://127.0.0.1:\(refused.port)", credentials: credentials, http: http)
        var service = kinesis.service
        service.maxAttempts = 3
        service.backoff = Backoff(baseMs: 10, capMs: 20)
        kinesis = KinesisClient(service: service)
        let error = await #expect(throws: AWSError.self) { try await kinesis.describeStreamSummary("s") }
        #expect(error?.status == nil)
        #expect(error?.isRetryable == true)
    }
}

/// The credential chain, source by source, against real files and real HTTP endpoints.
@Suite final class AWSCredentialTests {
    let http = HTTPClientOptions(timeoutMs: 2_000).makeClient()

    deinit { http.shutdown { _ in } }

    @Test func theEnvironmentComesFirst() async throws {
        let chain = AWSCredentialChain(environment: ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"], http: http)
        #expect(try await chain.credentials() == SigV4.Credentials(accessKeyID: "AKID", secretAccessKey: "secret", sessionToken: "token"))
        #expect(try await chain.source() == "environment")
    }

    @Test func aProfileIsReadFromTheSharedCredentialsFile() async throws {
        let file = TestScratch.directory.appendingPathComponent("credentials-\(UUID().uuidString)")
        try """
            [default]
            aws_access_key_id = DEFAULTKEY
            aws_secret_access_key = defaultsecret

            # the operator's
            [sentinel]
            aws_access_key_id=SENTINELKEY
            aws_secret_access_key = sentinel/secret+x
            """.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let base = ["AWS_SHARED_CREDENTIALS_FILE": file.path, "AWS_EC2_METADATA_DISABLED": "true"]
        let chosen = AWSCredentialChain(environment: base.merging(["AWS_PROFILE": "sentinel"]) { $1 }, http: http)
        #expect(try await chosen.credentials() == SigV4.Credentials(accessKeyID: "SENTINELKEY", secretAccessKey: "sentinel/secret+x"))
        let fallback = AWSCredentialChain(environment: base, http: http)
        #expect(try await fallback.credentials().accessKeyID == "DEFAULTKEY")
        let missing = AWSCredentialChain(environment: base.merging(["AWS_PROFILE": "nobody"]) { $1 }, http: http)
        let error = await #expect(throws: AWSCredentialChain.NoCredentials.self) { try await missing.credentials() }
        #expect(error?.description.contains("profile nobody") == true)
    }

    @Test func theContainerEndpointGivesTemporaryCredentials() async throws {
        let answer = #"{"AccessKeyId":"ASIATEMP","SecretAccessKey":"tempsecret","Token":"session-token","Expiration":"2099-01-01T00:00:00Z"}"#
        let server = try FixedAnswerServer(answers: ["/v2/credentials/abc": answer], requiredHeaders: ["/v2/credentials/abc": ("Authorization", "Bearer xyz")])
        defer { server.stop() }
        let chain = AWSCredentialChain(
            environment: [
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "\(server.url)/v2/credentials/abc", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "Bearer xyz",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true",
            ], http: http)
        #expect(try await chain.credentials() == SigV4.Credentials(accessKeyID: "ASIATEMP", secretAccessKey: "tempsecret", sessionToken: "session-token"))
    }

    @Test func theInstanceMetadataServiceIsAskedWithASessionToken() async throws {
        let answer = #"{"Code":"Success","AccessKeyId":"ASIAROLE","SecretAccessKey":"rolesecret","Token":"role-token","Expiration":"2099-01-01T00:00:00Z"}"#
        // The token PUT answers the token; the credential GETs need it.
        let token = ("X-aws-ec2-metadata-token", "imds-token")
        let tokenServer = try FixedAnswerServer(
            answers: [
                "/latest/api/token": "imds-token", "/latest/meta-data/iam/security-credentials/": "sentinel-role\n",
                "/latest/meta-data/iam/security-credentials/sentinel-role": answer,
            ],
            requiredHeaders: [
                "/latest/meta-data/iam/security-credentials/": token, "/latest/meta-data/iam/security-credentials/sentinel-role": token,
            ])
        defer { tokenServer.stop() }
        let chain = AWSCredentialChain(
            environment: ["AWS_EC2_METADATA_SERVICE_ENDPOINT": tokenServer.url, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"], http: http)
        #expect(try await chain.credentials().accessKeyID == "ASIAROLE")
        #expect(try await chain.source() == "instance role sentinel-role")
    }

    @Test func expiredTemporaryCredentialsAreFetchedAgain() throws {
        let body = Array(#"{"AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"2020-01-01T00:00:00Z"}"#.utf8)
        let resolved = try AWSCredentialChain.temporaryCredentials(body, source: "test")
        #expect(resolved.expiresAtMs == 1_577_836_800_000)
        #expect(AWSCredentialChain.profileCredentials("[a]\naws_access_key_id=K\n", profile: "a") == nil)
    }
}

/// `cmcd-sentinel replay --to kinesis`, the binary as users run it, against moto.
@Suite(.ownThread) final class ReplayToKinesisTests {
    let http = HTTPClientOptions(timeoutMs: 10_000).makeClient()

    deinit { http.shutdown { _ in } }

    @Test func replayPutsEveryLineKeyedBySession() async throws {
        let stream = "replay-\(UUID().uuidString.prefix(8).lowercased())"
        let demo = packageRoot.appendingPathComponent("samples/demo-sessions.tsv")
        let process = Process()
        process.executableURL = sentinelBinary
        process.arguments = ["replay", "--to", "kinesis", "--stream", stream, "--create-shards", "3", "--endpoint", MotoServer.shared.endpoint, demo.path]
        process.environment = MotoServer.credentialsEnvironment.merging(["PATH": "/usr/bin:/bin"]) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try withUnblockedSignals { try process.run() }
        let stderr = String(decoding: await readToEnd(errors.fileHandleForReading), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(stderr)")

        let lines = try String(contentsOf: demo, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(stderr.contains("replay: \(lines.count) records put to Kinesis stream \(stream)"), "\(stderr)")
        let credentials = AWSCredentialChain(environment: MotoServer.credentialsEnvironment, http: http)
        let kinesis = try KinesisClient(region: "us-east-1", endpoint: MotoServer.shared.endpoint, credentials: credentials, http: http)
        var byShard: [String: [KinesisClient.Record]] = [:]
        for shard in try await kinesis.listShards(stream) {
            let page = try await kinesis.records(try await kinesis.shardIterator(stream, shard: shard.id, from: .trimHorizon))
            byShard[shard.id] = page.records
        }
        #expect(byShard.count == 3)
        let received = byShard.values.flatMap { $0 }
        #expect(received.map { String(decoding: $0.data, as: UTF8.self) }.sorted() == lines.sorted())
        // Keyed by the CMCD session id (lines without one by their own hash); each session's
        // lines on one shard, in the file's order.
        for (_, records) in byShard {
            for record in records {
                let text = String(decoding: record.data, as: UTF8.self)
                #expect(text.contains(record.partitionKey) || !text.contains("sid"), "\(record.partitionKey): \(text)")
            }
        }
        #expect(received.filter { String(decoding: $0.data, as: UTF8.self).contains($0.partitionKey) }.count >= lines.count - 3)
        for key in Set(received.map(\.partitionKey)) {
            let shards = byShard.filter { $0.value.contains { $0.partitionKey == key } }
            #expect(shards.count == 1)
            let inShard = shards.first!.value.filter { $0.partitionKey == key }.map { String(decoding: $0.data, as: UTF8.self) }
            #expect(inShard == lines.filter { inShard.contains($0) })
        }
    }
}
