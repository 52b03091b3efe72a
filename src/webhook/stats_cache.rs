//! Per-pipeline stats held in memory for the admission path, refreshed from the store in the
//! background: no database call ever happens while an admission waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::error::Result;
use crate::stats::PipelineStats;
use crate::telemetry::Store;

/// Generations handed out so far (shared by every cache in the process, so never reused).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The next stats generation (never 0).
pub fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed) + 1
}

/// Pipeline name → stats, swapped whole on each refresh.
#[derive(Debug, Default)]
pub struct StatsCache {
    map: ArcSwap<HashMap<String, Arc<PipelineStats>>>,
}

impl StatsCache {
    /// An empty cache.
    pub fn new() -> StatsCache {
        StatsCache::default()
    }

    /// The stats of `pipeline`, if it has runs.
    pub fn get(&self, pipeline: &str) -> Option<Arc<PipelineStats>> {
        self.map.load().get(pipeline).cloned()
    }

    /// Number of pipelines held.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the contents with fresh stats of every pipeline in `store`.
    pub async fn refresh(&self, store: &Store) -> Result<usize> {
        let mut map = HashMap::new();
        for p in store.pipelines().await? {
            let mut stats = store.pipeline_stats(&p).await?;
            stats.generation = next_generation();
            map.insert(p, Arc::new(stats));
        }
        let n = map.len();
        self.map.store(Arc::new(map));
        Ok(n)
    }

    /// Inserts one pipeline's stats (tests and warm-up).
    pub fn insert(&self, mut stats: PipelineStats) {
        stats.generation = next_generation();
        let mut map = (**self.map.load()).clone();
        map.insert(stats.pipeline.clone(), Arc::new(stats));
        self.map.store(Arc::new(map));
    }
}

/// Refreshes `cache` from the store at `database_url` every `every`; keeps the last stats through
/// outages and logs once per outage.
pub fn spawn_refresher(
    cache: Arc<StatsCache>,
    database_url: String,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut store: Option<Store> = None;
        let mut down = false;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if store.is_none() {
                store = Store::connect(&database_url).await.map_err(|e| {
                    if !down {
                        tracing::warn!(error = %e, "telemetry store unreachable; admissions use the stats in memory");
                        down = true;
                    }
                }).ok();
            }
            let Some(s) = &store else { continue };
            match cache.refresh(s).await {
                Ok(n) => {
                    if down {
                        tracing::info!(pipelines = n, "telemetry store reachable again");
                        down = false;
                    }
                }
                Err(e) => {
                    if !down {
                        tracing::warn!(error = %e, "refreshing pipeline stats failed; admissions use the stats in memory");
                        down = true;
                    }
                }
            }
        }
    })
}
