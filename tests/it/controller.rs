//! The TrainingJob controller against a mocked Kubernetes API, with the real PostgreSQL and Redis.
//!
//! There is no API server here: a `tower_test` mock service stands in for it (kube-rs's
//! controller-rs `ApiServerVerifier` pattern). Each test runs the reconciler and, side by side,
//! a verifier that asserts every request it makes, in order (method, path, body), and answers
//! as the API server would. Behind the reconciler are the real store (a fresh PostgreSQL schema
//! per test) and the real registry (Redis under a unique key prefix per test).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{Method, Request, Response};
use k8s_openapi::api::batch::v1::Job;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use redis::AsyncCommands;
use serde_json::Value;
use tower_test::mock::{self, Handle, SendResponse};

use inframind::controller::crd::{
    k8s_time, ExecutionMode, Gates, Hyperparameters, Phase, TrainingJob, TrainingJobSpec,
    TrainingJobStatus, Triggers, PARENT_LABEL, TRIGGER_ANNOTATION,
};
use inframind::controller::job::JobTemplate;
use inframind::controller::status::{condition, GATES_PASSED, PROMOTED, TRAINED};
use inframind::controller::{error_policy, reconcile, Context, Error, Settings, FIELD_MANAGER};
use inframind::model::ModelDir;
use inframind::registry::Registry;
use inframind::telemetry::Store;

use crate::harness::{pg_schema_url, redis_conn, redis_url, small_model, unique};

const NS: &str = "ci";
const NAME: &str = "nightly";
/// How long the verifier waits for the reconciler's next request (training included).
const PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The mocked API server.

/// Answers the reconciler's requests in the order a test expects them, asserting each.
struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    /// The TrainingJob as the API server holds it (status writes land here).
    tj: TrainingJob,
    rv: u64,
}

fn respond(send: SendResponse<Response<Body>>, status: u16, body: &impl serde::Serialize) {
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

async fn json_body(req: Request<Body>) -> Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).expect("request body is JSON")
}

impl ApiServer {
    fn new(handle: Handle<Request<Body>, Response<Body>>, tj: &TrainingJob) -> ApiServer {
        ApiServer {
            handle,
            tj: tj.clone(),
            rv: tj
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or("1")
                .parse()
                .unwrap(),
        }
    }

    async fn next(&mut self) -> (Request<Body>, SendResponse<Response<Body>>) {
        tokio::time::timeout(PATIENCE, self.handle.next_request())
            .await
            .expect("the reconciler made no further request")
            .expect("the client was dropped")
    }

    fn bump(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// A server-side apply of the status subresource under the controller's field manager.
    async fn status_patch(&mut self) -> TrainingJobStatus {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::PATCH, "{}", req.uri());
        assert_eq!(
            req.uri().to_string(),
            format!(
                "/apis/inframind.io/v1alpha1/namespaces/{NS}/trainingjobs/{}/status?&force=true&fieldManager={FIELD_MANAGER}",
                self.tj.metadata.name.as_deref().unwrap()
            )
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml",
            "server-side apply"
        );
        let body = json_body(req).await;
        assert_eq!(body["apiVersion"], "inframind.io/v1alpha1");
        assert_eq!(body["kind"], "TrainingJob");
        assert!(body.get("spec").is_none(), "only the status is applied");
        let status: TrainingJobStatus =
            serde_json::from_value(body["status"].clone()).expect("a valid status");
        self.tj.status = Some(status.clone());
        self.tj.metadata.resource_version = Some(self.bump());
        respond(send, 200, &self.tj);
        status
    }

    /// An Event about the TrainingJob (events.k8s.io/v1): created, or patched when the same
    /// event repeats within minutes (kube's recorder then counts it as a series).
    async fn event(&mut self, reason: &str, type_: &str) -> Value {
        let (req, send) = self.next().await;
        let uri = req.uri().to_string();
        let events = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
        match req.method().clone() {
            Method::POST => assert_eq!(uri, format!("{events}?")),
            Method::PATCH => assert!(
                uri.starts_with(&format!("{events}/{NAME}.")),
                "a repeated event: {uri}"
            ),
            m => panic!("expected an event, got {m} {uri}"),
        }
        let body = json_body(req).await;
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["type"], type_, "{body}");
        assert_eq!(body["regarding"]["kind"], "TrainingJob");
        assert_eq!(
            body["regarding"]["name"],
            self.tj.metadata.name.clone().unwrap()
        );
        assert_eq!(body["reportingController"], FIELD_MANAGER);
        respond(send, 201, &body);
        body
    }

    /// Creation of a TrainingJob (a trigger's child).
    async fn create_training_job(&mut self) -> TrainingJob {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::POST, "{}", req.uri());
        assert_eq!(
            req.uri().to_string(),
            format!("/apis/inframind.io/v1alpha1/namespaces/{NS}/trainingjobs?")
        );
        let mut child: TrainingJob = serde_json::from_value(json_body(req).await).unwrap();
        child.metadata.uid = Some("uid-child".into());
        child.metadata.generation = Some(1);
        child.metadata.resource_version = Some("1".into());
        respond(send, 201, &child);
        child
    }

    /// Creation of a batch/v1 Job in `ns`.
    async fn create_job(&mut self, ns: &str) -> Job {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::POST, "{}", req.uri());
        assert_eq!(
            req.uri().to_string(),
            format!("/apis/batch/v1/namespaces/{ns}/jobs?")
        );
        let mut job: Job = serde_json::from_value(json_body(req).await).unwrap();
        job.metadata.uid = Some("uid-job".into());
        respond(send, 201, &job);
        job
    }

    /// A read of a batch/v1 Job, answered with `job`.
    async fn get_job(&mut self, job: &Job) {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().to_string(),
            format!(
                "/apis/batch/v1/namespaces/{}/jobs/{}",
                job.metadata.namespace.as_deref().unwrap(),
                job.metadata.name.as_deref().unwrap()
            )
        );
        respond(send, 200, job);
    }

    /// A read of the TrainingJob.
    async fn get_training_job(&mut self) {
        let (req, send) = self.next().await;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().to_string(),
            format!("/apis/inframind.io/v1alpha1/namespaces/{NS}/trainingjobs/{NAME}")
        );
        let tj = self.tj.clone();
        respond(send, 200, &tj);
    }

    /// No request at all.
    async fn silence(&mut self) {
        if let Ok(Some((req, _))) =
            tokio::time::timeout(Duration::from_millis(300), self.handle.next_request()).await
        {
            panic!("expected no request, got {} {}", req.method(), req.uri());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures: data, settings, TrainingJobs.

/// A fresh PostgreSQL schema holding `runs` simulated builds, a models directory and a Redis
/// prefix, all private to one test.
struct Env {
    db: String,
    store: Store,
    dir: tempfile::TempDir,
    prefix: String,
}

impl Env {
    async fn new(runs: usize) -> Env {
        let db = pg_schema_url().await;
        let store = Store::connect(&db).await.expect("connecting the store");
        if runs > 0 {
            let now = Utc::now();
            store
                .insert_runs(&inframind::simulate::demo_runs(runs, now, 5), now)
                .await
                .unwrap();
        }
        Env {
            db,
            store,
            dir: tempfile::tempdir().unwrap(),
            prefix: unique("imc"),
        }
    }

    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    fn settings(&self) -> Settings {
        Settings {
            database_url: self.db.clone(),
            models_dir: self.models(),
            redis_url: Some(redis_url()),
            redis_prefix: self.prefix.clone(),
            model_keys: Default::default(),
            field_manager: FIELD_MANAGER.into(),
            identity: "controller-0".into(),
            job_template: None,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            max_concurrent_trainings: 1,
            resync: Duration::from_secs(3600),
        }
    }

    async fn registry(&self) -> Registry {
        Registry::open(
            ModelDir::new(self.models()),
            Some(&redis_url()),
            &self.prefix,
        )
        .await
        .unwrap()
    }

    async fn active(&self) -> Option<String> {
        redis_conn()
            .await
            .get(format!("{}:model:active", self.prefix))
            .await
            .unwrap()
    }

    /// Trains a small model outside the controller and makes it the active one.
    async fn promote_existing(&self, version: &str) -> inframind::model::ModelMeta {
        let reg = self.registry().await;
        let (model, meta) = small_model(reg.dir(), version, 9);
        reg.publish(&model, &meta).await.unwrap();
        reg.promote(version).await.unwrap();
        meta
    }
}

fn context(settings: Settings) -> (Arc<Context>, Handle<Request<Body>, Response<Body>>) {
    let (ctx, handle) = context_parts(settings);
    (Arc::new(ctx), handle)
}

/// A context whose clock stands still at `now`.
fn context_at(
    settings: Settings,
    now: DateTime<Utc>,
) -> (Arc<Context>, Handle<Request<Body>, Response<Body>>) {
    let (ctx, handle) = context_parts(settings);
    (Arc::new(ctx.with_clock(Arc::new(move || now))), handle)
}

fn context_parts(settings: Settings) -> (Context, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(
        client,
        settings,
        Arc::new(inframind::controller::metrics::Metrics::new()),
    );
    (ctx, handle)
}

/// Small and fast: a few hundred runs, 25 trees of depth 8.
fn small_spec() -> TrainingJobSpec {
    TrainingJobSpec {
        limit: 400,
        hyperparameters: Hyperparameters {
            trees: 25,
            max_depth: 8,
            ..Default::default()
        },
        gates: Gates {
            max_mae_seconds: 10_000.0,
            min_r2: Some(0.5),
            min_rank_accuracy: 0.6,
            must_beat_active: true,
        },
        ..Default::default()
    }
}

fn training_job(spec: TrainingJobSpec) -> TrainingJob {
    let mut tj = TrainingJob::new(NAME, spec);
    tj.metadata.namespace = Some(NS.into());
    tj.metadata.uid = Some("uid-nightly".into());
    tj.metadata.generation = Some(1);
    tj.metadata.resource_version = Some("1".into());
    tj.metadata.creation_timestamp = Some(k8s_time(Utc::now() - chrono::Duration::hours(1)));
    tj
}

fn succeeded(generation: i64) -> TrainingJobStatus {
    TrainingJobStatus {
        phase: Some(Phase::Succeeded),
        observed_generation: Some(generation),
        ..Default::default()
    }
}

fn cond<'a>(s: &'a TrainingJobStatus, t: &str) -> (&'a str, &'a str) {
    let c = condition(s, t).unwrap_or_else(|| panic!("no {t} condition in {s:#?}"));
    (c.status.as_str(), c.reason.as_str())
}

fn model_saved(dir: &Path, version: &str) -> bool {
    dir.join(format!("{version}.json")).exists() && dir.join(format!("{version}.imf")).exists()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[tokio::test]
async fn first_reconcile_trains_and_promotes_and_the_same_generation_is_never_retrained() {
    let env = Env::new(600).await;
    let (ctx, handle) = context(env.settings());
    let tj = training_job(small_spec());
    let mut api = ApiServer::new(handle, &tj);

    let started = std::time::Instant::now();
    let (result, (running, done)) =
        tokio::join!(reconcile(Arc::new(tj.clone()), ctx.clone()), async {
            let running = api.status_patch().await;
            api.event("TrainingStarted", "Normal").await;
            let done = api.status_patch().await;
            api.event("TrainingFinished", "Normal").await;
            api.event("Promoted", "Normal").await;
            (running, done)
        });
    let action = result.expect("reconcile succeeds");
    eprintln!("train + promote reconcile: {:?}", started.elapsed());

    // The run is announced first.
    assert_eq!(running.phase, Some(Phase::Running));
    assert_eq!(running.runner.as_deref(), Some("controller/controller-0"));
    assert_eq!(running.run_reason.as_deref(), Some("created"));
    assert!(running.start_time.is_some());
    assert_eq!(running.observed_generation, None, "not observed until done");
    assert_eq!(cond(&running, TRAINED), ("Unknown", "Training"));

    // Then its result.
    assert_eq!(done.phase, Some(Phase::Succeeded), "{done:#?}");
    assert_eq!(done.observed_generation, Some(1));
    let version = done.version.clone().expect("a version");
    assert!(version.starts_with("model_v"), "{version}");
    assert_eq!(done.promoted, Some(true));
    assert_eq!(done.previous_version, None, "nothing was active before");
    assert!(done.completion_time.is_some());
    let m = done.metrics.as_ref().expect("metrics");
    assert_eq!(m.rows, 400);
    assert!(m.mae_seconds.unwrap() > 0.0);
    assert!(m.r2.unwrap() > 0.5, "{m:?}");
    assert_eq!(m.random_holdout.test_rows, 80);
    assert!(m.temporal_holdout.mae_seconds.is_some());
    assert_eq!(
        m.random_holdout.mae_seconds, m.mae_seconds,
        "random split is served"
    );
    assert!(m.rank_accuracy.unwrap() > 0.6, "{m:?}");
    assert!(m.random_holdout.rank_pairs > 0);
    let gates: Vec<_> = done.gates.iter().map(|g| g.gate.as_str()).collect();
    assert_eq!(
        gates,
        [
            "maxMaeSeconds",
            "minR2",
            "minRankAccuracy",
            "mustBeatActive"
        ]
    );
    assert!(done.gates.iter().all(|g| g.passed), "{:#?}", done.gates);
    assert!(done.failed_gate.is_none());
    assert_eq!(cond(&done, TRAINED), ("True", "Trained"));
    assert_eq!(cond(&done, GATES_PASSED), ("True", "AllGatesPassed"));
    assert_eq!(cond(&done, PROMOTED), ("True", "Promoted"));
    assert!(done.message.as_deref().unwrap().contains("promoted"));

    // The registry says so too: Redis's pointer names the version, the artifact is stored.
    assert_eq!(env.active().await.as_deref(), Some(version.as_str()));
    assert!(model_saved(&env.models(), &version));
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    let metrics = ctx.metrics.render();
    assert!(metrics.contains("inframind_controller_trainings_total{outcome=\"promoted\"} 1"));
    assert!(metrics.contains("inframind_controller_promotions_total 1"));

    // A resync of the same generation: no training, no status write, no request at all.
    let (again, ()) = tokio::join!(
        reconcile(Arc::new(api.tj.clone()), ctx.clone()),
        api.silence()
    );
    assert_eq!(again.unwrap(), Action::requeue(Duration::from_secs(3600)));

    // The watch cache may still hold the "Running" write: the controller remembers its own
    // writes and does not mistake that for an interrupted run.
    let mut stale = tj.clone();
    stale.status = Some(running.clone());
    stale.metadata.resource_version = Some("2".into());
    let (again, ()) = tokio::join!(reconcile(Arc::new(stale), ctx.clone()), api.silence());
    again.unwrap();
    assert!(ctx
        .metrics
        .render()
        .contains("inframind_controller_trainings_total{outcome=\"promoted\"} 1"));
}

#[tokio::test]
async fn a_model_failing_its_gates_is_stored_but_not_promoted() {
    let env = Env::new(600).await;
    let before = env.promote_existing("model_v20200101_000000").await;
    let (ctx, handle) = context(env.settings());
    let mut spec = small_spec();
    spec.gates.max_mae_seconds = 0.001;
    let tj = training_job(spec);
    let mut api = ApiServer::new(handle, &tj);

    let (result, done) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
        api.status_patch().await;
        api.event("TrainingStarted", "Normal").await;
        let done = api.status_patch().await;
        api.event("TrainingFinished", "Normal").await;
        let ev = api.event("GatesFailed", "Warning").await;
        assert!(
            ev["note"].as_str().unwrap().contains("maxMaeSeconds"),
            "{ev}"
        );
        done
    });
    result.expect("a failed gate is an outcome, not a reconcile error");

    assert_eq!(done.phase, Some(Phase::Failed));
    assert_eq!(
        done.observed_generation,
        Some(1),
        "not retried for this generation"
    );
    assert_eq!(done.promoted, Some(false));
    let version = done.version.clone().unwrap();
    let mae = done.metrics.as_ref().unwrap().mae_seconds.unwrap();
    let g = done.failed_gate.as_ref().expect("the failed gate");
    assert_eq!(g.gate, "maxMaeSeconds");
    assert!(!g.passed);
    assert_eq!(g.threshold, Some(0.001));
    assert_eq!(g.value, Some(mae));
    assert!((g.by.unwrap() - (mae - 0.001)).abs() < 1e-9, "{g:?}");
    assert!(
        g.message.contains("exceeds the maximum 0.001 s by"),
        "{}",
        g.message
    );
    // The comparison with the active model was made on the same holdout, and reported.
    assert_eq!(
        done.compared_with.as_deref(),
        Some("model_v20200101_000000")
    );
    let beat = done
        .gates
        .iter()
        .find(|g| g.gate == "mustBeatActive")
        .unwrap();
    // Both models rank pairs on those rows, so the comparison is by rank accuracy.
    let active_rank = done.metrics.as_ref().unwrap().active_rank_accuracy;
    assert!(active_rank.is_some());
    assert_eq!(beat.threshold, active_rank);
    assert!(beat.message.contains("model_v20200101_000000"));
    assert_eq!(cond(&done, GATES_PASSED), ("False", "GateFailed"));
    assert_eq!(cond(&done, PROMOTED), ("False", "GatesFailed"));
    assert!(done
        .message
        .as_deref()
        .unwrap()
        .contains("stored but not promoted"));

    // Stored and published, not promoted: the pointer has not moved.
    assert_eq!(env.active().await.as_deref(), Some(before.version.as_str()));
    assert!(model_saved(&env.models(), &version));
    let published: bool = redis_conn()
        .await
        .exists(format!("{}:model:{version}:meta", env.prefix))
        .await
        .unwrap();
    assert!(published, "a gated model is still published for inspection");
}

#[tokio::test]
async fn an_unreachable_store_fails_clearly_and_requeues_with_backoff() {
    let env = Env::new(0).await;
    let mut settings = env.settings();
    settings.database_url = "postgres://postgres@127.0.0.1:1/test".into();
    let (ctx, handle) = context(settings);
    let tj = training_job(small_spec());
    let mut api = ApiServer::new(handle, &tj);

    let (result, failed) = tokio::join!(reconcile(Arc::new(tj.clone()), ctx.clone()), async {
        api.status_patch().await;
        api.event("TrainingStarted", "Normal").await;
        let failed = api.status_patch().await;
        let ev = api.event("TrainingFailed", "Warning").await;
        assert!(ev["note"]
            .as_str()
            .unwrap()
            .contains("telemetry store unreachable"));
        failed
    });
    let err = result.expect_err("a store outage is retried");
    assert!(matches!(&err, Error::Run(_)), "{err:?}");
    assert_eq!(err.metric_label(), "store");

    assert_eq!(failed.phase, Some(Phase::Failed));
    assert_eq!(
        failed.observed_generation, None,
        "the generation is still due"
    );
    assert_eq!(cond(&failed, TRAINED), ("False", "StoreUnavailable"));
    let msg = failed.message.clone().unwrap();
    assert!(msg.contains("telemetry store unreachable"), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "says which store: {msg}");
    assert!(msg.contains("retrying with backoff"), "{msg}");
    assert!(failed.version.is_none() && failed.metrics.is_none());

    // error_policy counts the failure and backs off exponentially.
    let tj = Arc::new(api.tj.clone());
    assert_eq!(
        error_policy(tj.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(tj.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert!(ctx
        .metrics
        .render()
        .contains("inframind_controller_reconcile_failures_total{error=\"store\"} 2"));
    // Within the backoff, a watch event does not retry (no tight loop on our own writes).
    let (again, ()) = tokio::join!(reconcile(tj, ctx.clone()), api.silence());
    let again = again.unwrap();
    assert!(
        again != Action::requeue(Duration::from_secs(3600)),
        "requeued for the retry: {again:?}"
    );
}

#[tokio::test]
async fn a_trigger_check_that_cannot_reach_the_store_says_so_in_the_status() {
    let env = Env::new(0).await;
    let mut settings = env.settings();
    settings.database_url = "postgres://postgres@127.0.0.1:1/test".into();
    let (ctx, handle) = context(settings);
    let mut spec = small_spec();
    spec.triggers = Some(Triggers::default());
    let mut tj = training_job(spec);
    tj.status = Some(succeeded(1));
    let mut api = ApiServer::new(handle, &tj);
    let (result, s) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), api.status_patch());
    assert_eq!(result.unwrap_err().metric_label(), "store");
    let check = s.trigger_check.expect("triggerCheck");
    let error = check.error.expect("the error");
    assert!(error.starts_with("StoreUnavailable: "), "{error}");
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert_eq!(check.new_runs, None);
    assert_eq!(
        s.phase,
        Some(Phase::Succeeded),
        "the last run's result stands"
    );
    // The next check waits for the interval.
    let (again, ()) = tokio::join!(
        reconcile(Arc::new(api.tj.clone()), ctx.clone()),
        api.silence()
    );
    again.unwrap();
}

#[tokio::test]
async fn too_few_runs_fail_the_generation_with_a_clear_status() {
    let env = Env::new(0).await;
    let (ctx, handle) = context(env.settings());
    let tj = training_job(small_spec());
    let mut api = ApiServer::new(handle, &tj);
    let (result, failed) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
        api.status_patch().await;
        api.event("TrainingStarted", "Normal").await;
        let failed = api.status_patch().await;
        api.event("TrainingFailed", "Warning").await;
        failed
    });
    result.expect("terminal for this generation, not a retry");
    assert_eq!(failed.phase, Some(Phase::Failed));
    assert_eq!(failed.observed_generation, Some(1));
    assert_eq!(cond(&failed, TRAINED), ("False", "InsufficientData"));
    assert!(failed
        .message
        .unwrap()
        .contains("too few successful runs to train: 0"));
}

/// The latest tick of `*/10 * * * *` at or before `t`.
fn ten_minute_tick(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp() - t.timestamp().rem_euclid(600), 0).unwrap()
}

#[tokio::test]
async fn a_schedule_tick_retrains_once_and_not_before_it_comes() {
    let env = Env::new(500).await;
    let now = Utc::now();
    let (ctx, handle) = context_at(env.settings(), now);
    // Another replica (with a models directory of its own) already published a model under
    // this second's version name: the run must not reuse it.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Registry::open(
        ModelDir::new(elsewhere.path()),
        Some(&redis_url()),
        &env.prefix,
    )
    .await
    .unwrap();
    let taken = inframind::model::version_at(now);
    let (m, meta) = small_model(other.dir(), &taken, 3);
    other.publish(&m, &meta).await.unwrap();
    let tick = ten_minute_tick(now);
    let mut spec = small_spec();
    spec.schedule = Some("*/10 * * * *".into());
    let mut tj = training_job(spec);
    tj.status = Some(TrainingJobStatus {
        last_schedule_time: Some(k8s_time(tick - chrono::Duration::minutes(10))),
        ..succeeded(1)
    });
    let mut api = ApiServer::new(handle, &tj);

    let (result, (running, done)) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
        let running = api.status_patch().await;
        api.event("TrainingStarted", "Normal").await;
        let done = api.status_patch().await;
        api.event("TrainingFinished", "Normal").await;
        api.event("Promoted", "Normal").await;
        (running, done)
    });
    let action = result.unwrap();
    assert_eq!(
        running.last_schedule_time,
        Some(k8s_time(tick)),
        "the run covers the tick that came"
    );
    assert!(
        running
            .run_reason
            .as_deref()
            .unwrap()
            .starts_with("schedule `*/10 * * * *` tick"),
        "{running:?}"
    );
    assert_eq!(done.phase, Some(Phase::Succeeded));
    assert_eq!(done.last_schedule_time, Some(k8s_time(tick)));
    assert_eq!(done.observed_generation, Some(1));
    assert_eq!(done.version, Some(format!("{taken}_1")));
    let until_next = (tick + chrono::Duration::minutes(10) - now)
        .to_std()
        .unwrap();
    assert_eq!(action, Action::requeue(until_next));

    // Before the next tick: nothing, and a requeue for when it comes.
    let (again, ()) = tokio::join!(
        reconcile(Arc::new(api.tj.clone()), ctx.clone()),
        api.silence()
    );
    assert_eq!(again.unwrap(), Action::requeue(until_next));
}

/// A TCP proxy in front of Redis that drops every connection, and stops listening, the moment
/// the client starts a transaction (the registry's publish): Redis vanishing mid-promotion.
struct RedisProxy {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RedisProxy {
    async fn start(
        listener: tokio::net::TcpListener,
        trip_on: Option<&'static [u8]>,
    ) -> RedisProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = listener.local_addr().unwrap();
        let upstream = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_string();
        let (trip, tripped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut stop = tripped.clone();
            loop {
                let (mut client, _) = tokio::select! {
                    a = listener.accept() => a.unwrap(),
                    _ = stop.changed() => return,
                };
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let trip = trip.clone();
                let mut stop = tripped.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let mut a = [0u8; 65536];
                    let mut b = [0u8; 65536];
                    loop {
                        tokio::select! {
                            n = cr.read(&mut a) => {
                                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                                if let Some(pat) = trip_on {
                                    if a[..n].windows(pat.len()).any(|w| w == pat) {
                                        let _ = trip.send(true);
                                        return;
                                    }
                                }
                                if sw.write_all(&a[..n]).await.is_err() { return; }
                            }
                            n = sr.read(&mut b) => {
                                let n = match n { Ok(0) | Err(_) => return, Ok(n) => n };
                                if cw.write_all(&b[..n]).await.is_err() { return; }
                            }
                            _ = stop.changed() => return,
                        }
                    }
                });
            }
        });
        RedisProxy { addr, task }
    }
}

#[tokio::test]
async fn redis_lost_at_promotion_keeps_the_model_and_promotion_is_retried() {
    let env = Env::new(500).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = RedisProxy::start(listener, Some(b"MULTI")).await;
    let mut settings = env.settings();
    settings.redis_url = Some(format!("redis://{}", proxy.addr));
    settings.backoff_base = Duration::ZERO;
    let (ctx, handle) = context(settings);
    let tj = training_job(small_spec());
    let mut api = ApiServer::new(handle, &tj);

    let (result, pending) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
        api.status_patch().await;
        api.event("TrainingStarted", "Normal").await;
        let pending = api.status_patch().await;
        api.event("TrainingFinished", "Normal").await;
        api.event("PromotionPending", "Warning").await;
        pending
    });
    let err = result.expect_err("a pending promotion is retried");
    assert!(matches!(err, Error::PromotionPending { .. }), "{err:?}");
    assert_eq!(pending.phase, Some(Phase::Failed));
    assert_eq!(
        pending.observed_generation,
        Some(1),
        "trained: not trained again"
    );
    let version = pending.version.clone().unwrap();
    assert_eq!(pending.pending_promotion.as_deref(), Some(version.as_str()));
    assert_eq!(pending.promoted, Some(false));
    assert_eq!(cond(&pending, GATES_PASSED), ("True", "AllGatesPassed"));
    assert_eq!(cond(&pending, PROMOTED), ("False", "RegistryUnavailable"));
    let msg = pending.message.clone().unwrap();
    assert!(msg.contains("promotion is pending"), "{msg}");
    assert!(msg.contains("the model is stored"), "{msg}");
    // The model stays stored; nothing reached Redis.
    assert!(model_saved(&env.models(), &version));
    assert_eq!(env.active().await, None);
    proxy.task.await.unwrap();

    // While Redis is still away, the retry fails again and says so.
    error_policy(Arc::new(api.tj.clone()), &err, ctx.clone());
    let (again, still) = tokio::join!(reconcile(Arc::new(api.tj.clone()), ctx.clone()), async {
        let s = api.status_patch().await;
        api.event("PromotionPending", "Warning").await;
        s
    });
    assert!(matches!(again, Err(Error::PromotionPending { .. })));
    assert_eq!(still.pending_promotion.as_deref(), Some(version.as_str()));

    // Redis is back (on the same address): the retry promotes without training again.
    let listener = tokio::net::TcpListener::bind(proxy.addr).await.unwrap();
    let _proxy = RedisProxy::start(listener, None).await;
    let (retried, promoted) =
        tokio::join!(reconcile(Arc::new(api.tj.clone()), ctx.clone()), async {
            let s = api.status_patch().await;
            api.event("Promoted", "Normal").await;
            s
        });
    retried.expect("promoted");
    assert_eq!(promoted.phase, Some(Phase::Succeeded));
    assert_eq!(promoted.promoted, Some(true));
    assert_eq!(promoted.pending_promotion, None);
    assert_eq!(promoted.version.as_deref(), Some(version.as_str()));
    assert_eq!(cond(&promoted, PROMOTED), ("True", "Promoted"));
    assert_eq!(env.active().await.as_deref(), Some(version.as_str()));
}

#[tokio::test]
async fn new_runs_fire_a_trigger_that_creates_a_child_training_job() {
    let env = Env::new(300).await;
    let active = env.promote_existing("model_v20200101_000000").await;
    // Builds that arrive after the active model was trained.
    let later = Utc::now();
    assert!(later >= active.created_at);
    let mut fresh = inframind::simulate::demo_runs(120, later, 77);
    for r in &mut fresh {
        r.run_id = format!("late-{}", r.run_id);
    }
    let stored = env.store.insert_runs(&fresh, later).await.unwrap();
    assert_eq!(stored.inserted, 120);
    let (ctx, handle) = context(env.settings());
    let mut spec = small_spec();
    spec.triggers = Some(Triggers {
        every_n_runs: 100,
        mae_drift_fraction: 0.0,
        check_interval_seconds: 60,
    });
    let mut tj = training_job(spec);
    tj.status = Some(succeeded(1));
    let mut api = ApiServer::new(handle, &tj);

    let (result, (child, parent)) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
        let child = api.create_training_job().await;
        let parent = api.status_patch().await;
        let ev = api.event("RetrainTriggered", "Normal").await;
        assert!(ev["note"]
            .as_str()
            .unwrap()
            .contains(child.metadata.name.as_deref().unwrap()));
        (child, parent)
    });
    result.unwrap();

    // The child: same training, no schedule or triggers, owned by and labelled with the parent,
    // annotated with the reason.
    let child_name = child.metadata.name.clone().unwrap();
    assert!(child_name.starts_with("nightly-"), "{child_name}");
    assert_eq!(child.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(child.metadata.labels.as_ref().unwrap()[PARENT_LABEL], NAME);
    let reason = &child.metadata.annotations.as_ref().unwrap()[TRIGGER_ANNOTATION];
    assert!(reason.starts_with("120 new runs since"), "{reason}");
    let owner = &child.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("TrainingJob", NAME, "uid-nightly")
    );
    assert_eq!(owner.controller, Some(true));
    assert!(child.spec.triggers.is_none() && child.spec.schedule.is_none());
    assert_eq!(child.spec.hyperparameters, small_spec().hyperparameters);

    // The parent records why and which child.
    let fired = parent.last_trigger.as_ref().expect("lastTrigger");
    assert_eq!(fired.kind, "NewRuns");
    assert_eq!(&fired.reason, reason);
    assert_eq!(fired.child, child_name);
    let check = parent.trigger_check.as_ref().unwrap();
    assert_eq!(check.new_runs, Some(120));
    assert_eq!(check.error, None);
    assert_eq!(
        check.active_version.as_deref(),
        Some(active.version.as_str())
    );
    assert_eq!(
        parent.phase,
        Some(Phase::Succeeded),
        "the parent's own run is untouched"
    );
    assert!(ctx
        .metrics
        .render()
        .contains("inframind_controller_triggers_total{kind=\"NewRuns\"} 1"));

    // Checked a moment ago: nothing until the interval has passed.
    let (again, ()) = tokio::join!(
        reconcile(Arc::new(api.tj.clone()), ctx.clone()),
        api.silence()
    );
    let again = again.unwrap();
    assert!(
        again != Action::requeue(Duration::from_secs(3600)),
        "requeued for the next check: {again:?}"
    );
}

#[tokio::test]
async fn job_mode_creates_a_batch_job_and_reports_when_it_dies_without_a_result() {
    let env = Env::new(0).await;
    let mut settings = env.settings();
    settings.job_template = Some(JobTemplate {
        namespace: "inframind".into(),
        image: Some("ghcr.io/inframind/inframind:test".into()),
        service_account: Some("inframind-training".into()),
        ..Default::default()
    });
    let (ctx, handle) = context(settings);
    let mut spec = small_spec();
    spec.execution.mode = ExecutionMode::Job;
    let tj = training_job(spec);
    let mut api = ApiServer::new(handle, &tj);

    let (result, (job, pending)) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
        let job = api.create_job("inframind").await;
        let pending = api.status_patch().await;
        api.event("TrainingStarted", "Normal").await;
        (job, pending)
    });
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(60)));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.containers[0].args.as_ref().unwrap(),
        &["train", "--training-job", "ci/nightly"]
    );
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/inframind/inframind:test")
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("inframind-training")
    );
    let job_name = job.metadata.name.clone().unwrap();
    assert_eq!(pending.phase, Some(Phase::Pending));
    assert_eq!(pending.job.as_ref().unwrap().name, job_name);
    assert_eq!(
        pending.runner.as_deref(),
        Some(format!("job/inframind/{job_name}").as_str())
    );

    // The Job's pod was OOM-killed before it could report: the controller says so.
    let mut dead = job.clone();
    dead.status = Some(
        serde_json::from_value(serde_json::json!({
            "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                            "message": "Job has reached the specified backoff limit"}]
        }))
        .unwrap(),
    );
    let (result, failed) = tokio::join!(reconcile(Arc::new(api.tj.clone()), ctx.clone()), async {
        api.get_job(&dead).await;
        let failed = api.status_patch().await;
        api.event("TrainingFailed", "Warning").await;
        failed
    });
    result.unwrap();
    assert_eq!(failed.phase, Some(Phase::Failed));
    assert_eq!(cond(&failed, TRAINED), ("False", "JobFailed"));
    assert_eq!(failed.observed_generation, Some(1));
    let msg = failed.message.unwrap();
    assert!(msg.contains("BackoffLimitExceeded"), "{msg}");
    assert!(
        msg.contains(&format!("kubectl -n inframind logs job/{job_name}")),
        "{msg}"
    );
}

/// Issue 14: `spec.execution.image` and `serviceAccountName` went straight into the Job, so
/// anyone allowed to create a TrainingJob ran their code with the controller's credentials.
/// Now a choice outside the controller's allowlists fails with InvalidSpec and creates nothing.
#[tokio::test]
async fn job_mode_refuses_an_image_or_service_account_outside_the_allowlist() {
    let env = Env::new(0).await;
    let mut settings = env.settings();
    settings.job_template = Some(JobTemplate {
        namespace: "inframind".into(),
        image: Some("ghcr.io/inframind/inframind:test".into()),
        service_account: Some("inframind-training".into()),
        policy: inframind::controller::job::JobPolicy::new(
            &["ghcr.io/inframind/inframind:debug".into()],
            &[],
        ),
        ..Default::default()
    });
    let (ctx, handle) = context(settings);
    let mut api = ApiServer::new(handle, &training_job(small_spec()));
    for (image, sa, named) in [
        (Some("attacker/miner:latest"), None, "attacker/miner:latest"),
        (None, Some("inframind-controller"), "inframind-controller"),
    ] {
        let mut spec = small_spec();
        spec.execution.mode = ExecutionMode::Job;
        spec.execution.image = image.map(Into::into);
        spec.execution.service_account_name = sa.map(Into::into);
        let mut tj = training_job(spec);
        // One object per case: this process remembers what it wrote per uid.
        tj.metadata.uid = Some(format!("uid-{named}"));
        api.tj = tj.clone();
        let (result, (failed, event)) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
            // A status write first: had a Job been created, this would be its POST.
            let failed = api.status_patch().await;
            let event = api.event("InvalidSpec", "Warning").await;
            api.silence().await;
            (failed, event)
        });
        result.unwrap();
        assert_eq!(failed.phase, Some(Phase::Failed));
        assert_eq!(cond(&failed, TRAINED), ("False", "InvalidSpec"));
        assert_eq!(failed.observed_generation, Some(1), "not retried");
        assert!(failed.job.is_none());
        let note = event["note"].as_str().unwrap();
        assert!(
            note.contains(named) && note.contains("not allowed"),
            "{note}"
        );
    }

    // An allowlisted image is used, still as the training service account.
    let mut spec = small_spec();
    spec.execution.mode = ExecutionMode::Job;
    spec.execution.image = Some("ghcr.io/inframind/inframind:debug".into());
    let mut tj = training_job(spec);
    tj.metadata.uid = Some("uid-allowed".into());
    api.tj = tj.clone();
    let (result, job) = tokio::join!(reconcile(Arc::new(tj), ctx.clone()), async {
        let job = api.create_job("inframind").await;
        api.status_patch().await;
        api.event("TrainingStarted", "Normal").await;
        job
    });
    result.unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/inframind/inframind:debug")
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("inframind-training")
    );
}

#[tokio::test]
async fn the_job_pod_trains_and_writes_the_status_itself() {
    let env = Env::new(500).await;
    let (ctx, handle) = context(env.settings());
    let mut tj = training_job(small_spec());
    // As the controller left it when it created the Job.
    tj.status = Some(TrainingJobStatus {
        phase: Some(Phase::Pending),
        runner: Some("job/inframind/nightly-train-g1-20260101000000".into()),
        run_reason: Some("created".into()),
        job: Some(inframind::controller::crd::JobRef {
            namespace: "inframind".into(),
            name: "nightly-train-g1-20260101000000".into(),
        }),
        ..Default::default()
    });
    let mut api = ApiServer::new(handle, &tj);
    let (result, (running, done)) = tokio::join!(
        inframind::controller::run_training_job_with(&ctx, "ci/nightly"),
        async {
            api.get_training_job().await;
            let running = api.status_patch().await;
            api.event("TrainingStarted", "Normal").await;
            let done = api.status_patch().await;
            api.event("TrainingFinished", "Normal").await;
            api.event("Promoted", "Normal").await;
            (running, done)
        }
    );
    let status = result.unwrap();
    assert_eq!(running.phase, Some(Phase::Running));
    assert_eq!(running.run_reason.as_deref(), Some("created"));
    assert_eq!(
        running.job.as_ref().unwrap().name,
        "nightly-train-g1-20260101000000",
        "the Job reference is kept"
    );
    assert_eq!(done.phase, Some(Phase::Succeeded));
    assert_eq!(status, done);
    assert_eq!(done.observed_generation, Some(1));
    assert_eq!(
        env.active().await.as_deref(),
        Some(done.version.as_deref().unwrap())
    );
}

#[test]
fn the_crd_in_crds_is_what_inframind_crd_prints_and_is_a_valid_crd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = root.join("crds/trainingjobs.inframind.io.yaml");
    let committed = std::fs::read_to_string(&file).expect("crds/trainingjobs.inframind.io.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_inframind"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed == committed,
        "crds/trainingjobs.inframind.io.yaml is stale: run `cargo run -- crd > crds/trainingjobs.inframind.io.yaml`"
    );
    assert_eq!(printed, inframind::controller::crd_yaml().unwrap());

    // Strict validation against the Kubernetes API schemas, with the validator the chart
    // checks install (tests/chart/venv.sh); INFRAMIND_REQUIRE_KUBERNETES_VALIDATE=1 makes its
    // absence a failure.
    let venv = root.join("target/chart-venv/bin/kubernetes-validate");
    let validator = if venv.exists() {
        Some(venv.into_os_string())
    } else {
        std::process::Command::new("kubernetes-validate")
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| "kubernetes-validate".into())
    };
    match validator {
        Some(v) => {
            let out = std::process::Command::new(v)
                .args(["--strict", "--quiet"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubernetes-validate --strict rejected the CRD:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => {
            assert!(
                std::env::var("INFRAMIND_REQUIRE_KUBERNETES_VALIDATE").as_deref() != Ok("1"),
                "kubernetes-validate is required but not installed (tests/chart/venv.sh installs it)"
            );
            eprintln!("kubernetes-validate not installed: CRD schema validation skipped");
        }
    }
}
