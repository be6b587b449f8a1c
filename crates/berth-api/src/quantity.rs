//! Resource quantities (`100m`, `128Mi`, `1.5Gi`, `2e3`) as Kubernetes writes them.

use std::fmt;

/// A parsed, non-negative quantity held exactly in thousandths of its unit (milli-CPU or
/// milli-bytes); values finer than a thousandth round up, as Kubernetes rounds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    millis: i128,
}

/// Why a quantity string is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QuantityError {}

const SYNTAX: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

impl Quantity {
    pub fn from_millis(millis: i128) -> Self {
        Quantity { millis }
    }

    /// Thousandths of the unit (milli-cores for CPU).
    pub fn millis(&self) -> i128 {
        self.millis
    }

    /// Whole units, rounded up (bytes for memory).
    pub fn units_ceil(&self) -> i128 {
        (self.millis + 999).div_euclid(1000)
    }

    /// Parses a quantity; negative values are refused since no resource is negative.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(SYNTAX.into());
        let s = s.trim();
        if s.is_empty() || s.len() > 64 {
            return Err(err());
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        if s.starts_with('-') {
            return Err(QuantityError("must be greater than or equal to 0".into()));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(split);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(err());
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        // (multiplier numerator as power of 2 or 10) applied to the decimal mantissa.
        let (base, exp): (i128, i32) = match suffix {
            "" => (10, 0),
            "n" => (10, -9),
            "u" => (10, -6),
            "m" => (10, -3),
            "k" => (10, 3),
            "M" => (10, 6),
            "G" => (10, 9),
            "T" => (10, 12),
            "P" => (10, 15),
            "E" => (10, 18),
            "Ki" => (2, 10),
            "Mi" => (2, 20),
            "Gi" => (2, 30),
            "Ti" => (2, 40),
            "Pi" => (2, 50),
            "Ei" => (2, 60),
            other => {
                let rest = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or_else(err)?;
                let e: i32 = rest.parse().map_err(|_| err())?;
                if !(-30..=30).contains(&e) {
                    return Err(QuantityError("exponent out of range".into()));
                }
                (10, e)
            }
        };
        if int_part.len() + frac_part.len() > 30 {
            return Err(QuantityError("too many digits".into()));
        }
        // mantissa = digits / 10^frac_len; value in millis = mantissa * base^exp * 1000.
        let digits: i128 = format!("{int_part}{frac_part}")
            .parse()
            .map_err(|_| err())?;
        let mut num: i128 = digits * 1000;
        let mut den: i128 = 10i128.pow(frac_part.len() as u32);
        let overflow = || QuantityError("quantity too large".into());
        if exp >= 0 {
            num = num
                .checked_mul(base.checked_pow(exp as u32).ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
        } else {
            den = den
                .checked_mul(base.checked_pow((-exp) as u32).ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
        }
        let millis = (num + den - 1).div_euclid(den);
        if millis > i128::from(i64::MAX) {
            return Err(overflow());
        }
        Ok(Quantity { millis })
    }
}

impl fmt::Display for Quantity {
    /// Canonical form: milli-units when fractional, otherwise whole units.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis % 1000 == 0 {
            let units = self.millis / 1000;
            for (suffix, size) in [("Gi", 1i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
                if units >= size && units % size == 0 {
                    return write!(f, "{}{suffix}", units / size);
                }
            }
            write!(f, "{units}")
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubernetes_accepts() {
        let q = |s: &str| Quantity::parse(s).unwrap().millis();
        assert_eq!(q("100m"), 100);
        assert_eq!(q("1"), 1000);
        assert_eq!(q("0.5"), 500);
        assert_eq!(q("128Mi"), 128 * 1024 * 1024 * 1000);
        assert_eq!(q("1.5Gi"), 1536 * 1024 * 1024 * 1000);
        assert_eq!(q("2k"), 2_000_000);
        assert_eq!(q("1e3"), 1_000_000);
        assert_eq!(q("1n"), 1, "below a milli rounds up");
        assert_eq!(Quantity::parse("64Mi").unwrap().units_ceil(), 64 << 20);
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "abc", "1.2.3", "-1", "12Qi", "1e99", ".", "Mi", "1 Mi"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(Quantity::parse("1024Ki").unwrap().to_string(), "1Mi");
        assert_eq!(Quantity::parse("0.25").unwrap().to_string(), "250m");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = Quantity::parse(&s);
        }
    }
}
