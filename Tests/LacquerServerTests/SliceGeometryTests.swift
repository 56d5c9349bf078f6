import CachePolicy
import CacheStore
import NIOCore
import NIOHTTP1
import LacquerTesting
import Testing

@testable import LacquerServer

/// The arithmetic of slices: geometry, keys, the marker, the tee that cuts a body, and the
/// Content-Range and Range parsing they rely on.
@Suite("Slice geometry")
struct SliceGeometryTests {
    @Test("slice ranges cover the object exactly, the last one shorter")
    func ranges() {
        let geometry = SliceGeometry(size: 100, length: 950)
        #expect(geometry.count == 10)
        #expect(geometry.range(0) == 0...99)
        #expect(geometry.range(9) == 900...949)
        #expect(geometry.index(of: 899) == 8 && geometry.index(of: 900) == 9)
        #expect(SliceGeometry(size: 100, length: 1000).count == 10)
        #expect(SliceGeometry(size: 100, length: 1001).range(10) == 1000...1000)
    }

    @Test("slice keys extend the object's key, differ by index and size, and are not the object's")
    func keys() {
        let base = CacheKey(host: "example.com", target: "/video.mp4")
        let geometry = SliceGeometry(size: 1 << 20, length: 10 << 20)
        let keys = geometry.keys(base)
        #expect(keys.count == 10 && Set(keys).count == 10 && !keys.contains(base))
        #expect(keys[3].parts.prefix(2) == base.parts[...])
        #expect(SliceGeometry(size: 2 << 20, length: 10 << 20).key(base, index: 3) != keys[3])
    }

    @Test("a marker is a stored 206 whose range starts at 0 and ends before the length")
    func marker() {
        let headers: HTTPHeaders = ["Content-Range": "bytes 0-1048575/10485760", "ETag": "\"a\""]
        #expect(SliceGeometry.marker(status: 206, headers: headers, bodyLength: 0) == SliceGeometry(size: 1 << 20, length: 10 << 20))
        #expect(SliceGeometry.marker(status: 206, headers: headers, bodyLength: 1 << 20) == nil, "a stored part of a representation")
        #expect(SliceGeometry.marker(status: 200, headers: headers, bodyLength: 0) == nil)
        #expect(SliceGeometry.marker(status: 206, headers: ["Content-Range": "bytes 5-9/10"], bodyLength: 0) == nil)
        #expect(SliceGeometry.marker(status: 206, headers: ["Content-Range": "bytes 0-9/10"], bodyLength: 0) == nil, "a whole object is no marker")
        #expect(SliceGeometry(size: 1 << 20, length: 10 << 20).markerContentRange == "bytes 0-1048575/10485760")
    }

    @Test("versions are told apart by a strong ETag, or without one by Last-Modified")
    func identifiesVersion() {
        #expect(SliceGeometry.identifiesVersion(["ETag": "\"a\""]))
        #expect(!SliceGeometry.identifiesVersion(["ETag": "W/\"a\""]))
        #expect(!SliceGeometry.identifiesVersion(["ETag": "W/\"a\"", "Last-Modified": "Tue, 01 Dec 2026 00:00:00 GMT"]))
        #expect(SliceGeometry.identifiesVersion(["Last-Modified": "Tue, 01 Dec 2026 00:00:00 GMT"]))
        #expect(!SliceGeometry.identifiesVersion([:]))
    }

    @Test("a slice fetch accepts only a 206 of exactly its range and the object's length")
    func sliceAnswer() {
        let fetch = SliceFetch(geometry: SliceGeometry(size: 100, length: 950), index: 9)
        #expect(fetch.rangeHeader == "bytes=900-949")
        #expect(fetch.isAnswer(status: 206, headers: ["Content-Range": "bytes 900-949/950"]))
        #expect(!fetch.isAnswer(status: 200, headers: ["Content-Range": "bytes 900-949/950"]))
        #expect(!fetch.isAnswer(status: 206, headers: ["Content-Range": "bytes 900-949/951"]))
        #expect(!fetch.isAnswer(status: 206, headers: ["Content-Range": "bytes 900-948/950"]))
        #expect(!fetch.isAnswer(status: 206, headers: [:]))
    }

    @Test("the tee hands back each slice once it is complete, whatever the parts' sizes (seeded)")
    func tee() {
        let seed = SeededRandom.seed(fallback: UInt64.random(in: 1...UInt64.max))
        print("SliceGeometryTests.tee seed: \(seed)")
        var random = SeededRandom(seed: seed)
        let length = 1000 + Int(random.next() % 3000)
        let size = 64 + Int(random.next() % 300)
        let body = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var tee = SliceTee(key: CacheKey(host: "h", target: "/t"), geometry: SliceGeometry(size: size, length: length))
        var slices: [(index: Int, body: ByteBuffer)] = []
        var offset = 0
        while offset < length {
            let count = min(length - offset, 1 + Int(random.next() % 500))
            slices += tee.take(ByteBuffer(bytes: body[offset..<(offset + count)]), allocator: ByteBufferAllocator())
            offset += count
        }
        let geometry = SliceGeometry(size: size, length: length)
        #expect(slices.map(\.index) == Array(0..<geometry.count), "seed \(seed)")
        for (index, slice) in slices {
            #expect(Array(slice.readableBytesView) == Array(body[geometry.range(index)]), "seed \(seed) slice \(index)")
        }
    }

    @Test("Content-Range parsing takes only bytes first-last/length with first <= last < length")
    func contentRange() {
        #expect(RangeRequest.parseContentRange("bytes 0-99/1000")! == (0...99, 1000))
        #expect(RangeRequest.parseContentRange("bytes 0-99/*") == nil)
        #expect(RangeRequest.parseContentRange("bytes */1000") == nil)
        #expect(RangeRequest.parseContentRange("bytes 100-99/1000") == nil)
        #expect(RangeRequest.parseContentRange("bytes 0-1000/1000") == nil)
        #expect(RangeRequest.parseContentRange("items 0-9/10") == nil)
        #expect(RangeRequest.parseContentRange("bytes 0-99999999999999999999/1") == nil)
        #expect(RangeRequest.parseContentRange(nil) == nil)
    }

    @Test("the lowest first position of a Range value, none with a suffix range")
    func lowestFirstPosition() {
        #expect(RangeRequest.lowestFirstPosition("bytes=500-600") == 500)
        #expect(RangeRequest.lowestFirstPosition("bytes=900-,200-300") == 200)
        #expect(RangeRequest.lowestFirstPosition("bytes=-500") == nil)
        #expect(RangeRequest.lowestFirstPosition("bytes=100-200,-5") == nil)
        #expect(RangeRequest.lowestFirstPosition("lines=1-2") == nil)
    }
}
