import AsyncHTTPClient
import Foundation
import NIOCore
import SentinelConfig
import SentinelHTTP
import SentinelJSON

/// Why a query did not answer: InfluxDB unreachable, or the query failed. Reported to the
/// model as a tool error with this text, never as success.
public struct QueryFailure: Error, CustomStringConvertible {
    public var description: String
}

/// One series of a query answer.
struct Series {
    var name: String
    var tags: [String: String]
    var columns: [String]
    var rows: [[JSONValue]]

    /// The rows as column -> value, tags included.
    var records: [[String: JSONValue]] {
        rows.map { row in
            var record: [String: JSONValue] = tags.mapValues { .string($0) }
            for (column, value) in zip(columns, row) { record[column] = value }
            return record
        }
    }
}

/// InfluxQL over `/query`, which InfluxDB 1.x, 2.x (through DBRP mappings) and 3.x all serve.
/// Viewer-supplied values are bound parameters (`$sid`), never spliced into the text.
final class InfluxReader: Sendable {
    let configuration: SentinelConfiguration.Influx
    let client: HTTPClient

    init(configuration: SentinelConfiguration.Influx) {
        self.configuration = configuration
        client = HTTPClientOptions(timeoutMs: configuration.timeoutMs, verifyTLS: configuration.verifyTLS).makeClient()
    }

    func shutdown() async { try? await client.shutdown() }

    /// Runs one statement; returns its series.
    func query(_ statement: String, params: [String: String] = [:]) async throws -> [Series] {
        var form = [("db", configuration.database), ("q", statement), ("epoch", "ms")]
        if !configuration.retentionPolicy.isEmpty { form.append(("rp", configuration.retentionPolicy)) }
        if !params.isEmpty {
            form.append(("params", JSONWriter.string(.object(params.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))))
        }
        var request = HTTPClientRequest(url: "\(configuration.baseURL)/query")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        if !configuration.token.isEmpty { request.headers.add(name: "Authorization", value: "Token \(configuration.token)") }
        request.body = .bytes(ByteBuffer(string: FormEncoding.encode(form)))
        let text: String
        let status: UInt
        do {
            let response = try await client.execute(request, timeout: .milliseconds(configuration.timeoutMs))
            status = response.status.code
            text = String(buffer: try await response.body.collect(upTo: 64 << 20))
        } catch {
            throw QueryFailure(description: "InfluxDB at \(SentinelConfiguration.maskingPassword(configuration.url)) is unreachable: \(error)")
        }
        guard let json = try? JSONParser.parse(text, limits: .init(maxDepth: 32, maxElements: 20_000_000)) else {
            throw QueryFailure(description: "InfluxDB answered HTTP \(status) with something that is not JSON: \(text.prefix(200))")
        }
        if case .string(let error)? = json["error"] { throw QueryFailure(description: "InfluxDB query failed: \(error)") }
        guard (200..<300).contains(status) else { throw QueryFailure(description: "InfluxDB answered HTTP \(status)") }
        guard case .array(let results)? = json["results"], let first = results.first else { return [] }
        if case .string(let error)? = first["error"] { throw QueryFailure(description: "InfluxDB query failed: \(error)") }
        guard case .array(let series)? = first["series"] else { return [] }
        return series.map { s in
            var tags: [String: String] = [:]
            for (k, v) in s["tags"]?.objectMembers ?? [] { if case .string(let t) = v { tags[k] = t } }
            var columns: [String] = []
            if case .array(let c)? = s["columns"] { columns = c.compactMap { if case .string(let n) = $0 { n } else { nil } } }
            var rows: [[JSONValue]] = []
            if case .array(let values)? = s["values"] { rows = values.compactMap { if case .array(let r) = $0 { r } else { nil } } }
            let name: String = if case .string(let n)? = s["name"] { n } else { "" }
            return Series(name: name, tags: tags, columns: columns, rows: rows)
        }
    }
}
