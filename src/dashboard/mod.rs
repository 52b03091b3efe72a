//! The read-only dashboard `inframind api` serves at `/`: overview, a page per pipeline, models.
//!
//! Behind the API's tokens: `/login` takes the ingest or admin token and sets an HttpOnly,
//! SameSite=Strict cookie holding a digest of it (the token itself never sits in the browser;
//! the digest opens only these read-only pages, not the API). A bearer header works too.
//! Pages are server-rendered HTML with inline SVG; the Content-Security-Policy allows no script
//! and no other origin, so nothing is fetched from a CDN (it works air-gapped).

pub mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};
use warp::http::{header, StatusCode};
use warp::{Filter, Reply};

use crate::api::ApiState;
use crate::partial_dependence::{curve, default_values, Knob};
use crate::savings::{compare, report, SavingsConfig};

/// The session cookie's name.
pub const COOKIE: &str = "inframind_session";
/// The period the pages cover unless `?since=` says otherwise.
pub const DEFAULT_PERIOD: &str = "7d";
/// What the pages may load: their own inline styles and nothing else.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The cookie value for a token: a digest, so the browser never holds the token itself.
pub fn session_value(token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("inframind-dashboard\0{token}").as_bytes(),
    ))
}

fn cookie_value<'a>(cookies: &'a str, name: &str) -> Option<&'a str> {
    cookies.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Whether the request carries a valid session cookie or bearer token.
fn signed_in(state: &ApiState, cookie: Option<&str>, bearer: Option<&str>) -> bool {
    let tokens = || {
        std::iter::once(&state.ingest)
            .chain(state.admin.as_ref())
            .map(|t| t.current_token())
            .filter(|t| !t.is_empty())
    };
    if let Some(b) = bearer.and_then(|h| h.strip_prefix("Bearer ")) {
        if state.ingest.matches(b.trim())
            || state.admin.as_ref().is_some_and(|a| a.matches(b.trim()))
        {
            return true;
        }
    }
    let Some(presented) = cookie.and_then(|c| cookie_value(c, COOKIE)) else {
        return false;
    };
    tokens().any(|t| {
        let want = session_value(&t);
        want.len() == presented.len()
            && want
                .bytes()
                .zip(presented.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

fn html(body: String) -> warp::reply::Response {
    let r = warp::reply::html(body);
    let r = warp::reply::with_header(r, "content-security-policy", CSP);
    let r = warp::reply::with_header(r, "x-content-type-options", "nosniff");
    warp::reply::with_header(r, header::CACHE_CONTROL, "no-store").into_response()
}

fn redirect(to: &str, cookie: Option<String>) -> warp::reply::Response {
    let mut r = warp::reply::with_status(warp::reply(), StatusCode::SEE_OTHER).into_response();
    if let Ok(v) = to.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| c.parse().ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn page_error(status: StatusCode, what: &str) -> warp::reply::Response {
    let mut r = html(pages::layout(
        "Unavailable",
        &[],
        &format!(
            "<section><p class=\"warn\">{}</p></section>",
            pages::esc(what)
        ),
    ));
    *r.status_mut() = status;
    r
}

async fn runs_for(
    state: &ApiState,
    pipeline: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<(Vec<crate::record::RunRecord>, chrono::DateTime<Utc>), warp::reply::Response> {
    let period =
        crate::savings::parse_period(query.get("since").map_or(DEFAULT_PERIOD, String::as_str))
            .map_err(|e| page_error(StatusCode::BAD_REQUEST, &format!("since: {e}")))?;
    let since = Utc::now() - period;
    let runs = state.runs_since(pipeline, since).await.map_err(|_| {
        page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The telemetry store is unavailable; try again shortly.",
        )
    })?;
    Ok((runs, since))
}

fn pipelines_of(runs: &[crate::record::RunRecord]) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.pipeline.as_str()).collect();
    set.into_iter().map(str::to_string).collect()
}

fn active_meta(state: &ApiState) -> Option<crate::model::ModelMeta> {
    let version = state.live.version()?;
    state.models_dir.as_ref()?.meta(&version).ok()
}

async fn overview(state: Arc<ApiState>, query: HashMap<String, String>) -> warp::reply::Response {
    let (runs, since) = match runs_for(&state, None, &query).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let cfg = SavingsConfig {
        prices: state.prices,
        ..Default::default()
    };
    let r = report(&runs, since, &cfg);
    let cache = crate::cache_advice::analyse(&runs, since);
    html(pages::overview(
        &r,
        &runs,
        active_meta(&state).as_ref(),
        &cache.advice,
        &pipelines_of(&runs),
    ))
}

async fn pipeline(
    state: Arc<ApiState>,
    name: String,
    query: HashMap<String, String>,
) -> warp::reply::Response {
    let (all, _) = match runs_for(&state, None, &query).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let runs: Vec<_> = all.iter().filter(|r| r.pipeline == name).cloned().collect();
    if runs.is_empty() {
        return page_error(
            StatusCode::NOT_FOUND,
            &format!("No builds of pipeline {name} in this period."),
        );
    }
    let refs: Vec<&_> = runs.iter().collect();
    let cfg = SavingsConfig {
        prices: state.prices,
        ..Default::default()
    };
    let comparison = compare(&name, &refs, &cfg);
    let now = Utc::now();
    let model = state.live.get();
    let last = runs.iter().rev().find(|r| r.success);
    let curves = match (model.as_deref(), last) {
        (Some(m), Some(last)) if m.encodings.knows_pipeline(&name) => {
            let ctx = crate::BuildContext {
                pipeline: name.clone(),
                branch: last.branch.clone(),
                image: last.image.clone(),
                node: last.node.clone(),
            };
            let base = last.config();
            [Knob::Concurrency, Knob::Cpu]
                .into_iter()
                .map(|k| curve(m, &runs, &ctx, base, k, &default_values(k, &base), now))
                .collect()
        }
        _ => Vec::new(),
    };
    let cache = crate::cache_advice::analyse_pipeline(&name, &refs);
    let last: Vec<&str> = runs
        .iter()
        .rev()
        .take(pages::LAST_DECISIONS)
        .map(|r| r.run_id.as_str())
        .collect();
    let notes = state.notes(&last).await;
    let view = pages::PipelineView {
        name: &name,
        comparison: &comparison,
        runs: &runs,
        curves: &curves,
        cache: &cache,
        notes: &notes,
    };
    html(pages::pipeline(&view, &pipelines_of(&all), now))
}

async fn models(state: Arc<ApiState>) -> warp::reply::Response {
    let list = state
        .models_dir
        .as_ref()
        .and_then(|d| d.list().ok())
        .unwrap_or_default();
    let since = Utc::now() - chrono::Duration::days(7);
    let pipelines = state
        .runs_since(None, since)
        .await
        .map(|r| pipelines_of(&r))
        .unwrap_or_default();
    let history = history(&state).await;
    html(pages::models(
        &list,
        state.live.version().as_deref(),
        &history,
        &pipelines,
    ))
}

async fn training_jobs(state: Arc<ApiState>) -> warp::reply::Response {
    let view = match &state.training {
        crate::api::Training::InProcess(_) => pages::TrainingJobsView::InProcess,
        crate::api::Training::Kubernetes { client, namespace } => {
            let api: kube::Api<crate::controller::TrainingJob> =
                kube::Api::namespaced(client.clone(), namespace);
            match tokio::time::timeout(
                std::time::Duration::from_secs(3),
                api.list(&Default::default()),
            )
            .await
            {
                Ok(Ok(list)) => pages::TrainingJobsView::Listed {
                    namespace: namespace.clone(),
                    jobs: list.items,
                },
                Ok(Err(e)) => pages::TrainingJobsView::Unavailable(e.to_string()),
                Err(_) => pages::TrainingJobsView::Unavailable(
                    "the Kubernetes API did not answer in time".into(),
                ),
            }
        }
    };
    let since = Utc::now() - chrono::Duration::days(7);
    let pipelines = state
        .runs_since(None, since)
        .await
        .map(|r| pipelines_of(&r))
        .unwrap_or_default();
    html(pages::training_jobs(&view, &pipelines))
}

/// Promotions and rollbacks, or why they cannot be shown.
async fn history(state: &ApiState) -> Result<Vec<crate::registry::PointerMove>, String> {
    let Some(dir) = state.models_dir.clone() else {
        return Ok(Vec::new());
    };
    let redis = state.redis.as_ref();
    let open = crate::registry::Registry::open(
        dir,
        redis.map(|(u, _)| u.as_str()),
        redis.map_or(crate::registry::DEFAULT_PREFIX, |(_, p)| p.as_str()),
    );
    match tokio::time::timeout(std::time::Duration::from_secs(2), async {
        open.await?.history().await
    })
    .await
    {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the registry did not answer in time".into()),
    }
}

/// The dashboard's routes (`/`, `/pipelines/{name}`, `/models`, `/login`, `/logout`).
pub fn routes(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let with_state = warp::any().map(move || state.clone());
    // Signed in, or sent to the login form.
    let gate = with_state
        .clone()
        .and(warp::header::optional::<String>("cookie"))
        .and(warp::header::optional::<String>("authorization"))
        .and_then(
            |s: Arc<ApiState>, c: Option<String>, a: Option<String>| async move {
                if signed_in(&s, c.as_deref(), a.as_deref()) {
                    Ok(s)
                } else {
                    Err(warp::reject::custom(NotSignedIn))
                }
            },
        );
    let query = warp::query::<HashMap<String, String>>();
    let index = warp::path::end()
        .and(warp::get())
        .and(gate.clone())
        .and(query)
        .then(overview);
    let pipeline_page = warp::path("pipelines")
        .and(warp::path::tail())
        .and(warp::get())
        .and(gate.clone())
        .and(query)
        .then(|tail: warp::path::Tail, s, q| async move {
            let name = crate::api::percent_decode(tail.as_str());
            pipeline(s, name, q).await
        });
    let models_page = warp::path!("models")
        .and(warp::get())
        .and(gate.clone())
        .then(models);
    let training_jobs_page = warp::path!("trainingjobs")
        .and(warp::get())
        .and(gate)
        .then(training_jobs);
    let login_form = warp::path!("login")
        .and(warp::get())
        .map(|| html(pages::login(None)));
    let login = warp::path!("login")
        .and(warp::post())
        .and(with_state)
        .and(warp::body::content_length_limit(4096))
        .and(warp::body::form::<HashMap<String, String>>())
        .map(|s: Arc<ApiState>, form: HashMap<String, String>| {
            let token = form.get("token").map_or("", |t| t.trim());
            let ok = !token.is_empty()
                && (s.ingest.matches(token) || s.admin.as_ref().is_some_and(|a| a.matches(token)));
            if ok {
                redirect(
                    "/",
                    Some(format!(
                        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200",
                        session_value(token)
                    )),
                )
            } else {
                let mut r = html(pages::login(Some("That token is not valid here.")));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r
            }
        });
    let logout = warp::path!("logout").and(warp::get()).map(|| {
        redirect(
            "/login",
            Some(format!(
                "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            )),
        )
    });
    index
        .or(pipeline_page)
        .unify()
        .or(models_page)
        .unify()
        .or(training_jobs_page)
        .unify()
        .or(login_form)
        .unify()
        .or(login)
        .unify()
        .or(logout)
        .unify()
}

/// A dashboard page asked for without a session: answered with a redirect to the login form.
#[derive(Debug)]
pub struct NotSignedIn;
impl warp::reject::Reject for NotSignedIn {}

/// The answer to [`NotSignedIn`].
pub fn to_login() -> warp::reply::Response {
    redirect("/login", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_and_hold_a_digest() {
        assert_eq!(
            cookie_value("a=1; inframind_session=abc; b=2", COOKIE),
            Some("abc")
        );
        assert_eq!(cookie_value("a=1", COOKIE), None);
        let v = session_value("secret");
        assert_eq!(v.len(), 64);
        assert!(!v.contains("secret"));
        assert_ne!(v, session_value("secret2"));
    }
}
