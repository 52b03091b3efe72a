//! Load benchmark: admissions over HTTPS keep-alive against an in-process webhook serving a
//! 100-tree, depth-15 model. Prints client-side p50/p99 latency, the server-side p50/p99 from
//! the webhook's own histogram, and throughput. Client and server share this machine's cores.
//!
//! Two phases, each against its own webhook (so each histogram holds only its phase):
//! - fresh: the branch differs on every request, so every admission plans afresh (a cache miss);
//! - shared: one context, so admissions share a cached plan and only draw their exploration.
//!
//! `cargo bench --bench webhook_load` (env: LOAD_SECONDS per phase, default 10;
//! LOAD_CONNECTIONS, default 16).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use inframind::admission::Settings;
use inframind::client::Client;
use inframind::forest::ForestParams;
use inframind::optimizer::recommender::Recommender;
use inframind::optimizer::{Optimizer, OptimizerConfig};
use inframind::registry::LiveModel;
use inframind::serving::tls;
use inframind::simulate::demo_runs;
use inframind::stats::PipelineStats;
use inframind::training::{fit, TrainingSpec};
use inframind::webhook::stats_cache::StatsCache;
use inframind::webhook::{server, AppState};

fn review(uid: usize, branch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("load-{uid}"), "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": "ci",
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "runner-", "labels": {"tekton.dev/pipeline": "acme/engine"}, "annotations": {"pipelinesascode.tekton.dev/branch": branch}},
                "spec": {"containers": [{"name": "step-build", "image": "gcc:14", "resources": {"requests": {"cpu": "8", "memory": "16Gi"}, "limits": {"memory": "16Gi"}},
                    "env": [{"name": "MAKEFLAGS", "value": "-j8"}]}], "nodeSelector": {"node.kubernetes.io/instance-type": "m5.2xlarge"}}}}
    }))
    .unwrap()
}

/// p-quantile from cumulative Prometheus buckets (linear inside the bucket).
fn histogram_quantile(text: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("inframind_admission_duration_seconds_bucket"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                count,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= target {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let frac = if count > prev.1 {
                (target - prev.1) / (count - prev.1)
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    None
}

/// Runs one phase against a webhook of its own; `fresh` varies the branch per request.
async fn phase(
    name: &str,
    fresh: bool,
    model: &inframind::model::Model,
    stats: &PipelineStats,
    seconds: u64,
    connections: usize,
) {
    let live = Arc::new(LiveModel::new());
    live.set(model.clone());
    let cache = Arc::new(StatsCache::new());
    cache.insert(stats.clone());
    let generated = tls::self_signed(&["localhost".to_string()]).unwrap();
    let state = Arc::new(AppState {
        settings: Settings {
            recommender: Recommender::new(Optimizer::new(OptimizerConfig::default()))
                .with_cache(Arc::new(inframind::optimizer::cache::DecisionCache::new())),
            ..Settings::default()
        },
        live,
        stats: cache,
        metrics: Default::default(),
        ready: true.into(),
        budget: Duration::from_millis(250),
        max_body: server::DEFAULT_MAX_BODY,
        certs: tls::CertStore::new(&generated.serving).unwrap(),
    });
    let srv = server::spawn("127.0.0.1:0".parse().unwrap(), state.clone())
        .await
        .unwrap();
    let addr = srv.addr();
    let mutate = format!("https://localhost:{}/mutate", addr.port());
    let trust = inframind::client::tls_config(&generated.ca_cert).unwrap();
    let branch = move |i: usize| {
        if fresh {
            format!("pr-{i}")
        } else {
            "main".to_string()
        }
    };
    // Warm-up.
    let c = Client::with_tls(trust.clone());
    for i in 0..200 {
        let r = c
            .request("POST", &mutate, &[], review(i, &branch(usize::MAX - i)))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        if i == 0 {
            // The path users hit: the model decides (not the cold start).
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let patch = v["response"]["patch"].as_str().unwrap_or_default();
            let ops = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, patch)
                .unwrap_or_default();
            let ops = String::from_utf8_lossy(&ops);
            assert!(
                !ops.contains("cold start") && ops.contains("predicted"),
                "the benchmark must exercise the model path: {ops}"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..connections {
        let trust = trust.clone();
        let mutate = mutate.clone();
        tasks.push(tokio::spawn(async move {
            // One client per simulated connection: its requests reuse one kept-alive connection.
            let c = Client::with_tls(trust);
            let mut lat = Vec::new();
            let mut i = k * 1_000_000;
            while Instant::now() < deadline {
                let body = review(i, &branch(i));
                i += 1;
                let t = Instant::now();
                let r = c.request("POST", &mutate, &[], body).await.unwrap();
                lat.push(t.elapsed().as_secs_f64());
                assert_eq!(r.status, 200);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() - 1) as f64 * p) as usize] * 1e3;
    let metrics = c
        .request(
            "GET",
            &format!("https://localhost:{}/metrics", addr.port()),
            &[],
            vec![],
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    let counts = state.settings.recommender.cache.as_ref().unwrap().counts();
    println!("== {name} ==");
    println!(
        "{} admissions over {connections} keep-alive HTTPS connections in {elapsed:.1}s: {:.0} admissions/s",
        all.len(),
        all.len() as f64 / elapsed
    );
    println!(
        "client-side latency: p50 {:.3} ms, p99 {:.3} ms",
        q(0.5),
        q(0.99)
    );
    println!(
        "server-side latency (webhook histogram): p50 {:.3} ms, p99 {:.3} ms",
        histogram_quantile(&text, 0.5).unwrap_or(f64::NAN) * 1e3,
        histogram_quantile(&text, 0.99).unwrap_or(f64::NAN) * 1e3
    );
    println!(
        "decision cache: {} hits, {} misses, {} entries, {} KiB",
        counts.hits,
        counts.misses,
        counts.entries,
        counts.bytes / 1024
    );
    srv.abort();
}

fn main() {
    let seconds: u64 = std::env::var("LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let connections: usize = std::env::var("LOAD_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        // Admission names a pipeline by its namespace too (`ci:acme/engine`; namespaces never
        // share history), so the history and the model must use that name, or every admission
        // is a cold start and this measures nothing.
        let runs: Vec<_> = demo_runs(6000, now, 5)
            .into_iter()
            .map(|mut r| {
                r.pipeline = format!("ci:{}", r.pipeline);
                r
            })
            .collect();
        let ok: Vec<_> = runs.iter().filter(|r| r.success).cloned().collect();
        let spec = TrainingSpec {
            limit: 5000,
            params: ForestParams::default(),
            ..Default::default()
        };
        let (model, _) = fit(&[], &ok[ok.len() - 5000..], &spec, "load", now, &mut |_| {}).unwrap();
        println!(
            "model: {} trees, max depth {}, {} nodes",
            model.forest.n_trees(),
            model.forest.max_depth(),
            model.forest.nodes().len()
        );
        let mine: Vec<_> = runs
            .iter()
            .filter(|r| r.pipeline == "ci:acme/engine")
            .cloned()
            .collect();
        let mut s = PipelineStats::from_runs("ci:acme/engine", &mine);
        s.last_success = Some(inframind::BuildConfig {
            cpu: 8.0,
            mem_gb: 16.0,
            concurrency: 8,
        });
        phase(
            "fresh decisions (branch varies per request)",
            true,
            &model,
            &s,
            seconds,
            connections,
        )
        .await;
        phase(
            "shared decisions (one context)",
            false,
            &model,
            &s,
            seconds,
            connections,
        )
        .await;
    });
}
