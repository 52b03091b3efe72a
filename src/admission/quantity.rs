//! Kubernetes resource quantities: parsing what pods carry, formatting what InfraMind writes.
//! Memory "GB" throughout InfraMind means GiB (2^30 bytes), as in the design's guard formula.

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn split_suffix(q: &str) -> (&str, &str) {
    let idx = q
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '-' || *c == '+'))
        .map_or(q.len(), |(i, _)| i);
    // `1e3` is a decimal exponent, not a suffix.
    if q[idx..].starts_with(['e', 'E'])
        && q[idx + 1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == '+')
        && idx + 1 < q.len()
    {
        return (q, "");
    }
    (&q[..idx], &q[idx..])
}

/// A quantity in base units (cores or bytes); `None` when it is not a valid quantity.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let (num, suffix) = split_suffix(q);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => GIB,
        "Ti" => GIB * 1024.0,
        "Pi" => GIB * 1024.0 * 1024.0,
        "Ei" => GIB * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Cpu cores from a quantity like `500m` or `2`.
pub fn parse_cpu(q: &str) -> Option<f64> {
    parse(q)
}

/// Memory in GB (GiB) from a quantity like `8Gi`, `8G` or `8589934592`.
pub fn parse_mem_gb(q: &str) -> Option<f64> {
    parse(q).map(|b| b / GIB)
}

/// Cores as a quantity, rounded up to millicores: `2`, `2500m`.
pub fn format_cpu(cores: f64) -> String {
    let milli = (cores * 1000.0 - 1e-6).ceil().max(1.0) as u64;
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// GB (GiB) as a quantity, rounded up to MiB: `8Gi`, `8704Mi`.
pub fn format_mem(gb: f64) -> String {
    let mib = (gb * 1024.0 - 1e-6).ceil().max(1.0) as u64;
    if mib.is_multiple_of(1024) {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_cpu("500m"), Some(0.5));
        assert_eq!(parse_cpu("2"), Some(2.0));
        assert_eq!(parse_cpu("1.5"), Some(1.5));
        assert_eq!(parse_mem_gb("8Gi"), Some(8.0));
        assert_eq!(parse_mem_gb("512Mi"), Some(0.5));
        assert!((parse_mem_gb("8G").unwrap() - 7.4506).abs() < 1e-3);
        assert_eq!(parse_mem_gb("1073741824"), Some(1.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("12x"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("-1"), None);
    }

    #[test]
    fn formats_round_up_to_the_lattice() {
        assert_eq!(format_cpu(4.0), "4");
        assert_eq!(format_cpu(2.25), "2250m");
        assert_eq!(format_cpu(0.0001), "1m");
        assert_eq!(format_mem(8.0), "8Gi");
        assert_eq!(format_mem(8.5), "8704Mi");
        assert_eq!(format_mem(13.5908203125), "13917Mi");
        for gb in [2.0, 6.4, 13.5908203125, 31.999] {
            assert!(parse_mem_gb(&format_mem(gb)).unwrap() >= gb - 1e-9);
        }
    }
}
