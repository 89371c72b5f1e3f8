//! Sizes in rsyslog's syntax (`DISK_SPACE`): a whole number of bytes with an optional
//! one-letter suffix. Lower-case suffixes are binary (`k` = 1024, `180g` = 180·1024³),
//! upper-case ones decimal (`K` = 1000, `180G` = 180·10⁹); `k m g t` are accepted.
//! Surrounding spaces are ignored; anything else (fractions, `gb`, negative numbers, a value
//! that does not fit in 64 bits) is an error, never a silent default.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    #[error("the size is empty")]
    Empty,
    #[error("\"{0}\" is not a size")]
    NotASize(String),
    #[error("\"{text}\" has an unknown suffix '{suffix}'")]
    UnknownSuffix { text: String, suffix: char },
    #[error("\"{0}\" is too large")]
    TooLarge(String),
}

/// Parse `32g`, `180G`, `100m`, `4096`... into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    let last = trimmed.chars().last().ok_or(SizeError::Empty)?;
    let (digits, multiplier) = if last.is_ascii_digit() {
        (trimmed, 1u64)
    } else {
        let multiplier = match last {
            'k' => 1u64 << 10,
            'm' => 1 << 20,
            'g' => 1 << 30,
            't' => 1 << 40,
            'K' => 1_000,
            'M' => 1_000_000,
            'G' => 1_000_000_000,
            'T' => 1_000_000_000_000,
            other if other.is_ascii_alphabetic() => {
                return Err(SizeError::UnknownSuffix {
                    text: trimmed.to_string(),
                    suffix: other,
                })
            }
            _ => return Err(SizeError::NotASize(trimmed.to_string())),
        };
        (&trimmed[..trimmed.len() - last.len_utf8()], multiplier)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SizeError::NotASize(trimmed.to_string()));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| SizeError::TooLarge(trimmed.to_string()))?;
    number
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::TooLarge(trimmed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_suffix_is_binary() {
        assert_eq!(parse_size("180g"), Ok(180 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("32g"), Ok(32 << 30));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
    }

    #[test]
    fn upper_case_suffix_is_decimal() {
        assert_eq!(parse_size("180G"), Ok(180_000_000_000));
        assert_eq!(parse_size("4980G"), Ok(4_980_000_000_000));
        assert_eq!(parse_size("5K"), Ok(5_000));
        assert_eq!(parse_size("7M"), Ok(7_000_000));
        assert_eq!(parse_size("1T"), Ok(1_000_000_000_000));
    }

    #[test]
    fn plain_number_is_bytes_and_spaces_are_ignored() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 32g "), Ok(32 << 30));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("   "), Err(SizeError::Empty));
        assert!(matches!(parse_size("g"), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_size("1.5g"), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_size("-1g"), Err(SizeError::NotASize(_))));
        assert!(matches!(
            parse_size("10gb"),
            Err(SizeError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            parse_size("10x"),
            Err(SizeError::UnknownSuffix { suffix: 'x', .. })
        ));
        assert!(matches!(parse_size("10%"), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_size("10 g"), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_size("10é"), Err(SizeError::NotASize(_))));
    }

    #[test]
    fn sizes_beyond_64_bits_are_errors() {
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::TooLarge(_))
        ));
        assert!(matches!(
            parse_size("20000000t"),
            Err(SizeError::TooLarge(_))
        ));
    }
}
