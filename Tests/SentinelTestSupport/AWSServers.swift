import Foundation
import Synchronization

/// A process serving until stopped that writes the port it bound (port 0) to a file.
final class PortFileProcess: @unchecked Sendable {
    let port: Int
    let process: Process

    init(_ arguments: [String], python: String, name: String) throws {
        let dir = TestScratch.directory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let portFile = dir.appendingPathComponent("port")
        let process = Process()
        self.process = process
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments + ["--port-file", portFile.path]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try withUnblockedSignals { try process.run() }
        var port = 0
        for _ in 0..<600 where port == 0 {
            if let text = try? String(contentsOf: portFile, encoding: .utf8), let p = Int(text) { port = p }
            if port == 0 {
                guard process.isRunning else { break }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        guard port > 0 else {
            if process.isRunning { process.terminate() }
            throw SetupFailure(description: "\(name) did not start")
        }
        self.port = port
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// A real Kinesis and DynamoDB API for the whole test process: moto's server mode
/// (scripts/kinesis/moto-server.py, moto[server] from PyPI in .tools/moto), on a port of its
/// own choosing. Its streams and tables are in memory; tests use names of their own.
public final class MotoServer: Sendable {
    public static let shared: MotoServer = {
        do { return try MotoServer() } catch { fatalError("\(error)") }
    }()

    public let port: Int
    public var endpoint: String { "http://127.0.0.1:\(port)" }
    private let server: PortFileProcess

    /// The environment a client of this server needs (any key is accepted).
    public static let credentialsEnvironment = ["AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"]

    private init() throws {
        let python = try pythonVirtualenv("moto", installing: "moto[server]==5.2.6")
        server = try PortFileProcess([packageRoot.appendingPathComponent("scripts/kinesis/moto-server.py").path], python: python, name: "moto")
        port = server.port
        let pid = server.process.processIdentifier
        MotoServer.pid.withLock { $0 = pid }
        atexit { if let pid = MotoServer.pid.withLock({ $0 }) { kill(pid, SIGTERM) } }
    }

    private static let pid = Mutex<Int32?>(nil)
}

/// An HTTP server answering every request with one fixed body (the AWS container and instance
/// metadata credential endpoints, in tests), logging the paths and headers asked for.
public final class FixedAnswerServer: Sendable {
    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let server: PortFileProcess

    /// `answers`: path to body; other paths get 404. `requiredHeaders`: path to the header
    /// (name and value) a request for it must carry, else 401.
    public init(answers: [String: String], requiredHeaders: [String: (String, String)] = [:]) throws {
        let script = """
            import http.server, json, sys
            answers = json.loads(sys.argv[1]); requireds = json.loads(sys.argv[2]); port_file = sys.argv[4]
            class H(http.server.BaseHTTPRequestHandler):
                def answer(self):
                    required = requireds.get(self.path)
                    if required and self.headers.get(required[0]) != required[1]:
                        self.send_response(401); self.end_headers(); return
                    body = answers.get(self.path)
                    if body is None:
                        self.send_response(404); self.end_headers(); return
                    data = body.encode(); self.send_response(200)
                    self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
                do_GET = answer; do_PUT = answer
                def log_message(self, *args): pass
            server = http.server.HTTPServer(("127.0.0.1", 0), H)
            open(port_file + ".tmp", "w").write(str(server.server_address[1]))
            import os; os.replace(port_file + ".tmp", port_file)
            server.serve_forever()
            """
        let answersJSON = String(decoding: try JSONSerialization.data(withJSONObject: answers), as: UTF8.self)
        let required = String(decoding: try JSONSerialization.data(withJSONObject: requiredHeaders.mapValues { [$0.0, $0.1] }), as: UTF8.self)
        server = try PortFileProcess(["-c", script, answersJSON, required], python: "/usr/bin/python3", name: "fixed-answer")
        port = server.port
    }

    public func stop() { server.stop() }
}
