import SentinelYAML

/// One configuration key, declared once: where it sits in the file, whether an environment
/// variable named after it sets it, what it means, and how its value is read, checked and
/// shown. The file's allowed keys, the environment overrides, the reference table and the
/// effective configuration are all derived from the tables of these.
struct ConfigKey<Section> {
    /// The key's path below its section (`["kafka", "brokers"]`; `["batch_size"]` in `influx`).
    let path: [String]
    /// False for keys only a file can set (mappings of arbitrary names).
    let hasEnvironment: Bool
    let meaning: String
    /// Applies the file's value (called only when the key is present).
    let read: (YAMLValue, inout Section) throws(ValidationError) -> Void
    /// Applies the environment variable's text; the node names the variable in errors.
    let parse: (String, YAMLValue, inout Section) throws(ValidationError) -> Void
    /// The effective value as `(suffix, text)` lines, secrets masked: suffix "" for the key
    /// itself, `.member` for each member of a mapping shown one per line.
    let show: (Section) -> [(suffix: String, text: String)]

    var name: String { path.joined(separator: ".") }
    var environmentSuffix: String { path.joined(separator: "_").uppercased() }
}

extension ConfigKey {
    private static func split(_ key: String) -> [String] { key.split(separator: ".").map(String.init) }

    static func custom(
        _ key: String, environment: Bool = true, _ meaning: String, read: @escaping (YAMLValue, inout Section) throws(ValidationError) -> Void,
        parse: @escaping (String, YAMLValue, inout Section) throws(ValidationError) -> Void = { _, _, _ in },
        show: @escaping (Section) -> String
    ) -> ConfigKey {
        ConfigKey(path: split(key), hasEnvironment: environment, meaning: meaning, read: read, parse: parse, show: { [("", show($0))] })
    }

    /// A string; `secret` shows `*****` when set, `empty` is shown for "", `display` formats the rest.
    static func string(
        _ key: String, _ field: WritableKeyPath<Section, String>, _ meaning: String, secret: Bool = false, empty: String? = nil,
        display: @escaping (String) -> String = { $0 }
    ) -> ConfigKey {
        custom(
            key, meaning, read: { node, section throws(ValidationError) in section[keyPath: field] = try node.string() },
            parse: { text, _, section in section[keyPath: field] = text },
            show: { section in
                let value = section[keyPath: field]
                if value.isEmpty { return empty ?? "" }
                return secret ? "*****" : display(value)
            })
    }

    /// A whole number within `range`.
    static func integer<N: FixedWidthInteger>(_ key: String, _ field: WritableKeyPath<Section, N>, _ range: ClosedRange<Int64>, _ meaning: String) -> ConfigKey {
        custom(
            key, meaning, read: { node, section throws(ValidationError) in section[keyPath: field] = N(try node.integer(in: range)) },
            parse: { text, node, section throws(ValidationError) in
                guard let n = Int64(text.trimmingCharacters(in: " ")), range.contains(n) else {
                    throw node.error("must be a whole number from \(range.lowerBound) to \(range.upperBound)")
                }
                section[keyPath: field] = N(n)
            },
            show: { "\($0[keyPath: field])" })
    }

    /// `true` or `false` (the environment also takes 1/0 and yes/no).
    static func bool(_ key: String, _ field: WritableKeyPath<Section, Bool>, _ meaning: String) -> ConfigKey {
        custom(
            key, meaning, read: { node, section throws(ValidationError) in section[keyPath: field] = try node.bool() },
            parse: { text, node, section throws(ValidationError) in
                switch text.lowercased() {
                case "true", "1", "yes": section[keyPath: field] = true
                case "false", "0", "no": section[keyPath: field] = false
                default: throw node.error("must be true or false")
                }
            },
            show: { "\($0[keyPath: field])" })
    }

    /// A list of strings (comma separated in the environment); `check` returns why an element
    /// is refused, nil when it is fine.
    static func list(
        _ key: String, _ field: WritableKeyPath<Section, [String]>, _ meaning: String, check: @escaping (String) -> String? = { _ in nil }
    ) -> ConfigKey {
        func checked(_ values: [String], _ node: YAMLValue) throws(ValidationError) -> [String] {
            for value in values { if let reason = check(value) { throw node.error(reason) } }
            return values
        }
        return custom(
            key, meaning, read: { node, section throws(ValidationError) in section[keyPath: field] = try checked(node.stringList(), node) },
            parse: { text, node, section throws(ValidationError) in
                section[keyPath: field] = try checked(text.split(separator: ",").map { $0.trimmingCharacters(in: " ") }.filter { !$0.isEmpty }, node)
            },
            show: { $0[keyPath: field].joined(separator: ",") })
    }

    /// A mapping of names to strings. Secret mappings (tokens) are set in the environment as
    /// `NAME=VALUE,...` and shown as `name=*****,...` (`empty` when there are none); others
    /// come from the file only and are shown a member per line, secret-looking names masked.
    static func mapping(_ key: String, _ field: WritableKeyPath<Section, [String: String]>, _ meaning: String, secret: Bool, empty: String = "") -> ConfigKey {
        ConfigKey(
            path: split(key), hasEnvironment: secret, meaning: meaning,
            read: { node, section throws(ValidationError) in
                for (name, value) in try node.members() {
                    guard value.isScalar else { throw value.error("must be a string") }
                    section[keyPath: field][name] = try value.string()
                }
            },
            parse: { text, node, section throws(ValidationError) in
                var members: [String: String] = [:]
                for pair in text.split(separator: ",") {
                    guard let equals = pair.firstIndex(of: "=") else { throw node.error("each token must be NAME=TOKEN") }
                    members[pair[..<equals].trimmingCharacters(in: " ")] = String(pair[pair.index(after: equals)...])
                }
                section[keyPath: field] = members
            },
            show: { section in
                let members = section[keyPath: field].sorted { $0.key < $1.key }
                if secret { return [("", members.isEmpty ? empty : members.map { "\($0.key)=*****" }.joined(separator: ","))] }
                return members.map { name, value in
                    (".\(name)", SentinelConfiguration.isSecret(name) || name.lowercased() == "authorization" ? "*****" : value)
                }
            })
    }
}

/// Reading, overriding and showing a section through its table of keys.
enum ConfigTable {
    /// Fails on any key of `node`, or of a mapping on the way to a table's key, that the
    /// table does not declare (`extra`: further sections allowed at the top).
    static func checkKeys<Section>(_ table: [ConfigKey<Section>], in node: YAMLValue, extra: Set<String> = []) throws(ValidationError) {
        var children: [[String]: Set<String>] = [[]: extra]
        for key in table {
            for depth in 0..<key.path.count { children[Array(key.path[..<depth]), default: []].insert(key.path[depth]) }
        }
        for (prefix, allowed) in children.sorted(by: { ($0.key.count, $0.key.joined(separator: ".")) < ($1.key.count, $1.key.joined(separator: ".")) }) {
            try prefix.reduce(node) { $0[$1] }.keys(allowed: allowed)
        }
    }

    /// Applies every key present in the file, in the table's order (`checkKeys` first).
    static func read<Section>(_ table: [ConfigKey<Section>], from node: YAMLValue, into section: inout Section) throws(ValidationError) {
        for key in table {
            let value = key.path.reduce(node) { $0[$1] }
            if value.exists { try key.read(value, &section) }
        }
    }

    /// Applies every `prefix + KEY` variable that is set, in the table's order.
    static func override<Section>(_ table: [ConfigKey<Section>], environment: [String: String], prefix: String, into section: inout Section) throws(ValidationError) {
        for key in table where key.hasEnvironment {
            let name = prefix + key.environmentSuffix
            if let text = environment[name] { try key.parse(text, YAMLValue.environment(name), &section) }
        }
    }

    /// `name: value` lines of the effective configuration, secrets masked.
    static func describe<Section>(_ table: [ConfigKey<Section>], _ section: Section, prefix: String) -> [String] {
        table.flatMap { key in key.show(section).map { "\(prefix)\(key.name)\($0.suffix): \($0.text)" } }
    }

    /// The reference rows: each key with its variable (`-` when only a file sets it).
    static func reference<Section>(_ table: [ConfigKey<Section>], prefix: String, environmentPrefix: String) -> [(key: String, environment: String, meaning: String)] {
        table.map { key in (prefix + key.name, key.hasEnvironment ? environmentPrefix + key.environmentSuffix : "-", key.meaning) }
    }
}
