//! The HTTP API with the real PostgreSQL: ingestion, auth, limits, stats, recommendations,
//! in-process training, and a database outage (a TCP proxy cut in front of PostgreSQL).

use std::sync::Arc;

use inframind::api::{self, ApiState, TokenFile, Training};
use inframind::optimizer::recommender::Recommender;
use inframind::optimizer::{Optimizer, OptimizerConfig};
use inframind::registry::LiveModel;
use serde_json::{json, Value};

use crate::harness::{pg_addr, pg_schema_url, with_host, Site, TcpProxy};

struct TestApi {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    _server: inframind::serving::Server,
}

const INGEST: &str = "ingest-secret-token";
const ADMIN: &str = "admin-secret-token";

async fn start(database_url: &str) -> TestApi {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ingest"), format!("{INGEST}\n")).unwrap();
    std::fs::write(dir.path().join("admin"), ADMIN).unwrap();
    let global = inframind::config::Global {
        database_url: database_url.to_string(),
        models_dir: dir.path().join("models"),
        redis_url: None,
        redis_prefix: "im".into(),
        model_signing_key_file: None,
        model_public_key_file: None,
        log_format: inframind::config::LogFormat::Text,
    };
    let state = Arc::new(ApiState::new(
        database_url.to_string(),
        TokenFile::open(dir.path().join("ingest")).unwrap(),
        Some(TokenFile::open(dir.path().join("admin")).unwrap()),
        Arc::new(LiveModel::new()),
        Recommender::new(Optimizer::new(OptimizerConfig {
            exploration_rate: 0.0,
            ..Default::default()
        })),
        1024 * 1024,
        Training::InProcess(Box::new(api::in_process_training(&global).unwrap())),
    ));
    let server = api::spawn("127.0.0.1:0".parse().unwrap(), None, state)
        .await
        .unwrap();
    let addr = server.addr();
    TestApi {
        addr,
        _dir: dir,
        _server: server,
    }
}

impl TestApi {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, bytes) = Site::plain(self.addr)
            .send(method, path, &headers, body)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn run(id: &str, pipeline: &str, cpu: f64) -> Value {
    json!({"run_id": id, "pipeline": pipeline, "branch": "main", "cpu_req": cpu, "mem_req_gb": 8, "concurrency": 4,
           "duration_s": 300, "success": 1, "max_rss_gb": 3.2, "started_at": "2026-11-26T10:00:00Z"})
}

#[tokio::test]
async fn ingest_reports_accepted_rejected_and_duplicates() {
    let api = start(&pg_schema_url().await).await;
    let batch = json!([run("r1", "acme/api", 4.0), {"pipeline": "acme/api", "cpu_req": -1, "mem_req_gb": 8, "concurrency": 4, "duration_s": 1, "success": 1}, run("r2", "acme/api", 6.0), 7]);
    let (status, report) = api
        .call(
            "POST",
            "/v1/runs",
            Some(INGEST),
            serde_json::to_vec(&batch).unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(report["accepted"], 2);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(
        report["rejected"],
        json!([{"row": 2, "field": "cpu_req", "reason": "must not be negative, got -1"}, {"row": 4, "field": "<row>", "reason": "expected a JSON object, got 7"}])
    );
    // One run, and the same again: a duplicate.
    let (_, report) = api
        .call(
            "POST",
            "/v1/runs",
            Some(ADMIN),
            serde_json::to_vec(&run("r1", "acme/api", 4.0)).unwrap(),
        )
        .await;
    assert_eq!(
        (report["accepted"].as_u64(), report["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    // The ingest metric counts valid rows by decision and result (the resent one again).
    let (_, metrics) = Site::plain(api.addr)
        .send("GET", "/metrics", &[], vec![])
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("inframind_runs_ingested_total{decision=\"none\",result=\"success\"} 3"),
        "{metrics}"
    );

    let (status, stats) = api
        .call("GET", "/v1/pipelines/acme/api/stats", Some(INGEST), vec![])
        .await;
    assert_eq!(status, 200);
    assert_eq!(stats["runs"], 2);
    assert_eq!(stats["last_success"]["cpu"], 6.0);
    assert_eq!(
        api.call(
            "GET",
            "/v1/pipelines/acme%2Fapi/stats",
            Some(INGEST),
            vec![]
        )
        .await
        .1["runs"],
        2
    );
    assert_eq!(
        api.call("GET", "/v1/pipelines/nobody/stats", Some(INGEST), vec![])
            .await
            .0,
        404
    );
    // Next to the stats, the cache analysis of the pipeline's last 30 days.
    let recent = json!({"run_id": "r3", "pipeline": "acme/api", "branch": "main", "cpu_req": 4, "mem_req_gb": 8,
        "concurrency": 4, "duration_s": 90, "success": 1, "cache_hit_ratio": 0.25,
        "started_at": (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339()});
    let (status, report) = api
        .call(
            "POST",
            "/v1/runs",
            Some(INGEST),
            serde_json::to_vec(&recent).unwrap(),
        )
        .await;
    assert_eq!((status, &report["accepted"]), (200, &json!(1)), "{report}");
    let (_, stats) = api
        .call("GET", "/v1/pipelines/acme/api/stats", Some(INGEST), vec![])
        .await;
    assert_eq!(stats["cache"]["pipeline"], "acme/api", "{stats}");
    assert_eq!(stats["cache"]["with_statistics"], 1, "{stats}");
    assert_eq!(stats["cache"]["durations"]["cold"]["median_s"], 90.0);

    let (status, decision) = api
        .call(
            "POST",
            "/v1/recommendations",
            Some(INGEST),
            br#"{"pipeline": "acme/api", "seed": 1}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(decision["cold_start"], true, "no model yet");
    assert_eq!(decision["baseline"]["cpu"], 4.0, "r3 is the latest success");
    assert!(decision["config"]["mem_gb"].as_f64().unwrap() >= 1.2 * 3.2);
}

#[tokio::test]
async fn auth_limits_and_malformed_bodies_get_clear_answers() {
    let api = start(&pg_schema_url().await).await;
    let body = serde_json::to_vec(&run("x", "p", 2.0)).unwrap();
    let (status, err) = api.call("POST", "/v1/runs", None, body.clone()).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (401, Some("missing bearer token"))
    );
    assert_eq!(
        api.call("POST", "/v1/runs", Some("guess"), body.clone())
            .await
            .0,
        401
    );
    let (status, err) = api.call("POST", "/v1/train", Some(INGEST), vec![]).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (403, Some("training needs the admin token"))
    );
    let (status, err) = api
        .call("POST", "/v1/runs", Some(INGEST), b"{not json".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().starts_with("malformed JSON"));
    let (status, _) = api
        .call(
            "POST",
            "/v1/runs",
            Some(INGEST),
            vec![b' '; 2 * 1024 * 1024],
        )
        .await;
    assert_eq!(status, 413);
    let (status, err) = api
        .call(
            "POST",
            "/v1/recommendations",
            Some(INGEST),
            br#"{"pipe": "x"}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("unknown field `pipe`"));
    assert_eq!(
        api.call("GET", "/v1/nothing", Some(INGEST), vec![]).await.0,
        404
    );
    // Nothing was stored by any of these.
    let (_, stats) = api
        .call("GET", "/v1/pipelines/p/stats", Some(INGEST), vec![])
        .await;
    assert!(stats["error"].as_str().unwrap().contains("no runs"));
}

#[tokio::test]
async fn admin_train_runs_in_process_without_kubernetes() {
    let api = start(&pg_schema_url().await).await;
    let runs: Vec<Value> = inframind::simulate::demo_runs(500, chrono::Utc::now(), 31)
        .iter()
        .map(|r| serde_json::to_value(inframind::record::to_raw_row(r)).unwrap())
        .collect();
    let (_, report) = api
        .call(
            "POST",
            "/v1/runs",
            Some(INGEST),
            serde_json::to_vec(&json!({"runs": runs})).unwrap(),
        )
        .await;
    assert_eq!(report["accepted"], 500);
    let spec = json!({"hyperparameters": {"trees": 20, "maxDepth": 8}, "gates": {"maxMaeSeconds": 1000, "minR2": 0.3}});
    let (status, body) = api
        .call(
            "POST",
            "/v1/train",
            Some(ADMIN),
            serde_json::to_vec(&spec).unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let st = &body["status"];
    assert_eq!(st["phase"], "Succeeded", "{body}");
    assert_eq!(st["promoted"], true);
    assert!(st["version"].as_str().unwrap().starts_with("model_v"));
    // A spec that fails validation is refused with its reason.
    let (status, body) = api
        .call(
            "POST",
            "/v1/train",
            Some(ADMIN),
            br#"{"hyperparameters": {"trees": 0}}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_database_outage_is_503_with_retry_after_and_loses_nothing_acknowledged() {
    let url = pg_schema_url().await;
    let mut proxy = TcpProxy::start(pg_addr()).await;
    let api = start(&with_host(&url, proxy.addr)).await;
    let (status, r) = api
        .call(
            "POST",
            "/v1/runs",
            Some(INGEST),
            serde_json::to_vec(&run("before", "db", 2.0)).unwrap(),
        )
        .await;
    assert_eq!((status, r["accepted"].as_u64()), (200, Some(1)));

    proxy.cut();
    let conn = Site::plain(api.addr);
    let auth = format!("Bearer {INGEST}");
    let (status, body) = conn
        .send(
            "POST",
            "/v1/runs",
            &[("authorization", &auth)],
            serde_json::to_vec(&run("during", "db", 2.0)).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("nothing was stored"));

    proxy.restore().await;
    // The client retries after Retry-After; the run is stored exactly once.
    let mut stored = false;
    for _ in 0..20 {
        let (status, r) = api
            .call(
                "POST",
                "/v1/runs",
                Some(INGEST),
                serde_json::to_vec(&run("during", "db", 2.0)).unwrap(),
            )
            .await;
        if status == 200 {
            assert_eq!(r["accepted"], 1);
            stored = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(stored, "the API recovered once the database was back");
    let store = inframind::telemetry::Store::connect(&url).await.unwrap();
    let ids: Vec<String> = store
        .recent_runs("db", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(ids, vec!["before".to_string(), "during".to_string()]);
}

/// Issue 14: the admin token chose what runs and as whom (`spec.execution.image` and
/// `serviceAccountName` went straight into the TrainingJob). Now only the allowlists count.
#[tokio::test]
async fn train_refuses_images_and_service_accounts_outside_the_allowlist() {
    let api = start(&pg_schema_url().await).await;
    for execution in [
        json!({"mode": "job", "image": "attacker/miner:latest"}),
        json!({"mode": "job", "serviceAccountName": "inframind-controller"}),
    ] {
        let spec = json!({"hyperparameters": {"trees": 5}, "execution": execution});
        let (status, body) = api
            .call(
                "POST",
                "/v1/train",
                Some(ADMIN),
                serde_json::to_vec(&spec).unwrap(),
            )
            .await;
        assert_eq!(status, 403, "{execution}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("is not allowed"),
            "{body}"
        );
    }
    // Outside execution mode `job` they mean nothing and are refused as invalid.
    let (status, body) = api
        .call(
            "POST",
            "/v1/train",
            Some(ADMIN),
            br#"{"execution": {"image": "inframind:dev"}}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// Issue 14: `Bearer` was matched case-sensitively (RFC 9110 makes the scheme case-insensitive),
/// and a multi-byte character after `%` in a pipeline name panicked the decoder.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_odd_paths_are_decoded() {
    let api = start(&pg_schema_url().await).await;
    let body = serde_json::to_vec(&run("lower", "caf\u{e9}", 2.0)).unwrap();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {INGEST}");
        let (status, bytes) = crate::harness::Site::plain(api.addr)
            .send(
                "POST",
                "/v1/runs",
                &[("authorization", auth.as_str())],
                body.clone(),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{scheme}: {}", String::from_utf8_lossy(&bytes));
    }
    let (status, stats) = api
        .call("GET", "/v1/pipelines/caf%C3%A9/stats", Some(INGEST), vec![])
        .await;
    assert_eq!((status, stats["runs"].as_u64()), (200, Some(1)), "{stats}");
    let (status, _) = api
        .call(
            "GET",
            "/v1/pipelines/%a%E2%82%AC/stats",
            Some(INGEST),
            vec![],
        )
        .await;
    assert_eq!(status, 404, "an unknown pipeline, not a crash");
}
