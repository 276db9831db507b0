import AsyncHTTPClient
import CoreMetrics
import Foundation
import Logging
import SentinelConfig
import SentinelDaemon
import SentinelKinesis
import SentinelKinesisSource

/// `input.source: kinesis`: the daemon reads the stream's shards through the lease table.
enum KinesisInput {
    /// What the daemon calls to make its source, on the consume loop's task.
    static func sourceMaker(
        _ configuration: SentinelConfiguration, http: HTTPClient, metrics: any MetricsFactory
    ) -> @Sendable (Logger) async throws -> any RecordSource {
        let settings = configuration.kinesis
        return { logger in
            let environment = ProcessInfo.processInfo.environment
            let region = settings.region.isEmpty ? KinesisClient.defaultRegion(environment) : settings.region
            let credentials = AWSCredentialChain(environment: environment, http: http)
            let endpoint = settings.endpoint.isEmpty ? nil : settings.endpoint
            let dynamodbEndpoint = settings.dynamodbEndpoint.isEmpty ? endpoint : settings.dynamodbEndpoint
            let kinesis = try KinesisClient(region: region, endpoint: endpoint, credentials: credentials, http: http)
            let leases = try LeaseTable(name: settings.leaseTable, region: region, endpoint: dynamodbEndpoint, credentials: credentials, http: http)
            var source = KinesisRecordSource.Configuration(stream: settings.stream, owner: ownerName())
            source.failoverSeconds = Double(settings.failoverMs) / 1000
            source.scanSeconds = min(5, source.failoverSeconds / 2)
            source.sessionsSpanShards = settings.sessionsSpanShards
            logger.info("consuming Kinesis stream \(settings.stream) in \(region) as \(source.owner), leases in \(settings.leaseTable)")
            return try await KinesisRecordSource(configuration: source, kinesis: kinesis, leases: leases, logger: logger, metrics: metrics)
        }
    }

    /// This daemon's name in the lease table: host, process and a random part.
    static func ownerName() -> String {
        "\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(8).lowercased())"
    }
}
