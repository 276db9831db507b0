import ArgumentParser
import Logging
import SentinelConfig
import SentinelMCP

/// `cmcd-sentinel mcp`: the MCP server.
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Serve read-only MCP tools over the stored metrics (InfluxDB) and the anomalies (alerts table).",
        discussion: """
            Uses the daemon's configuration (influx, alerts, rules); the daemon need not be running. Serves MCP on \
            standard input and output; logs go to standard error only.
            """)

    @Option(help: "Configuration file (YAML).")
    var config: String?

    @Option(help: "Serve Streamable HTTP on HOST:PORT (path /mcp) instead of stdio (overrides mcp.http_listen).")
    var http: String?

    func run() async throws {
        let configuration = try RunCommand.loadConfiguration(path: config, overrides: nil)
        let rules = try RunCommand.loadRules(configuration.rules)
        let listen = http ?? configuration.mcp.httpListen
        if !listen.isEmpty {
            throw CommandFailure.usage("mcp: the Streamable HTTP transport is not available in this version; use stdio")
        }
        let logger = Logger(label: "cmcd-sentinel-mcp")
        guard configuration.influx != nil || configuration.alerts != nil else {
            throw CommandFailure.usage("mcp: neither influx nor alerts is configured: no tool would have data")
        }
        let tools: SentinelTools
        do {
            tools = try await SentinelTools.open(configuration: configuration, rules: rules, logger: logger)
        } catch {
            throw CommandFailure.runtime("mcp: \(error)")
        }
        do {
            try await SentinelMCPServer.serveStdio(tools: tools, version: "0.3.0", logger: logger)
        } catch {
            await tools.close()
            throw CommandFailure.runtime("mcp: \(error)")
        }
        await tools.close()
    }
}
