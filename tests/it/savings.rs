//! The control group end to end over the real stores and HTTP: decision tags and predictions are
//! stored (PostgreSQL and SQLite), `GET /v1/savings` reports the simulated week's effect, and the
//! dashboard serves its pages behind the login (read-only, no script, charts inline).

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use inframind::api::{self, ApiState, TokenFile, Training};
use inframind::optimizer::recommender::Recommender;
use inframind::record::DecisionTag;
use inframind::registry::LiveModel;
use inframind::simulate::{controlled_week, right_size};
use serde_json::Value;

use crate::harness::{both_stores, pg_schema_url};

const INGEST: &str = "savings-ingest-token";

fn week() -> Vec<inframind::record::RunRecord> {
    // Ends now (to the millisecond, as stored), so `since=7d` covers nearly all of it.
    let now = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    controlled_week(now, 11, 0.2, &right_size)
        .into_iter()
        .map(|r| r.record)
        .collect()
}

#[tokio::test]
async fn decision_tags_and_predictions_are_stored_and_read_back() {
    for (store, _keep) in both_stores().await {
        let runs = week();
        store.insert_runs(&runs, Utc::now()).await.unwrap();
        let back = store
            .runs_since(None, Utc::now() - chrono::Duration::days(8))
            .await
            .unwrap();
        assert_eq!(back.len(), runs.len(), "{:?}", store.backend());
        assert_eq!(back, runs, "{:?}: every field round-trips", store.backend());
        let holdout = back
            .iter()
            .filter(|r| r.decision == Some(DecisionTag::Holdout))
            .count();
        assert!(holdout > 50, "{holdout}");
        let one = store
            .runs_since(Some("acme/api"), Utc::now() - chrono::Duration::days(8))
            .await
            .unwrap();
        assert!(!one.is_empty() && one.iter().all(|r| r.pipeline == "acme/api"));
    }
}

struct Api {
    base: String,
    client: inframind::client::Client,
    _dir: tempfile::TempDir,
    _server: inframind::serving::Server,
}

async fn start() -> Api {
    start_with(None).await
}

/// The API over a store holding a simulated week; `kube` makes it create TrainingJobs through
/// that client (in namespace `ci`) instead of training in-process.
async fn start_with(kube: Option<kube::Client>) -> Api {
    let url = pg_schema_url().await;
    let store = inframind::telemetry::Store::connect(&url).await.unwrap();
    store.insert_runs(&week(), Utc::now()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ingest"), INGEST).unwrap();
    let global = inframind::config::Global {
        database_url: url.clone(),
        models_dir: dir.path().join("models"),
        redis_url: None,
        redis_prefix: "im".into(),
        log_format: inframind::config::LogFormat::Text,
        model_signing_key_file: None,
        model_public_key_file: None,
    };
    let mut state = ApiState::new(
        url,
        TokenFile::open(dir.path().join("ingest")).unwrap(),
        None,
        Arc::new(LiveModel::new()),
        Recommender::default(),
        1024 * 1024,
        match kube {
            Some(client) => Training::Kubernetes {
                client,
                namespace: "ci".into(),
            },
            None => Training::InProcess(Box::new(api::in_process_training(&global).unwrap())),
        },
    );
    state.models_dir = Some(inframind::model::ModelDir::new(dir.path().join("models")));
    let server = api::spawn("127.0.0.1:0".parse().unwrap(), None, Arc::new(state))
        .await
        .unwrap();
    Api {
        base: format!("http://{}", server.addr()),
        client: inframind::client::Client::plain(),
        _dir: dir,
        _server: server,
    }
}

impl Api {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> inframind::client::Response {
        self.client
            .request("GET", &format!("{}{path}", self.base), headers, Vec::new())
            .await
            .unwrap()
    }

    async fn login(&self, token: &str) -> inframind::client::Response {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("{}/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("token={token}"))))
            .unwrap();
        self.client.send(req).await.unwrap()
    }
}

fn header<'a>(r: &'a inframind::client::Response, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn savings_endpoint_reports_the_simulated_effect_with_its_interval() {
    let api = start().await;
    let bearer = format!("Bearer {INGEST}");
    let auth = [("authorization", bearer.as_str())];
    let r = api.get("/v1/savings?since=7d", &auth).await;
    assert_eq!(r.status, 200);
    let report: Value = serde_json::from_slice(&r.body).unwrap();
    let effect = &report["total"]["effect"]["median_saved_s"];
    assert!(effect["low"].as_f64().unwrap() > 0.0, "{report}");
    assert!(effect["estimate"].as_f64().unwrap() >= effect["low"].as_f64().unwrap());
    assert!(report["total"]["holdout"]["builds"].as_u64().unwrap() > 50);
    assert_eq!(report["pipelines"].as_array().unwrap().len(), 6);
    let one = api.get("/v1/savings?pipeline=acme%2Fapi", &auth).await;
    let one: Value = serde_json::from_slice(&one.body).unwrap();
    assert_eq!(one["pipelines"][0]["pipeline"], "acme/api");
    assert_eq!(one["pipelines"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/v1/savings?since=soon", &auth).await.status, 400);
    assert_eq!(api.get("/v1/savings", &[]).await.status, 401);
}

#[tokio::test]
async fn dashboard_pages_sit_behind_the_login_and_render_without_script() {
    let api = start().await;
    let anonymous = api.get("/", &[]).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(header(&anonymous, "location"), "/login");
    let form = api.get("/login", &[]).await;
    assert_eq!(form.status, 200);
    assert!(String::from_utf8_lossy(&form.body).contains("name=\"token\""));
    assert_eq!(api.login("wrong").await.status, 401);

    let ok = api.login(INGEST).await;
    assert_eq!(ok.status, 303);
    let set = header(&ok, "set-cookie").to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains(INGEST),
        "the cookie holds a digest, not the token"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let with_cookie = [("cookie", cookie.as_str())];

    for (path, expect) in [
        ("/", "faster at the median"),
        ("/pipelines/acme%2Fapi", "acme/api: duration by decision"),
        ("/models", "No model versions yet"),
    ] {
        let r = api.get(path, &with_cookie).await;
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 200, "{path}: {body}");
        assert!(header(&r, "content-type").starts_with("text/html"));
        assert!(header(&r, "content-security-policy").contains("default-src 'none'"));
        assert!(body.contains(expect), "{path} lacks {expect:?}");
        assert!(!body.contains("<script"), "{path} carries script");
        assert!(!body.contains(" src=\""), "{path} loads something");
        if path != "/models" {
            assert!(body.contains("<svg"), "{path} has no chart");
        }
        // Cache advice (issue 17): on the overview and on each pipeline's page.
        match path {
            "/" => assert!(body.contains("<h2>Cache advice</h2>"), "{body}"),
            "/pipelines/acme%2Fapi" => {
                assert!(body.contains("<h2>Build cache</h2>"));
                assert!(body.contains("duration vs cache hit ratio"));
                assert!(body.contains("lost to misses per day"));
            }
            _ => assert!(body.contains("<h2>Promotions and rollbacks</h2>"), "{body}"),
        }
    }
    // A bearer token opens the pages too; a made-up cookie does not.
    let bearer = format!("Bearer {INGEST}");
    assert_eq!(
        api.get("/models", &[("authorization", &bearer)])
            .await
            .status,
        200
    );
    let forged = api.get("/", &[("cookie", "inframind_session=00")]).await;
    assert_eq!(forged.status, 303);
    assert_eq!(
        api.get("/pipelines/nobody%2Fhere", &with_cookie)
            .await
            .status,
        404
    );
    let out = api.get("/logout", &with_cookie).await;
    assert!(header(&out, "set-cookie").contains("Max-Age=0"));
    // The API exports its own metrics, counted by route (never by pipeline name).
    let m = api.get("/metrics", &[]).await;
    assert_eq!(m.status, 200);
    assert!(header(&m, "content-type").starts_with("application/openmetrics-text"));
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains("inframind_api_requests_total{route=\"/pipelines\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(!text.contains("acme"));
}

/// The real binary: a simulated week with a holdout, `savings` in all three formats, the
/// holdout plot `train` writes and the curves `explain --pipeline` writes.
#[test]
fn the_cli_reports_savings_and_writes_its_plots() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_inframind"))
            .args(args)
            .current_dir(dir.path())
            .env(
                "INFRAMIND_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("im.db").display()),
            )
            .env("INFRAMIND_MODELS_DIR", dir.path().join("models"))
            .env_remove("INFRAMIND_REDIS_URL")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    run(&["simulate", "--holdout-rate", "0.2", "--out", "week.jsonl"]);
    run(&["ingest", "--strict", "week.jsonl"]);
    let json: Value = serde_json::from_str(&run(&["savings", "-o", "json"])).unwrap();
    let ci = &json["total"]["effect"]["median_saved_s"];
    assert!(ci["low"].as_f64().unwrap() > 0.0, "{json}");
    let yaml: Value = serde_yaml::from_str(&run(&["savings", "--output", "yaml"])).unwrap();
    assert_eq!(yaml["total"]["holdout"], json["total"]["holdout"]);
    let table = run(&["savings", "--pipeline", "acme/web"]);
    assert!(
        table.contains("acme/web") && table.contains("95% CI")
            || table.contains("not enough data yet"),
        "{table}"
    );

    let trained = run(&["train", "--trees", "20"]);
    let svg = std::fs::read_dir(dir.path().join("models"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "svg"))
        .expect("train wrote model_v….svg next to the artifact");
    let text = std::fs::read_to_string(svg.path()).unwrap();
    assert!(text.contains("predicted = actual") && text.matches("<circle").count() > 20);
    assert!(trained.contains("predicted vs actual"), "{trained}");

    let explained = run(&["explain", "--pipeline", "acme/api", "--plot", "pd.svg"]);
    assert!(
        explained.contains("vs concurrency") && explained.contains("vs cpu"),
        "{explained}"
    );
    let pd = std::fs::read_to_string(dir.path().join("pd.svg")).unwrap();
    assert!(pd.contains("<polyline") && pd.contains("vs cpu"));
}

/// The TrainingJobs page lists the namespace's TrainingJobs with their status, read from a fake
/// of the Kubernetes API's HTTP contract (kube-rs `tower_test`; no API server runs here); an
/// API that trains in-process says there are none to show.
#[tokio::test]
async fn the_trainingjobs_page_lists_their_status() {
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let fake = tokio::spawn(async move {
        let mut paths = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            paths.push(req.uri().path().to_string());
            // A TrainingJob as the controller writes it (serialised from the real types).
            let mut tj = inframind::controller::TrainingJob::new("nightly", Default::default());
            tj.metadata.namespace = Some("ci".into());
            tj.status = Some(inframind::controller::TrainingJobStatus {
                phase: Some(inframind::controller::Phase::Succeeded),
                version: Some("model_v20261128_020000".into()),
                promoted: Some(true),
                message: Some("promoted <model_v20261128_020000>".into()),
                metrics: Some(inframind::controller::crd::RunMetrics {
                    mae_seconds: Some(41.5),
                    r2: Some(0.81),
                    rank_accuracy: Some(0.77),
                    ..Default::default()
                }),
                ..Default::default()
            });
            let list = serde_json::json!({
                "apiVersion": "inframind.io/v1alpha1", "kind": "TrainingJobList",
                "metadata": {"resourceVersion": "7"}, "items": [tj]
            });
            send.send_response(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
        }
        paths
    });
    let api = start_with(Some(kube::Client::new(service, "default"))).await;
    let bearer = format!("Bearer {INGEST}");
    let auth = [("authorization", bearer.as_str())];
    let page = api.get("/trainingjobs", &auth).await;
    let body = String::from_utf8_lossy(&page.body).to_string();
    assert_eq!(page.status, 200, "{body}");
    for expect in [
        "nightly",
        "Succeeded",
        "model_v20261128_020000",
        "41.5",
        "0.810",
        "0.770",
        "promoted &lt;model_v",
    ] {
        assert!(body.contains(expect), "missing {expect}: {body}");
    }
    drop(api);
    let paths = fake.await.unwrap();
    assert_eq!(
        paths,
        ["/apis/inframind.io/v1alpha1/namespaces/ci/trainingjobs"]
    );

    let in_process = start().await;
    let page = in_process.get("/trainingjobs", &auth).await;
    assert!(String::from_utf8_lossy(&page.body).contains("trains in its own process"));
}
