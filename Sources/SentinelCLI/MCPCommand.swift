import ArgumentParser
import Logging
import SentinelConfig
import SentinelMCP
import ServiceLifecycle

/// `cmcd-sentinel mcp`: the MCP server.
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Serve read-only MCP tools over the stored metrics (InfluxDB) and the anomalies (alerts table).",
        discussion: """
            Uses the daemon's configuration (influx, alerts, rules); the daemon need not be running. Serves MCP on \
            standard input and output, or with --http (or mcp.http_listen) Streamable HTTP at /mcp, which requires \
            the bearer token mcp.token. Logs go to standard error only.
            """)

    @Option(help: "Configuration file (YAML).")
    var config: String?

    @Option(help: "Serve Streamable HTTP on HOST:PORT (path /mcp) instead of stdio (overrides mcp.http_listen).")
    var http: String?

    @Flag(help: "Offer the write tools create_silence and expire_silence (off: every tool is read-only).")
    var allowWrites = false

    func run() async throws {
        let configuration = try RunCommand.loadConfiguration(path: config, overrides: nil)
        let rules = try RunCommand.loadRules(configuration.rules)
        let listen = http ?? configuration.mcp.httpListen
        var address: HostPort?
        if !listen.isEmpty {
            guard let parsed = HostPort(listen, listening: true) else { throw CommandFailure.usage("mcp --http: '\(listen)' is not host:port") }
            guard !configuration.mcp.namedTokens.isEmpty else {
                throw CommandFailure.usage("mcp: serving HTTP needs a bearer token (mcp.token, mcp.tokens or SENTINEL_MCP_TOKEN)")
            }
            address = parsed
        }
        let logger = Logger(label: "cmcd-sentinel-mcp")
        guard configuration.influx != nil || configuration.alerts != nil else {
            throw CommandFailure.usage("mcp: neither influx nor alerts is configured: no tool would have data")
        }
        let tools: SentinelTools
        do {
            tools = try SentinelTools.connect(configuration: configuration, rules: rules, allowWrites: allowWrites, logger: logger)
        } catch {
            throw CommandFailure.runtime("mcp: \(error)")
        }
        let server: any Service
        if let address {
            let options = MCPHTTPServer.Options(
                host: address.host, port: address.port, tokens: configuration.mcp.namedTokens,
                maxSessions: Int(configuration.mcp.maxSessions), idleTimeoutMs: configuration.mcp.idleTimeoutMs,
                allowedOrigins: configuration.mcp.allowedOrigins, allowedHosts: configuration.mcp.allowedHosts,
                rateLimitPerMinute: Int(configuration.mcp.rateLimitPerMinute), authorizationServers: configuration.mcp.authorizationServers)
            server = MCPHTTPServer.services(tools: tools, version: "0.3.0", options: options, logger: logger)
        } else {
            server = SentinelMCPServer.Stdio(tools: tools, version: "0.3.0", logger: logger)
        }
        // The alerts table's connections run first in the group (they stop last); the server
        // starts once its schema is up to date.
        let group = ServiceGroup(
            configuration: .init(services: [.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup)], logger: logger))
        do {
            try await AfterMigration.run(
                group, behind: tools.store, url: configuration.alerts?.url ?? "", command: "mcp", shutdownWithin: .seconds(10), logger: logger)
        } catch {
            await tools.close()
            throw error
        }
        await tools.close()
    }
}
