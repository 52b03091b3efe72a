//! The InfraMind HTTP API: `inframind api`.
//!
//! - `POST /v1/runs`: one run (a JSON object), a batch (an array) or `{"runs": [...]}`; the answer
//!   says how many were accepted, rejected (row, field, reason) and duplicated. Ingest or admin
//!   token.
//! - `GET /v1/pipelines/{name}/stats`: the per-pipeline aggregates the optimizer uses (the name
//!   may contain `/`).
//! - `POST /v1/recommendations`: the optimizer's decision for `{pipeline, branch, image, node,
//!   seed}` with the store's stats and the active model.
//! - `GET /v1/savings?pipeline=P&since=7d`: realized savings, builds InfraMind changed against
//!   the holdout group (see `savings`).
//! - `POST /v1/train` (admin token only; the design's admin `POST /train`): creates a
//!   TrainingJob when `--training-namespace` is set, else runs one in this process; the body is an
//!   optional TrainingJob spec.
//!
//! Tokens are read from files (mounted Secrets) and re-read when they change. Bodies are capped;
//! malformed JSON gets 400 with the reason; a database outage gets 503 with `Retry-After` and
//! nothing is acknowledged that was not committed (one transaction per request, and `run_id`
//! makes the client's retry idempotent).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::config::{DrainSettings, Global, OptimizerSettings};
use crate::controller::crd::{TrainingJob, TrainingJobSpec, TrainingJobStatus};
use crate::controller::job::JobPolicy;
use crate::optimizer::recommender::Recommender;
use crate::optimizer::Optimizer;
use crate::registry::{live, LiveModel, WatchConfig};
use crate::telemetry::{ingest_rows, Store};

/// `inframind api` arguments.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Address to serve on.
    #[arg(long, env = "INFRAMIND_API_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// File holding the bearer token for ingestion and reads (a mounted Secret).
    #[arg(long, env = "INFRAMIND_INGEST_TOKEN_FILE")]
    pub ingest_token_file: PathBuf,
    /// File holding the admin bearer token (needed for /v1/train; must differ from the ingest token).
    #[arg(long, env = "INFRAMIND_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM); plain HTTP without it.
    #[arg(long, env = "INFRAMIND_API_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Key for --tls-cert.
    #[arg(long, env = "INFRAMIND_API_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "INFRAMIND_API_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Namespace to create TrainingJobs in for POST /v1/train; without it training runs in-process.
    #[arg(long, env = "INFRAMIND_TRAINING_NAMESPACE")]
    pub training_namespace: Option<String>,
    /// Images a POST /v1/train spec may name for its Job (the controller's allowlist; comma-separated).
    #[arg(long, env = "INFRAMIND_JOB_ALLOWED_IMAGES", value_delimiter = ',')]
    pub job_allowed_images: Vec<String>,
    /// Service accounts a POST /v1/train spec may name for its Job (comma-separated).
    #[arg(
        long,
        env = "INFRAMIND_JOB_ALLOWED_SERVICE_ACCOUNTS",
        value_delimiter = ','
    )]
    pub job_allowed_service_accounts: Vec<String>,
    /// Optimizer settings for /v1/recommendations.
    #[command(flatten)]
    pub optimizer: OptimizerSettings,
    /// Shutdown drain.
    #[command(flatten)]
    pub drain: DrainSettings,
}

/// Seconds a client is told to wait when the store is down.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// A bearer token read from a file and re-read when the file changes.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cached: std::sync::RwLock<(Option<std::time::SystemTime>, String)>,
}

impl TokenFile {
    /// Reads `path` now (an unreadable or empty token file is a start-up error).
    pub fn open(path: PathBuf) -> anyhow::Result<TokenFile> {
        let t = TokenFile {
            path,
            cached: std::sync::RwLock::new((None, String::new())),
        };
        if t.current().is_empty() {
            anyhow::bail!("token file {} is missing or empty", t.path.display());
        }
        Ok(t)
    }

    fn current(&self) -> String {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if let Ok(c) = self.cached.read() {
            if c.0.is_some() && c.0 == mtime {
                return c.1.clone();
            }
        }
        let token = std::fs::read_to_string(&self.path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if let Ok(mut c) = self.cached.write() {
            *c = (mtime, token.clone());
        }
        token
    }

    /// The token as it is now (re-read when the file changed).
    pub fn current_token(&self) -> String {
        self.current()
    }

    /// Whether `presented` is this token (constant time in the token's length).
    pub fn matches(&self, presented: &str) -> bool {
        let want = self.current();
        !want.is_empty()
            && want.len() == presented.len()
            && want
                .bytes()
                .zip(presented.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// How `/v1/train` runs a training.
pub enum Training {
    /// Create a TrainingJob for the controller.
    Kubernetes {
        /// API client.
        client: kube::Client,
        /// Namespace of the TrainingJob.
        namespace: String,
    },
    /// Run it here with the controller's training code (no Kubernetes involved).
    InProcess(Box<crate::controller::Context>),
}

/// Everything a request may use.
pub struct ApiState {
    database_url: String,
    store: Mutex<Option<Store>>,
    /// Ingest token.
    pub ingest: TokenFile,
    /// Admin token.
    pub admin: Option<TokenFile>,
    /// The model recommendations use.
    pub live: Arc<LiveModel>,
    /// Assembles recommendations (the same way the webhook and the CLI do).
    pub recommender: Recommender,
    /// Largest accepted body.
    pub max_body: u64,
    /// How /v1/train trains.
    pub training: Training,
    /// Which images and service accounts a /v1/train spec may name (none by default).
    pub job_policy: JobPolicy,
    /// False while draining: `/readyz` answers 503 so the Service stops sending.
    pub ready: std::sync::atomic::AtomicBool,
    /// Prices the savings report costs builds at (the optimizer's cost-objective prices).
    pub prices: crate::savings::Prices,
    /// Where model versions are (the dashboard's models page); none: the page lists nothing.
    pub models_dir: Option<crate::model::ModelDir>,
    /// The API's own metrics (`/metrics`).
    pub metrics: Arc<crate::api_metrics::ApiMetrics>,
    /// The shared registry in Redis (URL, key prefix), for the promotion history; none: the
    /// models directory's.
    pub redis: Option<(String, String)>,
}

impl ApiState {
    /// A state over the store at `database_url` (connected on first use, reconnected after outages).
    pub fn new(
        database_url: String,
        ingest: TokenFile,
        admin: Option<TokenFile>,
        live: Arc<LiveModel>,
        recommender: Recommender,
        max_body: u64,
        training: Training,
    ) -> ApiState {
        ApiState {
            database_url,
            store: Mutex::new(None),
            ingest,
            admin,
            live,
            recommender,
            max_body,
            training,
            job_policy: JobPolicy::default(),
            ready: std::sync::atomic::AtomicBool::new(true),
            prices: crate::savings::Prices::default(),
            models_dir: None,
            metrics: Arc::new(crate::api_metrics::ApiMetrics::new()),
            redis: None,
        }
    }

    /// The same state allowing what `policy` allows in /v1/train specs.
    pub fn with_job_policy(mut self, policy: JobPolicy) -> ApiState {
        self.job_policy = policy;
        self
    }

    async fn store(&self) -> Result<Store, warp::reply::Response> {
        let mut slot = self.store.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        match tokio::time::timeout(Duration::from_secs(3), Store::connect(&self.database_url)).await
        {
            Ok(Ok(s)) => {
                *slot = Some(s.clone());
                Ok(s)
            }
            Ok(Err(e)) => Err(unavailable(&e.to_string())),
            Err(_) => Err(unavailable("the telemetry store did not answer in time")),
        }
    }

    /// The store's runs since `since` ago: 503 response on failure.
    pub(crate) async fn runs_since(
        &self,
        pipeline: Option<&str>,
        since: chrono::DateTime<Utc>,
    ) -> Result<Vec<crate::record::RunRecord>, warp::reply::Response> {
        let store = self.store().await?;
        match store.runs_since(pipeline, since).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.reset_store().await;
                Err(unavailable(&e.to_string()))
            }
        }
    }

    /// The decision notes of `run_ids` (empty when the store cannot say: notes only explain).
    pub(crate) async fn notes(
        &self,
        run_ids: &[&str],
    ) -> std::collections::HashMap<String, crate::outcome::DecisionNote> {
        match self.store().await {
            Ok(store) => store.notes(run_ids).await.unwrap_or_default(),
            Err(_) => Default::default(),
        }
    }

    /// Forgets the pool after a failure so the next request reconnects.
    async fn reset_store(&self) {
        if let Some(s) = self.store.lock().await.take() {
            s.close().await;
        }
    }
}

fn error(status: StatusCode, reason: &str) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(&json!({"error": reason})), status).into_response()
}

fn unavailable(reason: &str) -> warp::reply::Response {
    let r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("telemetry store unavailable, nothing was stored: {reason}"),
    );
    warp::reply::with_header(r, "retry-after", RETRY_AFTER_SECONDS.to_string()).into_response()
}

/// Who a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Ingest,
    Admin,
}

// The error is the response to send, returned as is: boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
fn authenticate(state: &ApiState, header: Option<&str>) -> Result<Caller, warp::reply::Response> {
    let unauthorized = |why: &str| {
        warp::reply::with_header(
            error(StatusCode::UNAUTHORIZED, why),
            "www-authenticate",
            "Bearer",
        )
        .into_response()
    };
    let token = header
        .and_then(bearer_token)
        .ok_or_else(|| unauthorized("missing bearer token"))?;
    if state.admin.as_ref().is_some_and(|a| a.matches(token)) {
        Ok(Caller::Admin)
    } else if state.ingest.matches(token) {
        Ok(Caller::Ingest)
    } else {
        Err(unauthorized("invalid bearer token"))
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn parse_rows(body: &[u8]) -> Result<Vec<crate::telemetry::ingest::ParsedRow>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(mut o) if o.contains_key("runs") => match o.remove("runs") {
            Some(Value::Array(a)) => a,
            _ => return Err("`runs` must be an array".into()),
        },
        Value::Object(o) => vec![Value::Object(o)],
        other => {
            return Err(format!(
                "expected a run object or an array of runs, got {other}"
            ))
        }
    };
    Ok(items
        .into_iter()
        .map(|item| match item {
            Value::Object(o) => Ok(o.into_iter().collect()),
            other => Err(format!("expected a JSON object, got {other}")),
        })
        .collect())
}

async fn post_runs(state: Arc<ApiState>, body: Bytes) -> warp::reply::Response {
    let rows = match parse_rows(&body) {
        Ok(r) => r,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let store = match state.store().await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    match ingest_rows(&store, rows, Utc::now()).await {
        Ok(report) => {
            state.metrics.ingested(&report.by_outcome);
            warp::reply::json(&report).into_response()
        }
        Err(e) => {
            state.reset_store().await;
            unavailable(&e.to_string())
        }
    }
}

async fn get_stats(state: Arc<ApiState>, pipeline: String) -> warp::reply::Response {
    let store = match state.store().await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let since = Utc::now() - chrono::Duration::days(CACHE_ANALYSIS_DAYS);
    let read = async {
        let stats = store.pipeline_stats(&pipeline).await?;
        let runs = store.runs_since(Some(&pipeline), since).await?;
        Ok::<_, crate::error::Error>((stats, runs))
    };
    match read.await {
        Ok((s, _)) if s.runs == 0 => error(
            StatusCode::NOT_FOUND,
            &format!("no runs of pipeline {pipeline}"),
        ),
        Ok((s, runs)) => {
            // The stats, and the cache analysis of the pipeline's last days next to them.
            let mut body = serde_json::to_value(&s).unwrap_or(Value::Null);
            let refs: Vec<&crate::record::RunRecord> = runs.iter().collect();
            let cache = crate::cache_advice::analyse_pipeline(&pipeline, &refs);
            if let (Value::Object(m), Ok(c)) = (&mut body, serde_json::to_value(&cache)) {
                m.insert("cache".into(), c);
                m.insert("cache_since".into(), json!(since));
            }
            warp::reply::json(&body).into_response()
        }
        Err(e) => {
            state.reset_store().await;
            unavailable(&e.to_string())
        }
    }
}

/// Days of builds the stats endpoint's cache analysis covers.
pub const CACHE_ANALYSIS_DAYS: i64 = 30;

/// A recommendation request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendRequest {
    pipeline: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
}

async fn post_recommendation(state: Arc<ApiState>, body: Bytes) -> warp::reply::Response {
    let req: RecommendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("not a recommendation request: {e}"),
            )
        }
    };
    let store = match state.store().await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let stats = match store.pipeline_stats(&req.pipeline).await {
        Ok(s) => s,
        Err(e) => {
            state.reset_store().await;
            return unavailable(&e.to_string());
        }
    };
    let ctx = Recommender::context(req.pipeline, req.branch, req.image, req.node);
    // Without a seed, the request's own id seeds exploration, as a pod's uid does in the webhook.
    let seed = req
        .seed
        .unwrap_or_else(|| Recommender::seed(&uuid::Uuid::new_v4().to_string()));
    let model = state.live.get();
    let stats = (stats.runs > 0).then_some(stats);
    let decision =
        state
            .recommender
            .recommend(&ctx, stats.as_ref(), model.as_deref(), Utc::now(), seed);
    warp::reply::json(&decision).into_response()
}

/// The savings report for a query (`pipeline`, `since` such as `7d`).
async fn get_savings(
    state: Arc<ApiState>,
    query: std::collections::HashMap<String, String>,
) -> warp::reply::Response {
    let period = match crate::savings::parse_period(query.get("since").map_or("7d", String::as_str))
    {
        Ok(p) => p,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &format!("since: {reason}")),
    };
    let since = Utc::now() - period;
    let runs = match state
        .runs_since(query.get("pipeline").map(String::as_str), since)
        .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let cfg = crate::savings::SavingsConfig {
        prices: state.prices,
        ..Default::default()
    };
    warp::reply::json(&crate::savings::report(&runs, since, &cfg)).into_response()
}

async fn post_train(state: Arc<ApiState>, body: Bytes) -> warp::reply::Response {
    let spec: TrainingJobSpec = if body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_value(json!({})) {
            Ok(s) => s,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("default TrainingJob spec: {e}"),
                )
            }
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("not a TrainingJob spec: {e}"),
                )
            }
        }
    };
    if let Err(reason) = spec.validate() {
        return error(StatusCode::BAD_REQUEST, &reason);
    }
    // The admin token chooses what to train, never what runs or as whom: the same allowlists
    // as the controller's (the controller checks them again).
    if let Err(e) = state.job_policy.check(&spec.execution, None, None) {
        return error(StatusCode::FORBIDDEN, &e.to_string());
    }
    match &state.training {
        Training::Kubernetes { client, namespace } => {
            let name = format!("api-{}", Utc::now().format("%Y%m%d-%H%M%S-%3f"));
            let tj = TrainingJob::new(&name, spec);
            let api: kube::Api<TrainingJob> = kube::Api::namespaced(client.clone(), namespace);
            match api.create(&kube::api::PostParams::default(), &tj).await {
                Ok(_) => warp::reply::with_status(
                    warp::reply::json(
                        &json!({"trainingJob": {"namespace": namespace, "name": name}}),
                    ),
                    StatusCode::ACCEPTED,
                )
                .into_response(),
                Err(e) => error(
                    StatusCode::BAD_GATEWAY,
                    &format!("creating TrainingJob {namespace}/{name}: {e}"),
                ),
            }
        }
        Training::InProcess(ctx) => {
            let now = Utc::now();
            let prev = TrainingJobStatus::default();
            match crate::controller::run::execute(ctx, &spec).await {
                Ok(outcome) => {
                    let status = crate::controller::status::finished(&prev, &outcome, None, now);
                    warp::reply::json(&json!({"status": status})).into_response()
                }
                Err(failure) => {
                    let status = crate::controller::status::failed(&prev, &failure, None, now);
                    let code = if failure.retried() {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    };
                    warp::reply::with_status(warp::reply::json(&json!({"status": status})), code)
                        .into_response()
                }
            }
        }
    }
}

/// Reads a body up to the cap: 413 past it (refused from Content-Length before reading; a
/// streamed body is cut off at the cap).
fn capped_body(max: u64) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |len: Option<u64>, body| async move {
            crate::serving::body::read_capped(len, Box::pin(body), max)
                .await
                .map_err(|resp| warp::reject::custom(Denied(std::sync::Mutex::new(Some(resp)))))
        })
}

/// The routes.
pub fn routes(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let max = state.max_body;
    let dashboard = crate::dashboard::routes(state.clone());
    let metrics = state.metrics.clone();
    let metrics_page = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            metrics.render(),
            "content-type",
            crate::api_metrics::CONTENT_TYPE,
        )
        .into_response()
    });
    let observed = state.metrics.clone();
    let with_state = warp::any().map(move || state.clone());
    let auth = with_state
        .clone()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(|s: Arc<ApiState>, h: Option<String>| async move {
            match authenticate(&s, h.as_deref()) {
                Ok(caller) => Ok((s, caller)),
                Err(resp) => Err(warp::reject::custom(Denied(std::sync::Mutex::new(Some(
                    resp,
                ))))),
            }
        })
        .untuple_one();
    let runs = warp::path!("v1" / "runs")
        .and(warp::post())
        .and(auth.clone())
        .and(capped_body(max))
        .then(|s, _c: Caller, body| post_runs(s, body));
    let stats = warp::path("v1")
        .and(warp::path("pipelines"))
        .and(warp::path::tail())
        .and(warp::get())
        .and(auth.clone())
        .then(|tail: warp::path::Tail, s, _c: Caller| async move {
            let path = percent_decode(tail.as_str());
            match path.strip_suffix("/stats") {
                Some(name) if !name.is_empty() => get_stats(s, name.to_string()).await,
                _ => error(StatusCode::NOT_FOUND, "use /v1/pipelines/{name}/stats"),
            }
        });
    let recommend = warp::path!("v1" / "recommendations")
        .and(warp::post())
        .and(auth.clone())
        .and(capped_body(max))
        .then(|s, _c: Caller, body| post_recommendation(s, body));
    let savings = warp::path!("v1" / "savings")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .then(|s, _c: Caller, q| get_savings(s, q));
    let train = warp::path!("v1" / "train")
        .and(warp::post())
        .and(auth)
        .and(capped_body(max))
        .then(|s, c: Caller, body| async move {
            if c != Caller::Admin {
                return error(StatusCode::FORBIDDEN, "training needs the admin token");
            }
            post_train(s, body).await
        });
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::with_status("ok", StatusCode::OK).into_response());
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<ApiState>| {
            if s.ready.load(std::sync::atomic::Ordering::Acquire) {
                warp::reply::with_status("ready", StatusCode::OK).into_response()
            } else {
                warp::reply::with_status("draining", StatusCode::SERVICE_UNAVAILABLE)
                    .into_response()
            }
        });
    runs.or(stats)
        .unify()
        .or(recommend)
        .unify()
        .or(train)
        .unify()
        .or(savings)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(dashboard)
        .unify()
        .or(metrics_page)
        .unify()
        .recover(|rej: warp::Rejection| async move {
            let resp = if rej.find::<crate::dashboard::NotSignedIn>().is_some() {
                crate::dashboard::to_login()
            } else if let Some(d) = rej.find::<Denied>() {
                d.0.lock()
                    .ok()
                    .and_then(|mut r| r.take())
                    .unwrap_or_else(|| error(StatusCode::UNAUTHORIZED, "unauthorized"))
            } else if rej.is_not_found() {
                error(StatusCode::NOT_FOUND, "no such endpoint")
            } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            } else {
                error(StatusCode::BAD_REQUEST, &format!("{rej:?}"))
            };
            Ok::<_, std::convert::Infallible>(resp)
        })
        .unify()
        .with(warp::log::custom(move |info| {
            observed.observe(
                info.path(),
                info.status().as_u16(),
                info.elapsed().as_secs_f64(),
            )
        }))
        .map(Reply::into_response)
}

/// A refusal carrying its response (authentication, body limits).
struct Denied(std::sync::Mutex<Option<warp::reply::Response>>);
impl std::fmt::Debug for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Denied")
    }
}
impl warp::reject::Reject for Denied {}

/// A path segment's percent-encoding decoded (invalid UTF-8 replaced, never a panic).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Binds `addr` and serves the API in the background (TLS when `tls` is given).
pub async fn spawn(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<ApiState>,
) -> crate::Result<crate::serving::Server> {
    crate::serving::spawn(addr, tls, routes(state)).await
}

/// A controller context for in-process training (no Kubernetes: its client is never used).
pub fn in_process_training(global: &Global) -> anyhow::Result<crate::controller::Context> {
    // A client that points nowhere: the training run only uses the store and the registry.
    let config = kube::Config::new(
        "http://127.0.0.1:9"
            .parse()
            .context("a placeholder API URL")?,
    );
    let client =
        kube::Client::try_from(config).context("building a placeholder Kubernetes client")?;
    let mut settings = crate::controller::Settings::from_global(global, "inframind-api");
    settings.model_keys = global.model_keys()?;
    Ok(crate::controller::Context::new(
        client,
        settings,
        Arc::new(crate::controller::metrics::Metrics::new()),
    ))
}

/// Runs the API until SIGTERM or Ctrl-C.
pub async fn run(global: &Global, args: ApiArgs) -> anyhow::Result<()> {
    let ingest = TokenFile::open(args.ingest_token_file.clone())?;
    let admin = args
        .admin_token_file
        .clone()
        .map(TokenFile::open)
        .transpose()?;
    if let Some(a) = &admin {
        if a.current() == ingest.current() {
            anyhow::bail!("the admin token must differ from the ingest token");
        }
    }
    let live = Arc::new(LiveModel::new());
    let watch = WatchConfig {
        dir: global.model_dir()?,
        redis_url: global.redis_url.clone(),
        prefix: global.redis_prefix.clone(),
        poll: Duration::from_secs(5),
    };
    live::bootstrap(&live, &watch).await;
    live::spawn(live.clone(), watch);
    let training = match &args.training_namespace {
        Some(ns) => Training::Kubernetes {
            client: kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API for /v1/train")?,
            namespace: ns.clone(),
        },
        None => Training::InProcess(Box::new(in_process_training(global)?)),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            let store = crate::serving::tls::CertStore::from_files(c, k)?;
            crate::serving::tls::watch_files(
                store.clone(),
                c.clone(),
                k.clone(),
                Duration::from_secs(2),
            );
            Some(store.server_config()?)
        }
        _ => {
            if !args.listen.ip().is_loopback() {
                // Bearer tokens would cross the network in clear (the chart serves HTTPS).
                tracing::warn!(listen = %args.listen, "serving plain HTTP on a non-loopback address: tokens cross the network in clear; pass --tls-cert and --tls-key");
            }
            None
        }
    };
    let job_policy = JobPolicy::new(&args.job_allowed_images, &args.job_allowed_service_accounts);
    let mut state = ApiState::new(
        global.database_url.clone(),
        ingest,
        admin,
        live,
        Recommender::new(Optimizer::new(args.optimizer.config()?)),
        args.max_body_bytes,
        training,
    )
    .with_job_policy(job_policy);
    state.prices = crate::savings::Prices::from_optimizer(&args.optimizer);
    state.models_dir = Some(global.model_dir()?);
    state.redis = global
        .redis_url
        .clone()
        .map(|u| (u, global.redis_prefix.clone()));
    let state = Arc::new(state);
    let server = spawn(args.listen, tls, state.clone()).await?;
    tracing::info!(addr = %server.addr(), "InfraMind API serving");
    server
        .run_until_signal(&state.ready, args.drain.drain())
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_as_one_run_a_batch_or_an_envelope() {
        assert_eq!(parse_rows(br#"{"pipeline":"a"}"#).unwrap().len(), 1);
        assert_eq!(
            parse_rows(br#"[{"pipeline":"a"},{"pipeline":"b"}]"#)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_rows(br#"{"runs":[{"pipeline":"a"},3]}"#).unwrap()[1]
                .as_ref()
                .unwrap_err(),
            "expected a JSON object, got 3"
        );
        assert!(parse_rows(b"{oops").unwrap_err().contains("malformed JSON"));
        assert!(parse_rows(b"42")
            .unwrap_err()
            .contains("expected a run object"));
    }

    #[test]
    fn pipeline_names_are_percent_decoded() {
        assert_eq!(percent_decode("acme%2Fapi/stats"), "acme/api/stats");
        assert_eq!(percent_decode("plain/stats"), "plain/stats");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("caf%C3%A9/stats"), "café/stats");
    }

    /// Fuzzing found the hand-written decoder slicing inside a multi-byte character.
    #[test]
    fn percent_decoding_never_panics_on_multi_byte_characters() {
        assert_eq!(percent_decode("a%é/stats"), "a%é/stats");
        assert_eq!(percent_decode("%€€"), "%€€");
        assert_eq!(percent_decode("%a€/stats"), "%a€/stats");
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("x%2F"), "x/", "an escape at the very end");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
