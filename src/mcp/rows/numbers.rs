//! Numbers as both row formats write them: integers in decimal, REALs in
//! their shortest exact form with a `.` or an exponent (serde_json's), a
//! REAL infinity as the text `inf` or `-inf` (JSON has no infinity).

use std::fmt::Write as _;

/// Appends `value` in decimal (itoa: two digits at a time, and no UTF-8
/// check of the digits, which had cost as much as writing them).
pub fn push_integer(out: &mut String, value: i64) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// Bytes of `value` in decimal.
pub fn integer_len(value: i64) -> usize {
    let digits = value
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d as usize + 1);
    digits + usize::from(value < 0)
}

/// A finite REAL as a JSON number, or `None` for an infinity (or NaN).
pub fn finite(value: f64) -> Option<serde_json::Number> {
    serde_json::Number::from_f64(value)
}

/// Appends a finite REAL.
pub fn push_real(out: &mut String, value: &serde_json::Number) {
    let _ = write!(out, "{value}");
}

/// Bytes of a finite REAL.
pub fn real_len(value: &serde_json::Number) -> usize {
    let mut counter = Counter(0);
    let _ = write!(counter, "{value}");
    counter.0
}

/// The text a REAL that JSON cannot hold is sent as: `inf`, `-inf`.
pub fn non_finite_text(value: f64) -> String {
    value.to_string()
}

/// Counts what is written to it.
struct Counter(usize);

impl std::fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_in_decimal_with_their_length() {
        for value in [0, 7, -7, 10, 99, 100, -100, i64::MAX, i64::MIN] {
            let mut out = String::new();
            push_integer(&mut out, value);
            assert_eq!(out, value.to_string());
            assert_eq!(integer_len(value), out.len(), "{value}");
        }
    }

    #[test]
    fn reals_keep_a_point_or_an_exponent() {
        for (value, text) in [
            (950.0, "950.0"),
            (1e300, "1e+300"),
            (-0.0, "-0.0"),
            (2.5e-7, "2.5e-7"),
        ] {
            let number = finite(value).unwrap();
            let mut out = String::new();
            push_real(&mut out, &number);
            assert_eq!(out, text);
            assert_eq!(real_len(&number), text.len());
        }
    }

    #[test]
    fn infinities_are_named() {
        assert!(finite(f64::INFINITY).is_none());
        assert_eq!(non_finite_text(f64::INFINITY), "inf");
        assert_eq!(non_finite_text(f64::NEG_INFINITY), "-inf");
    }
}
