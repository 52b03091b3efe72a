//! A minimal keep-alive HTTP/1.1 client over TLS (rustls) or plain TCP: what the reporter,
//! the integration tests and the load benchmark use to talk to InfraMind's servers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::error::{Error, Result};

/// One open connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .finish()
    }
}

fn http_err(context: &str) -> impl FnOnce(hyper::Error) -> Error + '_ {
    move |e| Error::Input(format!("{context}: {e}"))
}

/// A TLS client config trusting exactly the CA certificates in `ca_pem`.
pub fn tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::Input(format!("CA PEM is invalid: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Input(format!("CA certificate unusable: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Input(format!("TLS configuration: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

impl Connection {
    /// Opens a TLS connection to `addr`, verifying the certificate for `server_name`.
    pub async fn tls(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Connection> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(Error::io(format!("connecting to {addr}")))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| Error::Input(format!("server name {server_name}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(Error::io(format!("TLS handshake with {server_name}")))?;
        Self::handshake(TokioIo::new(stream), server_name).await
    }

    /// Opens a plain TCP connection to `addr`.
    pub async fn plain(addr: SocketAddr) -> Result<Connection> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(Error::io(format!("connecting to {addr}")))?;
        let _ = tcp.set_nodelay(true);
        Self::handshake(TokioIo::new(tcp), &addr.to_string()).await
    }

    async fn handshake<T>(io: TokioIo<T>, host: &str) -> Result<Connection>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(http_err("HTTP handshake"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            host: host.to_string(),
        })
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Bytes)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Input(format!("building a request: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(http_err("connection not ready"))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(http_err("sending a request"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(http_err("reading a response"))?
            .to_bytes();
        Ok((status, body))
    }
}
