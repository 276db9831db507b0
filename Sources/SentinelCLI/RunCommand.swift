import ArgumentParser
import AsyncHTTPClient
import Logging
import ServiceLifecycle
import CMCDDetection
import SentinelAlerts
import SentinelConfig
import SentinelDaemon
import SentinelHTTP
import SentinelInflux
import SentinelSinks
import SentinelJSON
import SentinelKinesisSource
import SentinelWebhooks
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `cmcd-sentinel run`: the daemon.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Consume CMCD records from Kafka and report findings as they happen.",
        discussion: """
            Configuration comes from --config (YAML), then SENTINEL_* environment variables, then \
            these flags. Findings go to standard output as JSON lines; logs go to standard error. \
            Offsets are committed only after the findings of every record up to them are written. \
            SIGTERM or SIGINT stops cleanly: in-flight records finish, output is flushed, offsets \
            are committed, the consumer leaves its group.
            """)

    @Option(help: "Configuration file (YAML).")
    var config: String?

    @Option(help: "Bootstrap brokers, comma separated (overrides kafka.brokers).")
    var brokers: String?

    @Option(help: "Topic (overrides kafka.topic).")
    var topic: String?

    @Option(help: "Consumer group (overrides kafka.group_id).")
    var group: String?

    @Option(help: "Read these partitions without a group rebalance, comma separated (overrides kafka.partitions).")
    var partitions: String?

    @Option(help: "Exit after this many seconds without a record (for demos, tests and catching up).")
    var exitWhenIdle: Double?

    func run() async throws {
        let configuration = try Self.loadConfiguration(path: config, overrides: self)
        let rules = try Self.loadRules(configuration.rules)
        guard configuration.stdout || configuration.influx != nil || configuration.alerts != nil else {
            throw CommandFailure.usage("output.stdout is false and no other sink is configured: findings would be lost")
        }
        let logger = Logger(label: "cmcd-sentinel")
        let metrics = DaemonMetrics()
        // The sinks and the dispatcher count with swift-metrics instruments in its registry.
        let instruments = metrics.factory(help: InfluxWriter.metricHelp.merging(AlertSink.metricHelp) { a, _ in a }.merging(WebhookDispatcher.metricHelp) { a, _ in a })
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        var sinks: [any FindingSink] = []
        if configuration.stdout { sinks.append(StdoutSink()) }
        if let settings = configuration.influx {
            let influx = InfluxSink(configuration: settings, logger: logger, metrics: instruments)
            sinks.append(influx)
            // Its writer sends in the background; it shuts down after the daemon, which drains it.
            services.append(.init(service: influx))
            logger.info("findings\(settings.writeRaw ? " and requests" : "") go to InfluxDB at \(SentinelConfiguration.maskingPassword(settings.url)), database \(settings.database)")
        }
        var store: AlertStore?
        if let alerts = configuration.alerts {
            do {
                // Not yet migrated: its connections run in the outer group below, then it is.
                store = try AlertStore.connect(url: alerts.url, logger: logger)
            } catch {
                throw CommandFailure.runtime("alerts table \(SentinelConfiguration.maskingPassword(alerts.url)): \(error)")
            }
            let routing = WebhookRouting(routes: rules.routes, endpoints: Set(configuration.webhooks.map(\.name)))
            for unknown in routing.unknownEndpoints {
                logger.warning("route \(unknown): no such webhook in the configuration; the route is not used")
            }
            sinks.append(AlertSink(store: store!, notifications: { routing.plan($0, now: $1) }, logger: logger, metrics: instruments))
            logger.info("alerts go to \(SentinelConfiguration.maskingPassword(alerts.url))")
            if !configuration.webhooks.isEmpty {
                let dispatcher = WebhookDispatcher(
                    store: store!, endpoints: configuration.webhooks, routes: rules.routes, retentionDays: alerts.retentionDays, logger: logger,
                    metrics: instruments)
                metrics.register(component: "webhooks") { dispatcher.health }
                services.append(.init(service: dispatcher))
            }
        }
        if !configuration.httpListen.isEmpty, let address = HostPort(configuration.httpListen, listening: true) {
            var apis: [HTTPAPI] = []
            if let store {
                apis.append(SilenceAPI(store: store, tokens: configuration.httpTokens).api)
                if configuration.httpTokens.isEmpty { logger.info("the silences API (\(SilenceAPI.mountPoint)) is off: no http.tokens") }
            }
            let endpoint = MetricsEndpoint.application(host: address.host, port: address.port, metrics: metrics, apis: apis, logger: logger)
            services.append(.init(service: endpoint, successTerminationBehavior: .gracefullyShutdownGroup))
        }
        var options = Daemon.Options()
        options.exitWhenIdleSeconds = exitWhenIdle
        if let store {
            // Open incidents are taken back at start whatever keeps detection state.
            options.openIncidents = { try await store.openIncidents() }
        }
        if let store, configuration.alerts?.checkpoints ?? false {
            // Detection state is checkpointed beside the alerts (shared by a group on PostgreSQL).
            options.checkpoints = AlertStoreCheckpoints(store: store, group: configuration.kafka.groupID)
        }
        var aws: HTTPClient?
        if configuration.input.source == .kinesis {
            let http = HTTPClientOptions(timeoutMs: 30_000).makeClient()
            aws = http
            options.makeSource = KinesisInput.sourceMaker(configuration, http: http, metrics: metrics.factory(help: KinesisRecordSource.metricHelp))
            // Detection checkpoints are kept by Kafka offset; with Kinesis a restart re-reads
            // from the lease's checkpoint, which never passes what live state needs.
            options.checkpoints = nil
        }
        let daemon = Daemon(configuration: configuration, rules: rules, options: options, sinks: sinks, metrics: metrics, logger: logger)
        // When the daemon returns (idle exit, or after a graceful stop), the group shuts down;
        // it is the last service, so it is the first to stop.
        services.append(.init(service: daemon, successTerminationBehavior: .gracefullyShutdownGroup))
        var daemonGroup = ServiceGroupConfiguration(services: services, logger: logger)
        daemonGroup.maximumGracefulShutdownDuration = .seconds(10)
        do {
            try await AfterMigration.run(
                ServiceGroup(configuration: daemonGroup), behind: store, url: configuration.alerts?.url ?? "", command: "run",
                shutdownWithin: .seconds(15), logger: logger)
        } catch {
            try? await aws?.shutdown()
            throw error
        }
        try? await aws?.shutdown()
    }

    static func loadConfiguration(path: String?, overrides: RunCommand?) throws -> SentinelConfiguration {
        var text: String?
        if let path {
            do { text = try readFile(path, limit: 4 * 1024 * 1024) } catch let failure as CommandFailure {
                throw CommandFailure.usage(failure.message)
            }
        }
        var configuration: SentinelConfiguration
        do {
            configuration = try SentinelConfiguration.load(yaml: text, file: path ?? "(defaults)", environment: ProcessEnvironment.current)
        } catch {
            throw CommandFailure.usage(error.description)
        }
        if let overrides {
            if let b = overrides.brokers { configuration.kafka.brokers = b }
            if let t = overrides.topic { configuration.kafka.topic = t }
            if let g = overrides.group { configuration.kafka.groupID = g }
            if let p = overrides.partitions {
                let numbers = p.split(separator: ",").map { Int32($0.trimmingCharacters(in: " ")) }
                guard numbers.allSatisfy({ ($0 ?? -1) >= 0 }) else { throw CommandFailure.usage("--partitions: '\(p)' is not a list of partition numbers") }
                configuration.kafka.partitions = numbers.map { $0! }
            }
        }
        return configuration
    }

    /// The configured rules file; the default path falls back to the built-in rules (equal to
    /// rules/default.yaml) when the file is not there.
    static func loadRules(_ path: String) throws -> DetectionRules {
        if path == RulesFile.defaultPath, access(path, F_OK) != 0 {
            Logger(label: "cmcd-sentinel").notice("\(path) not found: using the built-in default rules")
            return DetectionRules()
        }
        return try RulesFile.load(path)
    }
}

/// `cmcd-sentinel config`: work with configuration files.
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Work with configuration files.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a configuration file and print the effective configuration, secrets masked.")

        @Argument(help: "The configuration file (without one: the defaults and the environment).")
        var path: String?

        func run() throws {
            let configuration = try RunCommand.loadConfiguration(path: path, overrides: nil)
            _ = try RunCommand.loadRules(configuration.rules)
            print("\(path ?? "(defaults)"): OK")
            for line in configuration.effectiveDescription { print("  " + line) }
        }
    }
}

