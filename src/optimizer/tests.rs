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

/// A model trained on simulated builds, and the runs it was trained on.
fn trained() -> &'static (Model, Vec<RunRecord>) {
    static M: std::sync::OnceLock<(Model, Vec<RunRecord>)> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let runs = crate::simulate::demo_runs(1500, now(), 21);
        let spec = crate::training::TrainingSpec {
            params: ForestParams {
                n_trees: 30,
                max_depth: Some(12),
                ..Default::default()
            },
            ..Default::default()
        };
        let ok: Vec<_> = runs.iter().filter(|r| r.success).cloned().collect();
        let (model, _) =
            crate::training::fit(&[], &ok, &spec, "model_vtest", now(), &mut |_| {}).unwrap();
        (model, runs)
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

#[test]
fn cold_start_without_a_model_returns_the_guarded_baseline() {
    let d = exploit().decide(&ctx("acme/api"), None, None, now(), 1);
    assert_eq!(d.config, DEFAULT_BASELINE);
    assert_eq!(d.baseline_source, BaselineSource::Defaults);
    assert_eq!(d.confidence, 0.0);
    assert!(d.cold_start && d.predicted_duration_s.is_none());
    assert!(
        d.rationale.contains("no model loaded yet"),
        "{}",
        d.rationale
    );

    // Known stats but no model: the last successful config, raised to the memory floor.
    let stats = PipelineStats {
        last_success: Some(BuildConfig {
            cpu: 2.0,
            mem_gb: 3.0,
            concurrency: 4,
        }),
        rss_p95_gb: Some(5.0),
        ..Default::default()
    };
    let d = exploit().decide(&ctx("acme/api"), Some(&stats), None, now(), 1);
    assert_eq!(
        d.config,
        BuildConfig {
            cpu: 2.0,
            mem_gb: 6.0,
            concurrency: 4
        }
    );
    assert_eq!(d.guards, vec![Guard::MemoryFloor]);
    assert!(
        d.rationale.contains("guarded to cpu 2, mem 6GB, -j4"),
        "{}",
        d.rationale
    );
}

#[test]
fn a_pipeline_the_model_never_saw_is_a_cold_start() {
    let (model, _) = trained();
    let d = exploit().decide(&ctx("someone/else"), None, Some(model), now(), 1);
    assert!(d.cold_start);
    assert_eq!(d.confidence, 0.0);
    assert!(
        d.rationale.contains("unknown to model model_vtest"),
        "{}",
        d.rationale
    );
}

#[test]
fn the_model_path_picks_the_predicted_argmin_and_explains_it() {
    let (model, _) = trained();
    for p in ["acme/api", "acme/engine", "acme/web"] {
        let stats = stats_of(p);
        let d = exploit().decide(&ctx(p), Some(&stats), Some(model), now(), 7);
        assert!(!d.cold_start && !d.explored);
        assert!(d.candidates >= 20, "{p}: {} candidates", d.candidates);
        let pred = d.predicted_duration_s.unwrap();
        let base = d.baseline_duration_s.unwrap();
        assert!(
            pred <= base,
            "{p}: argmin {pred} must not be worse than the baseline {base}"
        );
        assert!((0.0..=1.0).contains(&d.confidence));
        assert_eq!(d.baseline, stats.last_success.unwrap());
        assert!(d.rationale.starts_with("baseline cpu"), "{}", d.rationale);
        assert!(d.rationale.contains("predicted"), "{}", d.rationale);
        // Exhaustive check of the argmin: no guarded, allowed candidate predicts lower.
        let g = exploit().guards(Some(&stats));
        let base_row = context_features(&model.encodings, &stats.history, &ctx(p), now());
        for c in candidates::grid(&d.baseline, &Steps::default(), &g.bounds) {
            if let Some(gc) = g.apply(c) {
                let (m, sd) = model
                    .forest
                    .predict_with_spread(&with_config(&base_row, &gc.config))[0];
                if !gc.needs_confidence || confidence(m, sd) > CONFIDENT {
                    assert!(
                        m >= pred,
                        "{p}: {:?} predicts {m} < chosen {pred}",
                        gc.config
                    );
                }
            }
        }
    }
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
    assert!(spend(&thrifty.config) <= spend(&fast.config));
    assert!(thrifty.predicted_duration_s.unwrap() >= fast.predicted_duration_s.unwrap());
    assert_eq!(thrifty.objective, "cost");
}

#[test]
fn exploration_is_seeded_and_happens_at_the_configured_rate() {
    let (model, _) = trained();
    let stats = stats_of("acme/api");
    let opt = Optimizer::default();
    let decisions: Vec<_> = (0..400)
        .map(|s| opt.decide(&ctx("acme/api"), Some(&stats), Some(model), now(), s))
        .collect();
    let explored = decisions.iter().filter(|d| d.explored).count();
    assert!(
        (30..=95).contains(&explored),
        "{explored} of 400 explored at rate 0.15"
    );
    for d in decisions.iter().filter(|d| d.explored) {
        assert!(d.rationale.contains("explored a random config"));
    }
    for s in [3u64, 99, 12345] {
        assert_eq!(
            opt.decide(&ctx("acme/api"), Some(&stats), Some(model), now(), s),
            opt.decide(&ctx("acme/api"), Some(&stats), Some(model), now(), s)
        );
    }
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
        ..Default::default()
    });
    for s in 0..50 {
        let d = opt.decide(&ctx("acme/engine"), Some(&stats), Some(model), now(), s);
        assert!(
            d.config.cpu <= 6.0 && d.config.mem_gb <= 24.0,
            "{:?}",
            d.config
        );
    }
}

/// A tiny random forest over random data whose encodings know `pipeline`.
fn tiny_model(seed: u64, pipeline: &str) -> Model {
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
            n_trees: 5,
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
    )
        .prop_map(
            |(min_cpu, max_cpu, min_mem, max_mem, min_j, max_j, rate, node, cost)| {
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

    #[test]
    fn every_decision_satisfies_every_guard_and_bound(stats in arb_stats(), config in arb_config(), model_seed in 0u64..50, seed in any::<u64>(), with_model in any::<bool>()) {
        let model = tiny_model(model_seed, "p");
        let opt = Optimizer::new(config);
        let d = opt.decide(&ctx("p"), Some(&stats), with_model.then_some(&model), now(), seed);
        let g = opt.guards(Some(&stats));
        let b = g.bounds;
        // Floors only grow with concurrency: if the least config fails, every config does.
        let feasible = g.apply(BuildConfig { cpu: b.min_cpu, mem_gb: b.min_mem_gb, concurrency: b.min_concurrency }).is_some_and(|c| !c.needs_confidence);
        if feasible {
            prop_assert!(g.check(&d.config, d.confidence).is_ok(), "{:?} violates: {:?}\n{}", d.config, g.check(&d.config, d.confidence), d.rationale);
        } else {
            // Nothing can satisfy the floors within these bounds: the baseline, clipped, is kept.
            prop_assert_eq!(d.config, d.baseline);
            prop_assert!(d.rationale.contains("kept as is"), "{}", d.rationale);
        }
        prop_assert!((0.0..=1.0).contains(&d.confidence));
        // Replayable.
        prop_assert_eq!(&d, &opt.decide(&ctx("p"), Some(&stats), with_model.then_some(&model), now(), seed));
    }
}
