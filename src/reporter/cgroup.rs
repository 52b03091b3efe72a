//! The container's own resource usage from its cgroup: peak memory, bytes read and written, CPU
//! time. Reads cgroup v2 (`memory.peak`, `io.stat`, `cpu.stat`) or the v1 equivalents
//! (`memory.max_usage_in_bytes`, `blkio.throttle.io_service_bytes`, `cpuacct.usage`).
//!
//! The parsers take file contents and return plain values; [`read`] is the thin edge that finds
//! the files. A missing or unreadable file is an absent value, never an error: the row is still
//! worth sending without it.

use std::path::{Path, PathBuf};

/// Which cgroup hierarchy the container sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The unified hierarchy (`cgroup.controllers` at the root).
    V2,
    /// One hierarchy per controller (`memory/`, `blkio/`, `cpuacct/`).
    V1,
}

/// What the container's cgroup says it used. `None`: not measurable here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// The hierarchy the values came from, when a cgroup was found at all.
    pub version: Option<CgroupVersion>,
    /// High-water mark of the cgroup's memory, bytes (page cache included, as the kernel counts it).
    pub peak_memory_bytes: Option<u64>,
    /// Bytes read from block devices, summed over devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices, summed over devices.
    pub io_write_bytes: Option<u64>,
    /// CPU time consumed, microseconds.
    pub cpu_usage_usec: Option<u64>,
}

/// Bytes read and written, summed over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoBytes {
    /// Bytes read.
    pub read: u64,
    /// Bytes written.
    pub write: u64,
}

/// A file holding a single counter (`memory.peak`, `memory.max_usage_in_bytes`, `cpuacct.usage`).
pub fn parse_counter(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v2 `io.stat`: one line per device, `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
/// An empty file means no I/O yet. `None` if no line is in that shape.
pub fn parse_io_stat(text: &str) -> Option<IoBytes> {
    let mut total = IoBytes::default();
    let mut seen_line = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let device = fields.next()?;
        if !device.contains(':') {
            return None;
        }
        seen_line = true;
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let Ok(n) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "rbytes" => total.read = total.read.saturating_add(n),
                "wbytes" => total.write = total.write.saturating_add(n),
                _ => {}
            }
        }
    }
    (seen_line || text.trim().is_empty()).then_some(total)
}

/// v2 `cpu.stat`: `usage_usec N` among other `key value` lines.
pub fn parse_cpu_stat(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(char::is_whitespace)?;
        (key == "usage_usec").then(|| value.trim().parse().ok())?
    })
}

/// v1 `blkio.*io_service_bytes*`: `MAJ:MIN Read N`, `MAJ:MIN Write N`, … per device and a final
/// `Total N`. Returns the Read and Write lines summed over devices and whether any device line
/// was present (kernels without a policy leave the non-throttle files at just `Total 0`).
pub fn parse_blkio_service_bytes(text: &str) -> (IoBytes, bool) {
    let mut total = IoBytes::default();
    let mut devices = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, op, value] = fields[..] else {
            continue;
        };
        if !device.contains(':') {
            continue;
        }
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        devices = true;
        match op {
            "Read" => total.read = total.read.saturating_add(n),
            "Write" => total.write = total.write.saturating_add(n),
            _ => {}
        }
    }
    (total, devices)
}

/// The process's own cgroup path in the v2 hierarchy, from `/proc/self/cgroup` (`0::/path`).
pub fn own_path_v2(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().to_string())
}

/// The process's own cgroup path for a v1 `controller`, from `/proc/self/cgroup`
/// (`N:cpu,cpuacct:/path`).
pub fn own_path_v1(proc_self_cgroup: &str, controller: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim().to_string())
    })
}

/// The directory holding a cgroup's files: `mount` itself when the container has its own cgroup
/// namespace or the runtime mounted its cgroup there (the usual case), else `mount` + the path
/// from `/proc/self/cgroup` when that directory exists (a host cgroup namespace). Reading the
/// mount's root in that case would report the whole node.
fn own_dir(mount: &Path, own_path: Option<String>) -> PathBuf {
    match own_path {
        Some(p) if p != "/" && !p.is_empty() => {
            let candidate = mount.join(p.trim_start_matches('/'));
            if candidate.is_dir() {
                candidate
            } else {
                mount.to_path_buf()
            }
        }
        _ => mount.to_path_buf(),
    }
}

fn read_text(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cgroup file unreadable");
            None
        }
    }
}

fn read_counter(path: &Path) -> Option<u64> {
    let text = read_text(path)?;
    let value = parse_counter(&text);
    if value.is_none() {
        tracing::debug!(path = %path.display(), "cgroup counter is not a number");
    }
    value
}

/// Reads the usage of the cgroup mounted at `cgroup_root` (normally `/sys/fs/cgroup`), using
/// `proc_root` (normally `/proc`) to find the process's own cgroup below it.
pub fn read(cgroup_root: &Path, proc_root: &Path) -> CgroupUsage {
    let self_cgroup = read_text(&proc_root.join("self/cgroup")).unwrap_or_default();
    if cgroup_root.join("cgroup.controllers").is_file() {
        read_v2(&own_dir(cgroup_root, own_path_v2(&self_cgroup)))
    } else {
        read_v1(cgroup_root, &self_cgroup)
    }
}

fn read_v2(dir: &Path) -> CgroupUsage {
    let io = read_text(&dir.join("io.stat")).and_then(|t| parse_io_stat(&t));
    CgroupUsage {
        version: Some(CgroupVersion::V2),
        peak_memory_bytes: read_counter(&dir.join("memory.peak")),
        io_read_bytes: io.map(|io| io.read),
        io_write_bytes: io.map(|io| io.write),
        cpu_usage_usec: read_text(&dir.join("cpu.stat")).and_then(|t| parse_cpu_stat(&t)),
    }
}

/// The v1 blkio files in order of preference: the throttle policy's counters are kept on every
/// kernel; the CFQ/BFQ ones only with that scheduler.
const BLKIO_FILES: &[&str] = &[
    "blkio.throttle.io_service_bytes",
    "blkio.throttle.io_service_bytes_recursive",
    "blkio.io_service_bytes_recursive",
    "blkio.io_service_bytes",
];

fn read_v1(root: &Path, self_cgroup: &str) -> CgroupUsage {
    let dir =
        |controller: &str| own_dir(&root.join(controller), own_path_v1(self_cgroup, controller));
    let (memory, blkio, cpuacct) = (dir("memory"), dir("blkio"), dir("cpuacct"));
    let mut io = None;
    for name in BLKIO_FILES {
        let Some(text) = read_text(&blkio.join(name)) else {
            continue;
        };
        let (bytes, devices) = parse_blkio_service_bytes(&text);
        if devices {
            io = Some(bytes);
            break;
        }
        // The file exists but lists no device: no I/O yet, unless a later file knows better.
        io.get_or_insert(bytes);
    }
    let peak = read_counter(&memory.join("memory.max_usage_in_bytes"));
    let cpu_ns = read_counter(&cpuacct.join("cpuacct.usage"));
    let found = peak.is_some() || io.is_some() || cpu_ns.is_some();
    CgroupUsage {
        version: found.then_some(CgroupVersion::V1),
        peak_memory_bytes: peak,
        io_read_bytes: io.map(|io| io.read),
        io_write_bytes: io.map(|io| io.write),
        cpu_usage_usec: cpu_ns.map(|ns| ns / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Contents as a 6.x kernel writes them inside a Kubernetes build container.
    const IO_STAT: &str = "\
259:0 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0
253:0 rbytes=2048 wbytes=0 rios=1 wios=0 dbytes=0 dios=0
8:0 rbytes=90112 wbytes=4096 rios=22 wios=1 dbytes=512 dios=1
";
    const CPU_STAT: &str = "\
usage_usec 84217563
user_usec 71002311
system_usec 13215252
core_sched.force_idle_usec 0
nr_periods 5120
nr_throttled 12
throttled_usec 901233
nr_bursts 0
burst_usec 0
";
    const BLKIO_THROTTLE: &str = "\
8:16 Read 4096
8:16 Write 1052672
8:16 Sync 1052672
8:16 Async 4096
8:16 Discard 0
8:16 Total 1056768
8:0 Read 27574272
8:0 Write 0
8:0 Sync 27574272
8:0 Async 0
8:0 Discard 0
8:0 Total 27574272
Total 28631040
";

    #[test]
    fn io_stat_sums_every_device() {
        assert_eq!(
            parse_io_stat(IO_STAT),
            Some(IoBytes {
                read: 1459200 + 2048 + 90112,
                write: 314773504 + 4096,
            })
        );
        assert_eq!(parse_io_stat(""), Some(IoBytes::default()));
        assert_eq!(parse_io_stat("\n"), Some(IoBytes::default()));
        assert_eq!(parse_io_stat("max 100\n"), None);
    }

    #[test]
    fn cpu_stat_reads_usage_only() {
        assert_eq!(parse_cpu_stat(CPU_STAT), Some(84217563));
        assert_eq!(parse_cpu_stat("user_usec 5\n"), None);
        assert_eq!(parse_cpu_stat("usage_usec x\n"), None);
    }

    #[test]
    fn counters_are_trimmed_numbers() {
        assert_eq!(parse_counter("3435973836\n"), Some(3435973836));
        assert_eq!(parse_counter("max\n"), None);
        assert_eq!(parse_counter(""), None);
    }

    #[test]
    fn blkio_sums_read_and_write_not_the_totals() {
        let (io, devices) = parse_blkio_service_bytes(BLKIO_THROTTLE);
        assert!(devices);
        assert_eq!(
            io,
            IoBytes {
                read: 4096 + 27574272,
                write: 1052672
            }
        );
        assert_eq!(
            parse_blkio_service_bytes("Total 0\n"),
            (IoBytes::default(), false)
        );
    }

    #[test]
    fn own_cgroup_paths() {
        assert_eq!(own_path_v2("0::/\n"), Some("/".into()));
        let v1 = "12:memory:/kubepods/burstable/pod1/abc\n\
                  4:cpu,cpuacct:/kubepods/burstable/pod1/abc\n\
                  3:blkio:/kubepods/burstable/pod1/abc\n\
                  0::/\n";
        assert_eq!(
            own_path_v1(v1, "cpuacct").as_deref(),
            Some("/kubepods/burstable/pod1/abc")
        );
        assert_eq!(own_path_v1(v1, "cpu,cpuacct"), None);
        assert_eq!(own_path_v1(v1, "pids"), None);
    }

    #[test]
    fn v2_tree_with_a_host_namespace_reads_the_own_cgroup_not_the_root() {
        let cg = tempfile::tempdir().unwrap();
        let proc = tempfile::tempdir().unwrap();
        let own = cg.path().join("kubepods.slice/pod-1/cri-abc");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(cg.path().join("cgroup.controllers"), "cpu io memory\n").unwrap();
        // The root's io.stat covers the whole node: it must not be read.
        std::fs::write(
            cg.path().join("io.stat"),
            "8:0 rbytes=999999 wbytes=999999\n",
        )
        .unwrap();
        std::fs::write(own.join("memory.peak"), "1073741824\n").unwrap();
        std::fs::write(own.join("io.stat"), "8:0 rbytes=10 wbytes=20\n").unwrap();
        std::fs::create_dir_all(proc.path().join("self")).unwrap();
        std::fs::write(
            proc.path().join("self/cgroup"),
            "0::/kubepods.slice/pod-1/cri-abc\n",
        )
        .unwrap();
        let usage = read(cg.path(), proc.path());
        assert_eq!(
            usage,
            CgroupUsage {
                version: Some(CgroupVersion::V2),
                peak_memory_bytes: Some(1 << 30),
                io_read_bytes: Some(10),
                io_write_bytes: Some(20),
                cpu_usage_usec: None,
            }
        );
    }

    #[test]
    fn v1_prefers_a_blkio_file_that_lists_devices() {
        let cg = tempfile::tempdir().unwrap();
        let blkio = cg.path().join("blkio");
        std::fs::create_dir_all(&blkio).unwrap();
        std::fs::write(blkio.join("blkio.throttle.io_service_bytes"), "Total 0\n").unwrap();
        std::fs::write(
            blkio.join("blkio.io_service_bytes_recursive"),
            "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\nTotal 150\n",
        )
        .unwrap();
        let usage = read(cg.path(), &cg.path().join("no-proc"));
        assert_eq!(usage.version, Some(CgroupVersion::V1));
        assert_eq!(
            (usage.io_read_bytes, usage.io_write_bytes),
            (Some(100), Some(50))
        );
        assert_eq!(usage.peak_memory_bytes, None);
    }

    #[test]
    fn nothing_mounted_is_all_absent() {
        let cg = tempfile::tempdir().unwrap();
        assert_eq!(read(cg.path(), cg.path()), CgroupUsage::default());
    }
}
