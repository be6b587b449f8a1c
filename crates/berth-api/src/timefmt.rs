//! RFC 3339 timestamps as Kubernetes writes them (`2026-11-27T01:02:03Z`).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in unix nanoseconds.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Now, as an RFC 3339 UTC timestamp with second precision.
pub fn now_rfc3339() -> String {
    rfc3339_from_nanos(now_nanos())
}

/// Formats unix nanoseconds as an RFC 3339 UTC timestamp with second precision.
pub fn rfc3339_from_nanos(nanos: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Formats unix nanoseconds as an RFC 3339 UTC timestamp with nanosecond precision, for
/// history, where several changes can fall in one second.
pub fn rfc3339_nanos_from_nanos(nanos: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Formats unix nanoseconds as an RFC 3339 UTC timestamp with exactly six fractional digits,
/// as Kubernetes writes a `MicroTime` (audit events' timestamps).
pub fn rfc3339_micros_from_nanos(nanos: u64) -> String {
    let seconds = rfc3339_from_nanos(nanos);
    let base = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{base}.{:06}Z", (nanos % 1_000_000_000) / 1_000)
}

/// Parses an RFC 3339 timestamp into unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        format!("{s:?} is not an RFC 3339 time ({e}); write e.g. 2026-11-27T10:00:00Z")
    })?;
    let nanos = t.unix_timestamp_nanos();
    u64::try_from(nanos).map_err(|_| {
        if nanos < 0 {
            format!("{s:?} is before 1970")
        } else {
            format!("{s:?} is after 2554, the last time berth can represent")
        }
    })
}

/// kubectl's short age: `45s`, `3m`, `5h`, `2d`.
pub fn short_age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_times_have_six_digits() {
        let n = parse_rfc3339("2026-11-27T10:00:00Z").unwrap();
        assert_eq!(
            rfc3339_micros_from_nanos(n + 1_234_567),
            "2026-11-27T10:00:00.001234Z"
        );
        assert_eq!(rfc3339_micros_from_nanos(n), "2026-11-27T10:00:00.000000Z");
    }

    #[test]
    fn round_trip() {
        let n = parse_rfc3339("2026-11-27T10:00:00Z").unwrap();
        assert_eq!(rfc3339_from_nanos(n), "2026-11-27T10:00:00Z");
        assert!(parse_rfc3339("yesterday").is_err());
        assert_eq!(short_age(59), "59s");
        assert_eq!(short_age(600), "10m");
        assert_eq!(short_age(86400 * 3), "3d");
    }
}
