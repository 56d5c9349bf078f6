import Foundation
import Testing

@testable import CacheStore

@Suite("DiskTier bans")
struct DiskTierBansTests {
    func configuration(_ dir: borrowing DiskTestDirectory) -> DiskTier.Configuration {
        DiskTier.Configuration(directory: dir.path, freeSpaceFloor: 0)
    }

    @Test("bans are kept across a reopen, oldest first; old ones can be dropped")
    func keptAcrossReopen() throws {
        let dir = try DiskTestDirectory()
        do {
            let tier = try DiskTier(configuration: self.configuration(dir))
            #expect(try tier.storedBans().isEmpty)
            try tier.addBan(time: 200, expression: "req.url ~ ^/b")
            try tier.addBan(time: 100, expression: "req.url ~ ^/a")
            tier.close()
        }
        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        #expect(try tier.storedBans().map(\.expression) == ["req.url ~ ^/a", "req.url ~ ^/b"])
        #expect(try tier.storedBans().map(\.time) == [100, 200])
        #expect(try tier.removeBans(before: 150) == 1)
        #expect(try tier.storedBans().map(\.expression) == ["req.url ~ ^/b"])
    }

    @Test("bans older than every stored object are dropped; all of them when nothing is stored")
    func coveringNothing() throws {
        let dir = try DiskTestDirectory()
        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        #expect(try tier.removeBansCoveringNothing() == 0)  // no ban kept: nothing to look at
        try tier.addBan(time: 5, expression: "req.url ~ ^/old")
        #expect(try tier.removeBansCoveringNothing() == 1)
        let object = diskTestObject()
        try tier.store(object)
        try tier.addBan(time: object.responseTime - 1, expression: "req.url ~ ^/before")
        try tier.addBan(time: object.responseTime + 1, expression: "req.url ~ ^/after")
        #expect(try tier.removeBansCoveringNothing() == 1)
        #expect(try tier.storedBans().map(\.expression) == ["req.url ~ ^/after"])
    }

    @Test("a closed tier refuses to record a ban")
    func closedTierRefuses() throws {
        let dir = try DiskTestDirectory()
        let tier = try DiskTier(configuration: self.configuration(dir))
        tier.close()
        #expect(throws: CacheStoreError.self) { try tier.addBan(time: 1, expression: "req.url ~ x") }
    }

    @Test("the lurker's scan pages through rows in id order, a batch removal deletes rows and bodies, a ban row can be dropped")
    func scanRemoveAndDropBan() throws {
        let dir = try DiskTestDirectory()
        let tier = try DiskTier(configuration: self.configuration(dir))
        defer { tier.close() }
        for index in 0..<5 {
            try tier.store(diskTestObject(target: "/scan/\(index)"))
        }
        let first = try tier.scan(after: 0, limit: 3)
        #expect(first.count == 3)
        let rest = try tier.scan(after: try #require(first.last).fileID, limit: 3)
        #expect(rest.count == 2)
        #expect(Set((first + rest).map(\.key.canonical)).count == 5)
        #expect(try tier.remove([first[0], first[1]]) == 2)
        #expect(try tier.remove([first[0]]) == 0)
        #expect(try tier.scan(after: 0, limit: 10).count == 3)
        #expect(!FileManager.default.fileExists(atPath: tier.bodyPath(first[0].fileID)))
        try tier.addBan(time: 7, expression: "obj.status == 200")
        try tier.addBan(time: 8, expression: "obj.status == 200")
        try tier.removeBan(time: 7, expression: "obj.status == 200")
        #expect(try tier.storedBans().map(\.time) == [8])
    }
}
