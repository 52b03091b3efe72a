//! The one HTTP(S) client of InfraMind: hyper-util's pooled client over hyper-rustls, used by
//! the reporter, the integration tests and the load benchmark. URLs are parsed by `http::Uri`,
//! names resolved by the connector's resolver; connections are kept alive and reused.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Why a client could not be configured or a request got no complete response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA PEM text could not be parsed.
    #[error("CA PEM is invalid: {0}")]
    CaPem(#[source] rustls::pki_types::pem::Error),
    /// A CA certificate was refused as a trust anchor.
    #[error("CA certificate unusable: {0}")]
    CaCert(#[source] rustls::Error),
    /// rustls refused the protocol configuration.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[source] rustls::Error),
    /// The URL does not parse.
    #[error("`{url}` is not a URL: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// The parser's complaint.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The URL parses but cannot be requested (no scheme, another scheme, no host).
    #[error("`{url}` {why}; use http:// or https://")]
    UnsupportedUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An https:// URL on a client built without trusted roots.
    #[error("{url} is https:// but this client trusts no CA")]
    NoTrust {
        /// The URL.
        url: String,
    },
    /// The method or a header is not valid HTTP.
    #[error("building the {method} request to {url}: {source}")]
    Build {
        /// The method as given.
        method: String,
        /// The URL.
        url: String,
        /// What http refused.
        #[source]
        source: http::Error,
    },
    /// The TLS handshake failed: the certificate or the protocol, which trying again won't fix.
    #[error("TLS handshake with {host}: {source}")]
    Tls {
        /// The server name verified.
        host: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// Resolving the host or opening the TCP connection failed.
    #[error("connecting to {authority}: {}", causes(.source))]
    Connect {
        /// `host:port` of the URL.
        authority: String,
        /// The client's error, with the resolver's or the socket's cause.
        #[source]
        source: Box<hyper_util::client::legacy::Error>,
    },
    /// The request could not be sent or the connection broke before the response head.
    #[error("{method} {url}: {}", causes(.source))]
    Send {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The client's error.
        #[source]
        source: Box<hyper_util::client::legacy::Error>,
    },
    /// The response body could not be read whole (broken connection, or over the size cap).
    #[error("reading the response to {method} {url}: {source}")]
    Body {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// hyper's error or the length limit's.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// No complete response within the client's per-request timeout.
    #[error("{method} {url}: no complete response within {}s", .timeout.as_secs_f64())]
    Timeout {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The timeout that passed.
        timeout: Duration,
    },
}

/// The messages below `e`, joined: the client's own error says only "client error (Connect)".
fn causes(e: &hyper_util::client::legacy::Error) -> String {
    let mut parts = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        parts.push(cause.to_string());
        next = cause.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// The rustls error somewhere below `e`. tokio-rustls and hyper-rustls wrap it in `io::Error`s,
/// whose `source()` skips the wrapped error, so those are opened with `get_ref`.
fn rustls_cause<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(tls) = rustls_cause(inner) {
            return Some(tls);
        }
    }
    e.source().and_then(rustls_cause)
}

/// A TLS client config trusting exactly the CA certificates in `ca_pem`.
pub fn tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(ClientError::CaPem)?)
            .map_err(ClientError::CaCert)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(ClientError::TlsConfig)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The response headers (the reporter reads `Retry-After`).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// Settings for a [`Client`].
#[derive(Debug, Clone)]
pub struct Builder {
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Duration,
    max_response_bytes: usize,
    user_agent: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            tls: None,
            timeout: None,
            connect_timeout: None,
            pool_idle_timeout: Duration::from_secs(90),
            max_response_bytes: 16 << 20,
            user_agent: None,
        }
    }
}

impl Builder {
    /// Trusts the roots of `tls` for https:// URLs (without it only http:// is served).
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Gives up on a request that has no complete response (body included) after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Gives up on resolving and connecting after `timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Closes pooled connections idle for longer than `idle`.
    pub fn pool_idle_timeout(mut self, idle: Duration) -> Self {
        self.pool_idle_timeout = idle;
        self
    }

    /// Refuses response bodies longer than `bytes`.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Sends `agent` as the `User-Agent` of every request.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// The client, with an empty pool.
    pub fn build(self) -> Client {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        let trusted = self.tls.is_some();
        // Without roots, https:// is refused before connecting; the empty config only fills
        // the connector's slot.
        let tls = self.tls.unwrap_or_else(|| {
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
        });
        let connector = HttpsConnector::from((http, tls));
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .build(connector);
        Client {
            inner,
            trusted,
            timeout: self.timeout,
            max_response_bytes: self.max_response_bytes,
            user_agent: self.user_agent,
        }
    }
}

/// A pooled keep-alive HTTP/1.1 client over plain TCP or TLS. Clones share the pool.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    trusted: bool,
    timeout: Option<Duration>,
    max_response_bytes: usize,
    user_agent: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tls", &self.trusted)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Parses `url` and checks it can be requested.
pub fn parse_url(url: &str) -> Result<Uri, ClientError> {
    let uri: Uri = url.parse().map_err(|source| ClientError::InvalidUrl {
        url: url.to_string(),
        source,
    })?;
    let unsupported = |why| ClientError::UnsupportedUrl {
        url: url.to_string(),
        why,
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(unsupported("has an unsupported scheme")),
        None => return Err(unsupported("has no scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(unsupported("has no host"));
    }
    Ok(uri)
}

impl Client {
    /// Settings for a new client.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A client for http:// only, with default settings.
    pub fn plain() -> Client {
        Builder::default().build()
    }

    /// A client trusting the roots of `tls`, with default settings.
    pub fn with_tls(tls: Arc<rustls::ClientConfig>) -> Client {
        Builder::default().tls(tls).build()
    }

    /// Sends `method url` with `headers` and `body` (as JSON when not empty) and reads the
    /// whole response.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, ClientError> {
        let uri = parse_url(url)?;
        let body = body.into();
        let mut req = http::Request::builder().method(method).uri(uri.clone());
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(agent) = &self.user_agent {
            req = req.header(http::header::USER_AGENT, agent);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|source| ClientError::Build {
                method: method.to_string(),
                url: url.to_string(),
                source,
            })?;
        self.send(req).await
    }

    /// Sends a prepared request and reads the whole response.
    pub async fn send(&self, req: http::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let (method, url) = (req.method().clone(), req.uri().clone());
        if url.scheme() == Some(&http::uri::Scheme::HTTPS) && !self.trusted {
            return Err(ClientError::NoTrust {
                url: url.to_string(),
            });
        }
        let exchange = self.exchange(req);
        match self.timeout {
            None => exchange.await,
            Some(timeout) => {
                tokio::time::timeout(timeout, exchange)
                    .await
                    .map_err(|_| ClientError::Timeout {
                        method,
                        url: url.to_string(),
                        timeout,
                    })?
            }
        }
    }

    async fn exchange(&self, req: http::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let (method, url) = (req.method().clone(), req.uri().clone());
        let resp = self.inner.request(req).await.map_err(|source| {
            if let Some(tls) = rustls_cause(&source) {
                return ClientError::Tls {
                    host: url.host().unwrap_or_default().to_string(),
                    source: tls.clone(),
                };
            }
            if source.is_connect() {
                let authority = url.authority().map(|a| a.to_string()).unwrap_or_default();
                return ClientError::Connect {
                    authority,
                    source: Box::new(source),
                };
            }
            ClientError::Send {
                method: method.clone(),
                url: url.to_string(),
                source: Box::new(source),
            }
        })?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, self.max_response_bytes)
            .collect()
            .await
            .map_err(|source| ClientError::Body {
                method,
                url: url.to_string(),
                source,
            })?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Against small hyper servers on 127.0.0.1:0 (real sockets, no TLS: the TLS paths are
    //! exercised by the webhook and reporter integration tests).
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves `GET`s with 200, a header and a body; counts accepted connections.
    async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                        let body = format!("{} {}", req.method(), req.uri().path());
                        http::Response::builder()
                            .header("retry-after", "7")
                            .body(Full::new(Bytes::from(body)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn answers_with_status_headers_and_body_on_one_kept_alive_connection() {
        let (addr, accepted) = server().await;
        let client = Client::plain();
        for i in 0..3 {
            let r = client
                .request("GET", &format!("http://{addr}/n/{i}"), &[], Bytes::new())
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.headers["retry-after"], "7");
            assert_eq!(r.body, format!("GET /n/{i}"));
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the connection is reused"
        );
        // A separate client has its own pool.
        Client::plain()
            .request("GET", &format!("http://{addr}/"), &[], Bytes::new())
            .await
            .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                open.push(tcp);
            }
        });
        let client = Client::builder()
            .timeout(Duration::from_millis(200))
            .build();
        let err = client
            .request("GET", &format!("http://{addr}/"), &[], Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn refused_connections_and_bad_urls_are_named() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let err = Client::plain()
            .request("POST", &format!("http://{addr}/x"), &[], "{}")
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("onnection refused"), "{err}");

        for (url, want) in [
            ("inframind:8080", "use http:// or https://"),
            ("ftp://x/", "unsupported scheme"),
            ("http://", ""),
            ("/just/a/path", "has no scheme"),
        ] {
            let err = parse_url(url).unwrap_err();
            assert!(err.to_string().contains(want), "{url}: {err}");
        }
        let err = Client::plain()
            .request("GET", "https://localhost:1/", &[], Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::NoTrust { .. }), "{err:?}");
        assert!(matches!(
            tls_config("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"),
            Err(ClientError::CaPem(_))
        ));
    }
}
