//! Time helpers: all instants are nanoseconds since the Unix epoch (UTC), as libmseed keeps them.

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats nanoseconds since the epoch as ISO-8601 UTC with microseconds, like ObsPy prints.
pub fn format_ns(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an RFC 3339 / ISO-8601 instant into nanoseconds since the epoch.
pub fn parse_ns(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.with_timezone(&Utc).timestamp_nanos_opt())
}

/// Parses an instant as catalogues write it: RFC 3339, or a date and time without an offset
/// (`2016-10-30 07:40:17.32`, `T` or a space between them), taken as UTC.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    parse_ns(text).or_else(|| {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
    })
}

/// The UTC day (`YYYY-MM-DD`) an instant falls on; used to partition the lake.
pub fn day_of(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns)
        .format("%Y-%m-%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_formats() {
        let ns = parse_ns("2009-08-24T00:20:03.5Z").unwrap();
        assert_eq!(format_ns(ns), "2009-08-24T00:20:03.500000Z");
        assert_eq!(day_of(ns), "2009-08-24");
        assert_eq!(parse_ns("not a time"), None);
    }

    #[test]
    fn catalogue_times_without_an_offset_are_utc() {
        let z = parse_ns("2016-10-30T07:40:17.32Z");
        assert_eq!(parse_utc("2016-10-30 07:40:17.32"), z);
        assert_eq!(parse_utc(" 2016-10-30T07:40:17.320 "), z);
        assert_eq!(parse_utc("2016-10-30T09:40:17.32+02:00"), z);
        assert_eq!(parse_utc("2016-10-30"), None);
    }
}
