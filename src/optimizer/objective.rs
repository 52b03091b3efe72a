//! What "best" means (duration or cost) and how sure the forest is about a prediction.

use serde::{Deserialize, Serialize};

use crate::BuildConfig;

/// What the optimizer minimises.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Objective {
    /// Predicted build duration (the design's objective).
    #[default]
    Duration,
    /// Money: resources held for the build's duration plus the price of the time itself.
    ///
    /// `score = hours × (cpu × cpu_per_hour + mem_gb × gb_per_hour + time_per_hour)`.
    /// With `time_per_hour = 0` this minimises spend; as it grows it approaches `Duration`.
    Cost {
        /// Price of one vCPU-hour.
        cpu_per_hour: f64,
        /// Price of one GB-hour of memory.
        gb_per_hour: f64,
        /// Price of one hour of build time (people waiting, pipeline throughput).
        time_per_hour: f64,
    },
}

impl Objective {
    /// The cost objective with typical cloud prices and a modest price on waiting.
    pub fn default_cost() -> Objective {
        Objective::Cost {
            cpu_per_hour: 0.04,
            gb_per_hour: 0.005,
            time_per_hour: 0.5,
        }
    }

    /// Score of `config` predicted to take `seconds`: lower is better.
    pub fn score(&self, config: &BuildConfig, seconds: f64) -> f64 {
        match *self {
            Objective::Duration => seconds,
            Objective::Cost {
                cpu_per_hour,
                gb_per_hour,
                time_per_hour,
            } => {
                seconds / 3600.0
                    * (config.cpu * cpu_per_hour + config.mem_gb * gb_per_hour + time_per_hour)
            }
        }
    }

    /// Short name for annotations and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Duration => "duration",
            Objective::Cost { .. } => "cost",
        }
    }
}

/// Coefficient of variation across trees at which confidence reaches 0.
pub const CV_AT_ZERO_CONFIDENCE: f64 = 0.5;

/// Confidence in a prediction from the trees' spread: `clamp(1 − (σ/μ) / 0.5, 0, 1)`.
///
/// σ/μ is the coefficient of variation of the 100 trees' predictions at that config: trees
/// that agree within 10 % give confidence 0.8 (the threshold that lifts the historical
/// concurrency cap); trees that disagree by half the prediction or more give 0.
pub fn confidence(mean: f64, std: f64) -> f64 {
    if mean.is_nan() || mean <= 0.0 || !std.is_finite() {
        return 0.0;
    }
    (1.0 - (std / mean) / CV_AT_ZERO_CONFIDENCE).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_formula_at_its_landmarks() {
        assert_eq!(confidence(100.0, 0.0), 1.0);
        assert!((confidence(100.0, 10.0) - 0.8).abs() < 1e-12);
        assert_eq!(confidence(100.0, 50.0), 0.0);
        assert_eq!(confidence(100.0, 80.0), 0.0);
        assert_eq!(confidence(0.0, 1.0), 0.0);
        assert_eq!(confidence(f64::NAN, 1.0), 0.0);
    }

    #[test]
    fn cost_trades_speed_for_spend() {
        let small = BuildConfig {
            cpu: 2.0,
            mem_gb: 4.0,
            concurrency: 2,
        };
        let big = BuildConfig {
            cpu: 8.0,
            mem_gb: 16.0,
            concurrency: 8,
        };
        // Big is 2× faster.
        let d = Objective::Duration;
        assert!(d.score(&big, 300.0) < d.score(&small, 600.0));
        let thrifty = Objective::Cost {
            cpu_per_hour: 0.04,
            gb_per_hour: 0.005,
            time_per_hour: 0.0,
        };
        assert!(thrifty.score(&small, 600.0) < thrifty.score(&big, 300.0));
        let impatient = Objective::Cost {
            cpu_per_hour: 0.04,
            gb_per_hour: 0.005,
            time_per_hour: 10.0,
        };
        assert!(impatient.score(&big, 300.0) < impatient.score(&small, 600.0));
    }
}
