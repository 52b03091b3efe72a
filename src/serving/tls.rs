//! Serving certificates: loaded from PEM files and reloaded when they change (Kubernetes swaps
//! a Secret volume's symlink), or generated at start-up from a self-signed CA.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key in PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// Certificate chain (leaf first).
    pub cert: String,
    /// Private key.
    pub key: String,
}

/// Builds a rustls certified key from PEM text.
pub fn certified_key(pem: &PemPair) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Input(format!("certificate PEM is invalid: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Input("certificate PEM holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes())
        .map_err(|e| Error::Input(format!("private key PEM is invalid: {e}")))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Input(format!("private key is unusable: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| Error::Input(format!("certificate and key do not match: {e}")))?;
    Ok(ck)
}

fn read_pair(cert: &Path, key: &Path) -> Result<PemPair> {
    Ok(PemPair {
        cert: std::fs::read_to_string(cert)
            .map_err(Error::io(format!("reading certificate {}", cert.display())))?,
        key: std::fs::read_to_string(key)
            .map_err(Error::io(format!("reading key {}", key.display())))?,
    })
}

/// The certificate the server presents, swappable while serving.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    reloads: AtomicU64,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// A store serving `pem`.
    pub fn new(pem: &PemPair) -> Result<Arc<CertStore>> {
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(certified_key(pem)?),
            reloads: AtomicU64::new(0),
        }))
    }

    /// A store serving the PEM files at `cert` and `key`.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<CertStore>> {
        CertStore::new(&read_pair(cert, key)?)
    }

    /// Replaces the certificate (in-flight handshakes keep the old one).
    pub fn replace(&self, pem: &PemPair) -> Result<()> {
        self.current.store(Arc::new(certified_key(pem)?));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Certificates loaded since start-up.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// A rustls server config (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1) presenting this store's certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Input(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// What identifies a file's content cheaply: the resolved path, size and modification time.
fn fingerprint(path: &Path) -> Option<(PathBuf, u64, SystemTime)> {
    let real = std::fs::canonicalize(path).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    Some((real, m.len(), m.modified().ok()?))
}

/// Reloads `cert`/`key` into `store` whenever either file changes; a bad pair is logged and the
/// current certificate kept.
pub fn watch_files(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = (fingerprint(&cert), fingerprint(&key));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = (fingerprint(&cert), fingerprint(&key));
            if now == seen {
                continue;
            }
            match read_pair(&cert, &key).and_then(|p| store.replace(&p)) {
                Ok(()) => {
                    tracing::info!(cert = %cert.display(), "reloaded the serving certificate");
                    seen = now;
                }
                // Mid-swap (one file new, the other old) fails here and succeeds on the next tick.
                Err(e) => {
                    tracing::warn!(error = %e, "new certificate files are not usable yet; keeping the current one")
                }
            }
        }
    })
}

/// A CA and a serving certificate signed by it.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The CA certificate (what goes into the webhook's caBundle).
    pub ca_cert: String,
    /// The serving certificate and key.
    pub serving: PemPair,
}

fn rcgen_err(e: rcgen::Error) -> Error {
    Error::Input(format!("generating certificates: {e}"))
}

/// The names a Service `svc.ns.svc` answers to.
pub fn service_names(dns_name: &str) -> Vec<String> {
    let mut names = vec![dns_name.to_string()];
    let parts: Vec<&str> = dns_name.split('.').collect();
    if parts.len() >= 2 {
        let (svc, ns) = (parts[0], parts[1]);
        for n in [
            svc.to_string(),
            format!("{svc}.{ns}"),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
        ] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names
}

/// Generates a new CA and a serving certificate for `dns_names` signed by it. The CA key never
/// leaves this process: each replica has its own CA, merged into the webhook's caBundle.
pub fn self_signed(dns_names: &[String]) -> Result<SelfSigned> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "inframind-webhook-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(rcgen_err)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().map_err(rcgen_err)?;
    let mut leaf = CertificateParams::new(dns_names.to_vec()).map_err(rcgen_err)?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = leaf.signed_by(&leaf_key, &issuer).map_err(rcgen_err)?;
    Ok(SelfSigned {
        ca_cert,
        serving: PemPair {
            cert: cert.pem(),
            key: leaf_key.serialize_pem(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pairs_load_and_mismatches_are_refused() {
        let names = service_names("inframind-webhook.inframind.svc");
        assert!(names.contains(&"inframind-webhook.inframind.svc.cluster.local".to_string()));
        let a = self_signed(&names).unwrap();
        certified_key(&a.serving).unwrap();
        let b = self_signed(&names).unwrap();
        assert_ne!(a.ca_cert, b.ca_cert);
        let mismatched = PemPair {
            cert: a.serving.cert.clone(),
            key: b.serving.key.clone(),
        };
        assert!(certified_key(&mismatched)
            .unwrap_err()
            .to_string()
            .contains("do not match"));
        assert!(certified_key(&PemPair {
            cert: "nope".into(),
            key: "nope".into()
        })
        .is_err());
    }
}
