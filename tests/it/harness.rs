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
