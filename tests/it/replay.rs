//! Train/serve parity by replay: a CI-like simulated history (overlapping builds of one
//! pipeline, PR branches, pods with and without a node selector or a branch) is played back in
//! time order against the real PostgreSQL store. Each run is inserted when it *finishes* (a row
//! exists only for a finished build); when a run *starts*, the webhook's stats cache is
//! refreshed from the store as it is at that instant, the pod the run would have been is
//! recognised by the admission code, and its features are built by the optimizer's admission
//! path. Once the history is over, the training side loads its window from the same store and
//! builds its rows; every row must equal the admission-time features, column by column.
//!
//! No Kubernetes API is involved: the pod is the JSON the webhook would receive.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use inframind::admission::recognise;
use inframind::features::{
    build_dataset, context_features, finished_at, with_config, PipelineHistory, FEATURE_NAMES,
};
use inframind::forest::ForestParams;
use inframind::optimizer::admission_row;
use inframind::record::RunRecord;
use inframind::simulate::ci_runs;
use inframind::stats::PipelineStats;
use inframind::telemetry::Store;
use inframind::training::{fit, load_training_data, TrainingSpec};
use inframind::webhook::stats_cache::StatsCache;
use inframind::BuildContext;

/// The pod a run's build would have been, as the webhook receives it: no branch annotation for
/// a run of unknown branch, no node selector for a run whose node type was not requested.
fn pod_of(run: &RunRecord) -> serde_json::Value {
    let mut annotations = serde_json::Map::new();
    if run.branch != "unknown" {
        annotations.insert("inframind.io/branch".into(), json!(run.branch));
    }
    let mut spec = json!({"containers": [{
        "name": "build",
        "image": run.image,
        "resources": {"requests": {"cpu": run.cpu_req.to_string(), "memory": format!("{}Gi", run.mem_req_gb)}}
    }]});
    if run.node != "unknown" {
        spec["nodeSelector"] = json!({"node.kubernetes.io/instance-type": run.node});
    }
    json!({
        "metadata": {"name": format!("build-{}", run.run_id), "labels": {"inframind.io/pipeline": run.pipeline}, "annotations": annotations},
        "spec": spec
    })
}

/// What admission saw when a run started: the recognised context and the cached stats.
struct Seen {
    ctx: BuildContext,
    stats: Option<Arc<PipelineStats>>,
}

/// Plays `runs` back against `store`, returning what admission saw at each run's start.
async fn replay(store: &Store, runs: &[RunRecord]) -> HashMap<String, Seen> {
    // A run's end makes it a row of the store; a run's start is an admission. At equal times
    // the admission comes first: a build ending that instant is not yet known.
    let mut events: Vec<(DateTime<Utc>, u8, &RunRecord)> = Vec::new();
    for r in runs {
        events.push((r.started_at, 0, r));
        events.push((finished_at(r), 1, r));
    }
    events.sort_by(|a, b| (a.0, a.1, &a.2.run_id).cmp(&(b.0, b.1, &b.2.run_id)));
    let cache = StatsCache::new();
    let mut dirty = false;
    let mut seen = HashMap::new();
    for (t, kind, run) in events {
        if kind == 1 {
            store
                .insert_runs(std::slice::from_ref(run), t)
                .await
                .expect("inserting a finished run");
            dirty = true;
            continue;
        }
        if dirty {
            cache.refresh(store).await.expect("refreshing the stats");
            dirty = false;
        }
        let pod = pod_of(run);
        let i = recognise::build_container(&pod).expect("a build container");
        let ctx = recognise::context(&pod, i).expect("a recognised pod");
        let stats = cache.get(&ctx.pipeline);
        seen.insert(run.run_id.clone(), Seen { ctx, stats });
    }
    seen
}

#[tokio::test]
async fn admission_features_equal_training_rows_on_an_overlapping_history() {
    let end = DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let runs = ci_runs(420, end, 12);
    let store = crate::harness::pg_store().await;
    let seen = replay(&store, &runs).await;

    // The training side: the window and its warmup from the store, as `train` loads them.
    let spec = TrainingSpec {
        limit: 250,
        params: ForestParams {
            n_trees: 5,
            max_depth: Some(4),
            ..Default::default()
        },
        ..Default::default()
    };
    let (warmup, window) = load_training_data(&store, &spec).await.unwrap();
    assert!(!warmup.is_empty(), "the window's first rows see older runs");
    let (model, _) = fit(&warmup, &window, &spec, "model_vreplay", end, &mut |_| {}).unwrap();
    let data = build_dataset(&model.encodings, &warmup, &window);
    let mut rows: Vec<&RunRecord> = window.iter().filter(|r| r.success).collect();
    rows.sort_by(|a, b| (a.started_at, &a.run_id).cmp(&(b.started_at, &b.run_id)));
    assert_eq!(rows.len(), data.len());

    let mut checked = 0;
    let mut with_unknown = (0, 0);
    for (i, run) in rows.iter().enumerate() {
        let s = &seen[&run.run_id];
        assert_eq!(s.ctx, BuildContext::of_run(run), "{}", run.run_id);
        with_unknown.0 += usize::from(s.ctx.branch == "unknown");
        with_unknown.1 += usize::from(s.ctx.node == "unknown");
        let admitted = with_config(
            &admission_row(&model, s.stats.as_deref(), &s.ctx, run.started_at),
            &run.config(),
        );
        for (c, name) in FEATURE_NAMES.iter().enumerate() {
            assert_eq!(
                admitted[c].to_bits(),
                data.row(i)[c].to_bits(),
                "run {} column {name}: admission {} vs training {}",
                run.run_id,
                admitted[c],
                data.row(i)[c]
            );
        }
        checked += 1;
    }
    assert!(checked > 150, "{checked} rows compared");
    assert!(
        with_unknown.0 > 5 && with_unknown.1 > 50,
        "{with_unknown:?}"
    );

    // The control: "started before" (the old training definition) gives other features on
    // this history, so the comparison above can fail.
    let mut earlier: Vec<&RunRecord> = warmup.iter().chain(&window).filter(|r| r.success).collect();
    earlier.sort_by(|a, b| (a.started_at, &a.run_id).cmp(&(b.started_at, &b.run_id)));
    let differ = rows
        .iter()
        .enumerate()
        .filter(|(i, run)| {
            let h = PipelineHistory::from_runs(earlier.iter().copied().filter(|e| {
                e.pipeline == run.pipeline
                    && (e.started_at, &e.run_id) < (run.started_at, &run.run_id)
            }));
            let base = context_features(
                &model.encodings,
                &h,
                &BuildContext::of_run(run),
                run.started_at,
            );
            with_config(&base, &run.config()).as_slice() != data.row(*i)
        })
        .count();
    assert!(
        differ > rows.len() / 4,
        "only {differ} of {} rows differ under 'started before'",
        rows.len()
    );
}
