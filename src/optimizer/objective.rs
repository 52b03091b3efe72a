//! What "best" means: duration, or cost (resources held for the duration plus the price of time).

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
        seconds * self.weight(config)
    }

    /// Score per second of duration for `config` (1 for the duration objective): every
    /// objective is linear in duration, so per-tree comparisons need only this factor.
    pub fn weight(&self, config: &BuildConfig) -> f64 {
        match *self {
            Objective::Duration => 1.0,
            Objective::Cost {
                cpu_per_hour,
                gb_per_hour,
                time_per_hour,
            } => (config.cpu * cpu_per_hour + config.mem_gb * gb_per_hour + time_per_hour) / 3600.0,
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

#[cfg(test)]
mod tests {
    use super::*;

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
