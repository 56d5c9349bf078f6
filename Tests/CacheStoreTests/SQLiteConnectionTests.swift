import Foundation
import Testing

@testable import CacheStore

@Suite("SQLiteConnection")
struct SQLiteConnectionTests {
    @Test("statements are cached, rebound and reused; a throwing transaction rolls back")
    func statementsAndTransactions() throws {
        let db = try SQLiteConnection(path: ":memory:")
        defer { db.close() }
        try db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB, value REAL)")
        for id in 1...3 {
            try db.run("INSERT INTO t VALUES (?, ?, ?, ?)", [.integer(Int64(id)), .text("n\(id)"), .blob([]), .real(0.5)])
        }
        let first = try db.statement("SELECT name FROM t WHERE id = ?")
        let second = try db.statement("SELECT name FROM t WHERE id = ?")
        #expect(first === second)
        var names: [String] = []
        try db.query("SELECT name, data FROM t ORDER BY id") { row in
            names.append(row.text(0))
            #expect(!row.isNull(1) && row.blob(1).isEmpty)
        }
        #expect(names == ["n1", "n2", "n3"])

        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try db.transaction("test") {
                try db.run("DELETE FROM t")
                throw Boom()
            }
        }
        #expect(try db.scalar("SELECT COUNT(*) FROM t") == 3)
        #expect(throws: CacheStoreError.self) { try db.execute("SELECT * FROM missing") }
    }

    @Test("errors on a closed connection name the operation")
    func closedConnection() throws {
        let db = try SQLiteConnection(path: ":memory:")
        db.close()
        #expect {
            try db.execute("SELECT 1", operation: "probe")
        } throws: { error in
            (error as? CacheStoreError)?.description.contains("probe") == true
        }
    }
}
