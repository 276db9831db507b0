import Yams

/// An error in a configuration or rules file, naming the file, the key path and the reason.
public struct ValidationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var key: String
    public var reason: String
    public var line: Int?

    public init(file: String, key: String, reason: String, line: Int? = nil) {
        self.file = file
        self.key = key
        self.reason = reason
        self.line = line
    }

    /// `FILE:LINE: KEY: REASON`, one line.
    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        if !key.isEmpty { text += ": \(key)" }
        return text + ": " + reason
    }
}

/// A read-only view of one node of a YAML document that knows its key path, so every
/// validation message can say exactly where the problem is.
public struct YAMLValue {
    let node: Node?
    public let path: String
    public let file: String

    /// Parses a document. An empty document reads as an empty mapping.
    public static func parse(_ text: String, file: String) throws(ValidationError) -> YAMLValue {
        do {
            let node = try Yams.compose(yaml: text)
            return YAMLValue(node: node ?? Node.mapping(Node.Mapping([])), path: "", file: file)
        } catch let error as YamlError {
            throw ValidationError(file: file, key: "", reason: "not valid YAML: \(Self.describe(error))")
        } catch {
            throw ValidationError(file: file, key: "", reason: "not valid YAML: \(error)")
        }
    }

    static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return "\(problem) at line \(mark.line)"
        case .duplicatedKeysInMapping(let duplicates, _):
            return "duplicate keys \(duplicates.joined(separator: ", "))"
        default:
            return "\(error)".split(separator: "\n").first.map(String.init) ?? "parse error"
        }
    }

    /// A value that came from an environment variable, for error messages.
    public static func environment(_ name: String) -> YAMLValue {
        YAMLValue(node: nil, path: name, file: "environment")
    }

    public var line: Int? { node?.mark?.line }
    public var exists: Bool { node != nil && !isNull }

    public var isNull: Bool {
        guard case .scalar(let s)? = node else { return false }
        return s.tag.description == "tag:yaml.org,2002:null" || (s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string))
    }

    public func error(_ reason: String) -> ValidationError {
        ValidationError(file: file, key: path, reason: reason, line: line)
    }

    func child(_ key: String, _ node: Node?) -> YAMLValue {
        YAMLValue(node: node, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    /// A member of a mapping (absent when missing).
    public subscript(key: String) -> YAMLValue {
        guard case .mapping(let mapping)? = node else { return child(key, nil) }
        for (k, v) in mapping where k.string == key { return child(key, v) }
        return child(key, nil)
    }

    /// The mapping's keys, failing on anything not in `allowed` (catches typos).
    @discardableResult
    public func keys(allowed: Set<String>) throws(ValidationError) -> [String] {
        guard exists else { return [] }
        guard case .mapping(let mapping)? = node else { throw error("must be a mapping") }
        var keys: [String] = []
        for (k, v) in mapping {
            guard let name = k.string else { throw error("keys must be strings") }
            guard allowed.contains(name) else {
                let known = allowed.sorted().joined(separator: ", ")
                throw child(name, v).error("unknown key (expected one of: \(known))")
            }
            keys.append(name)
        }
        return keys
    }

    /// The members of a mapping, in order, with any keys.
    public func members() throws(ValidationError) -> [(key: String, value: YAMLValue)] {
        guard exists else { return [] }
        guard case .mapping(let mapping)? = node else { throw error("must be a mapping") }
        var out: [(key: String, value: YAMLValue)] = []
        for (k, v) in mapping {
            guard let name = k.string else { throw error("keys must be strings") }
            out.append((name, child(name, v)))
        }
        return out
    }

    /// The elements of a sequence.
    public func elements() throws(ValidationError) -> [YAMLValue] {
        guard exists else { return [] }
        guard case .sequence(let sequence)? = node else { throw error("must be a list") }
        return sequence.enumerated().map { i, n in YAMLValue(node: n, path: "\(path)[\(i)]", file: file) }
    }

    public var isScalar: Bool {
        if case .scalar? = node { return true }
        return false
    }

    public func string() throws(ValidationError) -> String {
        guard case .scalar(let s)? = node else { throw error("must be a string") }
        return s.string
    }

    public func string(default value: String) throws(ValidationError) -> String {
        exists ? try string() : value
    }

    public func bool() throws(ValidationError) -> Bool {
        guard case .scalar(let s)? = node else { throw error("must be true or false") }
        switch s.string {
        case "true", "True", "TRUE", "yes", "on": return true
        case "false", "False", "FALSE", "no", "off": return false
        default: throw error("must be true or false (got '\(s.string.prefix(40))')")
        }
    }

    public func bool(default value: Bool) throws(ValidationError) -> Bool {
        exists ? try bool() : value
    }

    public func integer(in range: ClosedRange<Int64>) throws(ValidationError) -> Int64 {
        guard case .scalar(let s)? = node, let n = Int64(s.string.replacingUnderscores) else {
            throw error("must be a whole number")
        }
        guard range.contains(n) else { throw error("must be between \(range.lowerBound) and \(range.upperBound) (got \(n))") }
        return n
    }

    public func integer(in range: ClosedRange<Int64>, default value: Int64) throws(ValidationError) -> Int64 {
        exists ? try integer(in: range) : value
    }

    public func number(in range: ClosedRange<Double>) throws(ValidationError) -> Double {
        guard case .scalar(let s)? = node, let d = Double(s.string.replacingUnderscores), d.isFinite else {
            throw error("must be a number")
        }
        guard range.contains(d) else { throw error("must be between \(range.lowerBound) and \(range.upperBound) (got \(d))") }
        return d
    }

    public func number(in range: ClosedRange<Double>, default value: Double) throws(ValidationError) -> Double {
        exists ? try number(in: range) : value
    }

    /// A list of strings; a single string reads as a one-element list.
    public func stringList() throws(ValidationError) -> [String] {
        if isScalar { return [try string()] }
        var out: [String] = []
        for element in try elements() { out.append(try element.string()) }
        return out
    }
}

extension String {
    fileprivate var replacingUnderscores: String { contains("_") ? filter { $0 != "_" } : self }
}
