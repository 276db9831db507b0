import Foundation

/// A value bound to, or read from, SQL: the only kinds the alerts table uses.
public enum SQLValue: Sendable, Hashable {
    case null
    case int(Int64)
    case text(String)
    /// Bytes (SQLite BLOB, PostgreSQL BYTEA): the detection checkpoints.
    case bytes([UInt8])

    public var int: Int64? { if case .int(let n) = self { n } else { nil } }
    public var text: String? { if case .text(let s) = self { s } else { nil } }
    public var bytes: [UInt8]? { if case .bytes(let b) = self { b } else { nil } }
}

/// One statement with its parameters. Parameters are written `$1`, `$2`, ... in the SQL and
/// are always bound, never spliced into the text.
public struct SQLStatement: Sendable {
    public var sql: String
    public var binds: [SQLValue]
    public init(_ sql: String, _ binds: [SQLValue] = []) {
        self.sql = sql
        self.binds = binds
    }
}

/// A result row by column position.
public typealias SQLRow = [SQLValue]

/// The two backends of the alerts table behind one interface. `run` executes its statements in
/// one transaction (all or nothing) and returns each statement's rows.
public protocol SQLDatabase: Sendable {
    /// `sqlite` or `postgres`.
    var backend: String { get }
    @discardableResult
    func run(_ statements: [SQLStatement]) async throws -> [[SQLRow]]
    /// Keeps what the database needs while it is used (PostgreSQL's connection pool) until a
    /// graceful shutdown or cancellation. A ServiceGroup runs it through `AlertStore.run()`.
    func runConnections() async
    func close() async
}

extension SQLDatabase {
    /// Runs one statement (a transaction of its own) and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ binds: [SQLValue] = []) async throws -> [SQLRow] {
        try await run([SQLStatement(sql, binds)])[0]
    }
}

/// A database error with the backend's message.
public struct SQLError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
