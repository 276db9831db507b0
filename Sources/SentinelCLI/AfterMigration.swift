import Logging
import ServiceLifecycle
import SentinelAlerts
import SentinelConfig

/// A command's services, started once the alerts table's schema is up to date, its
/// connections (PostgreSQL's pool) already running beside them.
struct AfterMigration: Service {
    let store: AlertStore?
    let url: String
    let services: ServiceGroup

    func run() async throws {
        do {
            try await store?.migrate()
        } catch {
            throw CommandFailure.runtime("alerts table \(SentinelConfiguration.maskingPassword(url)): \(error)")
        }
        try await services.run()
    }

    /// Runs `services` in an outer group behind the alerts table: the store first, so that it
    /// stops last, then the services once the table is migrated. SIGTERM and SIGINT reach the
    /// inner group through the outer one; when the services return, both groups end.
    static func run(
        _ services: ServiceGroup, behind store: AlertStore?, url: String, command: String, shutdownWithin limit: Duration, logger: Logger
    ) async throws {
        var outer: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let store { outer.append(.init(service: store)) }
        outer.append(.init(service: AfterMigration(store: store, url: url, services: services), successTerminationBehavior: .gracefullyShutdownGroup))
        var configuration = ServiceGroupConfiguration(services: outer, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        configuration.maximumGracefulShutdownDuration = limit
        do {
            try await ServiceGroup(configuration: configuration).run()
        } catch let failure as CommandFailure {
            await store?.close()
            throw failure
        } catch {
            await store?.close()
            throw CommandFailure.runtime("\(command): \(error)")
        }
        await store?.close()
    }
}
