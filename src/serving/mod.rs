//! The one HTTP front of every InfraMind server (the webhook, the API and the controller's
//! probes): warp filters served through hyper, over TLS (rustls, ring) or plain TCP, with body
//! caps and a graceful drain (warp 0.4 has no TLS of its own).
//!
//! Drain on SIGTERM, as a rolling update needs it: report not-ready at once, keep serving for the
//! drain period (endpoints controllers and kube-proxy take a few seconds to stop sending), then
//! stop accepting, let in-flight requests finish (up to a grace period) and return.

pub mod body;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use warp::Filter;

use crate::error::{Error, Result};

/// Default seconds a server keeps serving, not ready, after SIGTERM.
pub const DEFAULT_DRAIN_SECONDS: u64 = 5;
/// Default seconds in-flight requests get to finish once accepting stops.
pub const DEFAULT_GRACE_SECONDS: u64 = 10;

/// How a server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// Serving on, not ready, after the signal.
    pub period: Duration,
    /// Longest wait for in-flight requests after accepting stops.
    pub grace: Duration,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            period: Duration::from_secs(DEFAULT_DRAIN_SECONDS),
            grace: Duration::from_secs(DEFAULT_GRACE_SECONDS),
        }
    }
}

/// A running server: its address and the handle that stops it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops at once, cutting open connections (tests).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Stops accepting, lets in-flight requests finish (up to `grace`), and returns.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let mut task = self.task;
        if tokio::time::timeout(grace + Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    /// On SIGTERM or Ctrl-C: `ready` goes false at once, serving goes on for the drain period,
    /// then the server shuts down gracefully.
    pub async fn run_until_signal(self, ready: &AtomicBool, drain: Drain) {
        shutdown_signal().await;
        ready.store(false, Ordering::Release);
        tracing::info!(
            drain_s = drain.period.as_secs_f64(),
            "shutdown requested: not ready, draining"
        );
        tokio::time::sleep(drain.period).await;
        self.shutdown(drain.grace).await;
        tracing::info!("stopped");
    }
}

/// Serves `routes` on `listener` (over TLS when `tls` is given) until `stop` carries a grace
/// period; then stops accepting and waits for open connections to finish, up to that grace.
async fn serve<F>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: F,
    mut stop: tokio::sync::watch::Receiver<Option<Duration>>,
) where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let service = warp::service(routes);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection(
                                TokioIo::new(stream),
                                TowerToHyperService::new(service),
                            );
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = stop.borrow().unwrap_or_default();
    // Open keep-alive connections close after their current request; new ones were refused.
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "connections still open after the grace period"
        );
    }
}

/// Binds `addr`, serves `routes` in the background, and returns the running server.
pub async fn spawn<F>(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: F,
) -> Result<Server>
where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("binding {addr}")))?;
    Ok(serve_on(listener, tls, routes))
}

/// Serves `routes` on an already bound `listener` in the background.
pub fn serve_on<F>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: F,
) -> Server
where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, stopped) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(serve(listener, tls, routes, stopped));
    Server { addr, stop, task }
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request on its own connection; the status line, or the I/O error.
    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    }

    #[tokio::test]
    async fn shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
        let slow = warp::any().then(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            warp::reply::Reply::into_response("done")
        });
        let server = spawn("127.0.0.1:0".parse().unwrap(), None, slow)
            .await
            .unwrap();
        let addr = server.addr();
        let in_flight: Vec<_> = (0..20).map(|_| tokio::spawn(get(addr, "/slow"))).collect();
        // Let every request reach the server before the stop.
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.shutdown(Duration::from_secs(5)).await;
        for r in in_flight {
            assert_eq!(r.await.unwrap().unwrap(), "HTTP/1.1 200 OK");
        }
        assert!(get(addr, "/slow").await.is_err(), "no longer accepting");
    }
}
