import CSQLite

/// A value bound to a statement parameter.
enum SQLiteValue {
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
    case null
}

/// One SQLite connection with a cache of prepared statements.
///
/// Not thread safe by itself (opened with `SQLITE_OPEN_NOMUTEX`): the owner keeps it behind a
/// `Mutex`. Statements are prepared once per SQL text and reused (reset, rebound) on every call.
final class SQLiteConnection {
    let path: String
    private var handle: OpaquePointer?
    private var statements: [String: SQLiteStatement] = [:]

    /// Opens (and with `create`, creates) the database at `path`, through the VFS named `vfs`
    /// (SQLite's default when nil).
    init(path: String, create: Bool = true, readOnly: Bool = false, vfs: String? = nil) throws {
        self.path = path
        var flags = SQLITE_OPEN_NOMUTEX
        if readOnly {
            flags |= SQLITE_OPEN_READONLY
        } else {
            flags |= SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0)
        }
        var db: OpaquePointer?
        let code = sqlite3_open_v2(path, &db, flags, vfs)
        guard code == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(db)
            throw CacheStoreError.sqlite(code: code, message: message, operation: "open \(path)")
        }
        sqlite3_extended_result_codes(db, 0)
        self.handle = db
    }

    deinit {
        self.close()
    }

    var isOpen: Bool { self.handle != nil }

    /// Finalises every cached statement and closes the connection (idempotent).
    func close() {
        for statement in self.statements.values {
            statement.finalize()
        }
        self.statements.removeAll()
        if let handle = self.handle {
            sqlite3_close_v2(handle)
            self.handle = nil
        }
    }

    /// Runs one or more SQL statements that return no rows (schema, pragmas, BEGIN/COMMIT).
    func execute(_ sql: String, operation: String? = nil) throws {
        let db = try self.open(operation ?? sql)
        var errorMessage: UnsafeMutablePointer<CChar>?
        let code = sqlite3_exec(db, sql, nil, nil, &errorMessage)
        if code != SQLITE_OK {
            let message = errorMessage.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(db))
            sqlite3_free(errorMessage)
            throw CacheStoreError.sqlite(code: code, message: message, operation: operation ?? sql)
        }
    }

    /// The cached prepared statement for `sql`, reset and with its bindings cleared.
    func statement(_ sql: String) throws -> SQLiteStatement {
        if let cached = self.statements[sql] {
            cached.reset()
            return cached
        }
        let db = try self.open(sql)
        var raw: OpaquePointer?
        let code = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &raw, nil)
        guard code == SQLITE_OK, let raw else {
            throw self.error(code, operation: "prepare \(sql)")
        }
        let statement = SQLiteStatement(raw, connection: self, sql: sql)
        self.statements[sql] = statement
        return statement
    }

    /// Runs `sql` with `values` bound and calls `row` for each result row.
    func query(_ sql: String, _ values: [SQLiteValue] = [], row: (SQLiteStatement) throws -> Void) throws {
        let statement = try self.statement(sql)
        defer { statement.reset() }
        try statement.bind(values)
        while try statement.step() {
            try row(statement)
        }
    }

    /// Runs a statement that returns no rows; returns the number of rows it changed.
    @discardableResult
    func run(_ sql: String, _ values: [SQLiteValue] = []) throws -> Int {
        let statement = try self.statement(sql)
        defer { statement.reset() }
        try statement.bind(values)
        while try statement.step() {}
        return Int(sqlite3_changes(self.handle))
    }

    /// The first column of the first row, as an integer (nil when there is no row or it is NULL).
    func scalar(_ sql: String, _ values: [SQLiteValue] = []) throws -> Int64? {
        var result: Int64?
        try self.query(sql, values) { row in
            if result == nil, !row.isNull(0) { result = row.int64(0) }
        }
        return result
    }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`, rolling back if it throws.
    func transaction<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        try self.execute("BEGIN IMMEDIATE", operation: "begin \(operation)")
        do {
            let result = try body()
            try self.execute("COMMIT", operation: "commit \(operation)")
            return result
        } catch {
            try? self.execute("ROLLBACK", operation: "rollback \(operation)")
            throw error
        }
    }

    func error(_ code: Int32, operation: String) -> CacheStoreError {
        let message = self.handle.map { String(cString: sqlite3_errmsg($0)) } ?? "connection closed"
        return .sqlite(code: code, message: message, operation: operation)
    }

    private func open(_ operation: String) throws -> OpaquePointer {
        guard let handle = self.handle else {
            throw CacheStoreError.sqlite(code: SQLITE_MISUSE, message: "connection closed", operation: operation)
        }
        return handle
    }
}

/// A prepared statement owned by a `SQLiteConnection` (column indexes are 0-based, parameters 1-based).
final class SQLiteStatement {
    private var handle: OpaquePointer?
    private unowned let connection: SQLiteConnection
    let sql: String

    init(_ handle: OpaquePointer, connection: SQLiteConnection, sql: String) {
        self.handle = handle
        self.connection = connection
        self.sql = sql
    }

    func finalize() {
        sqlite3_finalize(self.handle)
        self.handle = nil
    }

    func reset() {
        sqlite3_reset(self.handle)
        sqlite3_clear_bindings(self.handle)
    }

    func bind(_ values: [SQLiteValue]) throws {
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch value {
            case .integer(let integer):
                code = sqlite3_bind_int64(self.handle, index, integer)
            case .real(let real):
                code = sqlite3_bind_double(self.handle, index, real)
            case .text(let text):
                code = sqlite3_bind_text(self.handle, index, text, -1, sqliteTransient)
            case .blob(let bytes):
                code = bytes.withUnsafeBytes { buffer in
                    // A zero-length blob needs a non-nil pointer, or SQLite stores NULL.
                    sqlite3_bind_blob(self.handle, index, buffer.baseAddress ?? UnsafeRawPointer(bitPattern: 1),
                                      Int32(buffer.count), sqliteTransient)
                }
            case .null:
                code = sqlite3_bind_null(self.handle, index)
            }
            if code != SQLITE_OK {
                throw self.connection.error(code, operation: "bind parameter \(index) of \(self.sql)")
            }
        }
    }

    /// Advances to the next row: true if there is one, false when done.
    func step() throws -> Bool {
        let code = sqlite3_step(self.handle)
        switch code {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw self.connection.error(code, operation: self.sql)
        }
    }

    func isNull(_ column: Int32) -> Bool {
        sqlite3_column_type(self.handle, column) == SQLITE_NULL
    }

    func int64(_ column: Int32) -> Int64 {
        sqlite3_column_int64(self.handle, column)
    }

    func double(_ column: Int32) -> Double {
        sqlite3_column_double(self.handle, column)
    }

    func text(_ column: Int32) -> String {
        guard let pointer = sqlite3_column_text(self.handle, column) else { return "" }
        let count = Int(sqlite3_column_bytes(self.handle, column))
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    func blob(_ column: Int32) -> [UInt8] {
        self.withBlob(column) { Array($0) }
    }

    /// The column's bytes in place (valid only inside `body`), without copying them out.
    func withBlob<R>(_ column: Int32, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        guard let pointer = sqlite3_column_blob(self.handle, column) else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let count = Int(sqlite3_column_bytes(self.handle, column))
        return try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}

/// `SQLITE_TRANSIENT`: SQLite copies the bound bytes before the bind call returns.
let sqliteTransient = unsafeBitCast(Int(-1), to: sqlite3_destructor_type.self)

extension CacheStoreError {
    /// True for SQLite errors that mean the database file itself is damaged.
    var isIndexCorruption: Bool {
        if case .sqlite(let code, _, _) = self {
            return code == SQLITE_CORRUPT || code == SQLITE_NOTADB
        }
        return false
    }
}
