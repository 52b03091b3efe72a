//! Remembering decisions: admissions of the same pipeline, branch, image and node type within the
//! same minute, with the same stats and model, get the same exploit decision, so it is computed
//! once. Exploring decisions (a seeded draw per pod) are always computed afresh. In memory, no I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::{exploration, Decision, Optimizer};
use crate::model::Model;
use crate::stats::PipelineStats;
use crate::BuildContext;

/// Entries kept at most (per minute; the cache starts afresh every minute).
pub const MAX_ENTRIES: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    ctx: BuildContext,
    /// Identity of the model and stats snapshot the decision was made with (swapped, never mutated).
    model: usize,
    stats: usize,
}

/// Exploit decisions by context, for the current minute.
#[derive(Debug, Default)]
pub struct DecisionCache {
    entries: Mutex<(i64, HashMap<Key, Decision>)>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// `now` floored to the minute: the time decisions are made at, so that they can be shared.
pub fn minute(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(60), 0).unwrap_or(now)
}

impl DecisionCache {
    /// An empty cache.
    pub fn new() -> DecisionCache {
        DecisionCache::default()
    }

    /// The optimizer's decision at `minute(now)`, from the cache when this decision does not explore.
    pub fn decide(
        &self,
        optimizer: &Optimizer,
        ctx: &BuildContext,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Decision {
        let now = minute(now);
        if exploration::explores(
            &mut exploration::rng(seed),
            optimizer.config.exploration_rate,
        ) {
            return optimizer.decide(ctx, stats, model, now, seed);
        }
        let key = Key {
            ctx: ctx.clone(),
            model: model.map_or(0, |m| m as *const Model as usize),
            stats: stats.map_or(0, |s| s as *const PipelineStats as usize),
        };
        let bucket = now.timestamp();
        if let Ok(mut guard) = self.entries.lock() {
            if guard.0 != bucket {
                *guard = (bucket, HashMap::new());
            }
            if let Some(d) = guard.1.get(&key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return d.clone();
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // Not exploring: the seed only decided that, so the decision is the same for every seed.
        let d = optimizer.decide(ctx, stats, model, now, seed);
        if let Ok(mut guard) = self.entries.lock() {
            if guard.0 == bucket && guard.1.len() < MAX_ENTRIES {
                guard.1.insert(key, d.clone());
            }
        }
        d
    }

    /// (hits, misses) since start-up.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimizer::OptimizerConfig;
    use chrono::TimeZone;

    #[test]
    fn cached_decisions_equal_fresh_ones_and_exploration_is_never_cached() {
        let opt = Optimizer::new(OptimizerConfig {
            exploration_rate: 0.3,
            ..Default::default()
        });
        let cache = DecisionCache::new();
        let ctx = BuildContext {
            pipeline: "p".into(),
            branch: "main".into(),
            image: "i".into(),
            node: "n".into(),
        };
        let stats = PipelineStats {
            last_success: Some(crate::BuildConfig {
                cpu: 3.0,
                mem_gb: 6.0,
                concurrency: 3,
            }),
            ..Default::default()
        };
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 17).unwrap();
        for seed in 0..200u64 {
            let cached = cache.decide(&opt, &ctx, Some(&stats), None, t, seed);
            assert_eq!(
                cached,
                opt.decide(&ctx, Some(&stats), None, minute(t), seed),
                "seed {seed}"
            );
        }
        let (hits, misses) = cache.counts();
        assert!(hits > 100 && misses >= 1, "{hits} hits, {misses} misses");
        // Another context, or the next minute, is not served from the cache.
        let other = BuildContext {
            branch: "dev".into(),
            ..ctx.clone()
        };
        let exploit_seed = (0u64..)
            .find(|s| !exploration::explores(&mut exploration::rng(*s), 0.3))
            .unwrap();
        let _ = cache.decide(&opt, &other, Some(&stats), None, t, exploit_seed);
        let next_minute = t + chrono::Duration::minutes(1);
        let _ = cache.decide(&opt, &ctx, Some(&stats), None, next_minute, exploit_seed);
        assert_eq!(cache.counts().1, misses + 2);
        assert_eq!(
            minute(t),
            Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
        );
    }
}
