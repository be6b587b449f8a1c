//! Standard base64 with padding, as Kubernetes writes Secret data and kubeconfig
//! certificates: the `base64` crate, configured once for everything that reads or writes
//! API objects. Decoding is as strict about padding as Go's `StdEncoding` and, like it,
//! ignores bits past the last byte. (`berth-image`, which does not depend on the API types,
//! encodes its Basic credentials with the same crate's standard engine.)

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 with padding.
pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard base64 with padding; `None` when it is not.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s).ok()
}

/// URL-safe base64 without padding, as JSON Web Tokens write their parts.
pub fn encode_url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// Decodes URL-safe base64 without padding; `None` when it is not.
pub fn decode_url(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_padded_base64() {
        for s in ["", "a", "ab", "abc", "abcd", "hello world"] {
            assert_eq!(decode(&encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(encode(b"hello"), "aGVsbG8=");
        for bad in ["a=bc", "abc", "====", "ab=c", "aGVsbG8", "aGVs bG8="] {
            assert!(decode(bad).is_none(), "{bad}");
        }
        // Bits past the last byte are ignored, as Go's decoder ignores them.
        assert_eq!(decode("QR==").unwrap(), b"A");
    }
}
