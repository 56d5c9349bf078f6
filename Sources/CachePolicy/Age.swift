import NIOHTTP1

/// The age of a stored response (RFC 9111 §4.2.3).
///
/// The age is computed once, when the response arrives, as `corrected_initial_age`; from then on
/// `current_age = corrected_initial_age + (now - response_time)`. Times are `Double` seconds
/// since the epoch passed in by the caller: this module has no clock, so the calculation is
/// tested with fixed numbers.
public enum AgeCalculation {
    /// The `Age` header's delta-seconds (RFC 9111 §5.1), `nil` if absent or invalid.
    ///
    /// `Age` is a singleton, but broken intermediaries send several lines or a list; we take the
    /// first valid member, which is what the nearest cache said. Values above 2^31 are clamped
    /// (§1.2.2) so arithmetic never overflows.
    public static func ageHeader(_ headers: HTTPHeaders) -> Int64? {
        for line in headers["age"] {
            for member in line.split(separator: ",", omittingEmptySubsequences: false) {
                if let seconds = CacheControl.deltaSeconds(String(member.trimmingOWS())) {
                    return seconds
                }
            }
        }
        return nil
    }

    /// `corrected_initial_age` per RFC 9111 §4.2.3:
    ///
    ///     apparent_age = max(0, response_time - date_value)
    ///     response_delay = response_time - request_time
    ///     corrected_age_value = age_value + response_delay
    ///     corrected_initial_age = max(apparent_age, corrected_age_value)
    ///
    /// - Parameters:
    ///   - ageHeader: the response's `Age` (``ageHeader(_:)``); absent counts as 0.
    ///   - dateHeader: the response's parsed `Date`; absent means the origin's clock is unknown,
    ///     so the apparent age is 0 (RFC 9110 §6.6.1: a recipient may take the receipt time).
    ///   - requestTime: when the request that produced this response was sent.
    ///   - responseTime: when the response was received.
    /// - Returns: seconds, never negative; a response delay made negative by clock steps counts as 0.
    public static func correctedInitialAge(
        ageHeader: Int64?,
        dateHeader: Int64?,
        requestTime: Double,
        responseTime: Double
    ) -> Double {
        let apparentAge = dateHeader.map { max(0, responseTime - Double($0)) } ?? 0
        let responseDelay = max(0, responseTime - requestTime)
        let correctedAgeValue = Double(ageHeader ?? 0) + responseDelay
        return max(apparentAge, correctedAgeValue)
    }

    /// `current_age = corrected_initial_age + resident_time` (RFC 9111 §4.2.3), where
    /// `resident_time = now - response_time`. An addition to the original API.
    /// - Parameters:
    ///   - correctedInitialAge: from ``correctedInitialAge(ageHeader:dateHeader:requestTime:responseTime:)``.
    ///   - responseTime: when the response was received.
    ///   - now: the current time.
    public static func currentAge(correctedInitialAge: Double, responseTime: Double, now: Double) -> Double {
        correctedInitialAge + max(0, now - responseTime)
    }

    /// The value to send in `Age` (RFC 9111 §5.1): whole seconds, rounded down, clamped to 2^31.
    /// An addition to the original API.
    public static func headerValue(_ currentAge: Double) -> String {
        guard currentAge.isFinite, currentAge > 0 else { return "0" }
        return String(Int64(min(currentAge, Double(CacheControl.maxDeltaSeconds))))
    }
}
