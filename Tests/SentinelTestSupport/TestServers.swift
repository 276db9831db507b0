import AsyncHTTPClient
import Foundation
import Synchronization
import NIOCore
import SentinelHTTP
import SentinelJSON

/// The package root, for the scripts that start servers.
public let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The `cmcd-sentinel` binary of this build (beside the test bundle, else the debug build).
public var sentinelBinary: URL {
    let beside = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("cmcd-sentinel")
    if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
    return packageRoot.appendingPathComponent(".build/debug/cmcd-sentinel")
}

/// Ports `freePort` handed out in this process.
private let handedOut = Mutex<Set<Int>>([])

/// A free TCP port on 127.0.0.1, never one handed out before in this process: the kernel may
/// give a just-closed port again, and two servers told the same port collide.
public func freePort() -> Int {
    while true {
        let port = anyFreePort()
        if handedOut.withLock({ $0.insert(port).inserted }) { return port }
    }
}

private func anyFreePort() -> Int {
    let (fd, port) = boundLoopbackSocket()
    close(fd)
    return port
}

/// A TCP socket bound to a port of the kernel's choice on 127.0.0.1, not listening, and the port.
private func boundLoopbackSocket() -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// A port where a connection is refused at once, reserved while this lives: a socket bound to
/// it without listening. (A port merely found free may be taken meanwhile by a server another
/// test starts, or be the kernel's next ephemeral port, when tests run side by side.)
public final class RefusedPort: Sendable {
    public let port: Int
    private let fd: Int32

    public init() { (fd, port) = boundLoopbackSocket() }

    deinit { close(fd) }
}

/// Runs `body` with no signal blocked in the calling thread, so that the processes it starts
/// (which inherit the mask) can be stopped with SIGTERM: test threads are dispatch workers,
/// which block signals.
public func withUnblockedSignals<T>(_ body: () throws -> T) rethrows -> T {
    var none = sigset_t()
    var saved = sigset_t()
    sigemptyset(&none)
    pthread_sigmask(SIG_SETMASK, &none, &saved)
    defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
    return try body()
}

/// Reads `handle` to its end on a thread of its own, without holding a thread of the
/// concurrency pool meanwhile (a child's output can take seconds to end).
public func readToEnd(_ handle: FileHandle) async -> Data {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: handle.readDataToEndOfFile()) }
    }
}

/// A Python virtualenv under `.tools/<name>` with `requirement` installed from PyPI, made once
/// (the official clients this project tests against: the MCP SDK, Prometheus's parser).
/// Returns its python.
public func pythonVirtualenv(_ name: String, installing requirement: String) throws -> String {
    let venv = packageRoot.appendingPathComponent(".tools/\(name)")
    let python = venv.appendingPathComponent("bin/python").path
    if !FileManager.default.fileExists(atPath: venv.appendingPathComponent("ready").path) {
        let status = withUnblockedSignals {
            system(
                "python3 -m venv '\(venv.path)' >/dev/null 2>&1 && '\(python)' -m pip install --quiet --disable-pip-version-check '\(requirement)' </dev/null >/dev/null 2>&1 && touch '\(venv.path)/ready'"
            )
        }
        guard status == 0 else { throw SetupFailure(description: "could not install \(requirement) from PyPI into .tools/\(name)") }
    }
    return python
}

/// A test's environment could not be set up.
public struct SetupFailure: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Runs a script of the repository with system(3): it returns when the script exits, although a
/// server it starts keeps running (Foundation's Process would wait for that too).
public func runScript(_ path: String, _ arguments: [String], environment: [String: String]) -> Int32 {
    let assignments = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    let script = packageRoot.appendingPathComponent(path).path
    let command = "\(assignments) /bin/bash '\(script)' \(arguments.joined(separator: " ")) </dev/null >/dev/null"
    let status = withUnblockedSignals { system(command) }
    return status == -1 ? -1 : (status >> 8) & 0xFF
}

/// One real InfluxDB 1.x server (Debian's influxd) for the whole test process, on free ports,
/// started by scripts/influx/influxd.sh and stopped when the process exits.
public final class InfluxServer: @unchecked Sendable {
    public static let shared = InfluxServer()
    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    nonisolated(unsafe) static var environment: [String: String] = [:]
    private let client = HTTPClientOptions(timeoutMs: 10_000).makeClient()

    private init() {
        port = freePort()
        InfluxServer.environment = ["SENTINEL_INFLUX_PORT": "\(port)", "SENTINEL_INFLUX_RPC_PORT": "\(freePort())"]
        let status = runScript("scripts/influx/influxd.sh", ["start"], environment: InfluxServer.environment)
        precondition(status == 0, "the test InfluxDB did not start (scripts/influx/influxd.sh start)")
        atexit { _ = runScript("scripts/influx/influxd.sh", ["stop"], environment: InfluxServer.environment) }
    }

    /// A new, empty database.
    public func newDatabase() async throws -> String {
        let name = "test_\(UUID().uuidString.prefix(8).lowercased())"
        _ = try await query("CREATE DATABASE \"\(name)\"", database: nil)
        return name
    }

    /// Runs InfluxQL with bound parameters and returns the parsed JSON answer.
    public func query(_ q: String, database: String?, params: [String: String] = [:]) async throws -> JSONValue {
        var form = [("q", q), ("epoch", "ms")]
        if let database { form.append(("db", database)) }
        if !params.isEmpty { form.append(("params", JSONWriter.string(.object(params.map { ($0.key, .string($0.value)) })))) }
        var request = HTTPClientRequest(url: "\(url)/query")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))
        let response = try await client.execute(request, timeout: .seconds(10))
        let text = String(buffer: try await response.body.collect(upTo: 64 << 20))
        return try JSONParser.parse(text, limits: .init(maxDepth: 32, maxElements: 10_000_000))
    }

    /// The rows of the first series of the first statement, as column name -> value.
    public func rows(_ q: String, database: String, params: [String: String] = [:]) async throws -> [[String: JSONValue]] {
        let answer = try await query(q, database: database, params: params)
        guard case .array(let results)? = answer["results"], let first = results.first else { return [] }
        if case .string(let error)? = first["error"] { throw InfluxQueryError(message: error) }
        guard case .array(let series)? = first["series"] else { return [] }
        var rows: [[String: JSONValue]] = []
        for s in series {
            guard case .array(let columns)? = s["columns"], case .array(let values)? = s["values"] else { continue }
            var tags: [String: JSONValue] = [:]
            for (k, v) in s["tags"]?.objectMembers ?? [] { tags[k] = v }
            for case .array(let row) in values {
                var dict = tags
                for (c, v) in zip(columns, row) { if case .string(let name) = c { dict[name] = v } }
                rows.append(dict)
            }
        }
        return rows
    }
}

public struct InfluxQueryError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// One real PostgreSQL server for the whole test process (scripts/postgres/postgres.sh).
public final class PostgresServer: @unchecked Sendable {
    public static let shared = PostgresServer()
    public let port: Int
    public var url: String { "postgres://sentinel:sentinel@127.0.0.1:\(port)/sentinel?sslmode=disable" }
    nonisolated(unsafe) static var environment: [String: String] = [:]

    private init() {
        port = freePort()
        PostgresServer.environment = ["SENTINEL_POSTGRES_PORT": "\(port)"]
        let status = runScript("scripts/postgres/postgres.sh", ["start"], environment: PostgresServer.environment)
        precondition(status == 0, "the test PostgreSQL did not start (scripts/postgres/postgres.sh start)")
        atexit { _ = runScript("scripts/postgres/postgres.sh", ["stop"], environment: PostgresServer.environment) }
    }

    /// A new, empty database on the server, as a URL.
    public func newDatabase() throws -> String {
        let name = "t_\(UUID().uuidString.prefix(8).lowercased())"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["psql", "-h", "127.0.0.1", "-p", "\(port)", "-U", "sentinel", "-d", "sentinel", "-qc", "CREATE DATABASE \(name)"]
        process.environment = ["PGPASSWORD": "sentinel", "PATH": "/usr/bin:/bin:/usr/local/bin"]
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw InfluxQueryError(message: "psql could not create \(name)") }
        return "postgres://sentinel:sentinel@127.0.0.1:\(port)/\(name)?sslmode=disable"
    }
}

/// The repository's webhook receiver (scripts/webhook/receiver.py) as a real HTTP server in a
/// process of its own: verifies signatures, answers by plan, logs every attempt.
public final class WebhookReceiver: @unchecked Sendable {
    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)/hook" }
    let process: Process
    let log: URL

    /// One logged attempt.
    public struct Attempt: Sendable {
        public var id: String
        public var attempt: Int
        public var signatureValid: Bool
        public var answer: String
        public var status: Int
        public var path: String
        public var headers: [String: String]
        public var body: JSONValue?
        public var receivedAt: Double
        public var concurrent: Int
    }

    public init(secrets: [String] = [], plan: [String] = [], stallSeconds: Double = 5, retryAfter: String = "1") throws {
        let dir = TestScratch.directory.appendingPathComponent("receiver-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        log = dir.appendingPathComponent("log.jsonl")
        let portFile = dir.appendingPathComponent("port")
        let process = Process()
        self.process = process
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            ["python3", packageRoot.appendingPathComponent("scripts/webhook/receiver.py").path, "--port", "0", "--port-file", portFile.path, "--log", log.path,
             "--plan", plan.joined(separator: ","), "--stall-seconds", "\(stallSeconds)", "--retry-after", retryAfter]
            + secrets.flatMap { ["--secret", $0] }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try withUnblockedSignals { try process.run() }
        var port = 0
        for _ in 0..<100 {
            if let text = try? String(contentsOf: portFile, encoding: .utf8), let p = Int(text) {
                port = p
                break
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        precondition(port > 0, "the webhook receiver did not start")
        self.port = port
    }

    deinit { stop() }

    public func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    /// Every attempt so far, in arrival order.
    public var attempts: [Attempt] {
        guard let text = try? String(contentsOf: log, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let json = try? JSONParser.parse(String(line), limits: .init(maxDepth: 32, maxElements: 100_000)) else { return nil }
            var headers: [String: String] = [:]
            for (k, v) in json["headers"]?.objectMembers ?? [] { if case .string(let s) = v { headers[k] = s } }
            func int(_ key: String) -> Int { if case .int(let n)? = json[key] { Int(n) } else { 0 } }
            func string(_ key: String) -> String { if case .string(let s)? = json[key] { s } else { "" } }
            let receivedAt: Double
            switch json["received_at"] {
            case .double(let d)?: receivedAt = d
            case .int(let n)?: receivedAt = Double(n)
            default: receivedAt = 0
            }
            return Attempt(
                id: string("id"), attempt: int("attempt"), signatureValid: json["signature_valid"] == .bool(true), answer: string("answer"),
                status: int("status"), path: string("path"), headers: headers, body: json["body"], receivedAt: receivedAt,
                concurrent: int("concurrent"))
        }
    }

    /// Waits until `condition` holds for the attempts (up to `seconds`), without holding a
    /// thread of the concurrency pool meanwhile.
    public func wait(_ seconds: Double, until condition: ([Attempt]) -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition(attempts) { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return condition(attempts)
    }
}
