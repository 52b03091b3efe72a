//! The `inframind` command line: argument definitions and the subcommands that are not servers.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::evaluation::Split;
use crate::forest::ForestParams;
use crate::model::{ModelDir, ModelMeta};
use crate::optimizer::{
    describe, exploration, Bounds, Decision, NodeCapacity, Objective, Optimizer, OptimizerConfig,
    Steps,
};
use crate::registry::Registry;
use crate::telemetry::{ingest_rows, read_rows, IngestReport, Store};
use crate::training::{train_and_save, Stage, TrainingSpec};
use crate::{BuildConfig, BuildContext};

/// InfraMind: right-sizes CI build pods with a model that keeps learning.
#[derive(Debug, Parser)]
#[command(name = "inframind", version, about)]
pub struct Cli {
    /// Shared settings.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every subcommand shares.
#[derive(Debug, Args, Clone)]
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
    /// Log format: human text or JSON lines (for clusters).
    #[arg(long, global = true, env = "INFRAMIND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest build telemetry from a JSON-lines or CSV file.
    Ingest(IngestArgs),
    /// Train, evaluate and save a new model version.
    Train(TrainArgs),
    /// List and manage model versions.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Show a model's feature importances and metrics.
    Explain(ExplainArgs),
    /// Write simulated build telemetry to a file (JSON lines or CSV).
    Simulate(SimulateArgs),
    /// The whole loop on the embedded default: simulate, ingest, train, evaluate, recommend.
    Quickstart(QuickstartArgs),
    /// Recommend a config for a pipeline with the store's stats and the active model.
    Recommend(Box<RecommendArgs>),
    /// Run the TrainingJob controller (leader-elected) with health and metrics endpoints.
    Controller(crate::controller::ControllerArgs),
    /// Print the TrainingJob CustomResourceDefinition as YAML.
    Crd,
    /// Serve the mutating admission webhook over HTTPS.
    Webhook(Box<crate::webhook::WebhookArgs>),
    /// Serve the HTTP API: ingest runs, pipeline stats, recommendations, training.
    Api(Box<crate::api::ApiArgs>),
    /// Post this build's telemetry (cgroup peak memory and I/O, cache stats) to the InfraMind API.
    Report(Box<crate::reporter::ReportArgs>),
}

/// Optimizer settings (shared by `recommend` and the webhook).
#[derive(Debug, Args, Clone)]
pub struct OptimizerArgs {
    /// Fewest vCPU a build is given.
    #[arg(long, env = "INFRAMIND_MIN_CPU", default_value_t = 1.0)]
    pub min_cpu: f64,
    /// Most vCPU a build is given.
    #[arg(long, env = "INFRAMIND_MAX_CPU", default_value_t = 16.0)]
    pub max_cpu: f64,
    /// Least memory, GB.
    #[arg(long, env = "INFRAMIND_MIN_MEM_GB", default_value_t = 2.0)]
    pub min_mem_gb: f64,
    /// Most memory, GB.
    #[arg(long, env = "INFRAMIND_MAX_MEM_GB", default_value_t = 64.0)]
    pub max_mem_gb: f64,
    /// Fewest build jobs.
    #[arg(long, env = "INFRAMIND_MIN_CONCURRENCY", default_value_t = 1)]
    pub min_concurrency: u32,
    /// Most build jobs (never above 16).
    #[arg(long, env = "INFRAMIND_MAX_CONCURRENCY", default_value_t = 16)]
    pub max_concurrency: u32,
    /// Allocatable vCPU of the largest node (bounds every recommendation).
    #[arg(long, env = "INFRAMIND_NODE_MAX_CPU")]
    pub node_max_cpu: Option<f64>,
    /// Allocatable memory of the largest node, GB.
    #[arg(long, env = "INFRAMIND_NODE_MAX_MEM_GB")]
    pub node_max_mem_gb: Option<f64>,
    /// Baseline vCPU for pipelines with no successful run.
    #[arg(long, env = "INFRAMIND_DEFAULT_CPU", default_value_t = 4.0)]
    pub default_cpu: f64,
    /// Baseline memory, GB.
    #[arg(long, env = "INFRAMIND_DEFAULT_MEM_GB", default_value_t = 8.0)]
    pub default_mem_gb: f64,
    /// Baseline build jobs.
    #[arg(long, env = "INFRAMIND_DEFAULT_CONCURRENCY", default_value_t = 4)]
    pub default_concurrency: u32,
    /// Grid step for cpu.
    #[arg(long, env = "INFRAMIND_CPU_STEP", default_value_t = 1.0)]
    pub cpu_step: f64,
    /// Grid step for memory, GB.
    #[arg(long, env = "INFRAMIND_MEM_STEP_GB", default_value_t = 1.0)]
    pub mem_step_gb: f64,
    /// Grid step for concurrency.
    #[arg(long, env = "INFRAMIND_CONCURRENCY_STEP", default_value_t = 1)]
    pub concurrency_step: u32,
    /// What to minimise.
    #[arg(long, env = "INFRAMIND_OBJECTIVE", value_enum, default_value_t = ObjectiveArg::Duration)]
    pub objective: ObjectiveArg,
    /// Cost objective: price of a vCPU-hour.
    #[arg(long, env = "INFRAMIND_CPU_PRICE_PER_HOUR", default_value_t = 0.04)]
    pub cpu_price_per_hour: f64,
    /// Cost objective: price of a GB-hour of memory.
    #[arg(long, env = "INFRAMIND_MEM_PRICE_PER_GB_HOUR", default_value_t = 0.005)]
    pub mem_price_per_gb_hour: f64,
    /// Cost objective: price of an hour of build time.
    #[arg(long, env = "INFRAMIND_TIME_PRICE_PER_HOUR", default_value_t = 0.5)]
    pub time_price_per_hour: f64,
    // --- Decision trust (issue 11): exploration policy and the request gate. ---
    /// Share of decisions that may explore a config from the guarded candidates (0 disables).
    #[arg(long, env = "INFRAMIND_EXPLORATION_RATE", default_value_t = 0.15)]
    pub exploration_rate: f64,
    /// How exploring decisions pick: thompson (a drawn tree's argmin), epsilon (uniform), off.
    #[arg(long, env = "INFRAMIND_EXPLORATION", value_enum, default_value_t = ExplorationArg::Thompson)]
    pub exploration: ExplorationArg,
    /// Probability that a change beats the pod's own request needed to apply it.
    #[arg(long, env = "INFRAMIND_MIN_CONFIDENCE", default_value_t = crate::optimizer::DEFAULT_MIN_CONFIDENCE)]
    pub min_confidence: f64,
}

/// Exploration policy on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExplorationArg {
    /// Thompson sampling over the forest's trees.
    Thompson,
    /// Uniform draws from the guarded candidates.
    Epsilon,
    /// Never explore.
    Off,
}

/// Objective choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ObjectiveArg {
    /// Fastest build.
    Duration,
    /// Cheapest build, counting the price of time.
    Cost,
}

impl OptimizerArgs {
    /// The optimizer configuration these flags describe, validated.
    pub fn config(&self) -> anyhow::Result<OptimizerConfig> {
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
                bail!("--{name} must be a positive number, got {v}");
            }
        }
        if self.min_cpu > self.max_cpu
            || self.min_mem_gb > self.max_mem_gb
            || self.min_concurrency > self.max_concurrency
        {
            bail!("each minimum bound must not exceed its maximum");
        }
        if !(0.0..=1.0).contains(&self.exploration_rate) {
            bail!(
                "--exploration-rate must be within 0..1, got {}",
                self.exploration_rate
            );
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            bail!(
                "--min-confidence must be within 0..1, got {}",
                self.min_confidence
            );
        }
        if self.concurrency_step == 0 || self.default_concurrency == 0 {
            bail!("--concurrency-step and --default-concurrency must be at least 1");
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
                ObjectiveArg::Duration => Objective::Duration,
                ObjectiveArg::Cost => Objective::Cost {
                    cpu_per_hour: self.cpu_price_per_hour,
                    gb_per_hour: self.mem_price_per_gb_hour,
                    time_per_hour: self.time_price_per_hour,
                },
            },
            exploration_rate: self.exploration_rate,
            exploration: match self.exploration {
                ExplorationArg::Thompson => crate::optimizer::Exploration::Thompson,
                ExplorationArg::Epsilon => crate::optimizer::Exploration::Epsilon,
                ExplorationArg::Off => crate::optimizer::Exploration::Off,
            },
            min_confidence: self.min_confidence,
        })
    }
}

/// `recommend` arguments.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Pipeline (repository).
    #[arg(long)]
    pub pipeline: String,
    /// Branch.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Build image.
    #[arg(long, default_value = "unknown")]
    pub image: String,
    /// Node type.
    #[arg(long, default_value = "unknown")]
    pub node: String,
    /// Seed for the exploration draw (default: derived from pipeline and time); same seed, same decision.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Optimizer settings.
    #[command(flatten)]
    pub optimizer: OptimizerArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `ingest` arguments.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The file (`.jsonl`/`.ndjson`/`.json` lines, or `.csv` with a header row).
    pub file: PathBuf,
    /// Exit with status 1 when any row is rejected.
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Forest and data options shared by `train` and `quickstart`.
#[derive(Debug, Args, Clone)]
pub struct TrainOptions {
    /// Train on one pipeline only.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Most recent successful runs to train on.
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
    /// Split the served model is fitted on (both are evaluated).
    #[arg(long, value_enum, default_value_t = SplitArg::Random)]
    pub split: SplitArg,
    /// Number of trees.
    #[arg(long, default_value_t = 100)]
    pub trees: usize,
    /// Maximum depth in splits (scikit-learn's meaning); 0 grows trees fully.
    #[arg(long, default_value_t = 15)]
    pub max_depth: u16,
    /// Features tried per split (default: all).
    #[arg(long)]
    pub max_features: Option<usize>,
    /// Minimum rows to split a node.
    #[arg(long, default_value_t = 2)]
    pub min_samples_split: usize,
    /// Minimum rows in a leaf.
    #[arg(long, default_value_t = 1)]
    pub min_samples_leaf: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Split choice on the command line.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SplitArg {
    /// Random 80/20.
    Random,
    /// Oldest 80 % / newest 20 %.
    Temporal,
}

impl TrainOptions {
    /// The training spec these options describe.
    pub fn spec(&self) -> TrainingSpec {
        TrainingSpec {
            pipeline: self.pipeline.clone(),
            limit: self.limit,
            split: match self.split {
                SplitArg::Random => Split::Random,
                SplitArg::Temporal => Split::Temporal,
            },
            test_fraction: 0.2,
            params: ForestParams {
                n_trees: self.trees,
                max_depth: (self.max_depth > 0).then_some(self.max_depth),
                max_features: self.max_features,
                min_samples_split: self.min_samples_split,
                min_samples_leaf: self.min_samples_leaf,
                seed: self.seed,
                ..ForestParams::default()
            },
        }
    }
}

/// `train` arguments.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training options.
    #[command(flatten)]
    pub options: TrainOptions,
    /// Make the new version active once it is saved and published.
    #[arg(long)]
    pub promote: bool,
    /// Run the TrainingJob NAMESPACE/NAME (its spec replaces the options above) and report to its status.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub training_job: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List model versions with their metrics (`*` marks the active one).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Make a version active (after verifying its artifact).
    Promote {
        /// The version, e.g. model_v20261127_101500.
        version: String,
    },
    /// Restore the previously active version.
    Rollback,
    /// Print the active version.
    Active,
}

/// `explain` arguments.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Version to explain (default: the newest valid one).
    pub version: Option<String>,
    /// How many features to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `simulate` arguments.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Number of builds.
    #[arg(long, default_value_t = 3000)]
    pub runs: usize,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Output file (`.jsonl` or `.csv`; with `--closed-loop`, the `.svg` regret plot).
    #[arg(long)]
    pub out: PathBuf,
    /// Admit `--runs` builds through the optimizer in closed loop, once per exploration policy,
    /// and report regret, OOM kills, unschedulable decisions and exploration.
    #[arg(long)]
    pub closed_loop: bool,
    /// Closed loop: retrain after this many builds.
    #[arg(long, default_value_t = 100)]
    pub retrain_every: usize,
    /// Closed loop: also replay these real builds offline (JSON lines or CSV).
    #[arg(long)]
    pub real_builds: Option<PathBuf>,
}

/// `quickstart` arguments.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Simulated builds to generate.
    #[arg(long, default_value_t = 3000)]
    pub runs: usize,
    /// Seed for the simulator.
    #[arg(long, default_value_t = 7)]
    pub sim_seed: u64,
    /// Training options.
    #[command(flatten)]
    pub options: TrainOptions,
}

/// Runs a non-server subcommand.
pub async fn run(global: &Global, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ingest(a) => ingest(global, a).await,
        Command::Train(a) => train(global, a).await,
        Command::Models(cmd) => models(global, cmd).await,
        Command::Explain(a) => explain(global, a),
        Command::Simulate(a) => simulate(a),
        Command::Quickstart(a) => quickstart(global, a).await,
        Command::Recommend(a) => recommend(global, *a).await,
        Command::Controller(a) => crate::controller::run(global, a).await,
        Command::Webhook(a) => crate::webhook::run(global, *a).await,
        Command::Api(a) => crate::api::run(global, *a).await,
        Command::Report(a) => crate::reporter::run(*a).await,
        Command::Crd => {
            print!("{}", crate::controller::crd_yaml()?);
            Ok(())
        }
    }
}

async fn connect(global: &Global) -> anyhow::Result<Store> {
    Store::connect(&global.database_url).await.with_context(|| {
        format!(
            "opening the telemetry store {}",
            crate::telemetry::store::redact(&global.database_url)
        )
    })
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_ingest_report(report: &IngestReport) {
    println!(
        "accepted {}, rejected {}, duplicates {}",
        report.accepted,
        report.rejected.len(),
        report.duplicates
    );
    for r in report.rejected.iter().take(20) {
        eprintln!("  row {}: field `{}`: {}", r.row, r.field, r.reason);
    }
    if report.rejected.len() > 20 {
        eprintln!(
            "  … and {} more rejected rows (use --output json for all)",
            report.rejected.len() - 20
        );
    }
    if !report.unknown_fields.is_empty() {
        eprintln!(
            "warning: ignored unknown columns: {}",
            report.unknown_fields.join(", ")
        );
    }
}

async fn ingest(global: &Global, a: IngestArgs) -> anyhow::Result<()> {
    let rows = read_rows(&a.file)?;
    let store = connect(global).await?;
    let report = ingest_rows(&store, rows, Utc::now()).await?;
    match a.output {
        Output::Json => print_json(&report)?,
        Output::Text => print_ingest_report(&report),
    }
    if a.strict && !report.rejected.is_empty() {
        bail!("{} rows were rejected", report.rejected.len());
    }
    Ok(())
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(5);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar.set_message("reading runs");
    bar
}

async fn train_with_progress(
    global: &Global,
    store: &Store,
    spec: &TrainingSpec,
) -> anyhow::Result<ModelMeta> {
    let dir = ModelDir::new(&global.models_dir);
    let bar = progress_bar();
    let b = bar.clone();
    let result = train_and_save(store, &dir, spec, Utc::now(), &mut move |stage| {
        b.inc(1);
        b.set_message(match stage {
            Stage::Features { rows } => format!("built features for {rows} runs"),
            Stage::Fitting(s) => format!("fitting on the {s:?} split"),
            Stage::Evaluated(s, m) => format!("{s:?} holdout: MAE {:.1}s R² {:.3}", m.mae_s, m.r2),
        });
    })
    .await;
    bar.finish_and_clear();
    Ok(result?.1)
}

fn print_metrics(meta: &ModelMeta) {
    println!(
        "model {} ({} rows, {} trees)",
        meta.version, meta.window.rows, meta.hyperparameters.n_trees
    );
    for (name, m) in [
        ("random 80/20", &meta.random_holdout),
        ("temporal (newest 20%)", &meta.temporal_holdout),
    ] {
        println!(
            "  {name:<22} MAE {:>7.2}s   R² {:.3}   ({} train / {} test)",
            m.mae_s, m.r2, m.train_rows, m.test_rows
        );
    }
}

fn print_importances(meta: &ModelMeta, top: usize) {
    println!("top features (mean decrease in impurity):");
    for (name, v) in meta.importances.iter().take(top) {
        println!("  {name:<26} {v:.3}");
    }
}

/// Opens the registry the global settings describe.
pub async fn open_registry(global: &Global) -> anyhow::Result<Registry> {
    Registry::open(
        ModelDir::new(&global.models_dir),
        global.redis_url.as_deref(),
        &global.redis_prefix,
    )
    .await
    .context("opening the model registry")
}

async fn train(global: &Global, a: TrainArgs) -> anyhow::Result<()> {
    if let Some(job) = &a.training_job {
        return crate::controller::run_training_job(global, job).await;
    }
    let store = connect(global).await?;
    let registry = open_registry(global).await?;
    let meta = train_with_progress(global, &store, &a.options.spec()).await?;
    let (model, meta) = registry.dir().load(&meta.version)?;
    registry.publish(&model, &meta).await?;
    let previous = if a.promote {
        registry.promote(&meta.version).await?
    } else {
        None
    };
    match a.output {
        Output::Json => print_json(&serde_json::json!({
            "version": meta.version,
            "random_holdout": meta.random_holdout,
            "temporal_holdout": meta.temporal_holdout,
            "rows": meta.window.rows,
            "sha256": meta.sha256,
            "promoted": a.promote,
            "previous": previous,
        }))?,
        Output::Text => {
            print_metrics(&meta);
            if a.promote {
                println!(
                    "promoted {} (previous: {})",
                    meta.version,
                    previous.as_deref().unwrap_or("none")
                );
            }
        }
    }
    Ok(())
}

async fn models(global: &Global, cmd: ModelsCommand) -> anyhow::Result<()> {
    let registry = open_registry(global).await?;
    match cmd {
        ModelsCommand::List { output } => {
            let listed = registry.list().await?;
            match output {
                Output::Json => print_json(&listed)?,
                Output::Text => {
                    if listed.is_empty() {
                        println!("no models yet");
                    }
                    println!(
                        "  {:<28} {:>9} {:>7} {:>7} {:>25}",
                        "VERSION", "MAE(s)", "R2", "ROWS", "CREATED"
                    );
                    for l in listed {
                        let m = &l.meta;
                        let mark = if l.active { '*' } else { ' ' };
                        println!(
                            "{mark} {:<28} {:>9.2} {:>7.3} {:>7} {:>25}",
                            m.version,
                            m.metrics().mae_s,
                            m.metrics().r2,
                            m.window.rows,
                            m.created_at.to_rfc3339()
                        );
                    }
                }
            }
        }
        ModelsCommand::Promote { version } => {
            let previous = registry.promote(&version).await?;
            println!(
                "active: {version} (previous: {})",
                previous.as_deref().unwrap_or("none")
            );
        }
        ModelsCommand::Rollback => println!("active: {}", registry.rollback().await?),
        ModelsCommand::Active => match registry.active_version().await? {
            Some(v) => println!("{v}"),
            None => bail!("no active model"),
        },
    }
    Ok(())
}

fn explain(global: &Global, a: ExplainArgs) -> anyhow::Result<()> {
    let dir = ModelDir::new(&global.models_dir);
    let meta = match a.version {
        Some(v) => dir.load(&v)?.1,
        None => match dir.latest_valid()? {
            Some((_, m)) => m,
            None => bail!(
                "no valid model in {}: run `inframind train` first",
                global.models_dir.display()
            ),
        },
    };
    match a.output {
        Output::Json => print_json(
            &serde_json::json!({"version": meta.version, "importances": meta.importances.iter().take(a.top).collect::<Vec<_>>()}),
        )?,
        Output::Text => {
            print_metrics(&meta);
            print_importances(&meta, a.top);
        }
    }
    Ok(())
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    if a.closed_loop {
        return closed_loop(a);
    }
    let runs = crate::simulate::demo_runs(a.runs, Utc::now(), a.seed);
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    let text = match ext {
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for r in &runs {
                w.serialize(r)?;
            }
            String::from_utf8(w.into_inner()?)?
        }
        "jsonl" | "ndjson" | "json" => {
            runs.iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()?
                .join("\n")
                + "\n"
        }
        other => bail!("unknown output format `.{other}` (use .jsonl or .csv)"),
    };
    std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote {} simulated runs to {}", runs.len(), a.out.display());
    Ok(())
}

fn closed_loop(a: SimulateArgs) -> anyhow::Result<()> {
    use crate::closed_loop::{plot_svg, run_policy, table, LoopPolicy, LoopSpec};
    let spec = LoopSpec {
        builds: a.runs,
        seed: a.seed,
        retrain_every: a.retrain_every.max(1),
        ..Default::default()
    };
    let results: Vec<_> = LoopPolicy::ALL
        .iter()
        .map(|p| {
            let r = run_policy(*p, &spec);
            eprintln!("{}: done", p.name());
            r
        })
        .collect();
    print!("{}", table(&results));
    let svg = plot_svg(&results).map_err(|e| anyhow::anyhow!("plotting: {e}"))?;
    std::fs::write(&a.out, svg).with_context(|| format!("writing {}", a.out.display()))?;
    println!("regret plot: {}", a.out.display());
    if let Some(path) = &a.real_builds {
        let now = Utc::now();
        let runs: Vec<_> = crate::telemetry::ingest::read_rows(path)?
            .into_iter()
            .filter_map(|r| r.ok())
            .filter_map(|r| crate::telemetry::run::validate_row(&r, now).ok())
            .collect();
        println!(
            "\nreal builds ({} runs from {}), replayed offline:",
            runs.len(),
            path.display()
        );
        let params = crate::forest::ForestParams {
            n_trees: 100,
            max_depth: Some(15),
            ..Default::default()
        };
        let replays: Vec<_> = LoopPolicy::ALL
            .iter()
            .map(|p| crate::closed_loop::replay_real(&runs, *p, &params, 10))
            .collect();
        print!("{}", crate::closed_loop::replay_table(&replays));
    }
    Ok(())
}

async fn quickstart(global: &Global, a: QuickstartArgs) -> anyhow::Result<()> {
    println!(
        "InfraMind quickstart: store {}, models in {}",
        crate::telemetry::store::redact(&global.database_url),
        global.models_dir.display()
    );
    let store = connect(global).await?;
    let runs = crate::simulate::demo_runs(a.runs, Utc::now(), a.sim_seed);
    let ooms = runs.iter().filter(|r| r.oom_killed).count();
    let rows = runs
        .iter()
        .map(|r| Ok(crate::telemetry::run::to_raw_row(r)))
        .collect();
    let report = ingest_rows(&store, rows, Utc::now()).await?;
    println!(
        "1. simulated {} builds of {} pipelines ({ooms} OOM-killed)",
        runs.len(),
        crate::simulate::default_profiles().len()
    );
    print!("2. ingested: ");
    print_ingest_report(&report);
    println!(
        "3. training on the last {} successful runs",
        a.options.limit
    );
    let meta = train_with_progress(global, &store, &a.options.spec()).await?;
    print_metrics(&meta);
    print_importances(&meta, 5);
    let profile = &crate::simulate::default_profiles()[0];
    let last = runs
        .iter()
        .rev()
        .find(|r| r.pipeline == profile.name && r.success);
    let ctx = BuildContext {
        pipeline: profile.name.clone(),
        branch: "main".into(),
        image: profile.image.clone(),
        node: last.map_or_else(|| "m5.2xlarge".into(), |r| r.node.clone()),
    };
    println!(
        "4. what the webhook would do for the next {} build on main (no exploration):",
        ctx.pipeline
    );
    let optimizer = Optimizer::new(OptimizerConfig {
        exploration_rate: 0.0,
        ..Default::default()
    });
    print_decision(&decide(global, &ctx, &optimizer, 0).await?);
    Ok(())
}

fn print_decision(d: &Decision) {
    match (d.action, d.proposal) {
        (crate::optimizer::Action::Apply, _) => {
            println!(
                "recommendation: {} ({})",
                describe(&d.config),
                d.policy.name()
            )
        }
        (crate::optimizer::Action::Unchanged, Some(p)) => println!(
            "recommendation: unchanged ({}); proposal {}",
            d.reason.as_deref().unwrap_or("kept"),
            describe(&p)
        ),
        (crate::optimizer::Action::Unchanged, None) => println!(
            "recommendation: unchanged ({})",
            d.reason.as_deref().unwrap_or("kept")
        ),
    }
    println!(
        "  baseline:   {} ({:?})",
        describe(&d.baseline),
        d.baseline_source
    );
    match (d.predicted_duration_s, d.baseline_duration_s) {
        (Some(p), Some(b)) => println!("  predicted:  {p:.0}s (baseline {b:.0}s)"),
        (Some(p), None) => println!("  predicted:  {p:.0}s"),
        _ => println!("  predicted:  - (no model prediction)"),
    }
    println!(
        "  confidence: {:.2}{}",
        d.confidence,
        if d.explored { ", explored" } else { "" }
    );
    println!(
        "  model:      {}",
        d.model_version.as_deref().unwrap_or("none")
    );
    println!("  why:        {}", d.rationale);
}

async fn decide(
    global: &Global,
    ctx: &BuildContext,
    optimizer: &Optimizer,
    seed: u64,
) -> anyhow::Result<Decision> {
    let store = connect(global).await?;
    let stats = store.pipeline_stats(&ctx.pipeline).await?;
    let model = open_registry(global).await?.load_active().await?;
    let stats = (stats.runs > 0).then_some(stats);
    Ok(optimizer.decide(
        ctx,
        stats.as_ref(),
        model.as_ref().map(|m| &m.0),
        Utc::now(),
        seed,
    ))
}

async fn recommend(global: &Global, a: RecommendArgs) -> anyhow::Result<()> {
    let optimizer = Optimizer::new(a.optimizer.config()?);
    let ctx = BuildContext {
        pipeline: a.pipeline,
        branch: a.branch,
        image: a.image,
        node: a.node,
    };
    let seed = a.seed.unwrap_or_else(|| {
        exploration::seed_from(&format!(
            "{}@{}",
            ctx.pipeline,
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ))
    });
    let d = decide(global, &ctx, &optimizer, seed).await?;
    match a.output {
        Output::Json => print_json(&d)?,
        Output::Text => print_decision(&d),
    }
    Ok(())
}
