//! InfraMind: right-sizes CI build pods with a random forest trained on build telemetry.
//!
//! Pure logic (features, forest, optimizer, patch building) lives in modules that do no I/O;
//! the store, registry, Kubernetes and HTTP edges translate between the world and those values.

pub mod admission;
pub mod api;
pub mod api_metrics;
pub mod cache_advice;
pub mod cli;
pub mod client;
pub mod closed_loop;
pub mod config;
pub mod controller;
pub mod dashboard;
pub mod error;
pub mod evaluation;
pub mod features;
pub mod forest;
pub mod kube_time;
pub mod model;
pub mod optimizer;
pub mod outcome;
pub mod partial_dependence;
pub mod plots;
pub mod record;
pub mod registry;
pub mod reporter;
pub mod savings;
pub mod serving;
pub mod signing;
pub mod simulate;
pub mod stats;
pub mod telemetry;
pub mod training;
pub mod webhook;

pub use error::{Error, Result};

use serde::{Deserialize, Serialize};

/// The resources a build runs with: what the optimizer chooses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BuildConfig {
    /// Requested vCPU.
    pub cpu: f64,
    /// Requested memory, GB.
    pub mem_gb: f64,
    /// Build tool parallelism.
    pub concurrency: u32,
}

/// What identifies a build at admission time, before any config is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildContext {
    /// Pipeline (repository).
    pub pipeline: String,
    /// Branch.
    pub branch: String,
    /// Build image.
    pub image: String,
    /// Node type.
    pub node: String,
}

impl BuildContext {
    /// The context a finished run was admitted with.
    pub fn of_run(run: &record::RunRecord) -> BuildContext {
        BuildContext {
            pipeline: run.pipeline.clone(),
            branch: run.branch.clone(),
            image: run.image.clone(),
            node: run.node.clone(),
        }
    }
}
