//! The one way a recommendation is assembled, for the webhook, the API and the CLI alike: the same
//! defaults for what a request leaves out, the same clock (decisions are made at the minute, so
//! they can be shared and replayed), and the same seed rule (the request's own uid). Pure.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::cache::{minute, DecisionCache};
use super::{exploration, Decision, NodeCapacity, Optimizer, OptimizerConfig};
use crate::model::Model;
use crate::record::UNKNOWN;
use crate::stats::PipelineStats;
use crate::{BuildConfig, BuildContext};

/// Decides for a build context: the optimizer, optionally sharing exploit decisions.
#[derive(Debug, Clone, Default)]
pub struct Recommender {
    /// The optimizer and its configuration.
    pub optimizer: Optimizer,
    /// Shares exploit decisions within a minute (the webhook's hot path); `None` decides afresh.
    pub cache: Option<Arc<DecisionCache>>,
}

impl Recommender {
    /// A recommender without a decision cache.
    pub fn new(optimizer: Optimizer) -> Recommender {
        Recommender {
            optimizer,
            cache: None,
        }
    }

    /// The same recommender, sharing exploit decisions through `cache`.
    pub fn with_cache(mut self, cache: Arc<DecisionCache>) -> Recommender {
        self.cache = Some(cache);
        self
    }

    /// The context of a request: whatever it leaves out is `unknown`, as admission sees it.
    pub fn context(
        pipeline: impl Into<String>,
        branch: Option<String>,
        image: Option<String>,
        node: Option<String>,
    ) -> BuildContext {
        let or_unknown = |v: Option<String>| {
            v.filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| UNKNOWN.to_string())
        };
        BuildContext {
            pipeline: pipeline.into(),
            branch: or_unknown(branch),
            image: or_unknown(image),
            node: or_unknown(node),
        }
    }

    /// The exploration seed of a request with this uid (a pod's uid, or a request id).
    pub fn seed(request_uid: &str) -> u64 {
        exploration::seed_from(request_uid)
    }

    /// The time a decision is made at: `now` floored to the minute.
    pub fn decision_time(now: DateTime<Utc>) -> DateTime<Utc> {
        minute(now)
    }

    /// The decision for `ctx` at `decision_time(now)`, exploring by `seed`, without a pod request.
    pub fn recommend(
        &self,
        ctx: &BuildContext,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Decision {
        self.recommend_for(ctx, None, None, stats, model, now, seed)
    }

    /// The decision for a pod: its own `request` is scored and kept unless a change beats it
    /// with enough confidence; `node` bounds it by the largest node it may land on (configured
    /// node bounds, when set, win).
    #[allow(clippy::too_many_arguments)]
    pub fn recommend_for(
        &self,
        ctx: &BuildContext,
        request: Option<&BuildConfig>,
        node: Option<NodeCapacity>,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Decision {
        let bounded;
        let optimizer = match (node, self.optimizer.config.node_capacity) {
            (Some(cap), None) => {
                bounded = Optimizer::new(OptimizerConfig {
                    node_capacity: Some(cap),
                    ..self.optimizer.config.clone()
                });
                &bounded
            }
            _ => &self.optimizer,
        };
        match &self.cache {
            Some(cache) => cache.decide(optimizer, ctx, request, stats, model, now, seed),
            None => {
                optimizer.decide_for(ctx, request, stats, model, Self::decision_time(now), seed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuildConfig;

    fn stats() -> PipelineStats {
        PipelineStats {
            pipeline: "acme/api".into(),
            runs: 5,
            successes: 5,
            last_success: Some(BuildConfig {
                cpu: 3.0,
                mem_gb: 6.0,
                concurrency: 3,
            }),
            rss_p95_gb: Some(2.0),
            ..Default::default()
        }
    }

    #[test]
    fn cached_and_uncached_paths_decide_alike_at_the_minute() {
        let plain = Recommender::default();
        let cached = Recommender::default().with_cache(Arc::new(DecisionCache::new()));
        let ctx = Recommender::context("acme/api", None, Some("rust:1".into()), None);
        assert_eq!((ctx.branch.as_str(), ctx.node.as_str()), (UNKNOWN, UNKNOWN));
        let now = DateTime::parse_from_rfc3339("2026-11-28T10:00:42Z")
            .unwrap()
            .with_timezone(&Utc);
        for uid in ["pod-a", "pod-b", "req-1", "req-2", "req-3"] {
            let seed = Recommender::seed(uid);
            let a = plain.recommend(&ctx, Some(&stats()), None, now, seed);
            let b = cached.recommend(&ctx, Some(&stats()), None, now, seed);
            assert_eq!(a, b, "{uid}");
            // Seconds within the minute do not change a decision.
            let later = now + chrono::Duration::seconds(15);
            assert_eq!(a, plain.recommend(&ctx, Some(&stats()), None, later, seed));
        }
    }
}
