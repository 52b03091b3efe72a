//! The InfraMind ingest API as the reporter uses it: one `POST <endpoint>/v1/runs` with a bearer
//! token, over HTTP or HTTPS, retried on 502/503/504 and connection failures within a deadline
//! (honouring `Retry-After`). Posting twice is harmless: the run's `run_id` makes it idempotent.
//! Sent through the crate's one HTTP client, [`crate::client::Client`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::time::Instant;

use crate::client::{Client, ClientError};

/// Where runs are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    runs: http::Uri,
}

impl Endpoint {
    /// The URL posted to: `<endpoint>/v1/runs`.
    pub fn runs_url(&self) -> String {
        self.runs.to_string()
    }

    /// Whether the endpoint speaks TLS.
    pub fn https(&self) -> bool {
        self.runs.scheme() == Some(&http::uri::Scheme::HTTPS)
    }
}

/// Parses `http://host[:port][/prefix]` or `https://…`.
pub fn parse_endpoint(raw: &str) -> Result<Endpoint, String> {
    let raw = raw.trim();
    let base = crate::client::parse_url(raw).map_err(|e| format!("endpoint {e}"))?;
    let mut parts = base.into_parts();
    let prefix = parts
        .path_and_query
        .as_ref()
        .map_or("", |p| p.path())
        .trim_end_matches('/');
    let runs = format!("{prefix}/v1/runs");
    parts.path_and_query = Some(
        runs.parse()
            .map_err(|e| format!("endpoint `{raw}`: the path {runs} is invalid ({e})"))?,
    );
    let runs =
        http::Uri::from_parts(parts).map_err(|e| format!("endpoint `{raw}` is not a URL ({e})"))?;
    Ok(Endpoint { runs })
}

/// One rejected row as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rejection {
    /// Index of the row in the request.
    #[serde(default)]
    pub row: u64,
    /// The field at fault.
    #[serde(default)]
    pub field: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// The answer to `POST /v1/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IngestResponse {
    /// Rows stored.
    pub accepted: u64,
    /// Rows refused, with field and reason.
    #[serde(default)]
    pub rejected: Vec<Rejection>,
    /// Rows already stored (same `run_id`).
    #[serde(default)]
    pub duplicates: u64,
}

/// What became of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now.
    Accepted,
    /// Already stored under the same `run_id` (a retry that had reached the API, or the pod
    /// watcher's row merged with this one).
    Duplicate,
}

/// One HTTP exchange's result.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The body (capped).
    pub body: Bytes,
}

/// The body, shortened and on one line, for messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        one_line = one_line.chars().take(200).collect::<String>() + "…";
    }
    if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

fn rejections(rejected: &[Rejection]) -> String {
    rejected
        .iter()
        .map(|r| format!("field `{}`: {}", r.field, r.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Judges a final (not retried) response.
pub fn interpret(status: u16, body: &[u8]) -> Result<Recorded, String> {
    let parsed = serde_json::from_slice::<IngestResponse>(body).ok();
    if let Some(r) = parsed.as_ref().filter(|r| !r.rejected.is_empty()) {
        return Err(format!(
            "the API rejected the run (HTTP {status}): {}",
            rejections(&r.rejected)
        ));
    }
    match status {
        200..=299 => match parsed {
            Some(r) if r.accepted > 0 => Ok(Recorded::Accepted),
            Some(r) if r.duplicates > 0 => Ok(Recorded::Duplicate),
            Some(_) => Err(format!(
                "the API stored nothing and reported no duplicate (HTTP {status}): {}",
                excerpt(body)
            )),
            None => Err(format!(
                "the API's answer (HTTP {status}) is not an ingest result: {}",
                excerpt(body)
            )),
        },
        401 | 403 => Err(format!(
            "the API refused the bearer token (HTTP {status}: {}); check --token-file \
             (INFRAMIND_TOKEN_FILE)",
            reason(body)
        )),
        _ => Err(format!("the API answered HTTP {status}: {}", reason(body))),
    }
}

/// The `error` of a JSON error body, else the body itself.
fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(excerpt_str))
        .unwrap_or_else(|| excerpt(body))
}

fn excerpt_str(s: &str) -> String {
    excerpt(s.as_bytes())
}

/// Seconds (or an HTTP date) in a `Retry-After` header, from `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Why an exchange got no response, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// A connection or DNS problem that may pass; not a certificate or configuration problem.
    pub transient: bool,
}

fn transient(message: String) -> Failure {
    Failure {
        message,
        transient: true,
    }
}

fn permanent(message: String) -> Failure {
    Failure {
        message,
        transient: false,
    }
}

/// Wait before retrying when the answer says nothing.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Attempts in all: the first and two retries.
const MAX_ATTEMPTS: u32 = 3;

/// Whether an attempt's outcome is worth retrying, and after how long.
pub fn retry_delay(outcome: &Result<Response, Failure>, now: DateTime<Utc>) -> Option<Duration> {
    match outcome {
        Err(f) if f.transient => Some(DEFAULT_RETRY_DELAY),
        Err(_) => None,
        Ok(r) if matches!(r.status, 502..=504) => Some(
            r.retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now))
                .unwrap_or(DEFAULT_RETRY_DELAY),
        ),
        Ok(_) => None,
    }
}

/// The most of a response body that is read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Everything needed to post.
#[derive(Debug, Clone)]
pub struct Poster {
    /// Where.
    pub endpoint: Endpoint,
    /// The bearer token, if any.
    pub token: Option<String>,
    client: Client,
}

impl Poster {
    /// A poster to `endpoint`, trusting the roots of `tls` when it is https://.
    pub fn new(
        endpoint: Endpoint,
        tls: Option<Arc<rustls::ClientConfig>>,
        token: Option<String>,
    ) -> Poster {
        let builder = Client::builder()
            .max_response_bytes(MAX_RESPONSE_BYTES)
            .user_agent(concat!("inframind-reporter/", env!("CARGO_PKG_VERSION")));
        let client = match tls {
            Some(tls) => builder.tls(tls),
            None => builder,
        }
        .build();
        Poster {
            endpoint,
            token,
            client,
        }
    }

    /// Posts `body` (a JSON run) until it is recorded, refused, or `deadline` would pass.
    pub async fn post(&self, body: Vec<u8>, deadline: Instant) -> Result<Recorded, String> {
        let url = self.endpoint.runs_url();
        let body = Bytes::from(body);
        let mut attempt = 1;
        loop {
            let outcome = match tokio::time::timeout_at(deadline, self.exchange(body.clone())).await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(permanent("no answer within --timeout-seconds".to_string())),
            };
            let failure = match &outcome {
                Ok(r) => format!("HTTP {} ({})", r.status, excerpt(&r.body)),
                Err(f) => f.message.clone(),
            };
            let Some(delay) = retry_delay(&outcome, Utc::now()) else {
                let r = outcome.map_err(|f| format!("posting to {url}: {}", f.message))?;
                if r.status == 401 && self.token.is_none() {
                    return Err(format!(
                        "the API at {url} requires a bearer token (HTTP 401): pass --token-file \
                         (INFRAMIND_TOKEN_FILE)"
                    ));
                }
                return interpret(r.status, &r.body);
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if attempt >= MAX_ATTEMPTS {
                return Err(format!(
                    "posting to {url} failed {attempt} times; last: {failure}"
                ));
            }
            if delay >= remaining {
                return Err(format!(
                    "posting to {url}: {failure}; retrying in {}s would pass the {}s left of --timeout-seconds",
                    delay.as_secs_f64(),
                    (remaining.as_millis() as f64 / 1000.0)
                ));
            }
            tracing::debug!(%url, attempt, %failure, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One request (on a pooled connection when one is open).
    async fn exchange(&self, body: Bytes) -> Result<Response, Failure> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("accept", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        let r = self
            .client
            .request("POST", &self.endpoint.runs_url(), &headers, body)
            .await
            .map_err(failure)?;
        let retry_after = r
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Response {
            status: r.status.as_u16(),
            retry_after,
            body: r.body,
        })
    }
}

/// Whether trying again could help: a connection, DNS or transfer problem may pass; a
/// certificate, a URL or a configuration problem won't.
fn failure(e: ClientError) -> Failure {
    let message = e.to_string();
    match e {
        ClientError::Connect { .. } | ClientError::Send { .. } | ClientError::Body { .. } => {
            transient(message)
        }
        _ => permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn endpoints() {
        let e = parse_endpoint("https://inframind.example:8443/api/").unwrap();
        assert!(e.https());
        assert_eq!(e.runs_url(), "https://inframind.example:8443/api/v1/runs");
        let e = parse_endpoint(" http://inframind-api.inframind.svc ").unwrap();
        assert!(!e.https());
        assert_eq!(e.runs_url(), "http://inframind-api.inframind.svc/v1/runs");
        let e = parse_endpoint("http://[::1]:8080").unwrap();
        assert_eq!(e.runs_url(), "http://[::1]:8080/v1/runs");
        let e = parse_endpoint("http://10.0.0.7:8080/x?debug=1").unwrap();
        assert_eq!(e.runs_url(), "http://10.0.0.7:8080/x/v1/runs");
        let err = parse_endpoint("inframind:8080").unwrap_err();
        assert!(err.contains("use http:// or https://"), "{err}");
        assert!(err.starts_with("endpoint `inframind:8080`"), "{err}");
        let err = parse_endpoint("ftp://x").unwrap_err();
        assert!(err.contains("`ftp://x` has an unsupported scheme"), "{err}");
        assert!(parse_endpoint("http://").is_err());
    }

    #[test]
    fn responses() {
        let ok = br#"{"accepted":1,"rejected":[],"duplicates":0}"#;
        assert_eq!(interpret(200, ok), Ok(Recorded::Accepted));
        let dup = br#"{"accepted":0,"rejected":[],"duplicates":1}"#;
        assert_eq!(interpret(200, dup), Ok(Recorded::Duplicate));
        let rej = br#"{"accepted":0,"rejected":[{"row":0,"field":"cpu_req","reason":"must be greater than 0"}],"duplicates":0}"#;
        assert_eq!(
            interpret(200, rej),
            Err(
                "the API rejected the run (HTTP 200): field `cpu_req`: must be greater than 0"
                    .into()
            )
        );
        assert_eq!(
            interpret(422, rej).unwrap_err(),
            "the API rejected the run (HTTP 422): field `cpu_req`: must be greater than 0"
        );
        assert_eq!(
            interpret(401, br#"{"error":"invalid bearer token"}"#).unwrap_err(),
            "the API refused the bearer token (HTTP 401: invalid bearer token); check \
             --token-file (INFRAMIND_TOKEN_FILE)"
        );
        assert!(interpret(403, b"forbidden\n")
            .unwrap_err()
            .contains("(HTTP 403: forbidden)"));
        assert_eq!(
            interpret(400, br#"{"error":"malformed JSON at line 1"}"#).unwrap_err(),
            "the API answered HTTP 400: malformed JSON at line 1"
        );
        assert!(interpret(200, b"<html>hello</html>")
            .unwrap_err()
            .contains("not an ingest result: <html>hello</html>"));
        assert!(interpret(200, br#"{"accepted":0}"#)
            .unwrap_err()
            .contains("stored nothing"));
        let long = vec![b'x'; 1000];
        let e = interpret(500, &long).unwrap_err();
        assert!(e.len() < 260 && e.ends_with('…'), "{e}");
    }

    #[test]
    fn retries() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap();
        let resp = |status, retry_after: Option<&str>| {
            Ok(Response {
                status,
                retry_after: retry_after.map(str::to_string),
                body: Bytes::new(),
            })
        };
        assert_eq!(
            retry_delay(&resp(503, Some("2")), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_delay(&resp(503, Some("Fri, 27 Nov 2026 08:00:05 GMT")), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_delay(&resp(503, Some("Fri, 27 Nov 2026 07:00:00 GMT")), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_delay(&resp(502, None), now),
            Some(DEFAULT_RETRY_DELAY)
        );
        assert_eq!(
            retry_delay(&resp(503, Some("soon")), now),
            Some(DEFAULT_RETRY_DELAY)
        );
        assert_eq!(
            retry_delay(&Err(transient("refused".into())), now),
            Some(DEFAULT_RETRY_DELAY)
        );
        assert_eq!(
            retry_delay(&Err(permanent("bad certificate".into())), now),
            None
        );
        for status in [200, 400, 401, 413, 500] {
            assert_eq!(retry_delay(&resp(status, Some("1")), now), None, "{status}");
        }
    }
}
