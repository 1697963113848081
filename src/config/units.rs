//! Sizes, rates and durations as users write them (`"8 MiB"`, `"20 MB/s"`, `"1h 30m"`), and
//! sizes written back the same way (for `check` and for messages). Text in, value out: how
//! TOML values reach these parsers is in `raw`, the range each setting allows in `validate`.

use std::time::Duration;

pub(super) const MIB: u64 = 1024 * 1024;
/// The longest duration any setting takes; nothing here needs more than days.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A size, duration or similar value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl InvalidValue {
    /// The same problem with a note after it (what else the setting takes).
    pub(super) fn noting(self, note: &str) -> InvalidValue {
        InvalidValue(format!("{}{note}", self.0))
    }
}

/// Reads a size: `"8 MiB"`, `"512 KiB"`, `"1.5 GiB"`, `"8MiB"`, `"20 MB"` (decimal units:
/// KB, MB, GB, TB), `"4096"` or `"4096 B"` (bytes). A lower-case `b` after a prefix (`Mb`) is
/// refused: it reads as bits.
pub fn parse_size(text: &str) -> Result<u64, InvalidValue> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InvalidValue(
            "empty: write a size such as \"8 MiB\"".to_owned(),
        ));
    }
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(InvalidValue(format!(
            "{trimmed:?} does not start with a number; write a size such as \"8 MiB\""
        )));
    }
    let multiplier = size_unit(unit)?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let too_large = || InvalidValue(format!("{trimmed:?} is too large"));
    if whole.is_empty() {
        return Err(InvalidValue(format!(
            "{trimmed:?} is not a number; write a size such as \"8 MiB\""
        )));
    }
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(multiplier.into()).ok_or_else(too_large)?;
    if let Some(fraction) = fraction {
        if fraction.is_empty() || fraction.len() > 9 || fraction.contains('.') {
            return Err(InvalidValue(format!(
                "{trimmed:?} is not a number; write a size such as \"1.5 GiB\""
            )));
        }
        if multiplier == 1 {
            return Err(InvalidValue(format!(
                "{trimmed:?}: a number of bytes must be whole"
            )));
        }
        let digits: u128 = fraction.parse().map_err(|_| too_large())?;
        // At most 9 fraction digits and a multiplier below 2^41: no overflow in u128.
        bytes += digits * u128::from(multiplier) / 10u128.pow(fraction.len() as u32);
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

fn size_unit(unit: &str) -> Result<u64, InvalidValue> {
    if unit.len() > 1 && unit.ends_with('b') && !unit.eq_ignore_ascii_case("bytes") {
        let prefix = &unit[..unit.len() - 1];
        return Err(InvalidValue(format!(
            "unit {unit:?} reads as bits; write {}B (powers of 1000) or {}iB (powers of 1024)",
            prefix.trim_end_matches(['i', 'I']).to_uppercase(),
            prefix.trim_end_matches(['i', 'I']).to_uppercase(),
        )));
    }
    let multiplier = match unit.to_ascii_uppercase().as_str() {
        "" | "B" | "BYTE" | "BYTES" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        "TIB" => 1 << 40,
        "K" | "M" | "G" | "T" => {
            let prefix = unit.to_ascii_uppercase();
            return Err(InvalidValue(format!(
                "unit {unit:?} is ambiguous; \
                 write {prefix}iB (powers of 1024) or {prefix}B (powers of 1000)"
            )));
        }
        _ => {
            return Err(InvalidValue(format!(
                "unknown unit {unit:?}; use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB"
            )));
        }
    };
    Ok(multiplier)
}

/// Reads a rate: a size per second, `"20 MiB"` or `"20 MiB/s"`.
pub fn parse_rate(text: &str) -> Result<u64, InvalidValue> {
    let trimmed = text.trim();
    let size = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/sec"))
        .unwrap_or(trimmed);
    parse_size(size)
}

/// Reads a bandwidth: bytes (`"20 MiB/s"`, `"20 MB/s"`) or bits (`"100 Mbit/s"`, `"1 Gbit/s"`,
/// `"800 kbit/s"`, `"100 Mbps"`; a capital B is bytes: `"100 MBps"`) per second, as bytes per second (bits rounded down to whole
/// bytes). A number without a unit is refused: rclone reads `"20"` as KiB/s, people read it
/// as whatever they meant, and the two differ by a factor of up to 8 million.
pub fn parse_bandwidth(text: &str) -> Result<u64, InvalidValue> {
    let trimmed = text.trim();
    let per_second = trimmed
        .strip_suffix("/s")
        .or_else(|| trimmed.strip_suffix("/sec"))
        .unwrap_or(trimmed)
        .trim_end();
    let number_end = per_second
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(per_second.len());
    let (number, unit) = per_second.split_at(number_end);
    let unit = unit.trim();
    if !number.is_empty() && unit.is_empty() {
        return Err(InvalidValue(format!(
            "{trimmed:?} has no unit; write e.g. \"{number} MiB/s\" (bytes) or \"{number} Mbit/s\" (bits)"
        )));
    }
    // "ps" forms: the case of the b decides, as in networking ("100 Mbps" is bits, "100 MBps"
    // bytes); all-capital "MBPS" says neither.
    if let Some(prefix) = unit.strip_suffix("Bps") {
        return parse_size(&format!("{number} {prefix}B"))
            .map_err(|err| InvalidValue(err.0.replace(&format!("{number} {prefix}B"), trimmed)));
    }
    let lower_unit = unit.to_ascii_lowercase();
    if !unit.ends_with("bps") && lower_unit.ends_with("bps") {
        let prefix = &unit[..unit.len() - 3];
        return Err(InvalidValue(format!(
            "unit {unit:?} is ambiguous; write {prefix}bit/s or {prefix}bps (bits), or {}B/s (bytes)",
            prefix.to_uppercase()
        )));
    }
    let bits = match lower_unit.as_str() {
        "bit" | "bits" | "bps" => Some("B"),
        "kbit" | "kbps" => Some("KB"),
        "mbit" | "mbps" => Some("MB"),
        "gbit" | "gbps" => Some("GB"),
        "tbit" | "tbps" => Some("TB"),
        "kibit" => Some("KiB"),
        "mibit" => Some("MiB"),
        "gibit" => Some("GiB"),
        "tibit" => Some("TiB"),
        _ => None,
    };
    match bits {
        // The number of bits is read like a size, then turned into whole bytes.
        Some(as_size) => {
            let bits = parse_size(&format!("{number} {as_size}")).map_err(|err| {
                InvalidValue(err.0.replace(&format!("{number} {as_size}"), trimmed))
            })?;
            Ok(bits / 8)
        }
        None => {
            if unit.len() > 1 && unit.ends_with('b') {
                let prefix = unit[..unit.len() - 1].trim_end_matches(['i', 'I']);
                return Err(InvalidValue(format!(
                    "unit {unit:?} is ambiguous; write {}bit/s (bits) or {}B/s, {}iB/s (bytes)",
                    prefix,
                    prefix.to_uppercase(),
                    prefix.to_uppercase(),
                )));
            }
            parse_size(per_second).map_err(|err| {
                InvalidValue(err.0.replace(
                    "use B, KiB, MiB, GiB, TiB or KB, MB, GB, TB",
                    "use KiB/s, MiB/s, GiB/s, MB/s, GB/s (bytes) or kbit/s, Mbit/s, Gbit/s (bits)",
                ))
            })
        }
    }
}

/// A bandwidth the way [`parse_bandwidth`] reads it: in bits when `bits` (`"16 Mbit/s"`,
/// powers of 1000 as network links are sold), else in bytes (`"20 MiB/s"`).
pub fn format_bandwidth(bytes_per_second: u64, bits: bool) -> String {
    if !bits {
        // "20 MB/s" stays that, rather than "19531.25 KiB/s".
        let binary = format_size(bytes_per_second);
        if !binary.contains('.') && !binary.ends_with(" B") {
            return format!("{binary}/s");
        }
        for (unit, name) in [
            (1_000_000_000_000u64, "TB"),
            (1_000_000_000, "GB"),
            (1_000_000, "MB"),
            (1_000, "KB"),
        ] {
            if bytes_per_second >= unit && bytes_per_second.is_multiple_of(unit) {
                return format!("{} {name}/s", bytes_per_second / unit);
            }
        }
        return format!("{binary}/s");
    }
    let bits = u128::from(bytes_per_second) * 8;
    for (unit, name) in [
        (1_000_000_000_000u128, "Tbit"),
        (1_000_000_000, "Gbit"),
        (1_000_000, "Mbit"),
        (1_000, "kbit"),
    ] {
        if bits >= unit {
            let text = format!("{:.3}", bits as f64 / unit as f64);
            let text = text.trim_end_matches('0').trim_end_matches('.');
            return format!("{text} {name}/s");
        }
    }
    format!("{bits} bit/s")
}

/// Formats a byte count the way [`parse_size`] reads it: `"8 MiB"`, `"1.5 GiB"`, `"1000 B"`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for &(unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    for &(unit, name) in UNITS {
        // Exact to the byte when printed with up to three decimals, else fall through to bytes.
        let thousandths = u128::from(bytes) * 1000 / u128::from(unit);
        if bytes >= unit && thousandths * u128::from(unit) == u128::from(bytes) * 1000 {
            let text = format!("{}.{:03}", thousandths / 1000, thousandths % 1000);
            return format!("{} {name}", text.trim_end_matches('0'));
        }
    }
    format!("{bytes} B")
}

/// A size for people to read, in powers of 1024 with three significant digits: `"512 B"`,
/// `"8 MiB"`, `"1.5 GiB"`, `"22.4 MiB"`. Every size a person reads (logs, `status`, progress,
/// sidecar event texts) goes through here or [`human_rate`], so one unit family is used
/// everywhere: the binary one, because sizes in the config file (`chunk_size = "8 MiB"`) and
/// the chunks themselves are counted in it, and because "MiB" cannot be misread the way "MB"
/// can. [`format_size`] is the exact form, for values read back from the config.
pub fn human_size(bytes: u64) -> String {
    human_units(bytes as f64, "")
}

/// A rate for people to read: [`human_size`] per second, `"45.6 MiB/s"`.
pub fn human_rate(bytes_per_second: f64) -> String {
    human_units(bytes_per_second, "/s")
}

fn human_units(value: f64, per: &str) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if !value.is_finite() || value < 0.0 {
        return format!("? B{per}");
    }
    if value < 1024.0 {
        return format!("{} B{per}", value.round());
    }
    let mut scaled = value;
    let mut unit = "B";
    for next in UNITS {
        // Moves up at 999.5 rather than 1024, so that no value prints with four digits.
        if scaled < 999.5 && unit != "B" {
            break;
        }
        scaled /= 1024.0;
        unit = next;
    }
    let decimals = if scaled < 9.995 {
        2
    } else if scaled < 99.95 {
        1
    } else {
        0
    };
    let text = format!("{scaled:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} {unit}{per}")
}

/// Reads a duration written like `"500ms"`, `"10s"`, `"4h"`, `"1h 30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidValue> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(InvalidValue(
            "empty: write a duration such as \"10s\", \"500ms\" or \"4h\"".to_owned(),
        ));
    }
    let duration = humantime::parse_duration(trimmed).map_err(|err| {
        InvalidValue(format!(
            "{trimmed:?} is not a duration ({err}); write e.g. \"10s\", \"500ms\" or \"4h\""
        ))
    })?;
    // Deadlines are computed as `now + duration` (and backoff caps multiplied): a duration of
    // centuries would overflow the clock and abort the agent instead of being refused here.
    if duration > MAX_DURATION {
        return Err(InvalidValue(format!(
            "{trimmed:?} is too long: at most \"{}d\"",
            MAX_DURATION.as_secs() / 86_400
        )));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_users_write_them() {
        assert_eq!(parse_size("8 MiB"), Ok(8 * MIB));
        assert_eq!(parse_size("8MiB"), Ok(8 * MIB));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("20 MB"), Ok(20_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096 B"), Ok(4096));
        assert_eq!(parse_size(" 2 MIB "), Ok(2 * MIB));
        assert!(parse_size("2 mib").unwrap_err().0.contains("bits"));
        assert!(parse_size("8 Mb").unwrap_err().0.contains("bits"));
        assert!(parse_size("8M").unwrap_err().0.contains("ambiguous"));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(
            parse_size("99999999999999999999 TiB")
                .unwrap_err()
                .0
                .contains("too large")
        );
        assert!(parse_size("").is_err());
    }

    #[test]
    fn rates_accept_a_per_second_suffix() {
        assert_eq!(parse_rate("20 MiB/s"), Ok(20 * MIB));
        assert_eq!(parse_rate("20 MiB"), Ok(20 * MIB));
    }

    #[test]
    fn bandwidths_read_in_bits_or_bytes() {
        assert_eq!(parse_bandwidth("100 Mbit/s"), Ok(12_500_000));
        assert_eq!(parse_bandwidth("1 Gbit/s"), Ok(125_000_000));
        assert_eq!(parse_bandwidth("800 kbit/s"), Ok(100_000));
        assert_eq!(parse_bandwidth("16Mbit/s"), Ok(2_000_000));
        assert_eq!(parse_bandwidth("1.5 Mbit/s"), Ok(187_500));
        assert_eq!(parse_bandwidth("100 Mbps"), Ok(12_500_000));
        assert_eq!(parse_bandwidth("20 MiB/s"), Ok(20 * MIB));
        assert_eq!(parse_bandwidth("20MiB/s"), Ok(20 * MIB));
        assert_eq!(parse_bandwidth("20 MB/s"), Ok(20_000_000));
        let bare = parse_bandwidth("20").unwrap_err().0;
        assert!(
            bare.contains("no unit") && bare.contains("20 MiB/s"),
            "{bare}"
        );
        assert!(parse_bandwidth("20/s").unwrap_err().0.contains("no unit"));
        let mb = parse_bandwidth("20 Mb/s").unwrap_err().0;
        assert!(mb.contains("ambiguous") && mb.contains("Mbit/s"), "{mb}");
        // Second hostile test of issue 13, D5: a capital B in a "ps" unit is bytes.
        assert_eq!(parse_bandwidth("100 MBps"), Ok(100_000_000));
        assert_eq!(parse_bandwidth("100 KBps"), Ok(100_000));
        assert_eq!(parse_bandwidth("1 GBps"), Ok(1_000_000_000));
        assert_eq!(parse_bandwidth("2 MiBps"), Ok(2 * MIB));
        assert_eq!(parse_bandwidth("800 kbps"), Ok(100_000));
        assert_eq!(parse_bandwidth("16 mbps"), Ok(2_000_000));
        let shouted = parse_bandwidth("100 MBPS").unwrap_err().0;
        assert!(
            shouted.contains("ambiguous") && shouted.contains("Mbit/s") && shouted.contains("MB/s"),
            "{shouted}"
        );
        assert!(!crate::bandwidth::Bandwidth::parse("100 MBps").unwrap().bits);
        assert!(crate::bandwidth::Bandwidth::parse("100 Mbps").unwrap().bits);
        let unknown = parse_bandwidth("20 furlongs/s").unwrap_err().0;
        assert!(unknown.contains("Mbit/s"), "{unknown}");
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("").is_err());
    }

    #[test]
    fn bandwidths_are_shown_in_the_family_they_were_written_in() {
        assert_eq!(format_bandwidth(2_000_000, true), "16 Mbit/s");
        assert_eq!(format_bandwidth(125_000_000, true), "1 Gbit/s");
        assert_eq!(format_bandwidth(100_000, true), "800 kbit/s");
        assert_eq!(format_bandwidth(20 * MIB, false), "20 MiB/s");
        assert_eq!(format_bandwidth(20_000_000, false), "20 MB/s");
        assert_eq!(format_bandwidth(1536 * 1024, false), "1536 KiB/s");
        for text in [
            "16 Mbit/s",
            "800 kbit/s",
            "20 MiB/s",
            "1.5 Mbit/s",
            "20 MB/s",
        ] {
            let bytes = parse_bandwidth(text).unwrap();
            assert_eq!(format_bandwidth(bytes, text.contains("bit")), text);
        }
    }

    #[test]
    fn formatted_sizes_read_back_to_the_same_bytes() {
        for bytes in [
            0,
            1,
            1000,
            1024,
            1536,
            8 * MIB,
            3 << 29,
            5 * MIB + 1,
            u64::MAX,
        ] {
            let text = format_size(bytes);
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
        assert_eq!(format_size(8 * MIB), "8 MiB");
    }

    #[test]
    fn sizes_for_people_have_three_significant_digits_in_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(8 * MIB), "8 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(23_488_102), "22.4 MiB");
        assert_eq!(human_size(999 * 1024), "999 KiB");
        // Not "1000 KiB" or "1024 KiB": four digits would hide the next unit.
        assert_eq!(human_size(1000 * 1024), "0.98 MiB");
        assert_eq!(human_size(1024 * 1024 - 1), "1 MiB");
        assert_eq!(human_size(u64::MAX), "16 EiB");
        assert_eq!(human_rate(816e6), "778 MiB/s");
        assert_eq!(human_rate(1.5 * MIB as f64), "1.5 MiB/s");
        assert_eq!(human_rate(12.0), "12 B/s");
        assert_eq!(human_rate(f64::NAN), "? B/s");
    }

    #[test]
    fn durations_read_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert!(parse_duration("10").unwrap_err().0.contains("10s"));
        assert_eq!(
            parse_duration("366d"),
            Ok(Duration::from_secs(366 * 24 * 3600))
        );
        let huge = parse_duration("500000000000y").unwrap_err().0;
        assert!(huge.contains("too long"), "{huge}");
    }
}
