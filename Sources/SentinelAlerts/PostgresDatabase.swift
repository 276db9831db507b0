import Foundation
import Logging
import NIOSSL
import PostgresNIO
import SentinelConfig
import Synchronization

/// PostgreSQL through postgres-nio's connection pool, so several daemons can share one alerts
/// table. The pool runs in the daemon's ServiceGroup (`runConnections`, through the store);
/// a caller without one (a one-shot command, a test) runs it with `runInBackground` until `close`.
public final class PostgresDatabase: SQLDatabase {
    public let backend = "postgres"
    let client: PostgresClient
    let logger: Logger
    /// The pool's task when run by `runInBackground`.
    private let background = Mutex<Task<Void, Never>?>(nil)

    /// Connects to `postgres://user:password@host:port/database[?sslmode=disable|prefer|require]`.
    /// How long one `run` may take, waiting for a connection included: the pool retries
    /// connecting for ever, a caller must not wait for ever.
    let timeout: Duration
    let target: String

    /// The URL it was opened with.
    public let url: String

    public init(url: String, logger: Logger, timeout: Duration = .seconds(10)) throws {
        self.url = url
        self.logger = logger
        self.timeout = timeout
        let configuration = try Self.configuration(url: url)
        target = "\(configuration.host ?? "?"):\(configuration.port ?? 5432)"
        // The pool logs every failed connection attempt; those surface as our errors instead.
        var background = logger
        background.logLevel = max(logger.logLevel, .error)
        client = PostgresClient(configuration: configuration, backgroundLogger: background)
    }

    /// The connection pool, until a graceful shutdown or cancellation. Queries made before
    /// it starts wait for it (within `timeout`).
    public func runConnections() async { await client.run() }

    /// Runs the pool in a task of its own, stopped by `close`: for callers without a ServiceGroup.
    public func runInBackground() {
        let client = self.client
        background.withLock { task in
            if task == nil { task = Task { await client.run() } }
        }
    }

    static func configuration(url: String) throws -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
            let host = components.host, !host.isEmpty
        else { throw SQLError("'\(SentinelConfiguration.maskingPassword(url))' is not a postgres://user:password@host:port/database URL") }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        let mode = components.queryItems?.first(where: { $0.name == "sslmode" })?.value ?? "prefer"
        let tls: PostgresClient.Configuration.TLS
        switch mode {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw SQLError("sslmode '\(mode)' is not disable, prefer or require")
        }
        var configuration = PostgresClient.Configuration(
            host: host, port: components.port ?? 5432, username: components.user?.removingPercentEncoding ?? "postgres",
            password: components.password?.removingPercentEncoding, database: database.isEmpty ? nil : database, tls: tls)
        configuration.options.maximumConnections = 8
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }

    @discardableResult
    public func run(_ statements: [SQLStatement]) async throws -> [[SQLRow]] {
        let timeout = self.timeout
        let target = self.target
        return try await withThrowingTaskGroup(of: [[SQLRow]]?.self) { group in
            group.addTask { try await self.execute(statements) }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let rows = first else {
                throw SQLError("PostgreSQL at \(target): no answer within \(timeout) (unreachable, or the pool is exhausted)")
            }
            return rows
        }
    }

    private func execute(_ statements: [SQLStatement]) async throws -> [[SQLRow]] {
        do {
            if statements.count == 1 {
                return [try await rows(of: client.query(Self.query(statements[0]), logger: logger))]
            }
            return try await client.withTransaction(logger: logger) { connection in
                var results: [[SQLRow]] = []
                for statement in statements {
                    results.append(try await Self.collect(connection.query(Self.query(statement), logger: self.logger)))
                }
                return results
            }
        } catch {
            throw SQLError("PostgreSQL: \(Self.describe(error))")
        }
    }

    /// The server's message where there is one.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return "\(error.code)"
        }
        if let error = error as? PostgresTransactionError, let inner = error.closureError ?? error.beginError ?? error.commitError {
            return describe(inner)
        }
        return String(describing: error)
    }

    public func close() async {
        guard let task = background.withLock({ $0.take() }) else { return }
        task.cancel()
        await task.value
    }

    private func rows(of sequence: PostgresRowSequence) async throws -> [SQLRow] { try await Self.collect(sequence) }

    static func query(_ statement: SQLStatement) -> PostgresQuery {
        var bindings = PostgresBindings(capacity: statement.binds.count)
        for value in statement.binds {
            switch value {
            case .null: bindings.appendNull()
            case .int(let n): bindings.append(n)
            case .text(let s): bindings.append(s)
            case .bytes(let b): bindings.append(ByteBuffer(bytes: b))
            }
        }
        return PostgresQuery(unsafeSQL: statement.sql, binds: bindings)
    }

    static func collect(_ sequence: PostgresRowSequence) async throws -> [SQLRow] {
        var rows: [SQLRow] = []
        for try await row in sequence {
            var values: SQLRow = []
            for cell in row {
                if cell.bytes == nil {
                    values.append(.null)
                    continue
                }
                switch cell.dataType {
                case .int8, .int4, .int2: values.append(.int(try cell.decode(Int64.self)))
                case .bool: values.append(.int(try cell.decode(Bool.self) ? 1 : 0))
                case .bytea:
                    var buffer = try cell.decode(ByteBuffer.self)
                    values.append(.bytes(buffer.readBytes(length: buffer.readableBytes) ?? []))
                default: values.append(.text(try cell.decode(String.self)))
                }
            }
            rows.append(values)
        }
        return rows
    }
}
