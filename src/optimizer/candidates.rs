//! The candidate grid: the baseline ± {-2, -1, 0, 1, 2} steps in each dimension.

use super::{Bounds, Steps};
use crate::BuildConfig;

/// Offsets, in steps, tried in every dimension (the design's grid).
pub const DELTAS: [i32; 5] = [-2, -1, 0, 1, 2];

/// The 125 grid points around `baseline`, clipped to `bounds` (duplicates after clipping removed).
pub fn grid(baseline: &BuildConfig, steps: &Steps, bounds: &Bounds) -> Vec<BuildConfig> {
    let mut out: Vec<BuildConfig> = Vec::with_capacity(DELTAS.len().pow(3));
    for dc in DELTAS {
        for dm in DELTAS {
            for dj in DELTAS {
                let c = bounds.clip(BuildConfig {
                    cpu: baseline.cpu + dc as f64 * steps.cpu,
                    mem_gb: baseline.mem_gb + dm as f64 * steps.mem_gb,
                    concurrency: (baseline.concurrency as i64
                        + dj as i64 * steps.concurrency as i64)
                        .max(1) as u32,
                });
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_125_points_around_a_central_baseline() {
        let b = BuildConfig {
            cpu: 6.0,
            mem_gb: 12.0,
            concurrency: 6,
        };
        let g = grid(&b, &Steps::default(), &Bounds::default());
        assert_eq!(g.len(), 125);
        assert!(g.contains(&b));
        assert!(g.contains(&BuildConfig {
            cpu: 4.0,
            mem_gb: 14.0,
            concurrency: 8
        }));
    }

    #[test]
    fn grid_is_clipped_to_bounds_and_deduplicated() {
        let b = BuildConfig {
            cpu: 1.0,
            mem_gb: 2.0,
            concurrency: 1,
        };
        let g = grid(&b, &Steps::default(), &Bounds::default());
        assert_eq!(g.len(), 27, "only the upper halves survive");
        assert!(g
            .iter()
            .all(|c| c.cpu >= 1.0 && c.mem_gb >= 2.0 && c.concurrency >= 1));
    }

    #[test]
    fn step_sizes_are_configurable() {
        let b = BuildConfig {
            cpu: 8.0,
            mem_gb: 16.0,
            concurrency: 8,
        };
        let steps = Steps {
            cpu: 2.0,
            mem_gb: 4.0,
            concurrency: 2,
        };
        let g = grid(&b, &steps, &Bounds::default());
        assert!(g.contains(&BuildConfig {
            cpu: 12.0,
            mem_gb: 8.0,
            concurrency: 4
        }));
    }
}
