//! Value parsers for the examples' numeric flags, so that a bad value is refused by the argument
//! parser, before any work starts, with the flag and the rule named:
//!
//! ```text
//! error: invalid value '0' for '--batch-size <BATCH_SIZE>': must be at least 1
//! ```
//!
//! Every numeric flag of `examples/` goes through one of these (`tests/cli_flags.rs` checks it), except
//! the few where any value is meaningful (seeds) or that are checked against a file once it is read
//! (layers, latent indices).
//!
//! ```
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[arg(long, default_value_t = 8, value_parser = stereo::cli::count)]
//!     batch_size: usize,
//!     #[arg(long, value_parser = stereo::cli::probability)]
//!     top_p: Option<f32>,
//! }
//!
//! assert!(Args::try_parse_from(["x", "--batch-size", "0"]).is_err());
//! assert!(Args::try_parse_from(["x", "--top-p", "1.5"]).is_err());
//! assert_eq!(Args::try_parse_from(["x"]).unwrap().batch_size, 8);
//! ```

use std::path::PathBuf;
use std::str::FromStr;

fn parse<T: FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse::<T>().map_err(|e| e.to_string())
}

/// A count of things: an integer of at least 1.
pub fn count(value: &str) -> Result<usize, String> {
    match parse::<usize>(value)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// A count of things as a `u64` (token totals): at least 1.
pub fn count_u64(value: &str) -> Result<u64, String> {
    match parse::<u64>(value)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// A count that may be zero (a number of optional repeats, positions to skip): an integer of at
/// least 0, with a clear message for a negative or fractional value.
pub fn count_or_zero(value: &str) -> Result<usize, String> {
    parse::<usize>(value)
}

/// A finite number (NaN and infinities are refused).
pub fn finite(value: &str) -> Result<f32, String> {
    let x = parse::<f32>(value)?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err("must be a finite number".into())
    }
}

/// A finite number above 0.
pub fn positive(value: &str) -> Result<f32, String> {
    match finite(value)? {
        x if x > 0.0 => Ok(x),
        _ => Err("must be greater than 0".into()),
    }
}

/// A finite number of at least 0.
pub fn non_negative(value: &str) -> Result<f32, String> {
    match finite(value)? {
        x if x >= 0.0 => Ok(x),
        _ => Err("must be at least 0".into()),
    }
}

/// A finite `f64` of at least 0.
pub fn non_negative_f64(value: &str) -> Result<f64, String> {
    non_negative(value)?;
    parse::<f64>(value)
}

/// A probability in `(0, 1]` (top-p, a false discovery rate).
pub fn probability(value: &str) -> Result<f32, String> {
    match finite(value)? {
        x if x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err("must be in (0, 1]".into()),
    }
}

/// A probability in `(0, 1]`, as `f64`.
pub fn probability_f64(value: &str) -> Result<f64, String> {
    probability(value)?;
    parse::<f64>(value)
}

/// A threshold in `[0, 1]` (an AUROC, a balanced accuracy).
pub fn unit_interval_f64(value: &str) -> Result<f64, String> {
    match parse::<f64>(value)? {
        x if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err("must be in [0, 1]".into()),
    }
}

/// A share of a whole that leaves something on both sides: in `(0, 1)` (a train/held-out split).
pub fn split_fraction_f64(value: &str) -> Result<f64, String> {
    match parse::<f64>(value)? {
        x if x > 0.0 && x < 1.0 => Ok(x),
        _ => Err("must be in (0, 1)".into()),
    }
}

/// A share that may be zero: in `[0, 1)` (a validation fraction).
pub fn fraction_f64(value: &str) -> Result<f64, String> {
    match parse::<f64>(value)? {
        x if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err("must be in [0, 1)".into()),
    }
}

/// A file to write: not an existing directory, and in a directory that exists (checked before any
/// work, so that an hour of compute does not end in "Is a directory").
pub fn output_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if path.is_dir() {
        return Err("is a directory; give the path of a file to write".into());
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            Err(format!("its directory {} does not exist", parent.display()))
        }
        _ => Ok(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_files_refuse_directories_and_missing_parents() {
        let dir = std::env::temp_dir();
        let err = output_file(dir.to_str().unwrap()).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");
        let missing = dir.join("no-such-dir-for-stereo-cli").join("out.json");
        let err = output_file(missing.to_str().unwrap()).unwrap_err();
        assert!(err.contains("no-such-dir-for-stereo-cli"), "{err}");
        assert_eq!(output_file("out.json"), Ok(PathBuf::from("out.json")));
        let fine = dir.join("out.safetensors");
        assert_eq!(output_file(fine.to_str().unwrap()), Ok(fine));
    }

    #[test]
    fn counts_refuse_zero_negatives_and_words() {
        assert_eq!(count("3"), Ok(3));
        assert_eq!(count(" 7 "), Ok(7));
        assert_eq!(count("0").unwrap_err(), "must be at least 1");
        assert!(count("-1").is_err());
        assert!(count("many").is_err());
        assert!(count("1e3").is_err());
        assert_eq!(count_u64("18446744073709551615"), Ok(u64::MAX));
        assert!(count_u64("0").is_err());
        assert_eq!(count_or_zero("0"), Ok(0));
        assert_eq!(count_or_zero(" 4"), Ok(4));
        assert!(count_or_zero("-1").is_err());
        assert!(count_or_zero("2.5").is_err());
    }

    #[test]
    fn real_numbers_refuse_non_finite_values_and_the_wrong_side_of_their_bound() {
        for bad in ["nan", "NaN", "inf", "-inf", "abc", ""] {
            assert!(finite(bad).is_err(), "{bad}");
        }
        assert_eq!(finite("-2.5"), Ok(-2.5));
        assert!(positive("0").is_err());
        assert_eq!(positive("0.7"), Ok(0.7));
        assert!(non_negative("-0.1").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
        assert_eq!(non_negative_f64("1.5"), Ok(1.5));
        assert!(non_negative_f64("inf").is_err());
    }

    #[test]
    fn shares_keep_to_their_intervals() {
        assert!(probability("0").is_err());
        assert_eq!(probability("1"), Ok(1.0));
        assert!(probability("1.01").is_err());
        assert_eq!(probability_f64("0.05"), Ok(0.05));
        assert!(probability_f64("nan").is_err());
        assert_eq!(unit_interval_f64("0"), Ok(0.0));
        assert_eq!(unit_interval_f64("1"), Ok(1.0));
        assert!(unit_interval_f64("1.2").is_err());
        assert!(unit_interval_f64("nan").is_err());
        assert!(split_fraction_f64("0").is_err());
        assert!(split_fraction_f64("1").is_err());
        assert_eq!(split_fraction_f64("0.75"), Ok(0.75));
        assert_eq!(fraction_f64("0"), Ok(0.0));
        assert!(fraction_f64("1").is_err());
    }
}
