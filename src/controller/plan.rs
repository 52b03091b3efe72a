//! What a reconcile should do for a TrainingJob, decided from its spec and status alone.
//!
//! This is where idempotency lives: a run is due once per `metadata.generation` (until
//! `status.observedGeneration` catches up) and once per schedule tick (until
//! `status.lastScheduleTime` covers it). Everything else, resyncs included, is idle.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::crd::{chrono_time, JobRef, Phase, TrainingJob, TrainingJobStatus, TRIGGER_ANNOTATION};
use super::schedule::Schedule;

/// Prefix of `status.runner` for runs inside a controller process.
pub const CONTROLLER_RUNNER: &str = "controller/";

/// The next step for one TrainingJob.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// The spec is invalid and that has not been reported for this generation yet.
    Invalid(String),
    /// A batch/v1 Job is running the training: look at it.
    WatchJob(JobRef),
    /// The status says a controller is training, but no reconcile is (its process stopped).
    Interrupted,
    /// Train now.
    Train {
        /// Why (for the status and events).
        reason: String,
        /// The schedule tick this run covers, if any.
        tick: Option<DateTime<Utc>>,
    },
    /// A model passed its gates but its promotion is pending: retry it.
    RetryPromotion {
        /// The version.
        version: String,
    },
    /// Evaluate the retraining triggers.
    CheckTriggers,
    /// Nothing to do; look again after this long (`None`: only on change).
    Idle(Option<Duration>),
}

fn busy(status: &TrainingJobStatus) -> bool {
    matches!(status.phase, Some(Phase::Running | Phase::Pending))
}

/// Decides the next step (see the module docs).
pub fn plan(tj: &TrainingJob, status: &TrainingJobStatus, now: DateTime<Utc>) -> Plan {
    if busy(status) {
        if let Some(job) = &status.job {
            return Plan::WatchJob(job.clone());
        }
        if status
            .runner
            .as_deref()
            .is_some_and(|r| r.starts_with(CONTROLLER_RUNNER))
        {
            return Plan::Interrupted;
        }
        // Someone else (`inframind train --training-job` by hand) is running it.
        return Plan::Idle(Some(Duration::from_secs(300)));
    }
    let generation = tj.metadata.generation;
    let generation_due = generation.is_some() && status.observed_generation != generation;
    if let Err(e) = tj.spec.validate() {
        return if generation_due {
            Plan::Invalid(e)
        } else {
            Plan::Idle(None)
        };
    }
    let schedule = tj
        .spec
        .schedule
        .as_deref()
        .and_then(|s| Schedule::parse(s).ok());
    let created = tj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(chrono_time)
        .unwrap_or(now);
    let last_tick = status.last_schedule_time.as_ref().map(chrono_time);
    if generation_due {
        let reason = match (
            tj.annotations().get(TRIGGER_ANNOTATION),
            status.observed_generation,
        ) {
            (Some(why), None) => format!("trigger: {why}"),
            (_, None) => "created".to_string(),
            (_, Some(_)) => format!("spec changed (generation {})", generation.unwrap_or(0)),
        };
        // The run also covers the latest tick already passed, so it is not run again at once.
        let tick = schedule
            .as_ref()
            .and_then(|s| s.latest_at_or_before(now))
            .filter(|t| *t > last_tick.unwrap_or(created));
        return Plan::Train { reason, tick };
    }
    if let Some(version) = &status.pending_promotion {
        return Plan::RetryPromotion {
            version: version.clone(),
        };
    }
    if let Some(s) = &schedule {
        if let Some(tick) = s.due(last_tick.unwrap_or(created), now) {
            return Plan::Train {
                reason: format!(
                    "schedule `{}` tick {}",
                    s.expr(),
                    tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                tick: Some(tick),
            };
        }
    }
    let mut wait: Option<Duration> = schedule
        .as_ref()
        .and_then(|s| s.wait(last_tick.unwrap_or(created), now));
    if let Some(t) = &tj.spec.triggers {
        let next_check = match &status.trigger_check {
            None => Duration::ZERO,
            Some(c) => {
                let due = chrono_time(&c.checked_at)
                    + chrono::Duration::from_std(t.interval()).unwrap_or_default();
                (due - now).to_std().unwrap_or(Duration::ZERO)
            }
        };
        if next_check.is_zero() {
            return Plan::CheckTriggers;
        }
        wait = Some(wait.map_or(next_check, |w| w.min(next_check)));
    }
    Plan::Idle(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::{k8s_time, TrainingJobSpec, TriggerCheck, Triggers};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tj(generation: i64, spec: TrainingJobSpec) -> TrainingJob {
        let mut tj = TrainingJob::new("nightly", spec);
        tj.metadata.namespace = Some("ci".into());
        tj.metadata.generation = Some(generation);
        tj.metadata.creation_timestamp = Some(k8s_time(t("2026-03-01T00:00:00Z")));
        tj
    }

    fn done(generation: i64) -> TrainingJobStatus {
        TrainingJobStatus {
            phase: Some(Phase::Succeeded),
            observed_generation: Some(generation),
            ..Default::default()
        }
    }

    #[test]
    fn trains_once_per_generation() {
        let now = t("2026-03-01T01:00:00Z");
        let job = tj(1, TrainingJobSpec::default());
        assert_eq!(
            plan(&job, &TrainingJobStatus::default(), now),
            Plan::Train {
                reason: "created".into(),
                tick: None
            }
        );
        assert_eq!(plan(&job, &done(1), now), Plan::Idle(None));
        let edited = tj(2, TrainingJobSpec::default());
        assert_eq!(
            plan(&edited, &done(1), now),
            Plan::Train {
                reason: "spec changed (generation 2)".into(),
                tick: None
            }
        );
    }

    #[test]
    fn a_child_says_which_trigger_created_it() {
        let mut job = tj(1, TrainingJobSpec::default());
        job.annotations_mut()
            .insert(TRIGGER_ANNOTATION.into(), "1200 new runs".into());
        assert!(matches!(
            plan(&job, &TrainingJobStatus::default(), Utc::now()),
            Plan::Train { reason, .. } if reason == "trigger: 1200 new runs"
        ));
    }

    #[test]
    fn schedule_ticks_train_once_and_idle_until_the_next() {
        let spec = TrainingJobSpec {
            schedule: Some("0 3 * * *".into()),
            ..Default::default()
        };
        let job = tj(1, spec);
        // Creation at 00:00, first reconcile at 01:00: the generation run covers no tick yet.
        assert_eq!(
            plan(
                &job,
                &TrainingJobStatus::default(),
                t("2026-03-01T01:00:00Z")
            ),
            Plan::Train {
                reason: "created".into(),
                tick: None
            }
        );
        // After it, idle until 03:00.
        assert_eq!(
            plan(&job, &done(1), t("2026-03-01T01:00:00Z")),
            Plan::Idle(Some(Duration::from_secs(2 * 3600)))
        );
        // At 03:00:30 the tick is due and the run covers 03:00.
        let tick = t("2026-03-01T03:00:00Z");
        assert_eq!(
            plan(&job, &done(1), t("2026-03-01T03:00:30Z")),
            Plan::Train {
                reason: "schedule `0 3 * * *` tick 2026-03-01T03:00:00Z".into(),
                tick: Some(tick)
            }
        );
        // Once covered, not again: idle until tomorrow.
        let covered = TrainingJobStatus {
            last_schedule_time: Some(k8s_time(tick)),
            ..done(1)
        };
        assert_eq!(
            plan(&job, &covered, t("2026-03-01T03:00:30Z")),
            Plan::Idle(Some(Duration::from_secs(24 * 3600 - 30)))
        );
    }

    #[test]
    fn a_busy_status_is_watched_or_recognised_as_interrupted() {
        let job = tj(1, TrainingJobSpec::default());
        let running = TrainingJobStatus {
            phase: Some(Phase::Running),
            runner: Some("controller/pod-a".into()),
            ..Default::default()
        };
        assert_eq!(plan(&job, &running, Utc::now()), Plan::Interrupted);
        let in_job = TrainingJobStatus {
            job: Some(JobRef {
                namespace: "inframind".into(),
                name: "j".into(),
            }),
            runner: Some("job/inframind/j".into()),
            ..running.clone()
        };
        assert!(matches!(plan(&job, &in_job, Utc::now()), Plan::WatchJob(_)));
        let by_hand = TrainingJobStatus {
            runner: Some("cli/laptop".into()),
            ..running
        };
        assert!(matches!(
            plan(&job, &by_hand, Utc::now()),
            Plan::Idle(Some(_))
        ));
    }

    #[test]
    fn invalid_specs_are_reported_once_per_generation() {
        let job = tj(
            1,
            TrainingJobSpec {
                limit: 3,
                ..Default::default()
            },
        );
        assert!(matches!(
            plan(&job, &TrainingJobStatus::default(), Utc::now()),
            Plan::Invalid(e) if e.contains("spec.limit")
        ));
        let reported = TrainingJobStatus {
            phase: Some(Phase::Failed),
            observed_generation: Some(1),
            ..Default::default()
        };
        assert_eq!(plan(&job, &reported, Utc::now()), Plan::Idle(None));
    }

    #[test]
    fn pending_promotions_are_retried_and_triggers_checked_on_their_interval() {
        let now = t("2026-03-01T01:00:00Z");
        let job = tj(1, TrainingJobSpec::default());
        let pending = TrainingJobStatus {
            pending_promotion: Some("model_v1".into()),
            ..done(1)
        };
        assert_eq!(
            plan(&job, &pending, now),
            Plan::RetryPromotion {
                version: "model_v1".into()
            }
        );
        let job = tj(
            1,
            TrainingJobSpec {
                triggers: Some(Triggers {
                    check_interval_seconds: 600,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert_eq!(plan(&job, &done(1), now), Plan::CheckTriggers);
        let checked = TrainingJobStatus {
            trigger_check: Some(TriggerCheck {
                checked_at: k8s_time(now - chrono::Duration::seconds(100)),
                active_version: None,
                new_runs: Some(0),
                since: Some(k8s_time(now)),
                drift_fraction: None,
                drift_rows: None,
                error: None,
            }),
            ..done(1)
        };
        assert_eq!(
            plan(&job, &checked, now),
            Plan::Idle(Some(Duration::from_secs(500)))
        );
        assert_eq!(
            plan(&job, &checked, now + chrono::Duration::seconds(500)),
            Plan::CheckTriggers
        );
    }
}
