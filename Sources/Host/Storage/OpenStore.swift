import Logging

/// Opens the store that `storage.url` names: an SQLite file, or a PostgreSQL database shared with other instances.
func openEventStore(_ storage: StorageConfig, logger: Logger) async throws -> any EventStore {
    switch storage.backend {
    case .sqlite(let path): try SQLiteStore(path: path, maximumSize: storage.maximumSize)
    case .postgres(let url):
        try await PostgresStore(
            url: url, logger: logger, instanceTimeout: storage.instanceTimeout, maximumConnections: storage.maximumConnections)
    }
}
