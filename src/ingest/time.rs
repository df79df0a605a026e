//! Timestamps: RFC 3339 text and epoch numbers in a known or guessed unit, to nanoseconds.
//!
//! `auto` guesses the unit of an epoch number from its magnitude: below 1e11 it is seconds
//! (1e11 s is the year 5138), below 1e14 milliseconds, below 1e17 microseconds, else
//! nanoseconds. Integers are converted exactly; fractions (`1764151200.123`) are allowed in
//! every unit and rounded to the nearest nanosecond. Whether a time is plausible is not
//! decided here: the pipeline flags times it cannot trust.

use crate::config::TimeFormat;
use crate::model::{TimeNs, parse_time};

/// An epoch number as written: integers kept exact (a nanosecond timestamp has more digits
/// than an `f64` holds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Epoch {
    Int(i128),
    Float(f64),
}

/// Nanoseconds per unit of a format that names one (`None` for `auto` and `rfc3339`).
fn unit_ns(format: TimeFormat) -> Option<i128> {
    match format {
        TimeFormat::S => Some(1_000_000_000),
        TimeFormat::Ms => Some(1_000_000),
        TimeFormat::Us => Some(1_000),
        TimeFormat::Ns => Some(1),
        TimeFormat::Auto | TimeFormat::Rfc3339 => None,
    }
}

/// The unit `auto` reads a number of this magnitude in.
fn guessed_unit_ns(magnitude: f64) -> i128 {
    if magnitude < 1e11 {
        1_000_000_000
    } else if magnitude < 1e14 {
        1_000_000
    } else if magnitude < 1e17 {
        1_000
    } else {
        1
    }
}

/// A timestamp given as a number. `rfc3339` refuses numbers.
pub(super) fn from_epoch(epoch: Epoch, format: TimeFormat) -> Result<TimeNs, String> {
    let unit = match format {
        TimeFormat::Rfc3339 => return Err("a number where an RFC 3339 string is expected".into()),
        TimeFormat::Auto => guessed_unit_ns(match epoch {
            Epoch::Int(i) => i.unsigned_abs() as f64,
            Epoch::Float(f) => f.abs(),
        }),
        unit => unit_ns(unit).unwrap_or(1),
    };
    let ns = match epoch {
        Epoch::Int(i) => i.checked_mul(unit),
        Epoch::Float(f) if f.is_finite() && f.abs() < 1e30 => {
            // Whole units exactly, then the fraction: `f * unit` alone would lose the
            // nanoseconds of a seconds timestamp to rounding.
            let whole = f.trunc();
            let fraction = ((f - whole) * unit as f64).round() as i128;
            (whole as i128).checked_mul(unit).map(|w| w + fraction)
        }
        Epoch::Float(_) => None,
    };
    ns.and_then(|ns| i64::try_from(ns).ok())
        .ok_or_else(|| "out of the representable range (years 1677 to 2262)".into())
}

/// A timestamp given as text: RFC 3339 (also with a space instead of the `T`), or for every
/// format except `rfc3339` an epoch number written as a string.
pub(super) fn from_text(text: &str, format: TimeFormat) -> Result<TimeNs, String> {
    if matches!(format, TimeFormat::Auto | TimeFormat::Rfc3339) {
        if let Some(t) = rfc3339(text) {
            return Ok(t);
        }
        if format == TimeFormat::Rfc3339 {
            return Err("not an RFC 3339 time".into());
        }
    }
    match epoch_text(text) {
        Some(epoch) => from_epoch(epoch, format),
        None if format == TimeFormat::Auto => Err("neither RFC 3339 nor an epoch number".into()),
        None => Err("not an epoch number".into()),
    }
}

/// RFC 3339, with the date and time separated by `T`, `t` or a space (RFC 3339 section 5.6
/// allows the space, and it is what many devices write).
fn rfc3339(text: &str) -> Option<TimeNs> {
    match text.as_bytes().get(10) {
        Some(b'T') => parse_time(text),
        Some(b't' | b' ') if text.is_char_boundary(11) => {
            parse_time(&format!("{}T{}", &text[..10], &text[11..]))
        }
        _ => None,
    }
}

/// An epoch number in text: an integer, or a decimal number (digits, sign, point and
/// exponent only: Rust would also read `inf` and `NaN`).
pub(super) fn epoch_text(text: &str) -> Option<Epoch> {
    let text = text.trim();
    if let Ok(i) = text.parse::<i128>() {
        return Some(Epoch::Int(i));
    }
    let numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if numeric && text.bytes().any(|b| b.is_ascii_digit()) {
        text.parse().ok().map(Epoch::Float)
    } else {
        None
    }
}

/// A line protocol timestamp in the unit `time_format` names (`auto` meaning ns).
pub(super) fn line_protocol(timestamp: i64, format: TimeFormat) -> Result<TimeNs, String> {
    let unit = unit_ns(format).unwrap_or(1);
    i128::from(timestamp)
        .checked_mul(unit)
        .and_then(|ns| i64::try_from(ns).ok())
        .ok_or_else(|| "the timestamp is out of the representable range".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26T10:00:00Z.
    const T: i64 = 1_795_687_200;
    const S: i64 = 1_000_000_000;

    #[test]
    fn auto_detects_the_unit_of_an_epoch_number_by_magnitude() {
        let auto = |e| from_epoch(e, TimeFormat::Auto).unwrap();
        assert_eq!(auto(Epoch::Int(T as i128)), T * S);
        assert_eq!(
            auto(Epoch::Int(T as i128 * 1000 + 120)),
            T * S + 120_000_000
        );
        assert_eq!(auto(Epoch::Int(T as i128 * 1_000_000 + 7)), T * S + 7_000);
        assert_eq!(auto(Epoch::Int(T as i128 * S as i128 + 9)), T * S + 9);
        assert_eq!(auto(Epoch::Float(T as f64 + 0.25)), T * S + 250_000_000);
        assert_eq!(auto(Epoch::Int(-(T as i128))), -T * S);
        assert_eq!(auto(Epoch::Int(0)), 0);
    }

    #[test]
    fn fractional_seconds_keep_their_microseconds() {
        let t = from_epoch(Epoch::Float(1_764_151_200.123_456), TimeFormat::S).unwrap();
        assert_eq!(t / 1000, 1_764_151_200_123_456);
    }

    #[test]
    fn an_explicit_unit_is_used_as_given() {
        assert_eq!(
            from_epoch(Epoch::Int(5), TimeFormat::Ms).unwrap(),
            5_000_000
        );
        assert_eq!(from_epoch(Epoch::Int(5), TimeFormat::Us).unwrap(), 5_000);
        assert_eq!(from_epoch(Epoch::Int(5), TimeFormat::Ns).unwrap(), 5);
        assert_eq!(
            from_epoch(Epoch::Float(1.5), TimeFormat::S).unwrap(),
            S + S / 2
        );
        assert_eq!(from_text("1500", TimeFormat::Ms).unwrap(), 1_500_000_000);
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        assert!(from_epoch(Epoch::Int(i64::MAX as i128), TimeFormat::S).is_err());
        assert!(from_epoch(Epoch::Int(i128::MAX), TimeFormat::Ns).is_err());
        assert!(from_epoch(Epoch::Float(1e300), TimeFormat::Auto).is_err());
        assert!(from_epoch(Epoch::Float(9.3e18), TimeFormat::Ns).is_err());
        assert!(line_protocol(i64::MAX, TimeFormat::S).is_err());
    }

    #[test]
    fn rfc3339_text_is_read_with_t_or_space() {
        let want = T * S + 120_000_000;
        for text in [
            "2026-11-26T10:00:00.120Z",
            "2026-11-26 10:00:00.12Z",
            "2026-11-26t10:00:00.12Z",
            "2026-11-26T11:00:00.12+01:00",
        ] {
            assert_eq!(from_text(text, TimeFormat::Auto), Ok(want), "{text}");
            assert_eq!(from_text(text, TimeFormat::Rfc3339), Ok(want), "{text}");
        }
    }

    #[test]
    fn numeric_strings_are_epochs_except_in_rfc3339() {
        assert_eq!(from_text("1795687200", TimeFormat::Auto), Ok(T * S));
        assert_eq!(
            from_text(" 1795687200.5 ", TimeFormat::S),
            Ok(T * S + S / 2)
        );
        assert!(from_text("1795687200", TimeFormat::Rfc3339).is_err());
        assert!(from_text("2026-11-26T10:00:00Z", TimeFormat::S).is_err());
    }

    #[test]
    fn garbage_text_is_refused() {
        for text in [
            "",
            "yesterday",
            "NaN",
            "inf",
            "2026-13-01T00:00:00Z",
            "1.2.3",
            "é",
        ] {
            assert!(from_text(text, TimeFormat::Auto).is_err(), "{text}");
        }
    }

    #[test]
    fn numbers_are_refused_in_rfc3339() {
        assert!(from_epoch(Epoch::Int(T as i128), TimeFormat::Rfc3339).is_err());
    }

    #[test]
    fn line_protocol_timestamps_are_in_the_configured_unit() {
        assert_eq!(line_protocol(12, TimeFormat::Auto), Ok(12));
        assert_eq!(line_protocol(12, TimeFormat::Ms), Ok(12_000_000));
        assert_eq!(line_protocol(-12, TimeFormat::S), Ok(-12 * S));
        assert_eq!(line_protocol(i64::MIN, TimeFormat::Ns), Ok(i64::MIN));
    }
}
