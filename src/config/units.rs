//! Human-friendly sizes (`50GiB`) and durations (`5m`, `1h30m`) in the config.
//!
//! Only parsing: the keys they belong to, defaults and range checks are the
//! config module's business.

use std::time::Duration;

/// Why a size or a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "{0:?} is not a size: write a number and a unit, e.g. \"512MiB\", \"50GiB\" or \"2TB\""
    )]
    BadSize(String),
    #[error("size {0:?} is too large")]
    SizeOverflow(String),
    #[error(
        "{0:?} is not a duration: write numbers with units ms, s, m, h or d, e.g. \"30s\", \"5m\" or \"1h30m\""
    )]
    BadDuration(String),
}

/// Parse `"50GiB"`, `"512 MiB"`, `"1.5GB"`, `"1048576"` (bytes) into bytes.
/// Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones
/// (KB, MB, GB, TB) powers of 1000.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(UnitError::BadSize(input.to_owned())),
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return Err(UnitError::BadSize(input.to_owned()));
    }
    let overflow = || UnitError::SizeOverflow(input.to_owned());
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    if !frac.is_empty() {
        // At most 9 fractional digits are meaningful for these units.
        let digits = &frac[..frac.len().min(9)];
        let scale = 10u128.pow(digits.len() as u32);
        let f: u128 = digits.parse().map_err(|_| overflow())?;
        let extra = f * u128::from(multiplier) / scale;
        bytes = bytes
            .checked_add(u64::try_from(extra).map_err(|_| overflow())?)
            .ok_or_else(overflow)?;
    }
    Ok(bytes)
}

/// Parse `"5m"`, `"30s"`, `"1h30m"`, `"250ms"`, `"0s"` into a duration.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadDuration(input.to_owned());
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(bad)?),
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(bad)?),
            "d" => Duration::from_secs(value.checked_mul(86_400).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in [
            "", "GiB", "50XB", "5 0GiB", "1.GiB", ".5GiB", "1.2.3GiB", "-1GiB", "50gib",
        ] {
            assert!(parse_size(bad).is_err(), "accepted {bad:?}");
        }
        assert!(matches!(
            parse_size("99999999999TiB"),
            Err(UnitError::SizeOverflow(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "5", "m", "5x", "-5s", "5 m", "1.5h", "s5"] {
            assert!(parse_duration(bad).is_err(), "accepted {bad:?}");
        }
    }
}
