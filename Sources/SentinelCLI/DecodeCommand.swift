import ArgumentParser
import CMCD
import SentinelConfig
import SentinelJSON

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension CMCDForm: ExpressibleByArgument {}

/// `cmcd-sentinel decode`: decode one CMCD payload and print it as JSON.
struct DecodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode",
        abstract: "Decode one CMCD payload and print it as JSON.",
        discussion: """
            Forms: query (a URL, a query string or the bare CMCD= value, URL-encoded), header \
            (HTTP header lines 'Name: value'), raw (the dictionary itself), json (a v1 JSON \
            object or an array of them), body (a v2 event-mode POST body, one record per line; \
            prints a JSON array). Without --form the form is guessed from the input. \
            Keys whose values have the wrong type are printed and reported on stderr as ignored. \
            By default decoding is lenient, as the record path is: a member that cannot be read \
            (a decimal with more than three fractional digits is rounded, UTF-8 in a string is \
            kept) is left out alone and reported on stderr. --strict fails on any RFC 8941 error, \
            for validating a player.
            """)

    @Option(help: "Transmission form: query, header, raw, json or body (default: guessed).")
    var form: CMCDForm?

    @Flag(help: "Fail on any RFC 8941 syntax error instead of leaving the member out.")
    var strict = false

    @Argument(help: "The payload, or - to read it from standard input.")
    var input: String

    func run() throws {
        let text = input == "-" ? try readStandardInput(limit: 16 * 1024 * 1024) : input
        let chosen = form ?? Self.guessForm(text)
        let output: JSONValue
        do {
            switch chosen {
            case .query:
                output = try render(try CMCDDecoder.decodeQuery(text.trimmingNewlines, strict: strict))
            case .header:
                output = try render(try CMCDDecoder.decodeHeaderLines(text, strict: strict))
            case .raw:
                output = try render(try CMCDPayload(raw: text.trimmingNewlines, strict: strict))
            case .json:
                let payloads = try CMCDDecoder.decodeJSON(text: text)
                let isArray = text.drop(while: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }).first == "["
                output = isArray ? .array(try payloads.map { p throws(CMCDDecodingError) in try render(p) }) : try render(payloads[0])
            case .body:
                output = .array(try CMCDDecoder.decodeBody(text, strict: strict).map { p throws(CMCDDecodingError) in try render(p) })
            }
        } catch {
            throw CommandFailure.runtime("decode: \(error.description.firstLine)")
        }
        print(JSONWriter.string(output))
    }

    private func render(_ payload: CMCDPayload) throws(CMCDDecodingError) -> JSONValue {
        // Leniency keeps what can be read; a payload of which nothing can be read is an error.
        if payload.isEmpty, let first = payload.ignored.first {
            throw .invalidInput("no member could be read: \(first.key.isEmpty ? "" : first.key + ": ")\(first.reason)")
        }
        for ignored in payload.ignored {
            printError("cmcd-sentinel: warning: ignored key \(ignored.key): \(ignored.reason)")
        }
        return payload.jsonValue()
    }

    /// Guesses the form of an input: JSON, header lines, a query, several lines, or raw.
    static func guessForm(_ text: String) -> CMCDForm {
        let trimmed = text.trimmingNewlines
        if trimmed.hasPrefix("{") || trimmed.hasPrefix("[") { return .json }
        let lines = trimmed.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        if lines.contains(where: { line in
            guard let colon = line.firstIndex(of: ":") else { return false }
            return CMCDDecoder.isCMCDHeader(line[..<colon].trimmingCharacters(in: " \t"))
        }) {
            return .header
        }
        if trimmed.contains("CMCD=") || trimmed.contains("?") || (trimmed.contains("%") && !trimmed.contains("=")) {
            return .query
        }
        if lines.count > 1 { return .body }
        return .raw
    }
}

/// Reads all of standard input, failing beyond `limit` bytes.
func readStandardInput(limit: Int) throws -> String {
    try readAll(fd: 0, name: "standard input", limit: limit)
}

extension StringProtocol {
    var firstLine: String { String(prefix(while: { $0 != "\n" })) }

    var trimmingNewlines: String { trimmingCharacters(in: " \t\r\n") }
}
