//! The reconciler: carries out the [`Plan`] for one TrainingJob and reports in its status.
//!
//! Shape after kube-rs's controller-rs: `reconcile(obj, ctx) -> Result<Action>` and an
//! `error_policy` that counts the failure and requeues with exponential backoff. Status goes
//! through the status subresource with server-side apply under one field manager; Kubernetes
//! Events mark a run's start, its end, a promotion and every failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::context::{key, Context};
use super::crd::{
    k8s_time, JobRef, Phase, TrainingJob, TrainingJobStatus, TriggerCheck, TriggerRecord,
    PARENT_LABEL, TRIGGER_ANNOTATION,
};
use super::job::{self, JobState};
use super::plan::{plan, Plan};
use super::run;
use super::status::{self, Failure, Promotion, Start};
use super::triggers;

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API error while {context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The kube error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A run failed for a reason that may pass (store or registry unreachable, interrupted).
    #[error("{}", .0.message())]
    Run(Failure),
    /// A model passed its gates but the registry could not be reached to promote it.
    #[error("promotion of {version} is pending: {reason}")]
    PromotionPending {
        /// The version.
        version: String,
        /// The registry error.
        reason: String,
    },
    /// The object has no namespace (TrainingJobs are namespaced).
    #[error("TrainingJob {0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// Wraps a kube error with what was being done.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube {
            context,
            source: Box::new(source),
        }
    }

    /// The `error` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Run(Failure::StoreUnavailable(_)) => "store",
            Error::Run(Failure::RegistryUnavailable(_)) => "registry",
            Error::Run(Failure::Interrupted(_)) => "interrupted",
            Error::Run(_) => "training",
            Error::PromotionPending { .. } => "promotion",
            Error::NoNamespace(_) => "invalid",
        }
    }
}

/// Reconciles one TrainingJob (see the module docs and [`plan`]).
pub async fn reconcile(tj: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciliations.inc();
    let result = reconcile_once(&tj, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Counts the failure and requeues with exponential backoff (per object and generation).
pub fn error_policy(tj: Arc<TrainingJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(error.metric_label());
    let delay = ctx.record_failure(&tj, ctx.now());
    tracing::warn!(
        object = %key(&tj),
        error = %error,
        retry_in_s = delay.as_secs_f64(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn reconcile_once(tj: &TrainingJob, ctx: &Context) -> Result<Action, Error> {
    if tj.namespace().is_none() {
        return Err(Error::NoNamespace(tj.name_any()));
    }
    let now = ctx.now();
    let status = ctx.effective_status(tj);
    let next = plan(tj, &status, now);
    if !matches!(next, Plan::Idle(_) | Plan::Invalid(_) | Plan::WatchJob(_)) {
        if let Some(wait) = ctx.backoff_wait(tj, now) {
            return Ok(Action::requeue(wait));
        }
    }
    tracing::debug!(object = %key(tj), plan = ?next, "reconciling");
    match next {
        Plan::Idle(wait) => Ok(idle(ctx, wait)),
        Plan::Invalid(reason) => {
            let f = Failure::InvalidSpec(reason);
            let s = status::failed(&status, &f, tj.metadata.generation, now);
            ctx.write_status(tj, &s).await?;
            ctx.event(
                tj,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                f.message(),
            )
            .await;
            Ok(idle(ctx, None))
        }
        Plan::Interrupted => {
            let f = Failure::Interrupted(format!(
                "{} stopped before finishing the run it started at {}",
                status.runner.as_deref().unwrap_or("the controller"),
                status
                    .start_time
                    .as_ref()
                    .map(|t| super::crd::chrono_time(t).to_rfc3339())
                    .unwrap_or_else(|| "an unknown time".into())
            ));
            let s = status::failed(&status, &f, tj.metadata.generation, now);
            ctx.write_status(tj, &s).await?;
            ctx.event(
                tj,
                EventType::Warning,
                "TrainingInterrupted",
                "Train",
                f.message(),
            )
            .await;
            Err(Error::Run(f))
        }
        Plan::Train { reason, tick } => {
            let start = Start {
                phase: Phase::Running,
                runner: ctx.runner(),
                reason,
                generation: tj.metadata.generation,
                tick,
                job: None,
            };
            match tj.spec.execution.mode {
                super::crd::ExecutionMode::InProcess => {
                    let reported = train_and_report(ctx, tj, &status, start).await?;
                    settle(ctx, tj, reported)
                }
                super::crd::ExecutionMode::Job => start_job(ctx, tj, &status, start).await,
            }
        }
        Plan::RetryPromotion { version } => {
            let result = run::retry_promotion(ctx, &tj.spec, &status, &version).await;
            let s =
                status::promotion_retried(&status, &version, &result, tj.metadata.generation, now);
            ctx.write_status(tj, &s).await?;
            promotion_events(ctx, tj, &version, &result).await;
            if let Promotion::Pending { error } = result {
                return Err(Error::PromotionPending {
                    version,
                    reason: error,
                });
            }
            ctx.clear_failures(tj);
            Ok(after(ctx, tj, &s))
        }
        Plan::WatchJob(job_ref) => watch_job(ctx, tj, &status, job_ref).await,
        Plan::CheckTriggers => check_triggers(ctx, tj, &status).await,
    }
}

fn idle(ctx: &Context, wait: Option<Duration>) -> Action {
    let resync = ctx.settings.resync;
    Action::requeue(wait.map_or(resync, |w| w.min(resync)))
}

/// What to do after a status write: idle per the plan of the new status, or look again soon.
fn after(ctx: &Context, tj: &TrainingJob, s: &TrainingJobStatus) -> Action {
    match plan(tj, s, ctx.now()) {
        Plan::Idle(wait) => idle(ctx, wait),
        _ => Action::requeue(Duration::from_secs(1)),
    }
}

/// A finished run: its final status, and what went wrong if it is to be retried.
pub struct Reported {
    /// The status written.
    pub status: TrainingJobStatus,
    /// `Err` when the run should be retried with backoff.
    pub retry: Result<(), Error>,
}

fn settle(ctx: &Context, tj: &TrainingJob, r: Reported) -> Result<Action, Error> {
    r.retry?;
    ctx.clear_failures(tj);
    Ok(after(ctx, tj, &r.status))
}

/// Trains in this process and writes the status at the start and at the end of the run. Used
/// by the reconciler (execution mode `inProcess`) and by the Job's pod (`inframind train
/// --training-job`).
pub async fn train_and_report(
    ctx: &Context,
    tj: &TrainingJob,
    prev: &TrainingJobStatus,
    start: Start,
) -> Result<Reported, Error> {
    let permit = match ctx.try_training_slot() {
        Some(p) => p,
        None => {
            let pending = status::started(
                prev,
                &Start {
                    phase: Phase::Pending,
                    ..start.clone()
                },
                ctx.now(),
            );
            ctx.write_status(tj, &pending).await?;
            ctx.training_slot().await
        }
    };
    let running = status::started(prev, &start, ctx.now());
    ctx.write_status(tj, &running).await?;
    let spec = &tj.spec;
    ctx.event(
        tj,
        EventType::Normal,
        "TrainingStarted",
        "Train",
        format!(
            "training ({}) on the last {} successful runs of {}: {} trees, depth {}",
            start.reason,
            spec.limit,
            spec.pipeline
                .as_deref()
                .map(|p| format!("pipeline {p}"))
                .unwrap_or_else(|| "every pipeline".into()),
            spec.hyperparameters.trees,
            spec.hyperparameters.max_depth
        ),
    )
    .await;
    let t0 = Instant::now();
    let result = run::execute(ctx, spec).await;
    drop(permit);
    let end = ctx.now();
    let generation = start.generation;
    match result {
        Ok(outcome) => {
            ctx.metrics
                .training_duration
                .observe(t0.elapsed().as_secs_f64());
            ctx.metrics.scores(
                &format!("{}/{}", tj.namespace().unwrap_or_default(), tj.name_any()),
                &outcome.metrics,
            );
            let fin = status::finished(&running, &outcome, generation, end);
            ctx.write_status(tj, &fin).await?;
            ctx.event(
                tj,
                EventType::Normal,
                "TrainingFinished",
                "Train",
                fin.message.clone().unwrap_or_default(),
            )
            .await;
            promotion_events(ctx, tj, &outcome.version, &outcome.promotion).await;
            if let Promotion::GatesFailed = outcome.promotion {
                if let Some(g) = &fin.failed_gate {
                    ctx.event(
                        tj,
                        EventType::Warning,
                        "GatesFailed",
                        "Promote",
                        format!(
                            "{} stored but not promoted: gate {} failed: {}",
                            outcome.version, g.gate, g.message
                        ),
                    )
                    .await;
                }
            }
            ctx.metrics.training(match &outcome.promotion {
                Promotion::Promoted { .. } => "promoted",
                Promotion::NotRequested => "not_promoted",
                Promotion::GatesFailed => "gates_failed",
                Promotion::ActiveChanged { .. } => "active_changed",
                Promotion::Pending { .. } => "promotion_pending",
            });
            let retry = match outcome.promotion {
                Promotion::Pending { error } => Err(Error::PromotionPending {
                    version: outcome.version,
                    reason: error,
                }),
                _ => Ok(()),
            };
            Ok(Reported { status: fin, retry })
        }
        Err(f) => {
            let fin = status::failed(&running, &f, generation, end);
            report_failure(ctx, tj, &fin, &f).await?;
            let retry = if f.retried() {
                Err(Error::Run(f))
            } else {
                Ok(())
            };
            Ok(Reported { status: fin, retry })
        }
    }
}

async fn promotion_events(ctx: &Context, tj: &TrainingJob, version: &str, p: &Promotion) {
    match p {
        Promotion::Promoted { previous } => {
            ctx.metrics.promotions.inc();
            ctx.event(
                tj,
                EventType::Normal,
                "Promoted",
                "Promote",
                format!(
                    "{version} is the active model (previous: {})",
                    previous.as_deref().unwrap_or("none")
                ),
            )
            .await;
        }
        Promotion::Pending { error } => {
            ctx.event(
                tj,
                EventType::Warning,
                "PromotionPending",
                "Promote",
                format!("{version} passed its gates and is stored; promotion is retried: model registry unreachable ({error})"),
            )
            .await;
        }
        Promotion::ActiveChanged { compared, now } => {
            ctx.event(
                tj,
                EventType::Warning,
                "PromotionSkipped",
                "Promote",
                format!(
                    "{version} not promoted: the active model changed from {} to {}",
                    compared.as_deref().unwrap_or("none"),
                    now.as_deref().unwrap_or("none")
                ),
            )
            .await;
        }
        Promotion::NotRequested | Promotion::GatesFailed => {}
    }
}

/// Execution mode `job`: create the batch/v1 Job and record it in the status.
async fn start_job(
    ctx: &Context,
    tj: &TrainingJob,
    prev: &TrainingJobStatus,
    start: Start,
) -> Result<Action, Error> {
    let now = ctx.now();
    let Some(template) = ctx.settings.job_template.clone() else {
        let f = Failure::JobFailed(
            "execution mode `job` is unavailable: the controller could not read its own pod (POD_NAME, POD_NAMESPACE) to copy it, and no --job-image was given".into(),
        );
        let s = status::failed(prev, &f, start.generation, now);
        report_failure(ctx, tj, &s, &f).await?;
        return Ok(idle(ctx, None));
    };
    let name = job::job_name(&tj.name_any(), start.generation.unwrap_or(0), now);
    let job_obj = match job::build(&template, tj, &name) {
        Ok(j) => j,
        Err(e) if e.is_spec() => {
            // An image or service account outside the allowlists: nothing is created.
            let f = Failure::InvalidSpec(e.to_string());
            let s = status::failed(prev, &f, start.generation, now);
            ctx.write_status(tj, &s).await?;
            ctx.event(tj, EventType::Warning, "InvalidSpec", "Train", f.message())
                .await;
            return Ok(idle(ctx, None));
        }
        Err(e) => {
            let f = Failure::JobFailed(e.to_string());
            let s = status::failed(prev, &f, start.generation, now);
            report_failure(ctx, tj, &s, &f).await?;
            return Ok(idle(ctx, None));
        }
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &template.namespace);
    match jobs.create(&PostParams::default(), &job_obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            return Err(Error::kube(format!(
                "creating training Job {}/{name}",
                template.namespace
            ))(e))
        }
    }
    let job_ref = JobRef {
        namespace: template.namespace.clone(),
        name: name.clone(),
    };
    let s = status::started(
        prev,
        &Start {
            phase: Phase::Pending,
            runner: format!("job/{}/{name}", template.namespace),
            job: Some(job_ref),
            ..start.clone()
        },
        now,
    );
    ctx.write_status(tj, &s).await?;
    ctx.event(
        tj,
        EventType::Normal,
        "TrainingStarted",
        "Train",
        format!(
            "training ({}) in batch/v1 Job {}/{name}",
            start.reason, template.namespace
        ),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// Execution mode `job`: the Job's pod reports itself; step in only when the Job ended without.
async fn watch_job(
    ctx: &Context,
    tj: &TrainingJob,
    prev: &TrainingJobStatus,
    job_ref: JobRef,
) -> Result<Action, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &job_ref.namespace);
    let name = format!("{}/{}", job_ref.namespace, job_ref.name);
    let state = match jobs
        .get_opt(&job_ref.name)
        .await
        .map_err(Error::kube(format!("reading training Job {name}")))?
    {
        None => JobState::Failed("it was deleted".into()),
        Some(j) => job::state(&j),
    };
    let why = match state {
        JobState::Active => return Ok(Action::requeue(Duration::from_secs(60))),
        JobState::Succeeded => format!("Job {name} completed without reporting a result"),
        JobState::Failed(why) => format!(
            "Job {name} failed ({why}) before reporting a result; see `kubectl -n {} logs job/{}`",
            job_ref.namespace, job_ref.name
        ),
    };
    let f = Failure::JobFailed(why);
    let s = status::failed(prev, &f, tj.metadata.generation, ctx.now());
    report_failure(ctx, tj, &s, &f).await?;
    Ok(after(ctx, tj, &s))
}

/// Writes a failed run's status, announces it with a TrainingFailed event and counts it.
async fn report_failure(
    ctx: &Context,
    tj: &TrainingJob,
    status: &TrainingJobStatus,
    f: &Failure,
) -> Result<(), Error> {
    ctx.write_status(tj, status).await?;
    ctx.event(
        tj,
        EventType::Warning,
        "TrainingFailed",
        "Train",
        f.message(),
    )
    .await;
    ctx.metrics.training("failed");
    Ok(())
}

/// Evaluates the triggers; when one fires, creates a child TrainingJob (see `triggers`).
async fn check_triggers(
    ctx: &Context,
    tj: &TrainingJob,
    prev: &TrainingJobStatus,
) -> Result<Action, Error> {
    let now = ctx.now();
    let spec = tj.spec.triggers.clone().unwrap_or_default();
    let obs = match run::observe_triggers(ctx, tj, prev, now).await {
        Ok(o) => o,
        Err(f) => {
            // Say so in the status; the next check comes after the interval.
            let mut s = prev.clone();
            s.trigger_check = Some(TriggerCheck {
                checked_at: k8s_time(now),
                active_version: None,
                new_runs: None,
                since: None,
                drift_fraction: None,
                drift_rows: None,
                error: Some(format!("{}: {}", f.reason(), f.detail())),
            });
            ctx.write_status(tj, &s).await?;
            return Err(Error::Run(f));
        }
    };
    let mut s = prev.clone();
    s.trigger_check = Some(TriggerCheck {
        checked_at: k8s_time(now),
        active_version: obs.active_version.clone(),
        new_runs: Some(obs.new_runs),
        since: Some(k8s_time(obs.since)),
        error: None,
        drift_fraction: obs
            .drift
            .as_ref()
            .and_then(|d| super::crd::finite(d.fraction())),
        drift_rows: obs.drift.as_ref().map(|d| d.rows as u64),
    });
    if let Some(fired) = triggers::evaluate(&spec, &obs) {
        let child = child_of(tj, &fired, now);
        let child_name = child.name_any();
        let api: Api<TrainingJob> =
            Api::namespaced(ctx.client.clone(), &tj.namespace().unwrap_or_default());
        match api.create(&PostParams::default(), &child).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                return Err(Error::kube(format!(
                    "creating child TrainingJob {child_name}"
                ))(e))
            }
        }
        s.last_trigger = Some(TriggerRecord {
            kind: fired.kind().to_string(),
            reason: fired.reason(),
            fired_at: k8s_time(now),
            child: child_name.clone(),
        });
        ctx.write_status(tj, &s).await?;
        ctx.metrics.trigger(fired.kind());
        ctx.event(
            tj,
            EventType::Normal,
            "RetrainTriggered",
            "Trigger",
            format!("{}: created TrainingJob {child_name}", fired.reason()),
        )
        .await;
    } else {
        ctx.write_status(tj, &s).await?;
    }
    ctx.clear_failures(tj);
    Ok(after(ctx, tj, &s))
}

/// The child TrainingJob a trigger creates: the parent's training without schedule or
/// triggers, owned by the parent, labelled with it and annotated with the reason.
pub fn child_of(
    parent: &TrainingJob,
    fired: &triggers::Fired,
    now: chrono::DateTime<chrono::Utc>,
) -> TrainingJob {
    let parent_name = parent.name_any();
    let mut label: String = parent_name.chars().take(63).collect();
    while label.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        label.pop();
    }
    let mut child = TrainingJob::new(
        &triggers::child_name(&parent_name, now),
        parent.spec.for_child(),
    );
    child.metadata.namespace = parent.namespace();
    child.metadata.labels = Some(BTreeMap::from([(PARENT_LABEL.to_string(), label)]));
    child.metadata.annotations = Some(BTreeMap::from([
        (TRIGGER_ANNOTATION.to_string(), fired.reason()),
        (
            "inframind.io/trigger-kind".to_string(),
            fired.kind().to_string(),
        ),
    ]));
    child.metadata.owner_references = parent.controller_owner_ref(&()).map(|o| vec![o]);
    child
}
