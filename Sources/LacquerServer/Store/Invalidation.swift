import CacheStore
import NIOCore

/// Purges by surrogate key and soft purges, for `PURGE` (through builtin.vcl's purge ACL) and
/// the admin's `POST /purge`: one implementation for both.
///
/// - A purge removes what it names from memory at once. On disk it is recorded (committed with
///   `synchronous=FULL`) before it is reported, hides what it covers from lookups at once, and
///   removes the objects in batches behind it (`DiskStorage.purgeTagged`), so its cost before
///   the answer does not grow with the objects it covers.
/// - A soft purge keeps the objects but makes them stale now: the next request is answered
///   from the stale copy while one fetch refreshes it (within the grace the object has, at
///   least `softPurgeGrace`), and the copy still stands in for a failing origin.
/// - Fills in flight that were sent before the purge do not store their answer
///   (`FetchCoalescer.markPurged`), nor does the disk writer write an older copy still queued.
extension ServerContext {
    /// Purges (or soft purges) every object tagged with any of `keys`. The future gives how many
    /// objects were removed or made stale (an object in both tiers counts once).
    func purge(surrogateKeys keys: [String], soft: Bool, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let now = self.clock()
        self.coalescer.markPurged(tags: keys, at: now)
        var inMemory = 0
        for object in self.memory.objects(withSurrogateKeys: keys) {
            if soft {
                if let copy = object.softPurged(
                    at: now, minimumGrace: self.configuration.softPurgeGrace, hiddenFields: self.memory.surrogateKeyFields),
                    self.memory.replace(object, with: copy)
                {
                    inMemory += 1
                }
            } else if self.memory.remove(object) {
                inMemory += 1
            }
        }
        guard let disk = self.disk else { return eventLoop.makeSucceededFuture(inMemory) }
        return disk.purgeTagged(keys, time: now, soft: soft, minimumGrace: self.configuration.softPurgeGrace, on: eventLoop)
            .map { [inMemory] in max(inMemory, $0) }
    }

    /// Makes every variant stored under `key` stale now (a soft `PURGE` of a URL).
    func softPurge(_ key: CacheKey, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let now = self.clock()
        self.coalescer.markPurged(key, at: now)
        var inMemory = 0
        for object in self.memory.variants(for: key) {
            if let copy = object.softPurged(
                at: now, minimumGrace: self.configuration.softPurgeGrace, hiddenFields: self.memory.surrogateKeyFields),
                self.memory.replace(object, with: copy)
            {
                inMemory += 1
            }
        }
        guard let disk = self.disk else { return eventLoop.makeSucceededFuture(inMemory) }
        let grace = self.configuration.softPurgeGrace
        return disk.onWriter(on: eventLoop) { tier in
            try tier.softPurge(key: key, now: now, minimumGrace: grace)
        }.map { [inMemory] in max(inMemory, $0) }
    }
}
