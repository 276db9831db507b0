import ArgumentParser
import Logging

#if canImport(Glibc)
import Glibc
private let systemExit = Glibc.exit
#elseif canImport(Darwin)
import Darwin
private let systemExit = Darwin.exit
#endif

/// The `cmcd-sentinel` command.
public struct SentinelCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "cmcd-sentinel",
        abstract: "Watch CMCD video streaming telemetry and catch playback problems as they happen.",
        subcommands: [
            DecodeCommand.self, DetectCommand.self, RulesCommand.self, RunCommand.self, ReplayCommand.self, ConfigCommand.self,
            MCPCommand.self, CollectCommand.self, SilenceCommand.self,
        ]
    )

    public init() {}

    /// Runs the command line with the project's exit codes: 0 success, 1 runtime failure,
    /// 2 bad arguments, configuration or rules.
    public static func runMain(_ arguments: [String]? = nil) async -> Never {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .info
            return handler
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            systemExit(0)
        } catch let failure as CommandFailure {
            printError("cmcd-sentinel: \(failure.message)")
            systemExit(failure.exitCode)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                systemExit(0)
            }
            printError(fullMessage(for: error))
            systemExit(code == .validationFailure ? 2 : code.rawValue)
        }
    }
}

/// A failure with a one-line message and an exit code.
struct CommandFailure: Error {
    var message: String
    var exitCode: Int32

    /// Bad arguments, configuration or rules (exit 2).
    static func usage(_ message: String) -> CommandFailure { CommandFailure(message: message, exitCode: 2) }
    /// A runtime failure (exit 1).
    static func runtime(_ message: String) -> CommandFailure { CommandFailure(message: message, exitCode: 1) }
}
