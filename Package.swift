// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "cmcd-sentinel",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cmcd-sentinel", targets: ["CMCDSentinel"]),
        .executable(name: "sentinel-bench", targets: ["SentinelBenchmark"]),
        .library(name: "CMCD", targets: ["CMCD"]),
        .library(name: "CMCDRecords", targets: ["CMCDRecords"]),
        .library(name: "CMCDDetection", targets: ["CMCDDetection"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", from: "0.12.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.1.4"),
    ],
    targets: [
        // Pure core: no IO, no dependencies beyond the standard library.
        .target(name: "SentinelJSON", swiftSettings: strict),
        .target(name: "CMCD", dependencies: ["SentinelJSON"], swiftSettings: strict),
        .target(name: "CMCDRecords", dependencies: ["CMCD", "SentinelJSON"], swiftSettings: strict),
        .target(name: "SentinelYAML", dependencies: [.product(name: "Yams", package: "Yams")], swiftSettings: strict),
        .target(name: "CMCDDetection", dependencies: ["CMCDRecords", "SentinelJSON", "SentinelYAML"], swiftSettings: strict),
        .target(name: "SentinelConfig", dependencies: ["CMCDRecords", "SentinelYAML"], swiftSettings: strict),
        // The seam between the daemon and its sinks: what a sink, a record sink and a
        // checkpoint store are. Each sink lives in its edge module; only the command wires them.
        .target(name: "SentinelSinks", dependencies: ["CMCDRecords", "CMCDDetection", "SentinelJSON"], swiftSettings: strict),
        // Edges: Kafka (librdkafka from Debian's librdkafka-dev).
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka", providers: [.apt(["librdkafka-dev"])]),
        // glibc's mallopt, for the daemon's allocator settings.
        .systemLibrary(name: "CMalloc"),
        // The compiler's cache prefetch hint (a header, no library): the consumer asks for the
        // next record while the current one is handled.
        .systemLibrary(name: "CPrefetch"),
        .target(
            name: "SentinelKafka", dependencies: ["CRdKafka", "CPrefetch", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .target(
            name: "SentinelDaemon",
            dependencies: [
                "CMCDRecords", "CMCDDetection", "SentinelConfig", "SentinelKafka", "SentinelJSON", "SentinelHTTP", "SentinelSinks", "CMalloc",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        // Edges: InfluxDB line protocol over HTTP (zlib from Debian's zlib1g-dev for gzip).
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(
            name: "SentinelHTTP",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "SentinelInflux",
            dependencies: [
                "CMCDRecords", "CMCDDetection", "SentinelJSON", "SentinelHTTP", "SentinelConfig", "SentinelSinks", "CZlib",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        // Edges: the alerts table with its notification outbox (SQLite from Debian's
        // libsqlite3-dev, PostgreSQL through postgres-nio).
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(
            name: "SentinelAlerts",
            dependencies: [
                "CMCDDetection", "SentinelJSON", "SentinelHTTP", "SentinelConfig", "SentinelSinks", "CSQLite",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Edges: the CMCD v2 event-mode collector (Hummingbird in, Kafka out).
        .target(
            name: "SentinelCollector",
            dependencies: [
                "CMCD", "SentinelKafka", "SentinelHTTP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Edges: signed webhook delivery from the outbox.
        .target(
            name: "SentinelWebhooks",
            dependencies: [
                "SentinelAlerts", "CMCDDetection", "SentinelJSON", "SentinelHTTP", "SentinelConfig", "SentinelSinks",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Edges: Kinesis (AWS Signature Version 4, credentials, the JSON protocol's calls).
        .target(
            name: "SentinelKinesis",
            dependencies: [
                "SentinelHTTP", "SentinelJSON",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        // The Kinesis stream as the daemon's source of records (shard leases in DynamoDB).
        .target(
            name: "SentinelKinesisSource",
            dependencies: [
                "SentinelKinesis", "SentinelDaemon", "SentinelKafka", "SentinelHTTP",
                .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        // Edges: the MCP server (read-only tools over InfluxDB and the alerts table).
        .target(
            name: "SentinelMCP",
            dependencies: [
                "CMCD", "CMCDRecords", "CMCDDetection", "SentinelJSON", "SentinelConfig", "SentinelHTTP", "SentinelAlerts",
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        // Edges: command line.
        .target(
            name: "SentinelCLI",
            dependencies: [
                "CMCD", "CMCDRecords", "CMCDDetection", "SentinelJSON", "SentinelYAML", "SentinelKafka", "SentinelConfig", "SentinelDaemon",
                "SentinelHTTP", "SentinelMCP", "SentinelAlerts", "SentinelWebhooks", "SentinelCollector", "SentinelInflux", "SentinelSinks",
                "SentinelKinesis", "SentinelKinesisSource",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(name: "CMCDSentinel", dependencies: ["SentinelCLI"], swiftSettings: strict),
        .executableTarget(
            name: "SentinelBenchmark",
            dependencies: [
                "CMCDRecords", "CMCDDetection", "SentinelConfig", "SentinelDaemon", "SentinelInflux", "SentinelKafka", "SentinelSinks",
                "SentinelAlerts", "SentinelWebhooks",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .testTarget(name: "CMCDTests", dependencies: ["CMCD", "SentinelJSON", "SentinelTestSupport"], exclude: ["Vectors"], swiftSettings: strict),
        .testTarget(name: "CMCDRecordsTests", dependencies: ["CMCDRecords"], swiftSettings: strict),
        .testTarget(
            name: "SentinelKinesisTests",
            dependencies: [
                "SentinelKinesis", "SentinelHTTP", "SentinelJSON", "SentinelTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .testTarget(name: "CMCDDetectionTests", dependencies: ["CMCDDetection", "CMCDRecords", "SentinelTestSupport"], swiftSettings: strict),
        // Simulated viewers of real players, scored against the truth (issue 27's behaviour suite).
        .testTarget(name: "BehaviourTests", dependencies: ["CMCDDetection", "CMCDRecords", "SentinelTestSupport"], swiftSettings: strict),
        .testTarget(name: "SentinelCLITests", dependencies: ["SentinelJSON", "CMCDSentinel", "SentinelTestSupport"], swiftSettings: strict),
        .testTarget(name: "SentinelKafkaTests", dependencies: ["SentinelKafka", "SentinelTestSupport"], swiftSettings: strict),
        .testTarget(name: "SentinelConfigTests", dependencies: ["SentinelConfig"], swiftSettings: strict),
        .testTarget(name: "SentinelCollectorTests", dependencies: ["SentinelCollector", "SentinelHTTP", "CMCD"], swiftSettings: strict),
        // Starts the real servers the integration tests talk to (influxd, PostgreSQL, the webhook receiver).
        .target(
            name: "SentinelTestSupport",
            dependencies: [
                "SentinelJSON", "SentinelHTTP", "SentinelDaemon", .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Tests/SentinelTestSupport", swiftSettings: strict),
        .testTarget(
            name: "SentinelInfluxTests", dependencies: ["SentinelInflux", "SentinelJSON", "SentinelTestSupport", "SentinelConfig", "CMCD", "CMCDRecords", "CMCDDetection"],
            swiftSettings: strict),
        .testTarget(
            name: "SentinelAlertsTests", dependencies: ["SentinelAlerts", "SentinelJSON", "SentinelTestSupport", "CMCDDetection", "SentinelSinks"], swiftSettings: strict),
        .testTarget(
            name: "SentinelWebhooksTests",
            dependencies: ["SentinelWebhooks", "SentinelAlerts", "SentinelJSON", "SentinelTestSupport", "SentinelConfig", "SentinelHTTP", "CMCDDetection"],
            swiftSettings: strict),
        .testTarget(
            name: "SentinelMCPTests",
            dependencies: [
                "SentinelMCP", "SentinelInflux", "SentinelAlerts", "SentinelConfig", "SentinelJSON", "SentinelTestSupport", "CMCD", "CMCDRecords",
                "CMCDDetection", "CMCDSentinel", .product(name: "MCP", package: "swift-sdk"),
            ],
            exclude: ["external_client.py"], swiftSettings: strict),
        .testTarget(
            name: "SentinelDaemonTests",
            dependencies: [
                "SentinelKafka", "SentinelJSON", "CMCDSentinel", "SentinelTestSupport", "SentinelAlerts", "SentinelConfig", "SentinelYAML",
                "SentinelDaemon", "CMCDDetection", "CMCDRecords",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            exclude: ["parse_metrics.py"], swiftSettings: strict),
    ]
)
