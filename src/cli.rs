//! The `inframind` command line: argument definitions and the subcommands that are not servers.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::config::{Global, LogFormat, OptimizerSettings};
use crate::evaluation::Split;
use crate::forest::ForestParams;
use crate::model::ModelMeta;
use crate::optimizer::recommender::Recommender;
use crate::optimizer::{describe, Decision, Optimizer, OptimizerConfig};
use crate::registry::Registry;
use crate::telemetry::{ingest_rows, read_rows, IngestReport, Store};
use crate::training::{train_and_save, Stage, TrainingSpec};
use crate::BuildContext;

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

/// How results are printed (`-o table|json|yaml`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Output {
    /// A human-readable table (`text` is accepted too).
    #[default]
    #[value(alias = "text")]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
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
    /// Realized savings: builds InfraMind changed against the holdout (control) group.
    Savings(SavingsArgs),
    /// Cache advice: which pipelines lose the most time to cold build caches, and what to do.
    CacheAdvice(CacheAdviceArgs),
    /// Write simulated build telemetry to a file (JSON lines or CSV).
    Simulate(SimulateArgs),
    /// Work with the feature matrix training sees.
    #[command(subcommand)]
    Features(FeaturesCommand),
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

/// `recommend` arguments.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Pipeline (repository).
    #[arg(long)]
    pub pipeline: String,
    /// Branch (default: `unknown`, as admission sees a pod without one).
    #[arg(long)]
    pub branch: Option<String>,
    /// Build image (default: `unknown`).
    #[arg(long)]
    pub image: Option<String>,
    /// Node type (default: `unknown`).
    #[arg(long)]
    pub node: Option<String>,
    /// Seed for the exploration draw (default: derived from pipeline and time); same seed, same decision.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Optimizer settings.
    #[command(flatten)]
    pub optimizer: OptimizerSettings,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
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
    #[arg(short, long, value_enum, default_value_t)]
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
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List model versions with their metrics (`*` marks the active one).
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Make a version active (after verifying its artifact).
    Promote {
        /// The version, e.g. model_v20261127_101500.
        version: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Restore the previously active version.
    Rollback {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Promotions and rollbacks, newest first.
    History {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Print the active version.
    Active {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// What `models promote|rollback|active` report.
#[derive(Debug, serde::Serialize)]
struct ActiveChange {
    /// The active version now.
    active: Option<String>,
    /// The version active before, for promote and rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
}

/// `explain` arguments.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Version to explain (default: the newest valid one).
    pub version: Option<String>,
    /// How many features to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Also show how the predicted duration of this pipeline's next build moves with concurrency
    /// and cpu around its last config (a table, and an SVG written to --plot).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Where the duration-vs-config SVG goes (default `explain-<pipeline>.svg`).
    #[arg(long, requires = "pipeline")]
    pub plot: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `savings` arguments.
#[derive(Debug, Args)]
pub struct SavingsArgs {
    /// Only this pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// The period: builds started in the last `7d`, `24h`, `90m`, `2w`.
    #[arg(long, default_value = "7d", value_parser = crate::savings::parse_period)]
    pub since: chrono::Duration,
    /// Prices (the optimizer's cost-objective prices) and other optimizer settings.
    #[command(flatten)]
    pub optimizer: OptimizerSettings,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `cache-advice` arguments.
#[derive(Debug, Args)]
pub struct CacheAdviceArgs {
    /// Only this pipeline.
    #[arg(long)]
    pub pipeline: Option<String>,
    /// The period: builds started in the last `30d`, `7d`, `24h`, `2w`.
    #[arg(long, default_value = "30d", value_parser = crate::savings::parse_period)]
    pub since: chrono::Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
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
    /// Simulate a week of a controlled rollout instead (about 750 builds, `--runs` is ignored):
    /// a known right-sizing policy applied to all builds but this share, which is left as
    /// requested and tagged holdout, as the webhook's `--holdout-rate` does.
    #[arg(long)]
    pub holdout_rate: Option<f64>,
    /// A CI-like history: overlapping builds of a pipeline, pods without a branch or a node
    /// selector.
    #[arg(long)]
    pub ci: bool,
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

/// `features` subcommands.
#[derive(Debug, Subcommand)]
pub enum FeaturesCommand {
    /// Write the honest feature matrix (admission-time features, label, holdout membership)
    /// of the runs `train` would use, as CSV.
    Export(FeaturesExportArgs),
}

/// `features export` arguments.
#[derive(Debug, Args)]
pub struct FeaturesExportArgs {
    /// Which runs and which splits (as for `train`).
    #[command(flatten)]
    pub options: TrainOptions,
    /// Output CSV file.
    #[arg(long)]
    pub out: PathBuf,
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
        Command::Explain(a) => explain(global, a).await,
        Command::Savings(a) => savings(global, a).await,
        Command::CacheAdvice(a) => cache_advice(global, a).await,
        Command::Simulate(a) => simulate(a),
        Command::Features(FeaturesCommand::Export(a)) => export_features(global, a).await,
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

/// Prints `v` as JSON or YAML (the table form is each command's own).
fn print_data<T: serde::Serialize>(output: Output, v: &T) -> anyhow::Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_yaml::to_string(v)?),
        _ => print_json(v)?,
    }
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
        Output::Json | Output::Yaml => print_data(a.output, &report)?,
        Output::Table => print_ingest_report(&report),
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
    let dir = global.model_dir()?;
    let bar = progress_bar();
    let b = bar.clone();
    let result = train_and_save(store, &dir, spec, Utc::now(), &mut move |stage| {
        b.inc(1);
        b.set_message(match stage {
            Stage::Features { rows } => format!("built features for {rows} runs"),
            Stage::Fitting(s) => format!("fitting on the {s:?} split"),
            Stage::Evaluated(s, m) => format!(
                "{s:?} holdout: MAE {:.1}s R² {:.3} rank {}",
                m.mae_s,
                m.r2,
                rank_text(&m)
            ),
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
            "  {name:<22} MAE {:>7.2}s   R² {:.3}   rank accuracy {} ({} pairs)   ({} train / {} test)",
            m.mae_s,
            m.r2,
            rank_text(m),
            m.rank_pairs,
            m.train_rows,
            m.test_rows
        );
    }
}

/// Rank accuracy as text (`-` when the holdout had no pair to rank).
fn rank_text(m: &crate::evaluation::Metrics) -> String {
    m.rank_accuracy
        .map_or_else(|| "-".into(), |v| format!("{v:.3}"))
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
        global.model_dir()?,
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
    let spec = a.options.spec();
    let meta = train_with_progress(global, &store, &spec).await?;
    let (model, meta) = registry.dir().load(&meta.version)?;
    registry.publish(&model, &meta).await?;
    let plot = write_holdout_plot(&store, registry.dir(), &model, &meta, &spec).await;
    let previous = if a.promote {
        registry.promote(&meta.version).await?
    } else {
        None
    };
    match a.output {
        Output::Json | Output::Yaml => print_data(
            a.output,
            &serde_json::json!({
                "version": meta.version,
                "random_holdout": meta.random_holdout,
                "temporal_holdout": meta.temporal_holdout,
                "rows": meta.window.rows,
                "sha256": meta.sha256,
                "promoted": a.promote,
                "previous": previous,
            }),
        )?,
        Output::Table => {
            print_metrics(&meta);
            match &plot {
                Ok(path) => println!("predicted vs actual on the holdout: {}", path.display()),
                Err(e) => eprintln!("warning: no holdout plot: {e:#}"),
            }
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

/// Writes `<version>.svg` next to the artifact: the served split's holdout, predicted against
/// actual (the window is read again; it matches the trained one unless runs arrived meanwhile).
async fn write_holdout_plot(
    store: &Store,
    dir: &crate::model::ModelDir,
    model: &crate::model::Model,
    meta: &ModelMeta,
    spec: &TrainingSpec,
) -> anyhow::Result<PathBuf> {
    let (warmup, window) = crate::training::load_training_data(store, spec).await?;
    let pairs = crate::training::holdout_pairs(model, meta, &warmup, &window, spec);
    let title = format!(
        "{}: predicted vs actual on the {:?} holdout (MAE {:.1}s, R² {:.3})",
        meta.version,
        meta.split,
        meta.metrics().mae_s,
        meta.metrics().r2
    );
    let chart = crate::plots::predicted_vs_actual(&title, &pairs);
    let svg = crate::plots::svg(&chart, (720, 720))?;
    let path = dir.path().join(format!("{}.svg", meta.version));
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn models(global: &Global, cmd: ModelsCommand) -> anyhow::Result<()> {
    let registry = open_registry(global).await?;
    match cmd {
        ModelsCommand::List { output } => {
            let listed = registry.list().await?;
            match output {
                Output::Json | Output::Yaml => print_data(output, &listed)?,
                Output::Table => {
                    if listed.is_empty() {
                        println!("no models yet");
                    }
                    println!(
                        "  {:<28} {:>9} {:>7} {:>7} {:>7} {:>25}",
                        "VERSION", "MAE(s)", "R2", "RANK", "ROWS", "CREATED"
                    );
                    for l in listed {
                        let m = &l.meta;
                        let mark = if l.active { '*' } else { ' ' };
                        println!(
                            "{mark} {:<28} {:>9.2} {:>7.3} {:>7} {:>7} {:>25}",
                            m.version,
                            m.metrics().mae_s,
                            m.metrics().r2,
                            rank_text(m.metrics()),
                            m.window.rows,
                            m.created_at.to_rfc3339()
                        );
                    }
                }
            }
        }
        ModelsCommand::Promote { version, output } => {
            let previous = registry.promote(&version).await?;
            let change = ActiveChange {
                active: Some(version.clone()),
                previous: Some(previous.unwrap_or_else(|| "none".into())),
            };
            match output {
                Output::Table => println!(
                    "active: {version} (previous: {})",
                    change.previous.as_deref().unwrap_or("none")
                ),
                _ => print_data(output, &change)?,
            }
        }
        ModelsCommand::Rollback { output } => {
            let before = registry.active_version().await?;
            let now = registry.rollback().await?;
            match output {
                Output::Table => println!("active: {now}"),
                _ => print_data(
                    output,
                    &ActiveChange {
                        active: Some(now),
                        previous: before,
                    },
                )?,
            }
        }
        ModelsCommand::History { output } => {
            let moves = registry.history().await?;
            match output {
                Output::Table => {
                    if moves.is_empty() {
                        println!("no promotions yet");
                    }
                    for m in moves {
                        println!(
                            "{}  {:<8} {:<28} (previous: {})",
                            m.at.format("%Y-%m-%d %H:%M:%S"),
                            m.action,
                            m.version,
                            m.previous.as_deref().unwrap_or("none")
                        );
                    }
                }
                _ => print_data(output, &moves)?,
            }
        }
        ModelsCommand::Active { output } => {
            let active = registry.active_version().await?;
            match (output, &active) {
                (Output::Table, Some(v)) => println!("{v}"),
                (Output::Table, None) => bail!("no active model"),
                _ => print_data(
                    output,
                    &ActiveChange {
                        active,
                        previous: None,
                    },
                )?,
            }
        }
    }
    Ok(())
}

async fn explain(global: &Global, a: ExplainArgs) -> anyhow::Result<()> {
    let dir = global.model_dir()?;
    let (model, meta) = match &a.version {
        Some(v) => dir.load(v)?,
        None => match dir.latest_valid()? {
            Some(found) => found,
            None => bail!(
                "no valid model in {}: run `inframind train` first",
                global.models_dir.display()
            ),
        },
    };
    let curves = match &a.pipeline {
        Some(p) => Some(explain_curves(global, &model, p).await?),
        None => None,
    };
    let plot = match (&a.pipeline, &curves) {
        (Some(p), Some(c)) => {
            let path = a.plot.clone().unwrap_or_else(|| {
                PathBuf::from(format!("explain-{}.svg", p.replace(['/', ' '], "_")))
            });
            let svg = crate::plots::svg(&curves_chart(p, c), (720, 480))?;
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        }
        _ => None,
    };
    match a.output {
        Output::Json | Output::Yaml => print_data(
            a.output,
            &serde_json::json!({"version": meta.version, "importances": meta.importances.iter().take(a.top).collect::<Vec<_>>(),
                                "curves": curves, "plot": plot}),
        )?,
        Output::Table => {
            print_metrics(&meta);
            print_importances(&meta, a.top);
            if let (Some(c), Some(path)) = (&curves, &plot) {
                print_curves(c);
                println!("plot: {}", path.display());
            }
        }
    }
    Ok(())
}

/// The duration-vs-concurrency and duration-vs-cpu curves of `pipeline`'s next build on the
/// branch, image and node of its last successful build, around that build's config.
async fn explain_curves(
    global: &Global,
    model: &crate::model::Model,
    pipeline: &str,
) -> anyhow::Result<Vec<crate::partial_dependence::Curve>> {
    use crate::partial_dependence::{curve, default_values, Knob};
    let store = connect(global).await?;
    let runs = store
        .recent_runs(pipeline, crate::stats::STATS_WINDOW)
        .await?;
    let Some(last) = runs.iter().rev().find(|r| r.success) else {
        bail!("pipeline {pipeline} has no successful build to start from");
    };
    if !model.encodings.knows_pipeline(pipeline) {
        eprintln!(
            "warning: model {} has not seen pipeline {pipeline}: its curves are generic",
            model.version
        );
    }
    let ctx = BuildContext {
        pipeline: pipeline.to_string(),
        branch: last.branch.clone(),
        image: last.image.clone(),
        node: last.node.clone(),
    };
    let base = last.config();
    let now = Utc::now();
    Ok([Knob::Concurrency, Knob::Cpu]
        .into_iter()
        .map(|k| curve(model, &runs, &ctx, base, k, &default_values(k, &base), now))
        .collect())
}

fn curves_chart(
    pipeline: &str,
    curves: &[crate::partial_dependence::Curve],
) -> crate::plots::Chart {
    let colors = [(31, 119, 180), (214, 39, 40)];
    crate::plots::Chart {
        title: format!(
            "{pipeline}: predicted duration around {}",
            describe(&curves[0].baseline)
        ),
        x_label: "concurrency (jobs) or cpu (vCPU), the other knobs at the baseline".into(),
        y_label: "predicted duration (s)".into(),
        x_is_days: false,
        diagonal: false,
        series: curves
            .iter()
            .zip(colors)
            .map(|(c, color)| crate::plots::Series {
                name: format!("vs {}", c.knob.as_str()),
                color,
                mark: crate::plots::Mark::Line,
                points: c.points.clone(),
            })
            .collect(),
    }
}

fn print_curves(curves: &[crate::partial_dependence::Curve]) {
    println!(
        "predicted duration around {} (other knobs held):",
        describe(&curves[0].baseline)
    );
    let header: String = curves
        .iter()
        .map(|c| format!(" {:>14}", format!("vs {}", c.knob.as_str())))
        .collect();
    println!("  {:>6}{header}", "value");
    let n = curves.iter().map(|c| c.points.len()).max().unwrap_or(0);
    for i in 0..n {
        let value = curves
            .iter()
            .find_map(|c| c.points.get(i).map(|p| p.0))
            .unwrap_or_default();
        let cells: String = curves
            .iter()
            .map(|c| {
                c.points
                    .get(i)
                    .map_or_else(|| format!(" {:>14}", "-"), |p| format!(" {:>13.0}s", p.1))
            })
            .collect();
        println!("  {value:>6}{cells}");
    }
}

async fn savings(global: &Global, a: SavingsArgs) -> anyhow::Result<()> {
    let store = connect(global).await?;
    let since = Utc::now() - a.since;
    let runs = store.runs_since(a.pipeline.as_deref(), since).await?;
    let cfg = crate::savings::SavingsConfig {
        prices: crate::savings::Prices::from_optimizer(&a.optimizer),
        ..Default::default()
    };
    let report = crate::savings::report(&runs, since, &cfg);
    match a.output {
        Output::Json | Output::Yaml => print_data(a.output, &report)?,
        Output::Table => print!("{}", crate::savings::table(&report)),
    }
    Ok(())
}

async fn cache_advice(global: &Global, a: CacheAdviceArgs) -> anyhow::Result<()> {
    let store = connect(global).await?;
    let since = Utc::now() - a.since;
    let runs = store.runs_since(a.pipeline.as_deref(), since).await?;
    let report = crate::cache_advice::analyse(&runs, since);
    match a.output {
        Output::Json | Output::Yaml => print_data(a.output, &report)?,
        Output::Table => print!("{}", crate::cache_advice::table(&report)),
    }
    Ok(())
}

/// `features export`: one row per training row, in training order: `row`, `started_at_ms`,
/// the features, `duration_s`, and whether the row is in the random and temporal holdouts.
async fn export_features(global: &Global, a: FeaturesExportArgs) -> anyhow::Result<()> {
    let store = connect(global).await?;
    let spec = a.options.spec();
    let (warmup, window) = crate::training::load_training_data(&store, &spec).await?;
    let enc = crate::features::Encodings::fit(&window);
    let data = crate::features::build_dataset(&enc, &warmup, &window);
    let holdout = |split| {
        let (_, test) = crate::evaluation::split_indices(
            &data.started_at,
            split,
            spec.test_fraction,
            spec.params.seed,
        );
        let mut mark = vec![false; data.len()];
        for i in test {
            mark[i] = true;
        }
        mark
    };
    let (random, temporal) = (holdout(Split::Random), holdout(Split::Temporal));
    let mut w =
        csv::Writer::from_path(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut header = vec!["row".to_string(), "started_at_ms".to_string()];
    header.extend(crate::features::FEATURE_NAMES.iter().map(|s| s.to_string()));
    header.extend(["duration_s", "random_holdout", "temporal_holdout"].map(String::from));
    w.write_record(&header)?;
    for i in 0..data.len() {
        let mut rec = vec![
            i.to_string(),
            data.started_at[i].timestamp_millis().to_string(),
        ];
        rec.extend(data.row(i).iter().map(|v| v.to_string()));
        rec.push(data.y[i].to_string());
        rec.push(u8::from(random[i]).to_string());
        rec.push(u8::from(temporal[i]).to_string());
        w.write_record(&rec)?;
    }
    w.flush()?;
    println!("wrote {} feature rows to {}", data.len(), a.out.display());
    Ok(())
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    if a.closed_loop {
        return closed_loop(a);
    }
    let runs = match a.holdout_rate {
        Some(rate) => {
            let rate =
                crate::admission::holdout::validate_rate(rate).map_err(anyhow::Error::msg)?;
            crate::simulate::controlled_week(Utc::now(), a.seed, rate, &crate::simulate::right_size)
                .into_iter()
                .map(|r| r.record)
                .collect()
        }
        None if a.ci => crate::simulate::ci_runs(a.runs, Utc::now(), a.seed),
        None => crate::simulate::demo_runs(a.runs, Utc::now(), a.seed),
    };
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
            .filter_map(|r| crate::record::validate_row(&r, now).ok())
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
        .map(|r| Ok(crate::record::to_raw_row(r)))
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
    print_decision(&decide(global, &ctx, &Recommender::new(optimizer), 0).await?);
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
    recommender: &Recommender,
    seed: u64,
) -> anyhow::Result<Decision> {
    let store = connect(global).await?;
    let stats = store.pipeline_stats(&ctx.pipeline).await?;
    let model = open_registry(global).await?.load_active().await?;
    let stats = (stats.runs > 0).then_some(stats);
    Ok(recommender.recommend(
        ctx,
        stats.as_ref(),
        model.as_ref().map(|m| &m.0),
        Utc::now(),
        seed,
    ))
}

async fn recommend(global: &Global, a: RecommendArgs) -> anyhow::Result<()> {
    let recommender = Recommender::new(Optimizer::new(a.optimizer.config()?));
    let ctx = Recommender::context(a.pipeline, a.branch, a.image, a.node);
    // Without --seed, a fresh request id seeds exploration, as a pod's uid does in the webhook.
    let seed = a
        .seed
        .unwrap_or_else(|| Recommender::seed(&uuid::Uuid::new_v4().to_string()));
    let d = decide(global, &ctx, &recommender, seed).await?;
    match a.output {
        Output::Json | Output::Yaml => print_data(a.output, &d)?,
        Output::Table => print_decision(&d),
    }
    Ok(())
}
