import CSQLite
import Foundation
import NIOPosix
import ServiceLifecycle
import Synchronization

/// SQLite through the C library: one connection, WAL mode. Statements run on a thread of the
/// database's own (`NIOThreadPool`: SQLite's calls block, fsync included, and must not hold a
/// thread of Swift's cooperative pool), one call at a time, so a transaction is never
/// interleaved.
public final class SQLiteDatabase: SQLDatabase {
    public let backend = "sqlite"
    public let path: String
    private let connection: Mutex<Connection>
    private let thread: NIOThreadPool

    /// Opens (creating) the file at `path` in WAL mode with full synchronous commits.
    /// How many prepared statements a connection keeps at most.
    public static var maxPreparedStatements: Int { Connection.maxPrepared }

    public init(path: String) throws {
        self.path = path
        connection = Mutex(try Connection(path: path))
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    deinit { thread.shutdownGracefully { _ in } }

    @discardableResult
    public func run(_ statements: [SQLStatement]) async throws -> [[SQLRow]] {
        try await thread.runIfActive { try self.connection.withLock { try $0.run(statements) } }
    }

    /// One connection on a thread of its own: nothing runs beside it; waits for the shutdown.
    public func runConnections() async { try? await gracefulShutdown() }

    public func close() async {
        _ = try? await thread.runIfActive { self.connection.withLock { $0.close() } }
        try? await thread.shutdownGracefully()
    }
}

/// The connection and its prepared statements, used by one thread at a time.
private final class Connection {
    let path: String
    private var handle: OpaquePointer?
    /// Prepared statements by their SQL text, kept for the connection's life: parsing and
    /// planning an upsert cost more than running it. The texts are this program's own (the
    /// values are bound), so there are a few dozen at most; the cap only guards against that
    /// changing unnoticed.
    private var prepared: [String: OpaquePointer] = [:]
    static let maxPrepared = 128
    /// The statement used last: a batch runs the same one many times over, and a text made
    /// once compares equal to itself without being hashed (its storage is the same).
    private var lastUsed: (sql: String, statement: OpaquePointer)?

    init(path: String) throws {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX
        guard sqlite3_open_v2(path, &db, flags, nil) == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(db)
            throw SQLError("cannot open SQLite database \(path): \(message)")
        }
        handle = db
        sqlite3_busy_timeout(db, 10_000)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=FULL")
    }

    deinit { close() }

    func run(_ statements: [SQLStatement]) throws -> [[SQLRow]] {
        guard handle != nil else { throw SQLError("SQLite database \(path) is closed") }
        if statements.count == 1 { return [try step(statements[0])] }
        try execute("BEGIN IMMEDIATE")
        do {
            let results = try statements.map { try step($0) }
            try execute("COMMIT")
            return results
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    func close() {
        finalizePrepared()
        sqlite3_close_v2(handle)
        handle = nil
    }

    private func execute(_ sql: String) throws {
        guard sqlite3_exec(handle, sql, nil, nil, nil) == SQLITE_OK else { throw SQLError("SQLite: \(errorMessage) (\(sql))") }
    }

    private var errorMessage: String { String(cString: sqlite3_errmsg(handle)) }

    /// `$n` placeholders become SQLite's `?n`.
    static func sqliteSQL(_ sql: String) -> String {
        String(decoding: sql.utf8.map { $0 == UInt8(ascii: "$") ? UInt8(ascii: "?") : $0 }, as: UTF8.self)
    }

    /// The statement for `sql`, prepared once.
    private func preparedStatement(_ sql: String) throws -> OpaquePointer {
        if let lastUsed, lastUsed.sql == sql { return lastUsed.statement }
        if let statement = prepared[sql] {
            lastUsed = (sql, statement)
            return statement
        }
        var stmt: OpaquePointer?
        guard sqlite3_prepare_v3(handle, Self.sqliteSQL(sql), -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil) == SQLITE_OK, let stmt else {
            throw SQLError("SQLite: \(errorMessage)")
        }
        if prepared.count >= Self.maxPrepared { finalizePrepared() }
        prepared[sql] = stmt
        lastUsed = (sql, stmt)
        return stmt
    }

    /// Drops every kept statement.
    private func finalizePrepared() {
        for statement in prepared.values { sqlite3_finalize(statement) }
        prepared.removeAll()
        lastUsed = nil
    }

    private func step(_ statement: SQLStatement) throws -> [SQLRow] {
        let stmt = try preparedStatement(statement.sql)
        // Ready for the next use whatever happens here (and no text kept bound).
        defer {
            sqlite3_reset(stmt)
            sqlite3_clear_bindings(stmt)
        }
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        for (index, value) in statement.binds.enumerated() {
            let position = Int32(index + 1)
            let status: Int32
            switch value {
            case .null: status = sqlite3_bind_null(stmt, position)
            case .int(let n): status = sqlite3_bind_int64(stmt, position, n)
            case .text(var s):
                // The text's own bytes, with their length: no C string is made for them.
                status = s.withUTF8 { bytes in
                    bytes.withMemoryRebound(to: CChar.self) { text in
                        guard let base = text.baseAddress else { return sqlite3_bind_text(stmt, position, "", 0, transient) }
                        return sqlite3_bind_text(stmt, position, base, Int32(text.count), transient)
                    }
                }
            case .bytes(let b): status = b.withUnsafeBytes { sqlite3_bind_blob(stmt, position, $0.baseAddress, Int32($0.count), transient) }
            }
            guard status == SQLITE_OK else { throw SQLError("SQLite: cannot bind parameter \(position): \(errorMessage)") }
        }
        var rows: [SQLRow] = []
        while true {
            let status = sqlite3_step(stmt)
            if status == SQLITE_DONE { break }
            guard status == SQLITE_ROW else { throw SQLError("SQLite: \(errorMessage)") }
            let count = sqlite3_column_count(stmt)
            var row: SQLRow = []
            row.reserveCapacity(Int(count))
            for column in 0..<count {
                switch sqlite3_column_type(stmt, column) {
                case SQLITE_NULL: row.append(.null)
                case SQLITE_INTEGER: row.append(.int(sqlite3_column_int64(stmt, column)))
                case SQLITE_FLOAT: row.append(.int(Int64(sqlite3_column_double(stmt, column))))
                case SQLITE_BLOB:
                    let count = Int(sqlite3_column_bytes(stmt, column))
                    let base = sqlite3_column_blob(stmt, column)
                    row.append(.bytes(base.map { Array(UnsafeRawBufferPointer(start: $0, count: count)) } ?? []))
                default: row.append(.text(String(cString: sqlite3_column_text(stmt, column))))
                }
            }
            rows.append(row)
        }
        return rows
    }
}
