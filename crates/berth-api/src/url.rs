//! Percent-encoding of URL query strings and path segments, as Kubernetes' clients write
//! them.

/// Decodes `%XX` escapes and `+` (a space in a query). Malformed escapes stay as written.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value or path segment (everything but unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A raw query string's pairs, in order, decoded (a key may repeat: `command=a&command=b`).
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed() {
        let s = "a b/c?d=é&%";
        assert_eq!(decode(&encode(s)), s);
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%é"), "%é");
        assert_eq!(decode("x+y%2Bz"), "x y+z");
        assert_eq!(
            query_pairs(Some("command=sh&command=-c&tty")),
            vec![
                ("command".into(), "sh".into()),
                ("command".into(), "-c".into()),
                ("tty".into(), String::new())
            ]
        );
    }
}
