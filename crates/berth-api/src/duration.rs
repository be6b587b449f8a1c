//! The one duration grammar of berth, for manifests and command-line flags alike: Go's
//! `time.ParseDuration` as Kubernetes and kubectl read durations (`150ms`, `2s`, `1m30s`,
//! `1.5h`; units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`; a bare `0`), plus `d` for days
//! (`7d`), which berth's retention flags use. No sign, and at most 10^9 seconds.

use std::time::Duration;

/// What a valid duration looks like, for error messages.
pub const EXAMPLES: &str = "a duration such as 100ms, 45s, 1m30s, 12h or 7d";

/// Parses a duration; the error quotes the input and says what is expected.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{s:?} is not {EXAMPLES}: {why}");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| bad("each unit needs a number before it"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(bad("a unit is missing")),
            u => return Err(bad(&format!("unknown unit {u:?}"))),
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    if !(total.is_finite() && total < 1e9) {
        return Err(bad("it is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_days() {
        for (s, want) in [
            ("150ms", Duration::from_millis(150)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
            ("7d", Duration::from_secs(7 * 86400)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("250us", Duration::from_micros(250)),
        ] {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "5",
            "s",
            "1x",
            "1e400s",
            "-1s",
            "99999999999s",
            "1.2.3s",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("is not a duration such as"), "{bad}: {e}");
        }
        assert!(parse("5").unwrap_err().contains("a unit is missing"));
    }
}
