import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 server for `/metrics` and `/healthz`, on a thread of its own.
/// It answers GET only, closes every connection after the response, and reads at most
/// 8 KiB of request with a 2-second timeout, so no client can hold it.
public final class MetricsServer: @unchecked Sendable {
    private let fd: Int32
    private let metrics: DaemonMetrics
    private var thread: Thread?
    private let stopped = NSLock()
    private var isStopped = false
    public let port: Int

    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(host: String, port: Int, metrics: DaemonMetrics) throws {
        self.metrics = metrics
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StartError(description: "http: socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let resolved = host == "localhost" ? "127.0.0.1" : host
        guard inet_pton(AF_INET, resolved, &address.sin_addr) == 1 else {
            close(fd)
            throw StartError(description: "http.listen: '\(host)' is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw StartError(description: "http.listen \(host):\(port): \(reason)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.fd = fd
    }

    public func start() {
        let thread = Thread { [self] in serve() }
        thread.name = "metrics-http"
        self.thread = thread
        thread.start()
    }

    public func stop() {
        stopped.withLock { isStopped = true }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if stopped.withLock({ isStopped }) { return }
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            handle(client)
            close(client)
        }
    }

    private func handle(_ client: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request = [UInt8](repeating: 0, count: 8192)
        var filled = 0
        while filled < request.count {
            let n = request.withUnsafeMutableBytes { read(client, $0.baseAddress! + filled, $0.count - filled) }
            if n <= 0 { break }
            filled += n
            if request[0..<filled].contains(0x0A) { break }  // the request line is all we need
        }
        let line = String(decoding: request[0..<filled].prefix { $0 != 0x0D && $0 != 0x0A }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let status: String
        let body: String
        var contentType = "text/plain; charset=utf-8"
        if parts.count < 2 || parts[0] != "GET" {
            (status, body) = ("405 Method Not Allowed", "GET only\n")
        } else {
            switch parts[1].split(separator: "?").first.map(String.init) ?? "" {
            case "/metrics":
                status = "200 OK"
                body = metrics.render()
                contentType = "text/plain; version=0.0.4; charset=utf-8"
            case "/healthz":
                let health = metrics.health
                status = health.healthy ? "200 OK" : "503 Service Unavailable"
                body = health.detail + "\n"
                contentType = "application/json"
            default:
                (status, body) = ("404 Not Found", "not found\n")
            }
        }
        let response = "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        var bytes = Array(response.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(client, $0.baseAddress! + offset, $0.count - offset) }
            if n <= 0 { break }
            offset += n
        }
    }
}
