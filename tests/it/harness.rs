//! Shared test harness: real servers, unique schemas and key prefixes per test.

use inframind::telemetry::Store;

/// The PostgreSQL URL the tests use.
pub fn pg_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The Redis URL the tests use.
#[allow(dead_code)]
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A unique lowercase name for this test's schema or key prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A PostgreSQL URL whose connections use a fresh, empty schema of their own.
pub async fn pg_schema_url() -> String {
    use sqlx::Connection;
    let url = pg_url();
    let schema = unique("im_test");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is unreachable at {url}: {e}. Start it (see README) or set DATABASE_URL."
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("creating a test schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// A store on a fresh PostgreSQL schema.
pub async fn pg_store() -> Store {
    let url = pg_schema_url().await;
    Store::connect(&url)
        .await
        .expect("connecting the PostgreSQL store")
}

/// A store on a fresh SQLite file (kept alive by the returned tempdir).
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (
        Store::connect(&url)
            .await
            .expect("connecting the SQLite store"),
        dir,
    )
}

/// Both stores, so each store test runs against both backends.
pub async fn both_stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let (s, d) = sqlite_store().await;
    vec![(pg_store().await, None), (s, Some(d))]
}

/// A small model trained on simulated builds, saved in `dir` under `version`.
pub fn small_model(
    dir: &inframind::model::ModelDir,
    version: &str,
    seed: u64,
) -> (inframind::model::Model, inframind::model::ModelMeta) {
    use inframind::forest::ForestParams;
    use inframind::training::{fit, TrainingSpec};
    let now = chrono::Utc::now();
    let runs: Vec<_> = inframind::simulate::demo_runs(400, now, seed)
        .into_iter()
        .filter(|r| r.success)
        .collect();
    let spec = TrainingSpec {
        params: ForestParams {
            n_trees: 8,
            max_depth: Some(6),
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let (model, mut meta) =
        fit(&[], &runs, &spec, version, now, &mut |_| {}).expect("training a small model");
    dir.save(&model, &mut meta).expect("saving a small model");
    (model, meta)
}

/// A Redis connection for poking at keys directly.
#[allow(dead_code)]
pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("Redis URL");
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is unreachable at {url}: {e}. Start it (see README) or set REDIS_URL.")
        })
}

/// A webhook server running in this process over real HTTPS.
#[allow(dead_code)]
pub struct TestWebhook {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its state (live model, stats cache, metrics).
    pub state: std::sync::Arc<inframind::webhook::AppState>,
    /// A client TLS config trusting its CA.
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    handle: inframind::serving::Server,
}

impl Drop for TestWebhook {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[allow(dead_code)]
impl TestWebhook {
    /// Starts a webhook with `settings`, serving `live` and `stats`, on a free port.
    pub async fn start(
        settings: inframind::admission::Settings,
        live: std::sync::Arc<inframind::registry::LiveModel>,
        stats: std::sync::Arc<inframind::webhook::stats_cache::StatsCache>,
    ) -> TestWebhook {
        use inframind::serving::tls;
        use inframind::webhook::server;
        let generated =
            tls::self_signed(&["localhost".to_string()]).expect("self-signed certificate");
        let certs = tls::CertStore::new(&generated.serving).expect("certificate store");
        let state = std::sync::Arc::new(inframind::webhook::AppState {
            settings,
            live,
            stats,
            metrics: inframind::webhook::metrics::Metrics::new(),
            ready: std::sync::atomic::AtomicBool::new(true),
            budget: std::time::Duration::from_millis(500),
            max_body: 256 * 1024,
            certs,
        });
        let handle = server::spawn("127.0.0.1:0".parse().unwrap(), state.clone())
            .await
            .expect("webhook listening");
        let addr = handle.addr();
        let tls = inframind::client::tls_config(&generated.ca_cert).unwrap();
        TestWebhook {
            addr,
            state,
            tls,
            handle,
        }
    }

    /// A fresh client (its own pool, so its first request makes a new TLS connection) for
    /// this webhook, trusting its CA.
    pub fn connect(&self) -> Site {
        Site {
            client: inframind::client::Client::with_tls(self.tls.clone()),
            base: format!("https://localhost:{}", self.addr.port()),
        }
    }

    /// Admits `pod` (a Pod CREATE) and returns the response and the pod with the patch applied.
    pub async fn admit(
        &self,
        uid: &str,
        pod: &serde_json::Value,
    ) -> (serde_json::Value, serde_json::Value) {
        let (status, resp) = self
            .review(&admission_review(
                uid,
                "CREATE",
                ("", "v1", "Pod"),
                pod.clone(),
            ))
            .await;
        assert_eq!(status, 200, "{resp}");
        let out = apply_response(pod, &resp);
        (resp, out)
    }

    /// Posts an AdmissionReview and returns (status, parsed JSON body).
    pub async fn review(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, bytes) = self
            .connect()
            .send("POST", "/mutate", &[], serde_json::to_vec(body).unwrap())
            .await
            .expect("request");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// A keep-alive client bound to one server's base URL, as the tests address it.
#[allow(dead_code)]
pub struct Site {
    /// The client (pooled, keep-alive).
    pub client: inframind::client::Client,
    /// `scheme://host:port`, without a trailing slash.
    pub base: String,
}

#[allow(dead_code)]
impl Site {
    /// A client for a plain-HTTP server at `addr`.
    pub fn plain(addr: std::net::SocketAddr) -> Site {
        Site {
            client: inframind::client::Client::plain(),
            base: format!("http://{addr}"),
        }
    }

    /// Sends `method path` and returns the status and the whole body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, bytes::Bytes), inframind::client::ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.client.request(method, &url, headers, body).await?;
        Ok((r.status.as_u16(), r.body))
    }
}

/// An AdmissionReview v1 around `object`.
#[allow(dead_code)]
pub fn admission_review(
    uid: &str,
    operation: &str,
    kind: (&str, &str, &str),
    object: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
            "resource": {"group": kind.0, "version": kind.1, "resource": format!("{}s", kind.2.to_lowercase())},
            "requestKind": {"group": kind.0, "version": kind.1, "kind": kind.2},
            "namespace": "ci",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:ci:runner", "groups": ["system:serviceaccounts"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// Applies the base64 JSON patch of an admission response to `object`.
#[allow(dead_code)]
pub fn apply_response(
    object: &serde_json::Value,
    response: &serde_json::Value,
) -> serde_json::Value {
    use base64::Engine;
    let mut out = object.clone();
    if let Some(p) = response["response"]["patch"].as_str() {
        assert_eq!(response["response"]["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("base64 patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        json_patch::patch(&mut out, &patch).expect("the patch applies to the submitted object");
    }
    out
}

/// A TCP proxy that can be cut and restored on the same port: a real network outage of the
/// service behind it, without touching the shared server.
#[allow(dead_code)]
pub struct TcpProxy {
    /// The proxy's address.
    pub addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

#[allow(dead_code)]
impl TcpProxy {
    /// Proxies a fresh local port to `target`.
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        TcpProxy {
            addr,
            target,
            task: Some(Self::serve(listener, target)),
        }
    }

    fn serve(
        listener: tokio::net::TcpListener,
        target: std::net::SocketAddr,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        })
    }

    /// Cuts every connection and stops listening.
    pub fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebinding the proxy port");
        self.task = Some(Self::serve(listener, self.target));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Where `host:port` sits in a database URL.
fn host_span(url: &str) -> (usize, usize) {
    let start = url
        .find('@')
        .map(|i| i + 1)
        .or_else(|| url.find("://").map(|i| i + 3))
        .expect("a URL with a host");
    let end = url[start..]
        .find('/')
        .map(|i| start + i)
        .unwrap_or(url.len());
    (start, end)
}

/// `url` with its `host:port` replaced by `addr`.
#[allow(dead_code)]
pub fn with_host(url: &str, addr: std::net::SocketAddr) -> String {
    let (start, end) = host_span(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

/// The PostgreSQL server's socket address, from the test URL.
#[allow(dead_code)]
pub fn pg_addr() -> std::net::SocketAddr {
    let url = pg_url();
    let (start, end) = host_span(&url);
    let hostport = &url[start..end];
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .expect("resolving the PostgreSQL address")
        .next()
        .unwrap()
}
