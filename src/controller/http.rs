//! Plain-HTTP endpoints every controller replica serves, leader or not: `/healthz` (the process
//! is alive), `/readyz` (it has a Kubernetes client and is electing) and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use super::metrics::Metrics;

/// Serves the endpoints on `listener` in the background, through the one serving module.
pub fn spawn(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> crate::serving::Server {
    crate::serving::serve_on(listener, None, routes(metrics, ready))
}

fn routes(
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
       + Clone
       + Send
       + Sync
       + 'static {
    let healthz = warp::path!("healthz").map(|| text(StatusCode::OK, "ok\n".into()));
    let readyz = warp::path!("readyz").map(move || {
        if ready.load(Ordering::Relaxed) {
            text(StatusCode::OK, "ready\n".into())
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
        }
    });
    let metrics_route = warp::path!("metrics").map(move || {
        let mut response = text(StatusCode::OK, metrics.render());
        response.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        response
    });
    warp::get()
        .and(healthz.or(readyz).unify().or(metrics_route).unify())
        .map(|r: warp::http::Response<String>| r.into_response())
        .recover(|_: warp::Rejection| async {
            Ok::<_, std::convert::Infallible>(
                text(StatusCode::NOT_FOUND, "not found\n".into()).into_response(),
            )
        })
        .unify()
}

fn text(status: StatusCode, body: String) -> warp::http::Response<String> {
    let mut response = warp::http::Response::new(body);
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.leader.set(1);
        let ready = Arc::new(AtomicBool::new(false));
        let server = spawn(listener, metrics.clone(), ready.clone());
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get(addr, "/metrics").await;
        assert!(m.contains("inframind_controller_leader 1"), "{m}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.shutdown(std::time::Duration::from_secs(1)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "stopped accepting"
        );
    }
}
