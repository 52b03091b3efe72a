//! Optimizer tests: cold start, the model path, replayability, and guard properties.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::features::Encodings;
use crate::forest::{train, ForestParams};
use crate::record::RunRecord;
use crate::stats::OomEvent;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn ctx(pipeline: &str) -> BuildContext {
    BuildContext {
        pipeline: pipeline.into(),
        branch: "main".into(),
        image: "rust:1.82".into(),
        node: "m5.2xlarge".into(),
    }
}

/// A 30-tree, depth-12 model fitted on the successful `runs`.
fn fit_on(runs: &[RunRecord]) -> Model {
    let spec = crate::training::TrainingSpec {
        params: ForestParams {
            n_trees: 30,
            max_depth: Some(12),
            ..Default::default()
        },
        ..Default::default()
    };
    let ok: Vec<_> = runs.iter().filter(|r| r.success).cloned().collect();
    crate::training::fit(&[], &ok, &spec, "model_vtest", now(), &mut |_| {})
        .unwrap()
        .0
}

/// A model trained on simulated builds, and the runs it was trained on.
fn trained() -> &'static (Model, Vec<RunRecord>) {
    static M: std::sync::OnceLock<(Model, Vec<RunRecord>)> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let runs = crate::simulate::demo_runs(1500, now(), 21);
        (fit_on(&runs), runs)
    })
}

fn stats_of(pipeline: &str) -> PipelineStats {
    let runs: Vec<_> = trained()
        .1
        .iter()
        .filter(|r| r.pipeline == pipeline)
        .cloned()
        .collect();
    PipelineStats::from_runs(pipeline, &runs)
}

fn exploit() -> Optimizer {
    Optimizer::new(OptimizerConfig {
        exploration_rate: 0.0,
        ..Default::default()
    })
}

/// The guarded candidates of a decision, recomputed independently of `plan`: what exploration
/// and the argmin may return.
fn guarded_set(opt: &Optimizer, stats: &PipelineStats, d: &Decision) -> Vec<BuildConfig> {
    let g = opt.guards(Some(stats));
    let mut out: Vec<BuildConfig> = candidates::grid(&d.baseline, &opt.config.steps, &g.bounds)
        .into_iter()
        .chain(d.request)
        .filter_map(|c| g.apply(c).map(|x| x.config))
        .collect();
    out.extend(opt.safe_baseline(&g, &d.baseline).map(|x| x.config));
    out
}

/// Share of trees predicting `a` faster than `b` (ties half), straight from the forest.
fn share_faster(
    model: &Model,
    stats: &PipelineStats,
    c: &BuildContext,
    a: &BuildConfig,
    b: &BuildConfig,
) -> f64 {
    let base = context_features(&model.encodings, &stats.history, c, now());
    let ta = model.forest.tree_predictions(&with_config(&base, a));
    let tb = model.forest.tree_predictions(&with_config(&base, b));
    let wins: f64 = ta
        .iter()
        .zip(&tb)
        .map(|(x, y)| {
            if x < y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        })
        .sum();
    wins / ta.len() as f64
}

#[test]
fn cold_start_without_a_model_keeps_the_request_and_proposes_the_guarded_baseline() {
    let d = exploit().decide(&ctx("acme/api"), None, None, now(), 1);
    assert_eq!(d.action, Action::Unchanged);
    assert_eq!(d.config, DEFAULT_BASELINE);
    assert_eq!(d.proposal, Some(DEFAULT_BASELINE));
    assert_eq!(d.baseline_source, BaselineSource::Defaults);
    assert_eq!(d.confidence, 0.0);
    assert!(d.cold_start && d.predicted_duration_s.is_none());
    assert!(
        d.reason.as_deref().unwrap().contains("no model loaded yet"),
        "{:?}",
        d.reason
    );

    // Known stats but no model: the request is kept; the proposal is the last successful
    // config, raised to the memory floor.
    let stats = PipelineStats {
        last_success: Some(BuildConfig {
            cpu: 2.0,
            mem_gb: 3.0,
            concurrency: 4,
        }),
        rss_p95_gb: Some(5.0),
        ..Default::default()
    };
    let request = BuildConfig {
        cpu: 4.0,
        mem_gb: 8.0,
        concurrency: 4,
    };
    let d = exploit().decide_for(
        &ctx("acme/api"),
        Some(&request),
        Some(&stats),
        None,
        now(),
        1,
    );
    assert_eq!((d.action, d.config), (Action::Unchanged, request));
    assert_eq!(
        d.proposal,
        Some(BuildConfig {
            cpu: 2.0,
            mem_gb: 6.0,
            concurrency: 4
        })
    );
    assert_eq!(d.guards, vec![Guard::MemoryFloor]);
    assert!(
        d.rationale.contains("proposal cpu 2, mem 6GB, -j4"),
        "{}",
        d.rationale
    );
}

#[test]
fn a_pipeline_the_model_never_saw_is_a_cold_start() {
    let (model, _) = trained();
    let d = exploit().decide(&ctx("someone/else"), None, Some(model), now(), 1);
    assert!(d.cold_start);
    assert_eq!(d.action, Action::Unchanged);
    assert!(
        d.rationale.contains("unknown to model model_vtest"),
        "{}",
        d.rationale
    );
}

#[test]
fn the_model_path_proposes_the_predicted_argmin_with_tree_share_confidence() {
    let (model, _) = trained();
    let opt = Optimizer::new(OptimizerConfig {
        exploration_rate: 0.0,
        min_confidence: 0.0,
        ..Default::default()
    });
    for p in ["acme/api", "acme/engine", "acme/web"] {
        let stats = stats_of(p);
        let d = opt.decide(&ctx(p), Some(&stats), Some(model), now(), 7);
        assert!(!d.cold_start && !d.explored);
        assert_eq!(d.policy, Policy::Argmin);
        assert!(d.candidates >= 20, "{p}: {} candidates", d.candidates);
        let proposal = d.proposal.unwrap();
        let pred = d.predicted_duration_s.unwrap();
        assert!(pred <= d.baseline_duration_s.unwrap() + 1e-9);
        assert_eq!(d.baseline, stats.last_success.unwrap());
        // Confidence is the share of trees predicting the proposal faster than the baseline.
        let share = share_faster(model, &stats, &ctx(p), &proposal, &d.baseline);
        assert_eq!(d.confidence, share, "{p}");
        // With no request the gate compares against the baseline; threshold 0 applies it
        // unless the baseline itself is best.
        if proposal != d.baseline {
            assert_eq!(d.action, Action::Apply, "{}", d.rationale);
            assert_eq!(d.config, proposal);
            assert!(
                d.rationale.contains("confidence it is faster"),
                "{}",
                d.rationale
            );
        }
        // Exhaustive check of the argmin: no guarded, allowed candidate predicts lower.
        let g = opt.guards(Some(&stats));
        let base_row = context_features(&model.encodings, &stats.history, &ctx(p), now());
        for c in guarded_set(&opt, &stats, &d) {
            let m = model.forest.predict(&with_config(&base_row, &c))[0];
            let allowed = !g.apply(c).unwrap().needs_confidence
                || share_faster(model, &stats, &ctx(p), &c, &d.baseline) > CONFIDENT;
            if allowed {
                assert!(m >= pred, "{p}: {c:?} predicts {m} < chosen {pred}");
            }
        }
    }
}

#[test]
fn a_change_is_applied_only_when_it_beats_the_request_with_confidence() {
    let (model, _) = trained();
    let c = ctx("acme/engine");
    let stats = stats_of("acme/engine");
    let mut applied = 0;
    let mut kept = 0;
    for cpu in [1.0, 2.0, 4.0, 8.0] {
        for j in [1, 4, 8] {
            let request = BuildConfig {
                cpu,
                mem_gb: 16.0,
                concurrency: j,
            };
            for threshold in [0.0, 0.6, 0.9, 1.0] {
                let opt = Optimizer::new(OptimizerConfig {
                    exploration_rate: 0.0,
                    min_confidence: threshold,
                    ..Default::default()
                });
                let d = opt.decide_for(&c, Some(&request), Some(&stats), Some(model), now(), 1);
                let proposal = d.proposal.unwrap();
                let beats = d.request_confidence.unwrap();
                // The gate's measure is the share of trees that score the proposal better.
                assert_eq!(beats, share_faster(model, &stats, &c, &proposal, &request));
                assert!(d.request_duration_s.is_some());
                match d.action {
                    Action::Apply => {
                        applied += 1;
                        assert!(beats >= threshold && proposal != request);
                        assert_eq!(d.config, proposal);
                    }
                    Action::Unchanged => {
                        kept += 1;
                        assert_eq!(d.config, request, "kept pods run as requested");
                        let reason = d.reason.unwrap();
                        if proposal == request {
                            assert!(reason.contains("requested is predicted best"), "{reason}");
                        } else {
                            assert!(beats < threshold);
                            let (mine, theirs) = difference(&proposal, &request);
                            assert_eq!(
                                reason,
                                format!("kept: {beats:.2} confidence that {mine} beats the requested {theirs}")
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(applied > 0 && kept > 0, "{applied} applied, {kept} kept");
}

#[test]
fn cost_objective_prefers_cheaper_configs() {
    let (model, _) = trained();
    let stats = stats_of("acme/engine");
    let fast = exploit().decide(&ctx("acme/engine"), Some(&stats), Some(model), now(), 1);
    let thrifty = Optimizer::new(OptimizerConfig {
        exploration_rate: 0.0,
        objective: Objective::Cost {
            cpu_per_hour: 0.5,
            gb_per_hour: 0.1,
            time_per_hour: 0.0,
        },
        ..Default::default()
    })
    .decide(&ctx("acme/engine"), Some(&stats), Some(model), now(), 1);
    let spend = |c: &BuildConfig| c.cpu * 0.5 + c.mem_gb * 0.1;
    assert!(spend(&thrifty.proposal.unwrap()) <= spend(&fast.proposal.unwrap()));
    assert!(thrifty.predicted_duration_s.unwrap() >= fast.predicted_duration_s.unwrap());
    assert_eq!(thrifty.objective, "cost");
}

#[test]
fn exploration_is_seeded_stays_in_the_guarded_grid_and_names_its_policy() {
    let (model, _) = trained();
    let stats = stats_of("acme/api");
    for (policy, name) in [
        (Exploration::Thompson, "thompson"),
        (Exploration::Epsilon, "epsilon"),
    ] {
        let opt = Optimizer::new(OptimizerConfig {
            exploration: policy,
            ..Default::default()
        });
        let decisions: Vec<_> = (0..400)
            .map(|s| opt.decide(&ctx("acme/api"), Some(&stats), Some(model), now(), s))
            .collect();
        let explored: Vec<_> = decisions.iter().filter(|d| d.explored).collect();
        // At most the 15 % that may explore (a draw equal to the exploit config is no exploration).
        assert!(
            (1..=95).contains(&explored.len()),
            "{name}: {} of 400 explored at rate 0.15",
            explored.len()
        );
        for d in &explored {
            assert_eq!(d.policy.name(), name);
            assert_eq!(d.action, Action::Apply);
            assert!(
                d.rationale.contains(&format!("explored ({name})")),
                "{}",
                d.rationale
            );
            assert!(
                guarded_set(&opt, &stats, d).contains(&d.config),
                "{:?}",
                d.config
            );
        }
        for s in [3u64, 99, 12345] {
            assert_eq!(
                opt.decide(&ctx("acme/api"), Some(&stats), Some(model), now(), s),
                opt.decide(&ctx("acme/api"), Some(&stats), Some(model), now(), s)
            );
        }
    }
}

#[test]
fn thompson_explores_only_where_trees_disagree() {
    // One tree: the posterior has no spread, every draw is the argmin, nothing is explored.
    let single = tiny_model_with(3, "p", 1);
    let many = tiny_model_with(3, "p", 25);
    let stats = PipelineStats {
        last_success: Some(BuildConfig {
            cpu: 4.0,
            mem_gb: 8.0,
            concurrency: 4,
        }),
        ..Default::default()
    };
    let explored = |m: &Model, policy| {
        let opt = Optimizer::new(OptimizerConfig {
            exploration_rate: 1.0,
            exploration: policy,
            ..Default::default()
        });
        (0..200)
            .filter(|s| {
                opt.decide(&ctx("p"), Some(&stats), Some(m), now(), *s)
                    .explored
            })
            .count()
    };
    assert_eq!(explored(&single, Exploration::Thompson), 0);
    assert!(
        explored(&single, Exploration::Epsilon) > 150,
        "epsilon ignores agreement"
    );
    assert!(
        explored(&many, Exploration::Thompson) > 0,
        "disagreeing trees explore"
    );
    assert_eq!(explored(&many, Exploration::Off), 0);
}

#[test]
fn node_capacity_bounds_every_decision() {
    let (model, _) = trained();
    let stats = stats_of("acme/engine");
    let opt = Optimizer::new(OptimizerConfig {
        node_capacity: Some(NodeCapacity {
            cpu: 6.0,
            mem_gb: 24.0,
        }),
        exploration_rate: 0.5,
        exploration: Exploration::Epsilon,
        min_confidence: 0.0,
        ..Default::default()
    });
    for s in 0..50 {
        let d = opt.decide(&ctx("acme/engine"), Some(&stats), Some(model), now(), s);
        if d.action == Action::Apply {
            assert!(
                d.config.cpu <= 6.0 && d.config.mem_gb <= 24.0,
                "{:?}",
                d.config
            );
        }
    }
}

#[test]
fn infeasible_floors_admit_unchanged_with_the_reason() {
    let (model, _) = trained();
    let mut stats = stats_of("acme/api");
    stats.rss_p95_gb = Some(63.0);
    let request = BuildConfig {
        cpu: 2.0,
        mem_gb: 4.0,
        concurrency: 2,
    };
    for m in [None, Some(model)] {
        let d = Optimizer::default().decide_for(
            &ctx("acme/api"),
            Some(&request),
            Some(&stats),
            m,
            now(),
            5,
        );
        assert_eq!((d.action, d.config), (Action::Unchanged, request));
        assert_eq!(
            d.reason.as_deref(),
            Some("infeasible: memory floor 75.6 GB at -j1 above the 64 GB bound")
        );
    }
}

/// A tiny random forest over random data whose encodings know `pipeline`.
fn tiny_model(seed: u64, pipeline: &str) -> Model {
    tiny_model_with(seed, pipeline, 5)
}

/// A random forest of `n_trees` over random data whose encodings know `pipeline`.
fn tiny_model_with(seed: u64, pipeline: &str, n_trees: usize) -> Model {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let rows = 40;
    let x: Vec<f64> = (0..rows * N_FEATURES)
        .map(|_| rng.random_range(0.0..20.0))
        .collect();
    let y: Vec<f64> = (0..rows).map(|_| rng.random_range(10.0..1000.0)).collect();
    let forest = train(
        &x,
        N_FEATURES,
        &y,
        &ForestParams {
            n_trees,
            max_depth: Some(4),
            shards: 1,
            seed,
            ..Default::default()
        },
    )
    .unwrap()
    .forest;
    let mut encodings = Encodings::default();
    encodings.pipeline.insert(pipeline.to_string(), 1);
    Model {
        version: format!("tiny{seed}"),
        forest,
        encodings,
    }
}

fn arb_stats() -> impl Strategy<Value = PipelineStats> {
    (
        proptest::option::of(0.1f64..40.0),
        proptest::collection::vec((1u32..20, 0.1f64..20.0), 0..12),
        proptest::collection::vec((1.0f64..40.0, 1u32..17), 0..3),
        proptest::option::of(1u32..17),
        proptest::option::of((0.5f64..20.0, 1.0f64..40.0, 1u32..20)),
    )
        .prop_map(|(p95, rss, ooms, max_conc, last)| PipelineStats {
            pipeline: "p".into(),
            rss_p95_gb: p95,
            rss_by_concurrency: rss,
            ooms: ooms
                .into_iter()
                .map(|(mem_gb, concurrency)| OomEvent {
                    mem_gb,
                    concurrency,
                })
                .collect(),
            max_success_concurrency: max_conc,
            last_success: last.map(|(cpu, mem_gb, concurrency)| BuildConfig {
                cpu,
                mem_gb,
                concurrency,
            }),
            ..Default::default()
        })
}

fn arb_config() -> impl Strategy<Value = OptimizerConfig> {
    (
        1.0f64..4.0,
        4.0f64..32.0,
        1.0f64..8.0,
        8.0f64..96.0,
        1u32..4,
        4u32..24,
        0.0f64..1.0,
        proptest::option::of((2.0f64..32.0, 4.0f64..128.0)),
        any::<bool>(),
        prop_oneof![
            Just(Exploration::Thompson),
            Just(Exploration::Epsilon),
            Just(Exploration::Off)
        ],
        0.0f64..1.0,
    )
        .prop_map(
            |(min_cpu, max_cpu, min_mem, max_mem, min_j, max_j, rate, node, cost, policy, gate)| {
                OptimizerConfig {
                    bounds: Bounds {
                        min_cpu,
                        max_cpu,
                        min_mem_gb: min_mem,
                        max_mem_gb: max_mem,
                        min_concurrency: min_j,
                        max_concurrency: max_j,
                    },
                    node_capacity: node.map(|(cpu, mem_gb)| NodeCapacity { cpu, mem_gb }),
                    exploration_rate: rate,
                    exploration: policy,
                    min_confidence: gate,
                    objective: if cost {
                        Objective::default_cost()
                    } else {
                        Objective::Duration
                    },
                    ..Default::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// No exemption: every applied config satisfies every guard and bound and comes from the
    /// guarded grid (explored ones included); every other decision leaves the pod as requested
    /// and says why.
    #[test]
    fn no_path_breaks_a_guard(stats in arb_stats(), config in arb_config(), model_seed in 0u64..50, seed in any::<u64>(), with_model in any::<bool>(), request in proptest::option::of((0.5f64..20.0, 1.0f64..40.0, 1u32..20))) {
        let model = tiny_model(model_seed, "p");
        let opt = Optimizer::new(config);
        let request = request.map(|(cpu, mem_gb, concurrency)| BuildConfig { cpu, mem_gb, concurrency });
        let m = with_model.then_some(&model);
        let d = opt.decide_for(&ctx("p"), request.as_ref(), Some(&stats), m, now(), seed);
        let g = opt.guards(Some(&stats));
        match d.action {
            Action::Apply => {
                prop_assert!(g.check(&d.config, d.confidence).is_ok(), "{:?} violates: {:?}\n{}", d.config, g.check(&d.config, d.confidence), d.rationale);
                prop_assert!(guarded_set(&opt, &stats, &d).contains(&d.config), "{:?} is outside the guarded grid", d.config);
                prop_assert!(d.explored || d.request_confidence.unwrap() >= opt.config.min_confidence);
                prop_assert!(d.reason.is_none());
            }
            Action::Unchanged => {
                prop_assert_eq!(d.config, request.unwrap_or(d.baseline));
                prop_assert!(d.reason.as_deref().is_some_and(|r| r.starts_with("kept: ") || r.starts_with("infeasible: ")), "{:?}", d.reason);
                prop_assert!(!d.explored);
            }
        }
        if g.infeasible().is_some() {
            prop_assert_eq!(d.action, Action::Unchanged);
        }
        prop_assert!((0.0..=1.0).contains(&d.confidence));
        // Replayable.
        prop_assert_eq!(&d, &opt.decide_for(&ctx("p"), request.as_ref(), Some(&stats), m, now(), seed));
    }
}

/// Issue 17: the prediction is for the cache this build should expect (its branch's last
/// build), not an average. On simulated CI a branch's cache is warm after its last build and a
/// new branch starts from a mostly cold one; the same config is predicted slower for the new
/// branch, and the rationale says which cache the prediction assumed.
#[test]
fn the_prediction_follows_the_expected_cache_of_the_branch() {
    let runs = crate::simulate::ci_runs(2500, now(), 5);
    let model = fit_on(&runs);
    let pipeline = "acme/api";
    let mine: Vec<RunRecord> = runs
        .iter()
        .filter(|r| r.pipeline == pipeline)
        .cloned()
        .collect();
    let mut stats = PipelineStats::from_runs(pipeline, &mine);
    let at = now() + chrono::Duration::minutes(1);
    stats.history = crate::features::PipelineHistory::from_runs(
        mine.iter().filter(|r| crate::features::known_at(r, at)),
    );
    let warm_branch = stats
        .history
        .last_of_branch("main")
        .filter(|r| r.cache_hit_ratio.is_some_and(|h| h >= 0.8))
        .map(|_| "main")
        .expect("main's last build was warm");
    let decide = |branch: &str| {
        let c = BuildContext {
            branch: branch.into(),
            ..ctx(pipeline)
        };
        exploit().decide(&c, Some(&stats), Some(&model), at, 1)
    };
    let warm = decide(warm_branch);
    let cold = decide("pr-new-branch");
    assert_eq!(
        warm.expected_cache.as_ref().and_then(|e| e.state),
        Some(crate::cache_advice::CacheState::Warm)
    );
    assert_eq!(
        cold.expected_cache.as_ref().and_then(|e| e.state),
        Some(crate::cache_advice::CacheState::Cold)
    );
    let (w, c) = (
        warm.baseline_duration_s.unwrap(),
        cold.baseline_duration_s.unwrap(),
    );
    eprintln!("same config: warm {w:.0}s, new branch {c:.0}s");
    assert!(c > w * 1.1, "same config: warm {w:.0}s, new branch {c:.0}s");
    assert!(
        warm.rationale
            .contains("expected cache warm (last build of main hit"),
        "{}",
        warm.rationale
    );
    assert!(
        cold.rationale
            .contains("expected cache cold (first build of branch pr-new-branch)"),
        "{}",
        cold.rationale
    );
}
