import NIOHTTP1

/// Builds header fields from name/value pairs, keeping order and duplicates.
func headers(_ pairs: (String, String)...) -> HTTPHeaders {
    HTTPHeaders(pairs)
}

/// 1994-11-06T08:49:37Z, the example instant of RFC 9110 §5.6.7.
let rfcExampleInstant: Int64 = 784_111_777
