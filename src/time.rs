//! Clock and time formats, in one place: Unix seconds from the system clock, RFC 3339 (status
//! fields, Secret annotations, command output), HTTP dates (`Retry-After`) and the duration
//! syntax of flags and annotations (`90s`, `5m`, `12h`).
//!
//! Pure apart from [`unix_now`]; callers that need a fixed clock take `now` as an argument.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use jiff::fmt::rfc2822;

/// The system clock in Unix seconds (0 before 1970, which no token can be from).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339, seconds precision, UTC (`2026-12-01T03:21:10Z`); the number itself when it is
/// outside the years a timestamp can hold.
pub fn rfc3339(unix: i64) -> String {
    Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// Parses RFC 3339 into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// An HTTP date (RFC 9110 §5.6.7, the IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`) as a point
/// in time. The weekday is not checked against the date, as RFC 9110 asks of recipients.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let at = rfc2822::DateTimeParser::new()
        .relaxed_weekday(true)
        .parse_timestamp(s.trim())
        .ok()?;
    Some(SystemTime::from(at))
}

/// Parses `90s`, `5m`, `12h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration such as 90s, 5m or 12h ({e})"))
}

/// A duration as `5m`, `1h 30m`, `2m 30s`.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_whole_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_094_070), "2026-12-01T03:01:10Z");
        assert_eq!(parse_rfc3339("2026-12-01T03:01:10Z"), Some(1_796_094_070));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn http_dates() {
        let unix = |s| {
            parse_http_date(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(unix("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(unix("Tue, 29 Feb 2028 12:00:00 GMT"), Some(1_835_438_400));
        assert_eq!(unix("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        // RFC 9110: a recipient does not insist on the right weekday.
        assert_eq!(unix("Mon, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(unix("06 Nov 1994"), None);
        assert_eq!(unix("120"), None);
        assert_eq!(unix(""), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("90s, 5m or 12h")
        );
        assert_eq!(format_duration(Duration::from_secs(150)), "2m 30s");
    }
}
