//! Promotion gates: maximum MAE, minimum R² (off by default), minimum rank accuracy (the
//! default judge: it scores the decisions the model makes), and "no worse than the active
//! model".
//!
//! The comparison with the active model is made on the new model's own holdout: the same runs
//! are turned into rows again with the *active* model's encodings (`features::build_dataset`;
//! rows, order and start times do not depend on the encodings), the same split is drawn
//! (`evaluation::split_indices` with the same split, fraction and seed), and both models' rank
//! accuracy is taken on those rows (their MAE when the rows hold no pair to rank). A tie
//! passes: retraining on unchanged data reproduces the active model, and promoting an equal
//! model is harmless.
//!
//! When the active model's training window overlaps that holdout it may have trained on some of
//! those rows, which favours it; the verdict says how many rows that concerns. The bias is
//! conservative (it can only block a promotion), and a temporal split avoids it once new runs
//! have arrived.

use chrono::{DateTime, Utc};

use super::crd::{finite, GateResult, Gates};
use crate::evaluation::{mae, rank_accuracy, split_indices, Split};
use crate::features::build_dataset;
use crate::model::{Model, ModelMeta};
use crate::record::RunRecord;

/// Gate names as they appear in the status.
pub const MAX_MAE: &str = "maxMaeSeconds";
/// See [`MAX_MAE`].
pub const MIN_R2: &str = "minR2";
/// See [`MAX_MAE`].
pub const MIN_RANK_ACCURACY: &str = "minRankAccuracy";
/// See [`MAX_MAE`].
pub const MUST_BEAT_ACTIVE: &str = "mustBeatActive";

/// The active model's score on the new model's holdout.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveComparison {
    /// The active version.
    pub version: String,
    /// Its MAE on the holdout rows, seconds.
    pub mae_s: f64,
    /// Its rank accuracy on the holdout rows (`None`: no pair to rank).
    pub rank_accuracy: Option<f64>,
    /// Holdout rows compared on.
    pub rows: usize,
    /// Of those, rows that started inside the active model's training window.
    pub rows_in_active_window: usize,
}

/// What the gates judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// MAE on the holdout of the split the served model was fitted on, seconds.
    pub mae_s: f64,
    /// R² on that holdout.
    pub r2: f64,
    /// Rank accuracy on that holdout (`None`: no pair to rank).
    pub rank_accuracy: Option<f64>,
    /// The active model's score on the same rows; `None` when no model is active.
    pub active: Option<ActiveComparison>,
}

/// Every gate's verdict, in the order maxMaeSeconds, minR2 (when set), minRankAccuracy,
/// mustBeatActive (when enabled).
pub fn evaluate(gates: &Gates, c: &Candidate) -> Vec<GateResult> {
    let mut out = Vec::with_capacity(3);
    let limit = gates.max_mae_seconds;
    out.push(if c.mae_s.is_finite() && c.mae_s <= limit {
        pass(
            MAX_MAE,
            c.mae_s,
            limit,
            format!("MAE {:.3} s is within the maximum {limit} s", c.mae_s),
        )
    } else if c.mae_s.is_finite() {
        fail(
            MAX_MAE,
            Some(c.mae_s),
            limit,
            c.mae_s - limit,
            format!(
                "MAE {:.3} s exceeds the maximum {limit} s by {:.3} s",
                c.mae_s,
                c.mae_s - limit
            ),
        )
    } else {
        fail(
            MAX_MAE,
            None,
            limit,
            f64::NAN,
            "MAE is undefined (empty holdout)".into(),
        )
    });
    if let Some(min) = gates.min_r2 {
        out.push(if c.r2.is_finite() && c.r2 >= min {
            pass(
                MIN_R2,
                c.r2,
                min,
                format!("R² {:.4} meets the minimum {min}", c.r2),
            )
        } else if c.r2.is_finite() {
            fail(
                MIN_R2,
                Some(c.r2),
                min,
                min - c.r2,
                format!(
                    "R² {:.4} is below the minimum {min} by {:.4}",
                    c.r2,
                    min - c.r2
                ),
            )
        } else {
            fail(
                MIN_R2,
                None,
                min,
                f64::NAN,
                "R² is undefined (holdout too small or constant)".into(),
            )
        });
    }
    let min = gates.min_rank_accuracy;
    out.push(match c.rank_accuracy {
        Some(v) if v >= min => pass(
            MIN_RANK_ACCURACY,
            v,
            min,
            format!("rank accuracy {v:.3} meets the minimum {min}"),
        ),
        Some(v) => fail(
            MIN_RANK_ACCURACY,
            Some(v),
            min,
            min - v,
            format!(
                "rank accuracy {v:.3} is below the minimum {min} by {:.3}",
                min - v
            ),
        ),
        // Until builds of a pipeline ran with different configs (a new cluster admits them all
        // with the same defaults) there is nothing to rank; blocking here would keep the
        // cluster on cold start forever, and the MAE gate and the safety guards still hold.
        None => GateResult {
            gate: MIN_RANK_ACCURACY.into(),
            passed: true,
            value: None,
            threshold: finite(min),
            by: None,
            message: "nothing to rank yet: the holdout has no two runs of a pipeline with different configs and clearly different durations".into(),
        },
    });
    if gates.must_beat_active {
        out.push(match &c.active {
            None => GateResult {
                gate: MUST_BEAT_ACTIVE.into(),
                passed: true,
                value: finite(c.mae_s),
                threshold: None,
                by: None,
                message: "no model is active: nothing to beat".into(),
            },
            Some(a) => beat_active(c, a),
        });
    }
    out
}

fn beat_active(c: &Candidate, a: &ActiveComparison) -> GateResult {
    let overlap = if a.rows_in_active_window > 0 {
        format!(
            " ({} of {} rows fall inside {}'s training window, which favours it)",
            a.rows_in_active_window, a.rows, a.version
        )
    } else {
        String::new()
    };
    // Rank accuracy when both can be ranked on these rows; MAE otherwise.
    if let (Some(mine), Some(theirs)) = (c.rank_accuracy, a.rank_accuracy) {
        return if mine >= theirs {
            pass(
                MUST_BEAT_ACTIVE,
                mine,
                theirs,
                format!(
                    "rank accuracy {mine:.3} is no worse than active {}'s {theirs:.3} on the same {} holdout rows{overlap}",
                    a.version, a.rows
                ),
            )
        } else {
            fail(
                MUST_BEAT_ACTIVE,
                Some(mine),
                theirs,
                theirs - mine,
                format!(
                    "rank accuracy {mine:.3} is worse than active {}'s {theirs:.3} by {:.3} on the same {} holdout rows{overlap}",
                    a.version,
                    theirs - mine,
                    a.rows
                ),
            )
        };
    }
    if c.mae_s.is_finite() && a.mae_s.is_finite() && c.mae_s <= a.mae_s {
        pass(
            MUST_BEAT_ACTIVE,
            c.mae_s,
            a.mae_s,
            format!(
                "MAE {:.3} s is no worse than active {}'s {:.3} s on the same {} holdout rows (no pairs to rank){overlap}",
                c.mae_s, a.version, a.mae_s, a.rows
            ),
        )
    } else if !a.mae_s.is_finite() {
        // The active model cannot be scored on these rows: nothing to beat.
        GateResult {
            gate: MUST_BEAT_ACTIVE.into(),
            passed: true,
            value: finite(c.mae_s),
            threshold: None,
            by: None,
            message: format!(
                "active {} could not be scored on the holdout: nothing to beat",
                a.version
            ),
        }
    } else {
        fail(
            MUST_BEAT_ACTIVE,
            finite(c.mae_s),
            a.mae_s,
            c.mae_s - a.mae_s,
            format!(
                "MAE {:.3} s is worse than active {}'s {:.3} s by {:.3} s on the same {} holdout rows (no pairs to rank){overlap}",
                c.mae_s,
                a.version,
                a.mae_s,
                c.mae_s - a.mae_s,
                a.rows
            ),
        )
    }
}

/// The first failed gate, if any.
pub fn first_failure(results: &[GateResult]) -> Option<&GateResult> {
    results.iter().find(|g| !g.passed)
}

fn pass(gate: &str, value: f64, threshold: f64, message: String) -> GateResult {
    GateResult {
        gate: gate.into(),
        passed: true,
        value: finite(value),
        threshold: finite(threshold),
        by: None,
        message,
    }
}

fn fail(gate: &str, value: Option<f64>, threshold: f64, by: f64, message: String) -> GateResult {
    GateResult {
        gate: gate.into(),
        passed: false,
        value: value.and_then(finite),
        threshold: finite(threshold),
        by: finite(by),
        message,
    }
}

/// Scores the active model on the holdout the new model was evaluated on (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn compare_with_active(
    active: &Model,
    active_meta: &ModelMeta,
    warmup: &[RunRecord],
    window: &[RunRecord],
    split: Split,
    test_fraction: f64,
    seed: u64,
) -> ActiveComparison {
    let data = build_dataset(&active.encodings, warmup, window);
    let (_, test_idx) = split_indices(&data.started_at, split, test_fraction, seed);
    let holdout = data.select(&test_idx);
    let pred = active.forest.predict(&holdout.x);
    let in_window = |t: &DateTime<Utc>| match (active_meta.window.from, active_meta.window.to) {
        (Some(from), Some(to)) => *t >= from && *t <= to,
        _ => false,
    };
    ActiveComparison {
        version: active_meta.version.clone(),
        mae_s: mae(&holdout.y, &pred),
        rank_accuracy: rank_accuracy(&holdout.x, &holdout.y, &pred).0,
        rows: holdout.len(),
        rows_in_active_window: holdout.started_at.iter().filter(|t| in_window(t)).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(mae_s: f64) -> Option<ActiveComparison> {
        Some(ActiveComparison {
            version: "model_v1".into(),
            mae_s,
            rank_accuracy: None,
            rows: 100,
            rows_in_active_window: 0,
        })
    }

    #[test]
    fn a_good_model_passes_every_gate() {
        let r = evaluate(
            &Gates::default(),
            &Candidate {
                mae_s: 12.0,
                r2: 0.9,
                rank_accuracy: Some(0.8),
                active: active(15.0),
            },
        );
        let names: Vec<_> = r.iter().map(|g| g.gate.as_str()).collect();
        assert_eq!(
            names,
            [MAX_MAE, MIN_RANK_ACCURACY, MUST_BEAT_ACTIVE],
            "minR2 is off by default"
        );
        assert!(r.iter().all(|g| g.passed), "{r:?}");
        let r = evaluate(
            &Gates {
                min_r2: Some(0.7),
                ..Gates::default()
            },
            &Candidate {
                mae_s: 12.0,
                r2: 0.9,
                rank_accuracy: Some(0.8),
                active: active(15.0),
            },
        );
        assert_eq!(r.len(), 4);
        assert!(r.iter().all(|g| g.passed), "{r:?}");
        assert!(first_failure(&r).is_none());
        assert!(r[3].message.contains("no worse than active model_v1"));
    }

    #[test]
    fn a_failed_gate_says_by_how_much() {
        let gates = Gates {
            max_mae_seconds: 10.0,
            min_r2: Some(0.7),
            ..Gates::default()
        };
        let r = evaluate(
            &gates,
            &Candidate {
                mae_s: 12.5,
                r2: 0.65,
                rank_accuracy: Some(0.5),
                active: active(12.0),
            },
        );
        let names: Vec<_> = r.iter().filter(|g| !g.passed).map(|g| &g.gate).collect();
        assert_eq!(
            names,
            [MAX_MAE, MIN_R2, MIN_RANK_ACCURACY, MUST_BEAT_ACTIVE]
        );
        assert_eq!(r[0].by, Some(2.5));
        assert_eq!(r[0].value, Some(12.5));
        assert_eq!(r[0].threshold, Some(10.0));
        assert!((r[1].by.unwrap() - 0.05).abs() < 1e-12);
        assert!((r[2].by.unwrap() - 0.05).abs() < 1e-12, "{:?}", r[2]);
        // Without pairs to rank on the active side, the comparison falls back to MAE.
        assert_eq!(r[3].by, Some(0.5));
        assert_eq!(r[3].threshold, Some(12.0));
        assert!(
            r[0].message.contains("exceeds the maximum 10 s by 2.500 s"),
            "{}",
            r[0].message
        );
        assert_eq!(first_failure(&r).unwrap().gate, MAX_MAE);
    }

    #[test]
    fn the_active_model_is_beaten_on_rank_accuracy_when_both_can_rank() {
        let mut a = active(20.0);
        a.as_mut().unwrap().rank_accuracy = Some(0.75);
        let judge = |mine: f64| {
            evaluate(
                &Gates::default(),
                &Candidate {
                    mae_s: 12.0,
                    r2: 0.1,
                    rank_accuracy: Some(mine),
                    active: a.clone(),
                },
            )
            .pop()
            .unwrap()
        };
        let worse = judge(0.7);
        assert!(!worse.passed, "a lower MAE does not excuse worse ranking");
        assert!(
            worse.message.contains("rank accuracy 0.700 is worse"),
            "{}",
            worse.message
        );
        assert!(judge(0.75).passed, "a tie passes");
        assert!(judge(0.9).passed);
    }

    #[test]
    fn ties_with_the_active_model_pass_and_no_active_model_passes() {
        let r = evaluate(
            &Gates::default(),
            &Candidate {
                mae_s: 12.0,
                r2: 0.9,
                rank_accuracy: Some(0.8),
                active: active(12.0),
            },
        );
        assert!(r[2].passed);
        let r = evaluate(
            &Gates::default(),
            &Candidate {
                mae_s: 12.0,
                r2: 0.9,
                rank_accuracy: Some(0.8),
                active: None,
            },
        );
        assert!(r[2].passed && r[2].message.contains("no model is active"));
    }

    #[test]
    fn undefined_metrics_fail_and_disabled_comparison_is_absent() {
        let gates = Gates {
            must_beat_active: false,
            min_r2: Some(0.7),
            ..Gates::default()
        };
        let r = evaluate(
            &gates,
            &Candidate {
                mae_s: f64::NAN,
                r2: f64::NAN,
                rank_accuracy: None,
                active: active(1.0),
            },
        );
        assert_eq!(r.len(), 3);
        assert!(!r[0].passed && !r[1].passed);
        assert_eq!(r[0].by, None);
        assert!(r[1].message.contains("undefined"));
        assert!(r[2].passed, "nothing to rank does not block");
        assert!(r[2].message.contains("nothing to rank"), "{}", r[2].message);
    }

    #[test]
    fn the_active_model_is_scored_on_the_same_holdout_rows() {
        use crate::training::tests::small_model;
        let (model, meta) = small_model(300);
        let now = meta.created_at;
        let runs: Vec<_> = crate::simulate::demo_runs(300, now, 3)
            .into_iter()
            .filter(|r| r.success)
            .collect();
        // Same data, split and seed as the model's own holdout: the same MAE comes back.
        let c = compare_with_active(&model, &meta, &[], &runs, Split::Random, 0.2, 42);
        assert_eq!(c.rows, meta.random_holdout.test_rows);
        assert!((c.mae_s - meta.random_holdout.mae_s).abs() < 1e-9, "{c:?}");
        assert_eq!(c.rank_accuracy, meta.random_holdout.rank_accuracy);
        assert!(c.rank_accuracy.is_some());
        assert_eq!(c.rows_in_active_window, c.rows);
    }
}
