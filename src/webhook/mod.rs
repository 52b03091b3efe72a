//! The mutating admission webhook server: `inframind webhook`.
//!
//! Everything a request reads is in memory: the live model (swapped by the registry watcher) and
//! the per-pipeline stats (refreshed in the background). See `server.rs` for the HTTP contract.

pub mod ca;
pub mod cache_claims;
pub mod metrics;
pub mod namespace_policy;
pub mod nodes;
pub mod server;
pub mod stats_cache;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::admission::{Settings, DEFAULT_CONCURRENCY_ENV};
use crate::config::{DrainSettings, Global, OptimizerSettings};
use crate::optimizer::recommender::Recommender;
use crate::optimizer::Optimizer;
use crate::registry::{live, LiveModel, WatchConfig};
use crate::serving::tls::{self, CertStore};
pub use server::AppState;
use stats_cache::StatsCache;

/// `inframind webhook` arguments.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, env = "INFRAMIND_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM); reloaded when the file changes.
    #[arg(
        long,
        env = "INFRAMIND_TLS_CERT",
        required_unless_present = "self_signed"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM, PKCS#1, PKCS#8 or SEC1).
    #[arg(
        long,
        env = "INFRAMIND_TLS_KEY",
        required_unless_present = "self_signed"
    )]
    pub tls_key: Option<PathBuf>,
    /// Generate a CA and serving certificate at start-up instead of reading files.
    #[arg(long, env = "INFRAMIND_SELF_SIGNED", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_signed: bool,
    /// DNS name of the webhook Service (`svc.namespace.svc`), for the self-signed certificate.
    #[arg(
        long,
        env = "INFRAMIND_SERVICE_DNS_NAME",
        default_value = "inframind-webhook.inframind.svc"
    )]
    pub service_dns_name: String,
    /// Write the self-signed CA bundle (PEM) to this file.
    #[arg(long, env = "INFRAMIND_CA_BUNDLE_OUT")]
    pub ca_bundle_out: Option<PathBuf>,
    /// Merge the self-signed CA into this MutatingWebhookConfiguration's caBundle.
    #[arg(long, env = "INFRAMIND_WEBHOOK_CONFIG_NAME")]
    pub webhook_config_name: Option<String>,
    /// Only annotate pods with what would change.
    #[arg(long, env = "INFRAMIND_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,
    /// Environment variables that carry the build concurrency (comma-separated).
    #[arg(long, env = "INFRAMIND_CONCURRENCY_ENV", value_delimiter = ',', default_values_t = DEFAULT_CONCURRENCY_ENV.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub concurrency_env: Vec<String>,
    /// On cold starts (no model, or a pipeline it never saw) apply the guarded baseline
    /// (otherwise the pod keeps its request and is only annotated).
    #[arg(long, env = "INFRAMIND_COLD_START_APPLY_DEFAULTS")]
    pub cold_start_apply_defaults: bool,
    /// Share of decided pods left as requested as the control group (chosen by pod uid, so a
    /// pod's group never changes): their builds measure what InfraMind saves.
    #[arg(long, env = "INFRAMIND_HOLDOUT_RATE", default_value_t = crate::admission::holdout::DEFAULT_HOLDOUT_RATE)]
    pub holdout_rate: f64,
    /// Seconds between refreshes of the per-pipeline stats.
    #[arg(long, env = "INFRAMIND_STATS_REFRESH_SECONDS", default_value_t = 30)]
    pub stats_refresh_seconds: u64,
    /// Seconds between polls of the registry (change events arrive at once anyway).
    #[arg(long, env = "INFRAMIND_MODEL_POLL_SECONDS", default_value_t = 5)]
    pub model_poll_seconds: u64,
    /// Longest a decision may take, milliseconds, before the pod is admitted unchanged.
    #[arg(long, env = "INFRAMIND_DECISION_BUDGET_MS", default_value_t = 250)]
    pub decision_budget_ms: u64,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "INFRAMIND_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY)]
    pub max_body_bytes: u64,
    /// Bound each decision by the largest allocatable cpu and memory among the nodes the pod
    /// may land on, from a Node watch (needs list/watch on nodes; configured node bounds win).
    #[arg(long, env = "INFRAMIND_WATCH_NODES", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_nodes: bool,
    /// Watch every namespace's LimitRange and ResourceQuota and keep decisions within them.
    #[arg(long, env = "INFRAMIND_WATCH_NAMESPACE_LIMITS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_namespace_limits: bool,
    /// Shared build cache: a PersistentVolumeClaim (ReadWriteMany) each opted-in namespace
    /// holds, mounted into applied builds with CCACHE_DIR / SCCACHE_DIR pointed at it (needs
    /// list/watch on persistentvolumeclaims; a claim not bound in the pod's namespace is never
    /// mounted).
    #[arg(long, env = "INFRAMIND_CACHE_CLAIM")]
    pub cache_claim: Option<String>,
    /// Shared build cache: variables pointing sccache at a remote backend, `NAME=value`
    /// (comma-separated), e.g. `SCCACHE_WEBDAV_ENDPOINT=http://cache.ci:8080`.
    #[arg(long, env = "INFRAMIND_CACHE_REMOTE_ENV", value_delimiter = ',', value_parser = parse_env_pair)]
    pub cache_remote_env: Vec<(String, String)>,
    /// Namespaces whose pods get the shared build cache (comma-separated; `*` for all). Pods
    /// opt in elsewhere, or out, with the annotation inframind.io/build-cache: enabled|disabled.
    #[arg(long, env = "INFRAMIND_CACHE_NAMESPACES", value_delimiter = ',')]
    pub cache_namespaces: Vec<String>,
    /// Largest CCACHE_MAXSIZE / SCCACHE_CACHE_SIZE written, GB (the size follows what the
    /// pipeline's builds write).
    #[arg(long, env = "INFRAMIND_CACHE_MAX_SIZE_GB", default_value_t = 20)]
    pub cache_max_size_gb: u32,
    /// Optimizer settings.
    #[command(flatten)]
    pub optimizer: OptimizerSettings,
    /// Shutdown drain.
    #[command(flatten)]
    pub drain: DrainSettings,
}

/// The certificate store for the arguments: files (watched) or self-signed (published).
async fn certificates(args: &WebhookArgs) -> anyhow::Result<Arc<CertStore>> {
    if args.self_signed {
        let names = tls::service_names(&args.service_dns_name);
        let generated = tls::self_signed(&names)?;
        if let Some(path) = &args.ca_bundle_out {
            std::fs::write(path, &generated.ca_cert)
                .with_context(|| format!("writing the CA bundle to {}", path.display()))?;
        }
        if let Some(name) = &args.webhook_config_name {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API to publish the CA")?;
            ca::publish_ca(client, name, &generated.ca_cert).await?;
        }
        return Ok(CertStore::new(&generated.serving)?);
    }
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        bail!("--tls-cert and --tls-key are required unless --self-signed is given");
    };
    let store = CertStore::from_files(cert, key)?;
    tls::watch_files(
        store.clone(),
        cert.clone(),
        key.clone(),
        Duration::from_secs(2),
    );
    Ok(store)
}

/// Builds the admission settings from the arguments.
pub fn settings(args: &WebhookArgs) -> anyhow::Result<Settings> {
    Ok(Settings {
        dry_run: args.dry_run,
        concurrency_env: args
            .concurrency_env
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        cold_start_apply_defaults: args.cold_start_apply_defaults,
        recommender: Recommender::new(Optimizer::new(args.optimizer.config()?))
            .with_cache(Arc::new(crate::optimizer::cache::DecisionCache::new())),
        nodes: None,
        policies: Arc::new(crate::admission::limits::Policies::new()),
        holdout_rate: crate::admission::holdout::validate_rate(args.holdout_rate)
            .map_err(anyhow::Error::msg)?,
        cache: crate::admission::cache_injection::CacheSettings {
            claim: args.cache_claim.clone().filter(|c| !c.trim().is_empty()),
            remote_env: args.cache_remote_env.clone(),
            namespaces: args
                .cache_namespaces
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            max_size_gb: args.cache_max_size_gb.max(1),
        },
        claims: None,
    })
}

/// `NAME=value`, with a name the environment accepts.
fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=value"))?;
    let k = k.trim();
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`{k}` is not an environment variable name"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Starts the Node watch when asked and the cluster is reachable; otherwise the configured
/// bounds stand.
async fn watch_nodes(args: &WebhookArgs, settings: &mut Settings) {
    if !args.watch_nodes {
        return;
    }
    if settings
        .recommender
        .optimizer
        .config
        .node_capacity
        .is_some()
    {
        tracing::info!("node bounds configured; the Node watch is not needed");
        return;
    }
    match kube::Client::try_default().await {
        Ok(client) => {
            let pool = Arc::new(nodes::NodePool::new());
            nodes::spawn_watch(kube::Api::all(client), pool.clone());
            settings.nodes = Some(pool);
            tracing::info!("bounding decisions by the nodes each pod may land on (Node watch)");
        }
        Err(e) => {
            tracing::warn!(error = %e, "no cluster access for the Node watch; using the configured bounds")
        }
    }
}

/// Runs the webhook until SIGTERM or Ctrl-C.
pub async fn run(global: &Global, args: WebhookArgs) -> anyhow::Result<()> {
    let certs = certificates(&args).await?;
    let live = Arc::new(LiveModel::new());
    let mut settings = settings(&args)?;
    watch_nodes(&args, &mut settings).await;
    if let Some(claim) = settings.cache.claim.clone() {
        match kube::Client::try_default().await {
            Ok(client) => {
                settings.claims = Some(Arc::new(cache_claims::spawn(client, &claim)));
                tracing::info!(%claim, "watching the shared build cache's claims");
            }
            // Without the watch no claim is known to be bound, so none is mounted.
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes API: the build cache claim is never mounted")
            }
        }
    }
    if args.watch_namespace_limits {
        match kube::Client::try_default().await {
            Ok(client) => {
                namespace_policy::spawn(client, settings.policies.clone());
            }
            // Without an API server (local runs) nothing is known, so nothing is bounded.
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes API: LimitRanges and ResourceQuotas are not watched")
            }
        }
    }
    let state = Arc::new(AppState {
        settings,
        live: live.clone(),
        stats: Arc::new(StatsCache::new()),
        metrics: metrics::Metrics::new(),
        ready: AtomicBool::new(false),
        budget: Duration::from_millis(args.decision_budget_ms.max(1)),
        max_body: args.max_body_bytes,
        certs,
    });
    // Serve probes at once; readiness follows the model.
    let server = server::spawn(args.listen, state.clone()).await?;
    tracing::info!(addr = %server.addr(), "webhook serving HTTPS");
    let watch = WatchConfig {
        dir: global.model_dir()?,
        redis_url: global.redis_url.clone(),
        prefix: global.redis_prefix.clone(),
        poll: Duration::from_secs(args.model_poll_seconds.max(1)),
    };
    live::bootstrap(&live, &watch).await;
    live::spawn(live.clone(), watch);
    stats_cache::spawn_refresher(
        state.stats.clone(),
        global.database_url.clone(),
        Duration::from_secs(args.stats_refresh_seconds.max(1)),
    );
    state.ready.store(true, Ordering::Release);
    tracing::info!(model = ?live.version(), "webhook ready");
    server
        .run_until_signal(&state.ready, args.drain.drain())
        .await;
    Ok(())
}
