//! The HTTPS server: warp filters for routing, served through rustls and hyper.
//!
//! `POST /mutate` answers AdmissionReviews; `GET /healthz`, `/readyz` and `/metrics` serve
//! probes and Prometheus. Bodies are capped (a declared size over the cap is refused before
//! reading; a streamed body is cut off at the cap); malformed JSON gets 400 with the reason; the
//! decision runs under a time budget and any failure admits the pod unchanged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use super::metrics::Metrics;
use super::stats_cache::StatsCache;
use crate::admission::{admit, envelope, AdmissionResponse, AdmissionReview, Outcome, Settings};
use crate::registry::LiveModel;
use crate::serving::body::{json_error, read_capped};
use crate::serving::tls::CertStore;

/// Default cap on an AdmissionReview body (a Pod is at most ~1.5 MiB in etcd).
pub const DEFAULT_MAX_BODY: u64 = 3 * 1024 * 1024;

/// Everything a request may read. Nothing here does I/O.
#[derive(Debug)]
pub struct AppState {
    /// Webhook behaviour and the optimizer.
    pub settings: Settings,
    /// The model being served.
    pub live: Arc<LiveModel>,
    /// Per-pipeline stats.
    pub stats: Arc<StatsCache>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set once the model (or the cold-start path) is loaded.
    pub ready: AtomicBool,
    /// Longest a decision may take before the pod is admitted unchanged.
    pub budget: Duration,
    /// Largest accepted body.
    pub max_body: u64,
    /// The serving certificate.
    pub certs: Arc<CertStore>,
}

/// Answers one AdmissionReview body.
pub async fn mutate(state: Arc<AppState>, body: Bytes) -> warp::reply::Response {
    let started = Instant::now();
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.bad_request();
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("not an AdmissionReview: {e}"),
            );
        }
    };
    let uid = review.request.uid.clone();
    // Inline on the worker: a decision takes ~0.2 ms, less than handing it to another thread
    // costs under load. A panic or a decision over its budget admits the pod unchanged.
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let model = state.live.get();
        let stats = &state.stats;
        admit(
            &review.request,
            &state.settings,
            model.as_deref(),
            &|p| stats.get(p),
            chrono::Utc::now(),
        )
    }));
    let (response, outcome, explored) = match decided {
        Ok(_) if started.elapsed() > state.budget => {
            tracing::warn!(uid = %uid, budget_ms = state.budget.as_millis() as u64, "decision over budget; admitting unchanged");
            (
                fail_open(&uid, "decision took longer than its time budget"),
                Outcome::Error,
                false,
            )
        }
        Ok(a) => {
            let explored = a.decision.as_ref().is_some_and(|d| d.explored);
            (a.response, a.outcome, explored)
        }
        Err(_) => {
            tracing::error!(uid = %uid, "admission panicked; admitting unchanged");
            (fail_open(&uid, "internal error"), Outcome::Error, false)
        }
    };
    state
        .metrics
        .observe(outcome, started.elapsed().as_secs_f64(), explored);
    warp::reply::json(&envelope(&review.api_version, &review.kind, response)).into_response()
}

fn fail_open(uid: &str, why: &str) -> AdmissionResponse {
    AdmissionResponse {
        uid: uid.to_string(),
        allowed: true,
        patch_type: None,
        patch: None,
        warnings: vec![format!("inframind: admitted unchanged: {why}")],
    }
}

/// The routes.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let with_state = {
        let s = state.clone();
        warp::any().map(move || s.clone())
    };
    // Path before method, so an unknown path is a 404 and a known one with the wrong method a 405.
    let mutate = warp::path("mutate")
        .and(warp::path::end())
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            |state: Arc<AppState>, declared: Option<u64>, body| async move {
                match read_capped(declared, Box::pin(body), state.max_body).await {
                    Ok(bytes) => mutate(state, bytes).await,
                    Err(resp) => {
                        state.metrics.bad_request();
                        resp
                    }
                }
            },
        );
    let healthz = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| warp::reply::with_status("ok", StatusCode::OK).into_response());
    let readyz = warp::path("readyz")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state.clone())
        .map(|s: Arc<AppState>| {
            if s.ready.load(Ordering::Acquire) {
                warp::reply::with_status("ready", StatusCode::OK).into_response()
            } else {
                warp::reply::with_status("loading", StatusCode::SERVICE_UNAVAILABLE).into_response()
            }
        });
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state)
        .map(|s: Arc<AppState>| {
            let cache = s.settings.recommender.cache.as_ref().map(|c| c.counts());
            let text = s.metrics.render(&s.live, s.certs.reloads(), cache);
            warp::reply::with_header(text, "content-type", super::metrics::CONTENT_TYPE)
                .into_response()
        });
    mutate
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .recover(|rej: warp::Rejection| async move {
            let (status, reason) = if rej.is_not_found() {
                (StatusCode::NOT_FOUND, "no such endpoint".to_string())
            } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed".to_string(),
                )
            } else if let Some(e) = rej.find::<warp::reject::InvalidHeader>() {
                (StatusCode::BAD_REQUEST, e.to_string())
            } else {
                (StatusCode::BAD_REQUEST, format!("{rej:?}"))
            };
            Ok::<_, std::convert::Infallible>(json_error(status, &reason))
        })
        .unify()
}

/// Binds `addr` and serves the webhook over TLS in the background; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    state: Arc<AppState>,
) -> crate::Result<crate::serving::Server> {
    let tls = state.certs.server_config()?;
    crate::serving::spawn(addr, Some(tls), routes(state)).await
}
