//! Remembering plans: admissions of the same pipeline, branch, image and node type asking for the
//! same request within the same minute, with the same model version and stats generation, share
//! one plan; each admission still draws its own exploration from it (`Plan::resolve`), so a
//! cached answer is exactly the fresh one. In memory, no I/O.
//!
//! What makes it unable to lie or be abused:
//! - keys name the model by version and the stats by generation, never by address (a freed
//!   model's address was reused by the next one and served its decisions);
//! - stats without a generation (0) are never cached: nothing could tell two of them apart;
//! - it is bounded in bytes, not entries, and recognised strings are capped before they get here
//!   (`admission::recognise::MAX_RECOGNISED_LEN`);
//! - entries leave oldest first, a few per insertion, never the whole map on the request path.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{Decision, Optimizer, Plan};
use crate::model::Model;
use crate::stats::PipelineStats;
use crate::{BuildConfig, BuildContext};

/// Default capacity, bytes.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;
/// Entries of past minutes dropped per insertion at most (incremental expiry).
pub const EXPIRE_PER_INSERT: usize = 4;
/// Bytes charged per entry on top of its strings and plan (map and queue slots).
const ENTRY_OVERHEAD: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    minute: i64,
    ctx: BuildContext,
    request: Option<[u64; 3]>,
    /// The node bound the plan was made within (per pod, from the Node watch).
    node: Option<[u64; 2]>,
    model: Option<String>,
    stats: Option<u64>,
}

impl Key {
    fn bytes(&self) -> usize {
        self.ctx.pipeline.len()
            + self.ctx.branch.len()
            + self.ctx.image.len()
            + self.ctx.node.len()
            + self.model.as_ref().map_or(0, String::len)
    }
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Arc<Key>, (Arc<Plan>, usize)>,
    /// Insertion order (minutes only grow, so also age order).
    order: VecDeque<Arc<Key>>,
    bytes: usize,
}

impl Inner {
    fn pop_oldest(&mut self) -> bool {
        let Some(k) = self.order.pop_front() else {
            return false;
        };
        if let Some((_, b)) = self.map.remove(&k) {
            self.bytes -= b;
        }
        true
    }
}

/// Plans by context, request, model version and stats generation, bounded in bytes.
#[derive(Debug)]
pub struct DecisionCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    uncacheable: AtomicU64,
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache::with_capacity(DEFAULT_MAX_BYTES)
    }
}

/// `now` floored to the minute: the time decisions are made at, so that they can be shared.
pub fn minute(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(now.timestamp() - now.timestamp().rem_euclid(60), 0).unwrap_or(now)
}

/// Cache counters since start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheCounts {
    /// Admissions answered from a cached plan.
    pub hits: u64,
    /// Admissions that planned afresh and stored the plan.
    pub misses: u64,
    /// Admissions that could not be cached (stats without a generation).
    pub uncacheable: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes charged now.
    pub bytes: usize,
}

impl DecisionCache {
    /// An empty cache of the default capacity.
    pub fn new() -> DecisionCache {
        DecisionCache::default()
    }

    /// An empty cache holding at most `max_bytes`.
    pub fn with_capacity(max_bytes: usize) -> DecisionCache {
        DecisionCache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            uncacheable: AtomicU64::new(0),
        }
    }

    /// The optimizer's decision at `minute(now)` for a pod asking `request`, planned once per key.
    // The optimizer's own inputs plus the optimizer: grouping them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        optimizer: &Optimizer,
        ctx: &BuildContext,
        request: Option<&BuildConfig>,
        stats: Option<&PipelineStats>,
        model: Option<&Model>,
        now: DateTime<Utc>,
        seed: u64,
    ) -> Decision {
        let now = minute(now);
        let plan_fresh = || optimizer.plan(ctx, request, stats, model, now);
        if stats.is_some_and(|s| s.generation == 0) {
            self.uncacheable.fetch_add(1, Ordering::Relaxed);
            return plan_fresh().resolve(&optimizer.config, seed);
        }
        let key = Key {
            minute: now.timestamp(),
            ctx: ctx.clone(),
            request: request.map(|r| [r.cpu.to_bits(), r.mem_gb.to_bits(), r.concurrency as u64]),
            node: optimizer
                .config
                .node_capacity
                .map(|n| [n.cpu.to_bits(), n.mem_gb.to_bits()]),
            model: model.map(|m| m.version.clone()),
            stats: stats.map(|s| s.generation),
        };
        let cached = self
            .inner
            .lock()
            .ok()
            .and_then(|g| g.map.get(&key).map(|(p, _)| p.clone()));
        if let Some(plan) = cached {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return plan.resolve(&optimizer.config, seed);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let plan = Arc::new(plan_fresh());
        let decision = plan.resolve(&optimizer.config, seed);
        self.insert(key, plan);
        decision
    }

    fn insert(&self, key: Key, plan: Arc<Plan>) {
        let bytes = ENTRY_OVERHEAD + key.bytes() + plan.size_bytes();
        if bytes > self.max_bytes {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        if g.map.contains_key(&key) {
            return;
        }
        // Past minutes can never hit again: drop a few per insertion.
        let mut expired = 0;
        while expired < EXPIRE_PER_INSERT && g.order.front().is_some_and(|k| k.minute < key.minute)
        {
            g.pop_oldest();
            expired += 1;
        }
        // Over budget: oldest first, as many as the new entry needs (each entry is bounded).
        while g.bytes + bytes > self.max_bytes && g.pop_oldest() {}
        let key = Arc::new(key);
        g.order.push_back(key.clone());
        g.map.insert(key, (plan, bytes));
        g.bytes += bytes;
    }

    /// Counters and occupancy.
    pub fn counts(&self) -> CacheCounts {
        let (entries, bytes) = self
            .inner
            .lock()
            .map(|g| (g.map.len(), g.bytes))
            .unwrap_or_default();
        CacheCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            uncacheable: self.uncacheable.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests;
