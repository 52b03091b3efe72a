//! The build's compiler-cache hit ratio from ccache and sccache statistics.
//!
//! ccache: `ccache --print-stats` (tab-separated `key value` lines; ccache 4 names the counters
//! `direct_cache_hit`, `preprocessed_cache_hit`, `cache_miss`, ccache 3.7 `cache_hit_direct`,
//! `cache_hit_preprocessed`, `cache_miss`). sccache: `sccache --show-stats --stats-format=json`
//! (`stats.cache_hits.counts` and `stats.cache_misses.counts`, per language). When both are in
//! use their counts are added. ccache's counters cover the cache directory since they were last
//! zeroed: a build sharing a persistent cache should run `ccache -z` first (sccache's belong to
//! its server, which normally lives as long as the build).
//!
//! These are the only programs the reporter ever runs, and only when found on `PATH`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Compilations served from the cache and compilations that missed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Cache hits.
    pub hits: u64,
    /// Cache misses.
    pub misses: u64,
}

impl CacheCounts {
    /// hits / (hits + misses); `None` when nothing went through the cache.
    pub fn ratio(self) -> Option<f64> {
        let total = self.hits.checked_add(self.misses)?;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }

    fn plus(self, other: CacheCounts) -> CacheCounts {
        CacheCounts {
            hits: self.hits.saturating_add(other.hits),
            misses: self.misses.saturating_add(other.misses),
        }
    }
}

/// Parses `ccache --print-stats`. `None` if no hit or miss counter is in it.
pub fn parse_ccache(text: &str) -> Option<CacheCounts> {
    let mut counts = CacheCounts::default();
    let mut recognised = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "direct_cache_hit"
            | "preprocessed_cache_hit"
            | "cache_hit_direct"
            | "cache_hit_preprocessed" => counts.hits = counts.hits.saturating_add(n),
            "cache_miss" => counts.misses = counts.misses.saturating_add(n),
            _ => continue,
        }
        recognised = true;
    }
    recognised.then_some(counts)
}

/// Parses `sccache --show-stats --stats-format=json`. `None` if it is not that document.
pub fn parse_sccache(text: &str) -> Option<CacheCounts> {
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let stats = doc.get("stats")?.as_object()?;
    // Only the per-language `counts`: `adv_counts` breaks the same numbers down further.
    let sum = |key: &str| -> u64 {
        stats
            .get(key)
            .and_then(|v| v.get("counts"))
            .and_then(|c| c.as_object())
            .map(|c| c.values().filter_map(|n| n.as_u64()).sum())
            .unwrap_or(0)
    };
    if !stats.contains_key("cache_hits") && !stats.contains_key("cache_misses") {
        return None;
    }
    Some(CacheCounts {
        hits: sum("cache_hits"),
        misses: sum("cache_misses"),
    })
}

/// A compiler cache the reporter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// ccache.
    Ccache,
    /// sccache.
    Sccache,
}

impl Tool {
    fn binary(self) -> &'static str {
        match self {
            Tool::Ccache => "ccache",
            Tool::Sccache => "sccache",
        }
    }

    fn stats_args(self) -> &'static [&'static str] {
        match self {
            Tool::Ccache => &["--print-stats"],
            Tool::Sccache => &["--show-stats", "--stats-format=json"],
        }
    }

    fn parse(self, text: &str) -> Option<CacheCounts> {
        match self {
            Tool::Ccache => parse_ccache(text),
            Tool::Sccache => parse_sccache(text),
        }
    }
}

/// Where each tool's statistics come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A saved `ccache --print-stats` output, instead of running ccache.
    pub ccache_file: Option<PathBuf>,
    /// A saved `sccache --show-stats --stats-format=json` output, instead of running sccache.
    pub sccache_file: Option<PathBuf>,
    /// The `PATH` to look for the binaries on.
    pub path: Option<std::ffi::OsString>,
}

/// The combined counts, or an error about a statistics file given explicitly. A binary that is
/// absent, fails or says nothing usable just contributes nothing (logged). Both tools are asked
/// at the same time, each for at most [`COMMAND_TIMEOUT`] and never past `deadline`.
pub async fn measure(sources: &Sources, deadline: Instant) -> Result<Option<CacheCounts>, String> {
    let path = sources.path.as_deref();
    let (ccache, sccache) = tokio::join!(
        one(Tool::Ccache, sources.ccache_file.as_deref(), path, deadline),
        one(
            Tool::Sccache,
            sources.sccache_file.as_deref(),
            path,
            deadline
        ),
    );
    Ok([ccache?, sccache?]
        .into_iter()
        .flatten()
        .reduce(CacheCounts::plus))
}

async fn one(
    tool: Tool,
    file: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
    deadline: Instant,
) -> Result<Option<CacheCounts>, String> {
    match file {
        Some(file) => from_file(tool, file).map(Some),
        None => Ok(from_binary(tool, path, deadline).await),
    }
}

fn from_file(tool: Tool, file: &Path) -> Result<CacheCounts, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "reading the {} statistics {}: {e}",
            tool.binary(),
            file.display()
        )
    })?;
    tool.parse(&text).ok_or_else(|| {
        format!(
            "{} is not `{} {}` output",
            file.display(),
            tool.binary(),
            tool.stats_args().join(" ")
        )
    })
}

/// The first executable file named `name` on `path`.
pub fn find_on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The longest a statistics command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

async fn from_binary(
    tool: Tool,
    path: Option<&std::ffi::OsStr>,
    deadline: Instant,
) -> Option<CacheCounts> {
    let binary = find_on_path(tool.binary(), path)?;
    let until = deadline.min(Instant::now() + COMMAND_TIMEOUT);
    match run_with_deadline(&binary, tool.stats_args(), until).await {
        Ok(out) => {
            let counts = tool.parse(&out);
            if counts.is_none() {
                tracing::warn!(binary = %binary.display(), "cache statistics not understood; cache_hit_ratio left out");
            }
            counts
        }
        Err(e) => {
            tracing::warn!(binary = %binary.display(), error = %e, "cache statistics unavailable; cache_hit_ratio left out");
            None
        }
    }
}

/// How long to wait for the output pipe to close once the command has exited: a daemon it
/// started (sccache starts its server) may hold the pipe open for minutes.
const PIPE_GRACE: Duration = Duration::from_millis(300);

/// Runs `binary args`, returning its stdout if it exits 0 before `until`; killed otherwise.
async fn run_with_deadline(binary: &Path, args: &[&str], until: Instant) -> Result<String, String> {
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting it: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    // Read on a thread so a chatty child never blocks on a full pipe while we wait for it, and
    // so a pipe that never closes cannot block us.
    let output = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(AtomicBool::new(false));
    {
        let (output, closed) = (output.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                if let Ok(mut out) = output.lock() {
                    out.extend_from_slice(&chunk[..n]);
                }
            }
            closed.store(true, Ordering::Release);
        });
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out".into());
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    };
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    let grace = until.min(Instant::now() + PIPE_GRACE);
    while !closed.load(Ordering::Acquire) && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = output.lock().map(|o| o.clone()).unwrap_or_default();
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ccache --print-stats` of ccache 4.10 after a partly warm build.
    const CCACHE_4: &str = "\
stats_updated_timestamp\t1764230400
stats_zeroed_timestamp\t1764226800
autoconf_test\t0
bad_compiler_arguments\t3
called_for_link\t12
called_for_preprocessing\t0
cache_miss\t130
cache_size_kibibyte\t1843200
cleanups_performed\t0
compile_failed\t1
direct_cache_hit\t250
direct_cache_miss\t160
files_in_cache\t2211
local_storage_hit\t270
local_storage_miss\t130
preprocessed_cache_hit\t20
preprocessed_cache_miss\t130
remote_storage_hit\t0
unsupported_source_language\t0
";
    // ccache 3.7's names for the same counters.
    const CCACHE_3: &str = "\
stats_zeroed_timestamp\t0
cache_hit_direct\t9
cache_hit_preprocessed\t1
cache_miss\t30
called_for_link\t2
";
    // `sccache --show-stats --stats-format=json` of sccache 0.10 (abridged only in size).
    const SCCACHE: &str = r#"{"stats":{"compile_requests":624,"requests_unsupported_compiler":0,
        "requests_not_compile":48,"requests_not_cacheable":0,"requests_executed":576,
        "cache_errors":{"counts":{},"adv_counts":{}},
        "cache_hits":{"counts":{"Rust":163,"C/C++":261},"adv_counts":{"rust":163,"clang":261}},
        "cache_misses":{"counts":{"Rust":29,"C/C++":123},"adv_counts":{"rust":29,"clang":123}},
        "cache_timeouts":0,"cache_read_errors":0,"non_cacheable_compilations":0,
        "forced_recaches":0,"cache_write_errors":0,"cache_writes":152,
        "cache_write_duration":{"secs":1,"nanos":500},"cache_read_hit_duration":{"secs":0,"nanos":9},
        "compiler_write_duration":{"secs":0,"nanos":0},"compile_fails":0,
        "not_cached":{},"dist_compiles":{},"dist_errors":0},
        "cache_location":"Local disk: \"/root/.cache/sccache\"","use_preprocessor_cache_mode":true,
        "cache_size":1073741824,"max_cache_size":10737418240,"version":"0.10.0"}"#;

    #[test]
    fn ccache_hits_are_direct_plus_preprocessed() {
        let c = parse_ccache(CCACHE_4).unwrap();
        assert_eq!(
            c,
            CacheCounts {
                hits: 270,
                misses: 130
            }
        );
        assert_eq!(c.ratio(), Some(270.0 / 400.0));
        assert_eq!(
            parse_ccache(CCACHE_3),
            Some(CacheCounts {
                hits: 10,
                misses: 30
            })
        );
        assert_eq!(parse_ccache("stats_updated_timestamp\t1\n"), None);
        assert_eq!(
            parse_ccache("ccache: invalid option -- 'print-stats'\n"),
            None
        );
    }

    #[test]
    fn sccache_counts_are_summed_over_languages_once() {
        assert_eq!(
            parse_sccache(SCCACHE),
            Some(CacheCounts {
                hits: 424,
                misses: 152
            })
        );
        // A server that has just started.
        let fresh = r#"{"stats":{"compile_requests":0,"cache_hits":{"counts":{}},"cache_misses":{"counts":{}}}}"#;
        let c = parse_sccache(fresh).unwrap();
        assert_eq!(c, CacheCounts::default());
        assert_eq!(c.ratio(), None);
        assert_eq!(parse_sccache("Compile requests 0"), None);
        assert_eq!(parse_sccache(r#"{"version":"x"}"#), None);
    }

    fn script(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn binaries_on_path_are_run_and_combined_and_files_override_them() {
        let bin = tempfile::tempdir().unwrap();
        // The fake prints its arguments' effect: only the exact stats invocation answers.
        script(
            bin.path(),
            "ccache",
            r#"[ "$*" = "--print-stats" ] || exit 2; printf 'direct_cache_hit\t6\npreprocessed_cache_hit\t0\ncache_miss\t2\n'"#,
        );
        script(
            bin.path(),
            "sccache",
            r#"[ "$*" = "--show-stats --stats-format=json" ] || exit 2; echo '{"stats":{"cache_hits":{"counts":{"Rust":2}},"cache_misses":{"counts":{"Rust":0}}}}'"#,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let sources = Sources {
            path: Some(format!("/nonexistent:{}", bin.path().display()).into()),
            ..Default::default()
        };
        let c = measure(&sources, deadline).await.unwrap().unwrap();
        assert_eq!(c, CacheCounts { hits: 8, misses: 2 });

        let file = bin.path().join("ccache.txt");
        std::fs::write(&file, "cache_hit_direct\t1\ncache_miss\t1\n").unwrap();
        let sources = Sources {
            ccache_file: Some(file),
            ..sources
        };
        let c = measure(&sources, deadline).await.unwrap().unwrap();
        assert_eq!(c, CacheCounts { hits: 3, misses: 1 });

        let bad = Sources {
            sccache_file: Some(bin.path().join("nope.json")),
            ..Default::default()
        };
        let e = measure(&bad, deadline).await.unwrap_err();
        assert!(e.contains("nope.json"), "{e}");
    }

    #[tokio::test]
    async fn a_hanging_or_failing_binary_contributes_nothing_and_a_daemon_holding_the_pipe_is_not_waited_for(
    ) {
        let bin = tempfile::tempdir().unwrap();
        script(bin.path(), "ccache", "sleep 30");
        // Like sccache starting its server: the output is complete, but a background process
        // keeps the pipe open.
        script(
            bin.path(),
            "sccache",
            r#"echo '{"stats":{"cache_hits":{"counts":{"Rust":1}},"cache_misses":{"counts":{"Rust":3}}}}'; sleep 30 &"#,
        );
        let sources = Sources {
            path: Some(bin.path().as_os_str().to_owned()),
            ..Default::default()
        };
        let started = Instant::now();
        let c = measure(&sources, started + Duration::from_millis(1500))
            .await
            .unwrap();
        assert_eq!(c, Some(CacheCounts { hits: 1, misses: 3 }));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );

        script(bin.path(), "sccache", "echo broken; exit 1");
        let c = measure(&sources, Instant::now() + Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(c, None);
        assert_eq!(find_on_path("ccache", None), None);
    }
}
