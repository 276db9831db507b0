import Foundation
import MCP

/// A tool argument that is missing, of the wrong type or out of range: reported to the model
/// as a tool error naming the argument.
public struct BadArgument: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// A relative time range as the historical tools take it: `-30m`, `-1h`, `-24h`, `-7d` (also
/// seconds and weeks), at most 90 days back. Anything else is refused, so the text can go into
/// InfluxQL as a duration literal without being viewer-controlled.
public struct TimeRange: Sendable, Equatable {
    /// The duration as InfluxQL writes it, e.g. `24h`.
    public let literal: String
    public let milliseconds: Int64
    /// The original text, echoed in results.
    public let text: String

    public static let maxMilliseconds: Int64 = 90 * 86_400_000

    public init(_ text: String) throws(BadArgument) {
        let bytes = Array(text.utf8)
        guard bytes.count >= 3, bytes.count <= 8, bytes[0] == UInt8(ascii: "-"), let unit = bytes.last,
            let amount = Int64(String(decoding: bytes[1..<(bytes.count - 1)], as: UTF8.self)), amount > 0,
            bytes[1..<(bytes.count - 1)].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { throw BadArgument("time_range '\(text.prefix(40))' is not a duration like -30m, -1h, -24h or -7d") }
        let unitMs: Int64
        switch unit {
        case UInt8(ascii: "s"): unitMs = 1_000
        case UInt8(ascii: "m"): unitMs = 60_000
        case UInt8(ascii: "h"): unitMs = 3_600_000
        case UInt8(ascii: "d"): unitMs = 86_400_000
        case UInt8(ascii: "w"): unitMs = 7 * 86_400_000
        default: throw BadArgument("time_range '\(text.prefix(40))': the unit must be s, m, h, d or w")
        }
        let (ms, overflow) = amount.multipliedReportingOverflow(by: unitMs)
        guard !overflow, ms <= Self.maxMilliseconds else { throw BadArgument("time_range '\(text.prefix(40))' reaches back more than 90 days") }
        self.text = text
        self.milliseconds = ms
        self.literal = "\(amount)\(Character(Unicode.Scalar(unit)))"
    }
}

/// Reads a tool's arguments with validation.
struct ToolInput {
    let arguments: [String: Value]
    let tool: String

    init(_ arguments: [String: Value]?, tool: String, allowed: Set<String>) throws(BadArgument) {
        self.arguments = arguments ?? [:]
        self.tool = tool
        if let unknown = self.arguments.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw BadArgument("\(tool): unknown argument '\(unknown.prefix(40))'")
        }
    }

    /// A string argument: at most `maxLength` bytes, no control characters.
    func string(_ name: String, maxLength: Int = 256) throws(BadArgument) -> String? {
        guard let value = arguments[name], value != .null else { return nil }
        guard case .string(let s) = value else { throw BadArgument("\(name) must be a string") }
        guard s.utf8.count <= maxLength else { throw BadArgument("\(name) is longer than \(maxLength) bytes") }
        guard !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw BadArgument("\(name) contains control characters")
        }
        return s
    }

    func requiredString(_ name: String, maxLength: Int = 256) throws(BadArgument) -> String {
        guard let s = try string(name, maxLength: maxLength), !s.isEmpty else { throw BadArgument("\(name) is required") }
        return s
    }

    func integer(_ name: String, in range: ClosedRange<Int>) throws(BadArgument) -> Int? {
        guard let value = arguments[name], value != .null else { return nil }
        let n: Int
        switch value {
        case .int(let i): n = i
        case .double(let d) where d.rounded() == d && abs(d) < 1e15: n = Int(d)
        case .string(let s) where Int(s) != nil: n = Int(s)!
        default: throw BadArgument("\(name) must be a whole number")
        }
        guard range.contains(n) else { throw BadArgument("\(name) must be between \(range.lowerBound) and \(range.upperBound)") }
        return n
    }

    /// A boolean argument (`true`/`false`, also as strings), or nil.
    func bool(_ name: String) throws(BadArgument) -> Bool? {
        guard let value = arguments[name], value != .null else { return nil }
        switch value {
        case .bool(let b): return b
        case .string("true"): return true
        case .string("false"): return false
        default: throw BadArgument("\(name) must be true or false")
        }
    }

    func timeRange(_ name: String = "time_range", default text: String) throws(BadArgument) -> TimeRange {
        try TimeRange(try string(name, maxLength: 16) ?? text)
    }

    /// One of `choices`, or nil.
    func choice(_ name: String, _ choices: [String]) throws(BadArgument) -> String? {
        guard let s = try string(name, maxLength: 64) else { return nil }
        guard choices.contains(s) else { throw BadArgument("\(name) must be one of \(choices.joined(separator: ", "))") }
        return s
    }

    /// `limit` with its default and hard cap, and the offset an opaque `cursor` carries.
    func page(defaultLimit: Int = 100, cap: Int = 1_000) throws(BadArgument) -> (limit: Int, offset: Int) {
        let limit = try integer("limit", in: 1...cap) ?? defaultLimit
        guard let cursor = try string("cursor", maxLength: 64) else { return (limit, 0) }
        guard let data = Data(base64Encoded: cursor), let text = String(data: data, encoding: .utf8), text.hasPrefix("o:"),
            let offset = Int(text.dropFirst(2)), offset >= 0, offset <= 10_000_000
        else { throw BadArgument("cursor is not one this server gave out") }
        return (limit, offset)
    }

    static func cursor(offset: Int) -> String { Data("o:\(offset)".utf8).base64EncodedString() }
}
