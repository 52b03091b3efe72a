//! Cron schedules (five fields, UTC): which tick is due, and when the next one comes.
//!
//! Semantics follow Kubernetes CronJobs: a run covers the latest tick at or before `now`; ticks
//! missed while the controller was down collapse into one run; `status.lastScheduleTime` records
//! the tick the last run covered, so each tick trains once.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed five-field cron expression, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    expr: String,
}

impl Schedule {
    /// Parses a standard five-field expression (minute hour day-of-month month day-of-week).
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        let nickname = expr.trim_start().starts_with('@');
        if !nickname && fields != 5 {
            return Err(format!(
                "spec.schedule `{expr}` must have five fields (minute hour day-of-month month day-of-week), e.g. `0 3 * * *`"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| format!("spec.schedule `{expr}` is not a valid cron expression: {e}"))?;
        Ok(Schedule {
            cron,
            expr: expr.to_string(),
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Ticks are whole minutes; croner would carry `t`'s fraction of a second into them.
        self.cron
            .find_next_occurrence(&t.trunc_subsecs(0), false)
            .ok()
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.trunc_subsecs(0), true)
            .ok()
    }

    /// The tick a run at `now` should cover, if one is due: the latest tick in `(last, now]`.
    /// `last` is the last covered tick, or the resource's creation when none was covered yet.
    pub fn due(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = self.next_after(last)?;
        if next > now {
            return None;
        }
        self.latest_at_or_before(now).filter(|t| *t > last)
    }

    /// How long until the first tick after `max(last, now)`.
    pub fn wait(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<Duration> {
        let next = self.next_after(last.max(now))?;
        (next - now).to_std().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn only_five_field_expressions_are_accepted() {
        assert!(Schedule::parse("0 3 * * *").is_ok());
        assert!(Schedule::parse("*/15 * * * 1-5").is_ok());
        assert!(Schedule::parse("@daily").is_ok());
        let e = Schedule::parse("0 0 3 * * *").unwrap_err();
        assert!(e.contains("five fields"), "{e}");
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("nightly").is_err());
    }

    #[test]
    fn a_tick_is_due_once_and_not_before_it_comes() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        let last = t("2026-03-01T03:00:00Z");
        // Before the next tick: nothing due, wait until 03:00 the next day.
        let now = t("2026-03-02T02:59:00Z");
        assert_eq!(s.due(last, now), None);
        assert_eq!(s.wait(last, now), Some(Duration::from_secs(60)));
        // At the tick: due, covering exactly that tick.
        let now = t("2026-03-02T03:00:00Z");
        assert_eq!(s.due(last, now), Some(now));
        // Once covered, the same tick is not due again.
        assert_eq!(s.due(now, t("2026-03-02T10:00:00Z")), None);
    }

    #[test]
    fn missed_ticks_collapse_into_the_latest() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let last = t("2026-03-01T00:00:00Z");
        let now = t("2026-03-01T00:47:13Z");
        assert_eq!(s.due(last, now), Some(t("2026-03-01T00:40:00Z")));
        assert_eq!(
            s.wait(t("2026-03-01T00:40:00Z"), now),
            Some(Duration::from_secs(2 * 60 + 47))
        );
    }

    #[test]
    fn ticks_are_whole_seconds_whatever_the_clock_says() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let now = t("2026-03-01T00:47:13.625Z");
        assert_eq!(s.latest_at_or_before(now), Some(t("2026-03-01T00:40:00Z")));
        assert_eq!(s.next_after(now), Some(t("2026-03-01T00:50:00Z")));
        assert_eq!(
            s.wait(t("2026-03-01T00:40:00Z"), now),
            Some(Duration::from_millis(166_375))
        );
    }

    #[test]
    fn a_tick_before_creation_is_not_due() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        let created = t("2026-03-01T10:00:00Z");
        assert_eq!(s.due(created, t("2026-03-01T23:00:00Z")), None);
        assert_eq!(
            s.due(created, t("2026-03-02T03:00:05Z")),
            Some(t("2026-03-02T03:00:00Z"))
        );
    }
}
