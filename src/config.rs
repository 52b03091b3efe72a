//! Settings and their defaults, in one place. The command line maps flags and `INFRAMIND_*`
//! variables onto these structs (the clap attributes below); the webhook, the API and the
//! controller take them as plain values and never import the CLI. Optimizer defaults come from
//! the optimizer's own `Default` impls, so no number is written twice.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::optimizer::{Bounds, Exploration, NodeCapacity, Objective, OptimizerConfig, Steps};
use crate::BuildConfig;

/// The optimizer's defaults, which the flags below default to.
static DEFAULTS: std::sync::LazyLock<OptimizerConfig> =
    std::sync::LazyLock::new(OptimizerConfig::default);

/// Why a set of settings is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A size, price or step that must be positive is not.
    #[error("--{flag} must be a positive number, got {value}")]
    NotPositive {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: f64,
    },
    /// A minimum bound exceeds its maximum.
    #[error("each minimum bound must not exceed its maximum")]
    MinAboveMax,
    /// The exploration rate is not a probability.
    #[error("--exploration-rate must be within 0..1, got {0}")]
    ExplorationRate(f64),
    /// The confidence needed to apply a change is not a probability.
    #[error("--min-confidence must be within 0..1, got {0}")]
    MinConfidence(f64),
    /// A concurrency step or default of zero.
    #[error("--concurrency-step and --default-concurrency must be at least 1")]
    ZeroConcurrency,
}

/// Settings every subcommand shares (`Debug` hides the URLs' passwords).
#[derive(Args, Clone)]
pub struct Global {
    /// Telemetry store: postgres://… or sqlite://… (created when missing).
    #[arg(long, global = true, env = "INFRAMIND_DATABASE_URL", default_value = crate::telemetry::store::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Directory of versioned model artifacts.
    #[arg(
        long,
        global = true,
        env = "INFRAMIND_MODELS_DIR",
        default_value = "models"
    )]
    pub models_dir: PathBuf,
    /// Redis holding the shared model registry (`im:model:active`); without it, the models directory is the registry.
    #[arg(long, global = true, env = "INFRAMIND_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix of the registry in Redis.
    #[arg(long, global = true, env = "INFRAMIND_REDIS_PREFIX", default_value = crate::registry::DEFAULT_PREFIX)]
    pub redis_prefix: String,
    /// Ed25519 private key (PKCS#8 PEM or base64 seed) that signs the models this process trains (the trainer only).
    #[arg(long, global = true, env = "INFRAMIND_MODEL_SIGNING_KEY_FILE")]
    pub model_signing_key_file: Option<PathBuf>,
    /// Ed25519 public key (SPKI PEM or base64) that every loaded model must be signed with; without it (and without a signing key) signatures are not checked.
    #[arg(long, global = true, env = "INFRAMIND_MODEL_PUBLIC_KEY_FILE")]
    pub model_public_key_file: Option<PathBuf>,
    /// Log format: human text or JSON lines (for clusters).
    #[arg(long, global = true, env = "INFRAMIND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::telemetry::store::redact;
        f.debug_struct("Global")
            .field("database_url", &redact(&self.database_url))
            .field("models_dir", &self.models_dir)
            .field("redis_url", &self.redis_url.as_deref().map(redact))
            .field("redis_prefix", &self.redis_prefix)
            .field("model_signing_key_file", &self.model_signing_key_file)
            .field("model_public_key_file", &self.model_public_key_file)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Global {
    /// The model signing and verifying keys these settings name.
    pub fn model_keys(&self) -> Result<crate::signing::ModelKeys, crate::signing::KeyError> {
        crate::signing::ModelKeys::load(
            self.model_signing_key_file.as_deref(),
            self.model_public_key_file.as_deref(),
        )
    }

    /// The models directory with its keys.
    pub fn model_dir(&self) -> Result<crate::model::ModelDir, crate::signing::KeyError> {
        Ok(crate::model::ModelDir::new(&self.models_dir).with_keys(self.model_keys()?))
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Optimizer settings (shared by `recommend` and the webhook).
#[derive(Debug, Args, Clone)]
pub struct OptimizerSettings {
    /// Fewest vCPU a build is given.
    #[arg(long, env = "INFRAMIND_MIN_CPU", default_value_t = DEFAULTS.bounds.min_cpu)]
    pub min_cpu: f64,
    /// Most vCPU a build is given.
    #[arg(long, env = "INFRAMIND_MAX_CPU", default_value_t = DEFAULTS.bounds.max_cpu)]
    pub max_cpu: f64,
    /// Least memory, GB.
    #[arg(long, env = "INFRAMIND_MIN_MEM_GB", default_value_t = DEFAULTS.bounds.min_mem_gb)]
    pub min_mem_gb: f64,
    /// Most memory, GB.
    #[arg(long, env = "INFRAMIND_MAX_MEM_GB", default_value_t = DEFAULTS.bounds.max_mem_gb)]
    pub max_mem_gb: f64,
    /// Fewest build jobs.
    #[arg(long, env = "INFRAMIND_MIN_CONCURRENCY", default_value_t = DEFAULTS.bounds.min_concurrency)]
    pub min_concurrency: u32,
    /// Most build jobs (never above 16).
    #[arg(long, env = "INFRAMIND_MAX_CONCURRENCY", default_value_t = DEFAULTS.bounds.max_concurrency)]
    pub max_concurrency: u32,
    /// Allocatable vCPU of the largest node (bounds every recommendation).
    #[arg(long, env = "INFRAMIND_NODE_MAX_CPU")]
    pub node_max_cpu: Option<f64>,
    /// Allocatable memory of the largest node, GB.
    #[arg(long, env = "INFRAMIND_NODE_MAX_MEM_GB")]
    pub node_max_mem_gb: Option<f64>,
    /// Baseline vCPU for pipelines with no successful run.
    #[arg(long, env = "INFRAMIND_DEFAULT_CPU", default_value_t = DEFAULTS.defaults.cpu)]
    pub default_cpu: f64,
    /// Baseline memory, GB.
    #[arg(long, env = "INFRAMIND_DEFAULT_MEM_GB", default_value_t = DEFAULTS.defaults.mem_gb)]
    pub default_mem_gb: f64,
    /// Baseline build jobs.
    #[arg(long, env = "INFRAMIND_DEFAULT_CONCURRENCY", default_value_t = DEFAULTS.defaults.concurrency)]
    pub default_concurrency: u32,
    /// Grid step for cpu.
    #[arg(long, env = "INFRAMIND_CPU_STEP", default_value_t = DEFAULTS.steps.cpu)]
    pub cpu_step: f64,
    /// Grid step for memory, GB.
    #[arg(long, env = "INFRAMIND_MEM_STEP_GB", default_value_t = DEFAULTS.steps.mem_gb)]
    pub mem_step_gb: f64,
    /// Grid step for concurrency.
    #[arg(long, env = "INFRAMIND_CONCURRENCY_STEP", default_value_t = DEFAULTS.steps.concurrency)]
    pub concurrency_step: u32,
    /// What to minimise.
    #[arg(long, env = "INFRAMIND_OBJECTIVE", value_enum, default_value_t = ObjectiveChoice::Duration)]
    pub objective: ObjectiveChoice,
    /// Cost objective: price of a vCPU-hour.
    #[arg(long, env = "INFRAMIND_CPU_PRICE_PER_HOUR", default_value_t = 0.04)]
    pub cpu_price_per_hour: f64,
    /// Cost objective: price of a GB-hour of memory.
    #[arg(long, env = "INFRAMIND_MEM_PRICE_PER_GB_HOUR", default_value_t = 0.005)]
    pub mem_price_per_gb_hour: f64,
    /// Cost objective: price of an hour of build time.
    #[arg(long, env = "INFRAMIND_TIME_PRICE_PER_HOUR", default_value_t = 0.5)]
    pub time_price_per_hour: f64,
    /// Probability of exploring a random config (0 disables).
    #[arg(long, env = "INFRAMIND_EXPLORATION_RATE", default_value_t = DEFAULTS.exploration_rate)]
    pub exploration_rate: f64,
    /// How exploring decisions pick: thompson (a drawn block of trees' argmin), epsilon (uniform
    /// over the guarded candidates), off.
    #[arg(long, env = "INFRAMIND_EXPLORATION", value_enum, default_value_t = ExplorationChoice::Thompson)]
    pub exploration: ExplorationChoice,
    /// Probability that a change beats the pod's own request needed to apply it.
    #[arg(long, env = "INFRAMIND_MIN_CONFIDENCE", default_value_t = DEFAULTS.min_confidence)]
    pub min_confidence: f64,
}

/// Exploration policy choice.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExplorationChoice {
    /// Thompson sampling over the forest's trees.
    Thompson,
    /// Uniform draws from the guarded candidates.
    Epsilon,
    /// Never explore.
    Off,
}

/// Objective choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ObjectiveChoice {
    /// Fastest build.
    Duration,
    /// Cheapest build, counting the price of time.
    Cost,
}

impl OptimizerSettings {
    /// The optimizer configuration these flags describe, validated.
    pub fn config(&self) -> Result<OptimizerConfig, ConfigError> {
        let positive = [
            ("min-cpu", self.min_cpu),
            ("max-cpu", self.max_cpu),
            ("min-mem-gb", self.min_mem_gb),
            ("max-mem-gb", self.max_mem_gb),
            ("default-cpu", self.default_cpu),
            ("default-mem-gb", self.default_mem_gb),
            ("cpu-step", self.cpu_step),
            ("mem-step-gb", self.mem_step_gb),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::NotPositive {
                    flag: name,
                    value: v,
                });
            }
        }
        if self.min_cpu > self.max_cpu
            || self.min_mem_gb > self.max_mem_gb
            || self.min_concurrency > self.max_concurrency
        {
            return Err(ConfigError::MinAboveMax);
        }
        if !(0.0..=1.0).contains(&self.exploration_rate) {
            return Err(ConfigError::ExplorationRate(self.exploration_rate));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(ConfigError::MinConfidence(self.min_confidence));
        }
        if self.concurrency_step == 0 || self.default_concurrency == 0 {
            return Err(ConfigError::ZeroConcurrency);
        }
        let node_capacity = match (self.node_max_cpu, self.node_max_mem_gb) {
            (None, None) => None,
            (cpu, mem) => Some(NodeCapacity {
                cpu: cpu.unwrap_or(f64::INFINITY),
                mem_gb: mem.unwrap_or(f64::INFINITY),
            }),
        };
        Ok(OptimizerConfig {
            defaults: BuildConfig {
                cpu: self.default_cpu,
                mem_gb: self.default_mem_gb,
                concurrency: self.default_concurrency,
            },
            steps: Steps {
                cpu: self.cpu_step,
                mem_gb: self.mem_step_gb,
                concurrency: self.concurrency_step,
            },
            bounds: Bounds {
                min_cpu: self.min_cpu,
                max_cpu: self.max_cpu,
                min_mem_gb: self.min_mem_gb,
                max_mem_gb: self.max_mem_gb,
                min_concurrency: self.min_concurrency,
                max_concurrency: self.max_concurrency,
            },
            node_capacity,
            objective: match self.objective {
                ObjectiveChoice::Duration => Objective::Duration,
                ObjectiveChoice::Cost => Objective::Cost {
                    cpu_per_hour: self.cpu_price_per_hour,
                    gb_per_hour: self.mem_price_per_gb_hour,
                    time_per_hour: self.time_price_per_hour,
                },
            },
            exploration_rate: self.exploration_rate,
            exploration: match self.exploration {
                ExplorationChoice::Thompson => Exploration::Thompson,
                ExplorationChoice::Epsilon => Exploration::Epsilon,
                ExplorationChoice::Off => Exploration::Off,
            },
            min_confidence: self.min_confidence,
        })
    }
}

/// How a server stops on SIGTERM (the chart sets `terminationGracePeriodSeconds` to cover the
/// drain and the grace; no `preStop` is needed: the binary keeps serving, not ready, itself).
#[derive(Debug, Args, Clone, Copy)]
pub struct DrainSettings {
    /// Seconds to keep serving, reporting not-ready, after SIGTERM.
    #[arg(long, env = "INFRAMIND_DRAIN_SECONDS", default_value_t = crate::serving::DEFAULT_DRAIN_SECONDS)]
    pub drain_seconds: u64,
    /// Seconds in-flight requests get to finish once accepting stops.
    #[arg(long, env = "INFRAMIND_SHUTDOWN_GRACE_SECONDS", default_value_t = crate::serving::DEFAULT_GRACE_SECONDS)]
    pub shutdown_grace_seconds: u64,
}

impl DrainSettings {
    /// The drain these settings describe.
    pub fn drain(&self) -> crate::serving::Drain {
        crate::serving::Drain {
            period: std::time::Duration::from_secs(self.drain_seconds),
            grace: std::time::Duration::from_secs(self.shutdown_grace_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: printing the settings printed the stores' passwords.
    #[test]
    fn debug_output_hides_the_stores_passwords() {
        let g = Global {
            database_url: "postgres://im:pg-s3cret@db:5432/im?sslmode=require".into(),
            models_dir: "models".into(),
            redis_url: Some("rediss://:redis-s3cret@cache:6380/0".into()),
            redis_prefix: "im".into(),
            model_signing_key_file: None,
            model_public_key_file: None,
            log_format: LogFormat::Text,
        };
        let shown = format!("{g:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://im:***@db:5432"), "{shown}");
    }
}
