//! Publishing a self-signed CA: to a file, and into the MutatingWebhookConfiguration's caBundle.
//!
//! Several replicas each generate their own CA, so each merges its CA into the bundle rather
//! than replacing it (a replica that replaced would break TLS for the others). The bundle keeps
//! the newest `MAX_BUNDLE_CAS` certificates so restarts do not grow it without bound. The patch
//! carries a `test` of the bundle it read, so concurrent replicas retry instead of losing a CA.

use base64::Engine;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// CA certificates kept in the bundle.
pub const MAX_BUNDLE_CAS: usize = 4;

/// Splits a PEM bundle into its certificates.
pub fn split_pem(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in bundle.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END CERTIFICATE-----") {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// `bundle` with `ca` appended (once), keeping the newest `MAX_BUNDLE_CAS`.
pub fn merge_bundle(bundle: &str, ca: &str) -> String {
    let mut certs: Vec<String> = split_pem(bundle)
        .into_iter()
        .filter(|c| c.trim() != ca.trim())
        .collect();
    certs.push(format!("{}\n", ca.trim()));
    let skip = certs.len().saturating_sub(MAX_BUNDLE_CAS);
    certs[skip..].concat()
}

/// Merges `ca_pem` into every webhook's caBundle of the MutatingWebhookConfiguration `name`.
pub async fn publish_ca(client: Client, name: &str, ca_pem: &str) -> Result<()> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let b64 = base64::engine::general_purpose::STANDARD;
    for attempt in 0..5 {
        let cfg = api.get(name).await.map_err(|source| Error::Kube {
            context: format!("reading MutatingWebhookConfiguration {name}"),
            source,
        })?;
        let mut ops: Vec<Value> = Vec::new();
        for (i, wh) in cfg.webhooks.unwrap_or_default().iter().enumerate() {
            let current = wh
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| String::from_utf8_lossy(&b.0).to_string())
                .unwrap_or_default();
            let merged = merge_bundle(&current, ca_pem);
            if merged == current {
                continue;
            }
            let path = format!("/webhooks/{i}/clientConfig/caBundle");
            if wh.client_config.ca_bundle.is_some() {
                ops.push(
                    json!({"op": "test", "path": path, "value": b64.encode(current.as_bytes())}),
                );
            }
            ops.push(json!({"op": "add", "path": path, "value": b64.encode(merged.as_bytes())}));
        }
        if ops.is_empty() {
            return Ok(());
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
            .map_err(|e| Error::Input(format!("building the caBundle patch: {e}")))?;
        match api
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(webhook_configuration = name, "CA merged into the caBundle");
                return Ok(());
            }
            // A failed `test`: another replica changed the bundle first; read it again.
            Err(kube::Error::Api(e)) if e.code == 422 || e.code == 409 => {
                tracing::debug!(attempt, "caBundle changed concurrently; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 * (attempt + 1))).await;
            }
            Err(source) => {
                return Err(Error::Kube {
                    context: format!("patching the caBundle of {name}"),
                    source,
                })
            }
        }
    }
    Err(Error::Input(format!(
        "caBundle of {name} kept changing; gave up after 5 attempts"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(n: u32) -> String {
        format!("-----BEGIN CERTIFICATE-----\nAAA{n}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn bundles_merge_once_and_keep_the_newest() {
        let b = merge_bundle("", &cert(1));
        assert_eq!(split_pem(&b), vec![cert(1)]);
        let b = merge_bundle(&b, &cert(2));
        assert_eq!(
            merge_bundle(&b, &cert(2)),
            format!("{}{}", cert(1), cert(2)),
            "merging again moves it last, no duplicate"
        );
        let mut b = String::new();
        for n in 0..7 {
            b = merge_bundle(&b, &cert(n));
        }
        assert_eq!(split_pem(&b), (3..7).map(cert).collect::<Vec<_>>());
    }
}
