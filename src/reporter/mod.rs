//! The in-pod reporter: `inframind report`, run as a build's last step (or from a preStop hook),
//! posts one telemetry row for the pod it runs in.
//!
//! It reads the pod's identity and requests from the environment the webhook injects (downward
//! API), peak memory and I/O from the container's own cgroup, the cache hit ratio from ccache or
//! sccache, and the build's duration from `/proc`; builds the row in the run record's units;
//! validates it exactly as the API will; and posts it to `<endpoint>/v1/runs`.
//!
//! It never fails the build: any error is one `warning: …` line on stderr and exit status 0,
//! unless `--strict`. Every value, numbers included, is taken as text and parsed here, so even a
//! malformed environment variable becomes that warning rather than a usage error. It runs no
//! program but ccache and sccache (when on `PATH`) and reads no configuration file.

pub mod api;
pub mod cache_stats;
pub mod cgroup;
pub mod container_age;
pub mod pod;
pub mod row;

use crate::admission::contract;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use clap::builder::FalseyValueParser;
use tokio::time::Instant;

use pod::{Input, Inputs};

/// `inframind report` arguments. Every flag also reads the environment variable shown by
/// `--help`; the identity variables are the ones the webhook injects.
///
/// Every value is kept as text (an empty one, or a flag given without one, counts as not given)
/// and parsed by the reporter, and anything unexpected on the command line is collected, so that
/// no input can turn into a usage error (exit status 2) that would fail the build.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Base URL of the InfraMind API, http:// or https:// (the run is posted to `<endpoint>/v1/runs`).
    #[arg(long, env = "INFRAMIND_ENDPOINT", value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub endpoint: Option<String>,
    /// File holding the API's bearer token (surrounding whitespace is trimmed).
    #[arg(long, env = "INFRAMIND_TOKEN_FILE", value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    pub token_file: Option<String>,
    /// PEM file of the CA certificates trusted for an https:// endpoint (default: SSL_CERT_FILE, else the system bundle if the image has one).
    #[arg(long, env = "INFRAMIND_CA_FILE", value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    pub ca_file: Option<String>,
    /// Exit 1 on any error instead of printing a warning and exiting 0.
    #[arg(long, env = "INFRAMIND_REPORT_STRICT", value_parser = FalseyValueParser::new())]
    pub strict: bool,
    /// Print the row as JSON on stdout instead of posting it.
    #[arg(long, env = "INFRAMIND_REPORT_DRY_RUN", value_parser = FalseyValueParser::new())]
    pub dry_run: bool,
    /// The most seconds the reporter may take, retries included [default: 10].
    #[arg(long, env = "INFRAMIND_REPORT_TIMEOUT_SECONDS", value_name = "SECONDS", num_args = 0..=1, default_missing_value = "", allow_negative_numbers = true)]
    pub timeout_seconds: Option<String>,

    /// The pod's uid (downward API metadata.uid); the run is recorded as `pod-<uid>`.
    #[arg(long, env = contract::ENV_POD_UID, value_name = "UID", num_args = 0..=1, default_missing_value = "")]
    pub pod_uid: Option<String>,
    /// The pod's name (for messages).
    #[arg(long, env = contract::ENV_POD_NAME, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub pod_name: Option<String>,
    /// The pod's namespace (for messages).
    #[arg(long, env = contract::ENV_POD_NAMESPACE, value_name = "NAMESPACE", num_args = 0..=1, default_missing_value = "")]
    pub pod_namespace: Option<String>,
    /// The pipeline.
    #[arg(long, env = contract::ENV_PIPELINE, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub pipeline: Option<String>,
    /// The branch (the API assumes `main` without it).
    #[arg(long, env = contract::ENV_BRANCH, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub branch: Option<String>,
    /// The build image.
    #[arg(long, env = contract::ENV_IMAGE, value_name = "IMAGE", num_args = 0..=1, default_missing_value = "")]
    pub image: Option<String>,
    /// The node type.
    #[arg(long, env = contract::ENV_NODE_TYPE, value_name = "TYPE", num_args = 0..=1, default_missing_value = "")]
    pub node_type: Option<String>,
    /// The container's CPU request in millicores (downward API requests.cpu, divisor 1m).
    #[arg(long, env = contract::ENV_CPU_REQUEST_MILLI, value_name = "MILLICORES", num_args = 0..=1, default_missing_value = "", allow_negative_numbers = true)]
    pub cpu_request_milli: Option<String>,
    /// The container's memory request in MiB (downward API requests.memory, divisor 1Mi).
    #[arg(long, env = contract::ENV_MEM_REQUEST_MIB, value_name = "MIB", num_args = 0..=1, default_missing_value = "", allow_negative_numbers = true)]
    pub mem_request_mib: Option<String>,
    /// The pod's decision tag (downward API of the inframind.io/decision annotation).
    #[arg(long, env = contract::ENV_DECISION, value_name = "TAG", num_args = 0..=1, default_missing_value = "")]
    pub decision: Option<String>,
    /// The build tool's job count.
    #[arg(long, env = contract::ENV_CONCURRENCY, value_name = "JOBS", num_args = 0..=1, default_missing_value = "", allow_negative_numbers = true)]
    pub concurrency: Option<String>,

    /// Mount point of the cgroup filesystem, v2 if it has cgroup.controllers, else v1 [default: /sys/fs/cgroup].
    #[arg(long, env = "INFRAMIND_CGROUP_ROOT", value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    pub cgroup_root: Option<String>,
    /// Mount point of procfs, for the container's start time and own cgroup [default: /proc].
    #[arg(long, env = "INFRAMIND_PROC_ROOT", value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    pub proc_root: Option<String>,
    /// Number of pipeline steps (gives avg_step_duration_s too).
    #[arg(long, env = "INFRAMIND_NUM_STEPS", value_name = "N", num_args = 0..=1, default_missing_value = "", allow_negative_numbers = true)]
    pub num_steps: Option<String>,
    /// Compiler-cache hit ratio in 0..1 (default: from ccache/sccache statistics when present).
    #[arg(long, env = "INFRAMIND_CACHE_HIT_RATIO", value_name = "RATIO", num_args = 0..=1, default_missing_value = "", allow_negative_numbers = true)]
    pub cache_hit_ratio: Option<String>,
    /// Saved `ccache --print-stats` output to use instead of running ccache.
    #[arg(long, env = "INFRAMIND_CCACHE_STATS_FILE", value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    pub ccache_stats_file: Option<String>,
    /// Saved `sccache --show-stats --stats-format=json` output to use instead of running sccache.
    #[arg(long, env = "INFRAMIND_SCCACHE_STATS_FILE", value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    pub sccache_stats_file: Option<String>,
    /// Build duration in seconds (default: since the container started, from /proc).
    #[arg(long, env = "INFRAMIND_DURATION_S", value_name = "SECONDS", num_args = 0..=1, default_missing_value = "", allow_negative_numbers = true)]
    pub duration_s: Option<String>,
    /// The build failed (success=0); without it the run is reported as a success.
    #[arg(long, env = "INFRAMIND_FAILED", value_parser = FalseyValueParser::new())]
    pub failed: bool,

    /// Anything else on the command line: reported as an error (a warning unless --strict).
    #[arg(hide = true, allow_hyphen_values = true, num_args = 0..)]
    pub unexpected: Vec<String>,
}

/// A value that was given: trimmed, not empty.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn path_or(value: &Option<String>, default: &str) -> PathBuf {
    PathBuf::from(given(value).unwrap_or(default))
}

/// Reports one run; never fails the build unless `--strict`.
pub async fn run(mut args: ReportArgs) -> anyhow::Result<()> {
    let strict = args.strict;
    if args.concurrency.is_none() {
        // A pod the webhook did not change has no INFRAMIND_CONCURRENCY: read what the build
        // tool reads, by the same rule the webhook and the outcome watcher use.
        let env: Vec<(String, String)> = std::env::vars().collect();
        args.concurrency = contract::concurrency_in_env(contract::DEFAULT_CONCURRENCY_ENV, |n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
        })
        .map(|n| n.to_string());
    }
    // A panic anywhere below is one more error, not a failed build.
    let result = match tokio::spawn(report(args)).await {
        Ok(result) => result,
        Err(e) => Err(anyhow!("the reporter crashed: {e}")),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if strict => Err(e),
        Err(e) => {
            eprintln!(
                "warning: inframind report: {} (the run was not recorded; the build is not affected)",
                one_line(&format!("{e:#}"))
            );
            Ok(())
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn input<'a>(flag: &'static str, env: &'static str, value: &'a Option<String>) -> Input<'a> {
    Input {
        flag,
        env,
        value: value.as_deref(),
    }
}

impl ReportArgs {
    fn identity_inputs(&self) -> Inputs<'_> {
        Inputs {
            uid: input("--pod-uid", contract::ENV_POD_UID, &self.pod_uid),
            name: input("--pod-name", contract::ENV_POD_NAME, &self.pod_name),
            namespace: input(
                "--pod-namespace",
                contract::ENV_POD_NAMESPACE,
                &self.pod_namespace,
            ),
            pipeline: input("--pipeline", contract::ENV_PIPELINE, &self.pipeline),
            branch: input("--branch", contract::ENV_BRANCH, &self.branch),
            image: input("--image", contract::ENV_IMAGE, &self.image),
            node_type: input("--node-type", contract::ENV_NODE_TYPE, &self.node_type),
            cpu_request_milli: input(
                "--cpu-request-milli",
                contract::ENV_CPU_REQUEST_MILLI,
                &self.cpu_request_milli,
            ),
            mem_request_mib: input(
                "--mem-request-mib",
                contract::ENV_MEM_REQUEST_MIB,
                &self.mem_request_mib,
            ),
            concurrency: input(
                "--concurrency",
                contract::ENV_CONCURRENCY,
                &self.concurrency,
            ),
            decision: input("--decision", contract::ENV_DECISION, &self.decision),
        }
    }
}

/// Where a row field's value came from, to say what to fix when it is invalid.
fn source_of(field: &str) -> &'static str {
    match field {
        "run_id" => "INFRAMIND_POD_UID (--pod-uid)",
        "pipeline" => "INFRAMIND_PIPELINE (--pipeline)",
        "branch" => "INFRAMIND_BRANCH (--branch)",
        "image" => "INFRAMIND_IMAGE (--image)",
        "node" => "INFRAMIND_NODE_TYPE (--node-type)",
        "cpu_req" => "INFRAMIND_CPU_REQUEST_MILLI (--cpu-request-milli)",
        "mem_req_gb" => "INFRAMIND_MEM_REQUEST_MIB (--mem-request-mib)",
        "concurrency" => "INFRAMIND_CONCURRENCY (--concurrency)",
        "num_steps" => "INFRAMIND_NUM_STEPS (--num-steps)",
        "cache_hit_ratio" => "--cache-hit-ratio or the ccache/sccache statistics",
        "duration_s" | "started_at" | "avg_step_duration_s" => "--duration-s or /proc",
        _ => "the cgroup measurements",
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = raw.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    if token.chars().any(|c| c.is_control() || c == ' ') {
        bail!(
            "the token file {} has spaces or control characters inside the token",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// System CA bundles, for an https:// endpoint without `--ca-file` (a minimal image has none).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn tls_roots(ca_file: Option<&Path>) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let file = match ca_file {
        Some(f) => f.to_path_buf(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "the endpoint is https:// but no CA is configured: pass --ca-file \
                     (INFRAMIND_CA_FILE) with the API's CA certificate"
                )
            })?,
    };
    let pem = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the CA file {}", file.display()))?;
    crate::client::tls_config(&pem).with_context(|| format!("CA file {}", file.display()))
}

fn parse_timeout(raw: Option<&str>) -> anyhow::Result<Duration> {
    let raw = raw.unwrap_or("10");
    match raw.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => bail!(
            "INFRAMIND_REPORT_TIMEOUT_SECONDS (--timeout-seconds) is `{raw}`, not a number of \
             seconds above 0 and at most 86400"
        ),
    }
}

async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + parse_timeout(given(&args.timeout_seconds))?;
    if !args.unexpected.is_empty() {
        bail!(
            "unexpected arguments `{}` (see inframind report --help)",
            args.unexpected.join(" ")
        );
    }

    // Everything that can be wrong with the configuration, before measuring anything.
    let endpoint = match (given(&args.endpoint), args.dry_run) {
        (_, true) => None,
        (None, false) => bail!("no endpoint: set INFRAMIND_ENDPOINT or pass --endpoint"),
        (Some(raw), false) => Some(api::parse_endpoint(raw).map_err(|e| anyhow!(e))?),
    };
    let pod = pod::parse(&args.identity_inputs()).map_err(|e| anyhow!(e))?;
    let who = pod
        .display_name
        .clone()
        .map(|n| format!("pod {n}"))
        .unwrap_or_else(|| format!("run {}", pod.run_id()));
    let number = |flag, env, value: &Option<String>| -> anyhow::Result<Option<f64>> {
        input(flag, env, value).number().map_err(|e| anyhow!(e))
    };
    let num_steps = number("--num-steps", "INFRAMIND_NUM_STEPS", &args.num_steps)?;
    let ratio_flag = number(
        "--cache-hit-ratio",
        "INFRAMIND_CACHE_HIT_RATIO",
        &args.cache_hit_ratio,
    )?;
    let duration_flag = number("--duration-s", "INFRAMIND_DURATION_S", &args.duration_s)?;
    let poster = match endpoint {
        None => None,
        Some(endpoint) => {
            let token = given(&args.token_file)
                .map(|f| read_token(Path::new(f)))
                .transpose()?;
            let tls = if endpoint.https() {
                Some(tls_roots(given(&args.ca_file).map(Path::new))?)
            } else {
                None
            };
            Some(api::Poster::new(endpoint, tls, token))
        }
    };

    // Measurements.
    let proc_root = path_or(&args.proc_root, "/proc");
    let cgroup_root = path_or(&args.cgroup_root, "/sys/fs/cgroup");
    let duration_s = match duration_flag {
        Some(d) => d,
        None => container_age::read(&proc_root).map_err(|e| {
            anyhow!(
                "the build's duration is unknown ({e}); pass --duration-s (INFRAMIND_DURATION_S)"
            )
        })?,
    };
    let usage = cgroup::read(&cgroup_root, &proc_root);
    if usage.version.is_none() {
        tracing::info!(root = %cgroup_root.display(), "no cgroup found: peak memory and I/O left out");
    }
    let cache_hit_ratio = match ratio_flag {
        Some(r) => Some(r),
        None => {
            let sources = cache_stats::Sources {
                ccache_file: given(&args.ccache_stats_file).map(PathBuf::from),
                sccache_file: given(&args.sccache_stats_file).map(PathBuf::from),
                path: std::env::var_os("PATH"),
            };
            cache_stats::measure(&sources, deadline)
                .await
                .map_err(|e| anyhow!(e))?
                .and_then(|c| c.ratio())
        }
    };
    let outcome = row::BuildOutcome {
        duration_s,
        success: !args.failed,
        num_steps,
        cache_hit_ratio,
    };
    let now = Utc::now();
    let row = row::build(&pod, &usage, &outcome, now);

    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&row)?);
    }
    // Judged exactly as the API will, so a bad local value is named here.
    crate::record::validate_row(&row, now).map_err(|e| {
        anyhow!(
            "the run row for {who} is invalid: {e} (check {})",
            source_of(&e.field)
        )
    })?;
    let Some(poster) = poster else {
        return Ok(());
    };
    let body = serde_json::to_vec(&row)?;
    let recorded = poster
        .post(body, deadline)
        .await
        .map_err(|e| anyhow!("{who}: {e}"))?;
    let what = match recorded {
        api::Recorded::Accepted => "recorded",
        api::Recorded::Duplicate => "was already recorded",
    };
    eprintln!(
        "inframind report: run {} {what} at {} ({:.1}s)",
        pod.run_id(),
        poster.endpoint.runs_url(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReportArgs,
    }

    #[test]
    fn no_input_can_make_clap_fail() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.args);
        let a = parse(&[
            "report",
            "--concurrency",
            "lots",
            "--timeout-seconds",
            "soon",
            "--num-steps",
            "-3",
            "--duration-s",
            "1e999",
            "--ca-file",
            "--strict",
        ])
        .unwrap();
        assert_eq!(a.concurrency.as_deref(), Some("lots"));
        assert_eq!(a.num_steps.as_deref(), Some("-3"));
        assert_eq!(
            given(&a.ca_file),
            None,
            "a flag without its value is not given"
        );
        assert!(a.strict && !a.failed && !a.dry_run);
        assert!(a.unexpected.is_empty());
        assert!(parse_timeout(given(&a.timeout_seconds)).is_err());

        let a = parse(&["report", "--num-step", "5", "--strict"]).unwrap();
        assert_eq!(a.unexpected, ["--num-step", "5", "--strict"]);
        let a = parse(&["report", "--token-file"]).unwrap();
        assert_eq!(a.token_file.as_deref(), Some(""));

        assert_eq!(
            path_or(&None, "/sys/fs/cgroup"),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(path_or(&Some(" ".into()), "/proc"), PathBuf::from("/proc"));
        assert_eq!(parse_timeout(None).unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_timeout(Some("2.5")).unwrap(),
            Duration::from_millis(2500)
        );
        assert!(parse_timeout(Some("0")).is_err());
    }

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  s3cr3t\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "s3cr3t");
        std::fs::write(&f, "\n").unwrap();
        assert!(format!("{:#}", read_token(&f).unwrap_err()).contains("is empty"));
        std::fs::write(&f, "a b\n").unwrap();
        assert!(read_token(&f).is_err());
        assert!(
            format!("{:#}", read_token(&dir.path().join("none")).unwrap_err())
                .contains("reading the token file")
        );
    }
}
