//! How long the build container has been running: the seconds since its first process (PID 1 in
//! the container's PID namespace) started, from `/proc/1/stat` and `/proc/uptime`. Run as the
//! build's last step, that is the build's duration.

use std::path::Path;

/// `AT_CLKTCK` in the auxiliary vector: the clock tick rate `/proc/*/stat` times are counted in.
const AT_CLKTCK: u64 = 17;
/// `USER_HZ` on every mainstream Linux architecture, used when the auxiliary vector is unreadable.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// `/proc/uptime`: seconds since boot (the first field).
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
}

/// `/proc/<pid>/stat`: the process start time in clock ticks since boot (field 22). The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted after the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field 22 is index 19.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The clock tick rate from `/proc/self/auxv` (pairs of native-endian words).
pub fn parse_clock_ticks(auxv: &[u8]) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let word = |b: &[u8]| -> Option<u64> {
            let bytes: [u8; WORD] = b.try_into().ok()?;
            Some(usize::from_ne_bytes(bytes) as u64)
        };
        let (key, value) = (word(&pair[..WORD])?, word(&pair[WORD..])?);
        (key == AT_CLKTCK && value > 0).then_some(value)
    })
}

/// Seconds from a process's start to now, to the hundredth (the resolution of `/proc/uptime`).
pub fn age_seconds(uptime_s: f64, start_ticks: u64, clock_ticks: u64) -> Option<f64> {
    let age = uptime_s - start_ticks as f64 / clock_ticks as f64;
    (age >= 0.0).then(|| (age * 100.0).round() / 100.0)
}

/// The age of the container's first process, read from `proc_root` (normally `/proc`).
pub fn read(proc_root: &Path) -> Result<f64, String> {
    let read = |rel: &str| {
        let path = proc_root.join(rel);
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
    };
    let uptime = read("uptime")?;
    let uptime_s = parse_uptime(&uptime).ok_or_else(|| {
        format!(
            "{} is `{}`, not seconds since boot",
            proc_root.join("uptime").display(),
            uptime.trim()
        )
    })?;
    let stat = read("1/stat")?;
    let start = parse_start_ticks(&stat).ok_or_else(|| {
        format!(
            "{} has no start time (field 22)",
            proc_root.join("1/stat").display()
        )
    })?;
    let ticks = std::fs::read(proc_root.join("self/auxv"))
        .ok()
        .and_then(|a| parse_clock_ticks(&a))
        .unwrap_or(DEFAULT_CLOCK_TICKS);
    age_seconds(uptime_s, start, ticks).ok_or_else(|| {
        format!(
            "{} says the container started after {} says it is now",
            proc_root.join("1/stat").display(),
            proc_root.join("uptime").display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real /proc/1/stat of a build container's shell, with a command name holding `) (`.
    const STAT: &str = "1 (sh) (x) S 0 1 1 34816 1 4194560 1423 58203 0 12 3 2 41 17 20 0 1 0 \
        123456 4505600 214 18446744073709551615 94 95 96 0 0 0 65536 3686404 1266761467 1 0 0 \
        17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn start_ticks_are_field_22_even_with_parentheses_in_the_name() {
        assert_eq!(parse_start_ticks(STAT), Some(123456));
        assert_eq!(parse_start_ticks("1 (sh) S 0"), None);
        assert_eq!(parse_start_ticks("garbage"), None);
    }

    #[test]
    fn uptime_is_the_first_field() {
        assert_eq!(parse_uptime("1834.56 3512.02\n"), Some(1834.56));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("-3 1"), None);
    }

    #[test]
    fn age_is_rounded_to_hundredths_and_never_negative() {
        assert_eq!(age_seconds(1834.56, 123456, 100), Some(600.0));
        assert_eq!(age_seconds(1234.567, 100_000, 100), Some(234.57));
        assert_eq!(age_seconds(1000.0, 123456, 100), None);
        assert_eq!(age_seconds(1000.0, 250_000, 1000), Some(750.0));
    }

    #[test]
    fn clock_ticks_come_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (k, v) in [(6usize, 4096usize), (17, 250), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(parse_clock_ticks(&auxv), Some(250));
        assert_eq!(parse_clock_ticks(&auxv[..16]), None);
        // This process's own vector: Linux reports USER_HZ, 100 on the machines we build on.
        let own = std::fs::read("/proc/self/auxv").unwrap();
        assert_eq!(parse_clock_ticks(&own), Some(100));
    }

    #[test]
    fn reads_a_fake_proc() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(proc.path().join("1")).unwrap();
        std::fs::write(proc.path().join("uptime"), "1834.56 3512.02\n").unwrap();
        std::fs::write(proc.path().join("1/stat"), STAT).unwrap();
        assert_eq!(read(proc.path()), Ok(600.0));
        std::fs::write(proc.path().join("uptime"), "12.00 1.00\n").unwrap();
        assert!(read(proc.path()).unwrap_err().contains("started after"));
        let e = read(&proc.path().join("missing")).unwrap_err();
        assert!(e.contains("missing/uptime"), "{e}");
    }
}
