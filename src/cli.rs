//! The `inframind` command line: argument definitions and the subcommands that are not servers.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::evaluation::Split;
use crate::forest::ForestParams;
use crate::model::{ModelDir, ModelMeta};
use crate::telemetry::{ingest_rows, read_rows, IngestReport, Store};
use crate::training::{train_and_save, Stage, TrainingSpec};

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
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List model versions with their metrics.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
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
    /// Output file (`.jsonl` or `.csv`).
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
        Command::Models(ModelsCommand::List { output }) => models_list(global, output),
        Command::Explain(a) => explain(global, a),
        Command::Simulate(a) => simulate(a),
        Command::Quickstart(a) => quickstart(global, a).await,
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

async fn train(global: &Global, a: TrainArgs) -> anyhow::Result<()> {
    let store = connect(global).await?;
    let meta = train_with_progress(global, &store, &a.options.spec()).await?;
    match a.output {
        Output::Json => print_json(&serde_json::json!({
            "version": meta.version,
            "random_holdout": meta.random_holdout,
            "temporal_holdout": meta.temporal_holdout,
            "rows": meta.window.rows,
            "sha256": meta.sha256,
        }))?,
        Output::Text => print_metrics(&meta),
    }
    Ok(())
}

fn models_list(global: &Global, output: Output) -> anyhow::Result<()> {
    let metas = ModelDir::new(&global.models_dir).list()?;
    match output {
        Output::Json => print_json(&metas)?,
        Output::Text => {
            if metas.is_empty() {
                println!("no models in {}", global.models_dir.display());
            }
            println!(
                "{:<28} {:>9} {:>7} {:>7} {:>25}",
                "VERSION", "MAE(s)", "R2", "ROWS", "CREATED"
            );
            for m in metas {
                println!(
                    "{:<28} {:>9.2} {:>7.3} {:>7} {:>25}",
                    m.version,
                    m.metrics().mae_s,
                    m.metrics().r2,
                    m.window.rows,
                    m.created_at.to_rfc3339()
                );
            }
        }
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
    Ok(())
}
