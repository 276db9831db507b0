import ArgumentParser
import Logging
import SentinelAlerts
import SentinelConfig
import SentinelJSON

/// `cmcd-sentinel silence`: operators' silences, kept in the alerts table.
struct SilenceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "silence",
        abstract: "Add, list and expire silences: notifications they match are kept as silenced, not sent.",
        discussion: """
            Silences live in the alerts table (alerts.url), so every daemon sharing it honours them, and they \
            survive restarts. Findings are still recorded; only their webhook notifications are held back.
            """,
        subcommands: [Add.self, List.self, Expire.self])

    struct Options: ParsableArguments {
        @Option(help: "Configuration file (YAML); its alerts.url names the table.")
        var config: String?

        func store() async throws -> AlertStore {
            let configuration = try RunCommand.loadConfiguration(path: config, overrides: nil)
            guard let alerts = configuration.alerts else { throw CommandFailure.usage("silence: no alerts table is configured (alerts.url)") }
            do {
                return try await AlertStore.open(url: alerts.url, logger: Logger(label: "cmcd-sentinel"))
            } catch {
                throw CommandFailure.runtime("alerts table \(SentinelConfiguration.maskingPassword(alerts.url)): \(error)")
            }
        }
    }

    /// `silence add --match KEY=VALUE ... --duration 2h --created-by NAME --comment TEXT`.
    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a silence; prints its id.")

        @OptionGroup var options: Options

        @Option(name: .customLong("match"), help: "KEY=VALUE, repeatable; keys: type, severity, edge_location, content_id, session_id, scope (an incident's cohort: scope=stream_type=live).")
        var matchers: [String] = []

        @Option(help: "How long from now: 90s, 30m, 2h, 1d.")
        var duration: String

        @Option(help: "Who is silencing (recorded).")
        var createdBy: String

        @Option(help: "Why (recorded).")
        var comment: String = ""

        @Option(help: "A maintenance window: active only on these days and local hours, e.g. 'sat,sun 02:00-04:00' (daily, weekdays, weekends).")
        var every: String?

        @Option(help: "IANA time zone of --every (e.g. Europe/Berlin); daylight saving is followed.")
        var timeZone: String = "UTC"

        func run() async throws {
            var parsed: [String: String] = [:]
            for matcher in matchers {
                guard let equals = matcher.firstIndex(of: "=") else { throw CommandFailure.usage("--match '\(matcher.prefix(60))' is not KEY=VALUE") }
                parsed[String(matcher[..<equals])] = String(matcher[matcher.index(after: equals)...])
            }
            guard let length = Silence.milliseconds(duration) else {
                throw CommandFailure.usage("--duration '\(duration.prefix(30))' is not a duration (90s, 30m, 2h, 1d)")
            }
            let now = AlertStore.nowMs()
            let silence: Silence
            do {
                let recurrence = try every.map { try MaintenanceWindow($0, timeZone: timeZone) }
                silence = try Silence(
                    matchers: parsed, startsAt: now, endsAt: now + length, createdBy: createdBy, comment: comment, createdAt: now,
                    recurrence: recurrence)
            } catch {
                throw CommandFailure.usage("silence add: \(error)")
            }
            let store = try await options.store()
            do {
                try await store.addSilence(silence)
            } catch {
                await store.close()
                throw CommandFailure.runtime("silence add: \(error)")
            }
            await store.close()
            print(silence.id)
        }
    }

    /// `silence list [--all]`.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List active and coming silences (with --all, every one).")

        @OptionGroup var options: Options

        @Flag(help: "Also those that ended or were expired.")
        var all = false

        func run() async throws {
            let store = try await options.store()
            let now = AlertStore.nowMs()
            let silences: [Silence]
            do {
                silences = try await store.silences(activeAt: all ? nil : now)
            } catch {
                await store.close()
                throw CommandFailure.runtime("silence list: \(error)")
            }
            await store.close()
            for s in silences {
                var matchers = s.matchers.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
                if let window = s.recurrence { matchers += " every \(window.text) \(window.timeZone.identifier)" }
                print(
                    "\(s.id)\t\(s.state(at: now))\t\(matchers)\t\(RFC3339.format(milliseconds: s.startsAt))\t\(RFC3339.format(milliseconds: s.endsAt))\t\(s.createdBy)\t\(s.comment.prefix(200))"
                )
            }
        }
    }

    /// `silence expire ID`.
    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a silence now.")

        @OptionGroup var options: Options

        @Argument(help: "The silence id (from add or list).")
        var id: String

        func run() async throws {
            let store = try await options.store()
            let ended: Bool
            do {
                ended = try await store.expireSilence(id: id)
            } catch {
                await store.close()
                throw CommandFailure.runtime("silence expire: \(error)")
            }
            await store.close()
            guard ended else { throw CommandFailure.runtime("silence expire: no active silence '\(id.prefix(60))'") }
            print("\(id) expired")
        }
    }
}
