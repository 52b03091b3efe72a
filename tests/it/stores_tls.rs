//! TLS to the stores: a PostgreSQL and a Redis that this test starts itself on free ports, serving
//! only TLS with a certificate for `localhost` from a CA generated here.

use std::time::Duration;

use inframind::model::ModelDir;
use inframind::registry::{live, LiveModel, Registry, WatchConfig};
use inframind::telemetry::Store;

use crate::harness::small_model;
use crate::servers::{localhost_certs, TestPostgres, TestRedis};

async fn connects(url: &str) -> Result<Store, String> {
    match tokio::time::timeout(Duration::from_secs(20), Store::connect(url)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn postgres_over_tls_with_sslmode_require_verify_ca_and_verify_full() {
    let certs = localhost_certs();
    let other = localhost_certs();
    let pg = TestPostgres::start(Some(&certs));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let wrong_ca = dir.path().join("wrong-ca.crt");
    std::fs::write(&ca, &certs.ca_cert).unwrap();
    std::fs::write(&wrong_ca, &other.ca_cert).unwrap();
    let (ca, wrong_ca) = (ca.display(), wrong_ca.display());

    // The server accepts TCP clients only over TLS: without it, refused.
    let err = connects(&pg.url("localhost", "?sslmode=disable"))
        .await
        .expect_err("a plain connection is refused");
    assert!(err.contains("no pg_hba.conf entry"), "{err}");

    // require: encrypted, certificate not checked. The store works (migrations, insert, read).
    let store = connects(&pg.url("127.0.0.1", "?sslmode=require"))
        .await
        .expect("sslmode=require");
    let runs = inframind::simulate::demo_runs(20, chrono::Utc::now(), 5);
    let outcome = store.insert_runs(&runs, chrono::Utc::now()).await.unwrap();
    assert_eq!(outcome.inserted, 20);
    assert_eq!(store.count_runs().await.unwrap(), 20);
    store.close().await;

    // verify-full with the right CA and the certificate's name.
    let store = connects(&pg.url(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .expect("verify-full with the right CA");
    assert_eq!(store.count_runs().await.unwrap(), 20);
    store.close().await;

    // verify-full with the wrong CA: refused.
    let err = connects(&pg.url(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={wrong_ca}"),
    ))
    .await
    .expect_err("verify-full must refuse a certificate from another CA");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // verify-full by an address the certificate does not name: refused; verify-ca accepts it
    // (the chain is checked, not the name).
    let by_ip = format!("?sslmode=verify-full&sslrootcert={ca}");
    assert!(connects(&pg.url("127.0.0.1", &by_ip)).await.is_err());
    let store = connects(&pg.url("127.0.0.1", &format!("?sslmode=verify-ca&sslrootcert={ca}")))
        .await
        .expect("verify-ca checks the chain only");
    store.close().await;
    assert!(connects(&pg.url(
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={wrong_ca}"),
    ))
    .await
    .is_err());
}

#[tokio::test]
async fn redis_over_tls_with_a_ca_file() {
    let certs = localhost_certs();
    let other = localhost_certs();
    let redis = TestRedis::start(Some(&certs));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let wrong_ca = dir.path().join("wrong-ca.crt");
    std::fs::write(&ca, &certs.ca_cert).unwrap();
    std::fs::write(&wrong_ca, &other.ca_cert).unwrap();
    let url = |host: &str, ca: &std::path::Path| {
        format!(
            "rediss://{host}:{}/?ssl_ca_certs={}",
            redis.port,
            ca.display()
        )
    };
    let open = |url: String, dir: &std::path::Path| {
        let dir = ModelDir::new(dir);
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                Registry::open(dir, Some(&url), "tls"),
            )
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())
        }
    };

    // The right CA and name: the registry works end to end over TLS, pub/sub included.
    let reg = open(url("localhost", &ca), dir.path())
        .await
        .expect("rediss:// with the right CA");
    let (m, meta) = small_model(reg.dir(), "model_v20261101_000091", 91);
    reg.publish(&m, &meta).await.unwrap();
    reg.promote(&meta.version).await.unwrap();
    let replica = LiveModel::new();
    let cfg = WatchConfig {
        dir: ModelDir::new(dir.path().join("replica")),
        redis_url: Some(url("localhost", &ca)),
        prefix: "tls".into(),
        poll: Duration::from_secs(1),
    };
    live::bootstrap(&replica, &cfg).await;
    assert_eq!(replica.version().as_deref(), Some(meta.version.as_str()));

    // Another CA, or a name the certificate does not carry: refused.
    let err = open(url("localhost", &wrong_ca), dir.path())
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(open(url("127.0.0.1", &ca), dir.path()).await.is_err());
    // Plain Redis protocol on the TLS port: refused.
    assert!(
        open(format!("redis://localhost:{}/", redis.port), dir.path())
            .await
            .is_err()
    );
    // A CA file only makes sense with rediss://.
    let err = inframind::registry::redis::client(&format!(
        "redis://localhost:{}/?ssl_ca_certs={}",
        redis.port,
        ca.display()
    ))
    .expect_err("ssl_ca_certs needs rediss://")
    .to_string();
    assert!(err.contains("rediss://"), "{err}");
}
