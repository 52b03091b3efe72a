//! The dashboard's HTML, rendered on the server with inline SVG charts. Pure: data in, HTML out.
//! No script and nothing fetched from elsewhere: the Content-Security-Policy forbids both.

use chrono::{DateTime, Utc};

use crate::cache_advice::{Advice, CacheState, PipelineCache};
use crate::model::ModelMeta;
use crate::partial_dependence::Curve;
use crate::plots::{self, Chart, Mark, Series};
use crate::record::RunRecord;
use crate::savings::{describe_effect, pct, secs, Comparison, SavingsReport};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a pipeline name for a path (`acme/api` → `acme%2Fapi`).
pub fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}\
header{background:#1f3b57;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}\
header a{color:#fff;text-decoration:none}header .brand{font-weight:700;font-size:18px}\
main{padding:16px 24px;max-width:1240px}section{background:#fff;border:1px solid #dde;border-radius:6px;padding:12px 16px;margin:12px 0}\
table{border-collapse:collapse;font-size:14px}td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:right}\
td:first-child,th:first-child{text-align:left}.big{font-size:20px;font-weight:600}.muted{color:#666}\
.charts{display:flex;flex-wrap:wrap;gap:12px}svg{max-width:100%;height:auto}.warn{color:#a15c00}";

/// The page frame: header with navigation, `body` inside.
pub fn layout(title: &str, pipelines: &[String], body: &str) -> String {
    let nav: String = pipelines
        .iter()
        .map(|p| format!("<a href=\"/pipelines/{}\">{}</a>", path_segment(p), esc(p)))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · InfraMind</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head><body>\
<header><span class=\"brand\">InfraMind</span><a href=\"/\">Overview</a><a href=\"/models\">Models</a><a href=\"/trainingjobs\">TrainingJobs</a>\
<span class=\"muted\" style=\"color:#cde\">{nav}</span><a href=\"/logout\" style=\"margin-left:auto\">Log out</a></header>\
<main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

/// A chart as inline SVG (or a note saying why it could not be drawn).
pub fn chart(c: &Chart, size: (u32, u32)) -> String {
    match plots::svg(c, size) {
        Ok(svg) => format!("<figure class=\"chart\" style=\"margin:0\">{svg}</figure>"),
        Err(e) => format!("<p class=\"warn\">{}</p>", esc(&e.to_string())),
    }
}

fn comparison_row(c: &Comparison, link: bool) -> String {
    let name = if link {
        format!(
            "<a href=\"/pipelines/{}\">{}</a>",
            path_segment(&c.pipeline),
            esc(&c.pipeline)
        )
    } else {
        format!("<b>{}</b>", esc(&c.pipeline))
    };
    format!(
        "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
        c.applied.builds,
        c.holdout.builds,
        secs(c.applied.median_duration_s),
        secs(c.holdout.median_duration_s),
        pct(c.applied.failure_rate),
        pct(c.holdout.failure_rate),
        pct(c.applied.oom_rate),
        pct(c.holdout.oom_rate),
        esc(&describe_effect(c)),
    )
}

fn savings_table(r: &SavingsReport) -> String {
    let rows: String = r
        .pipelines
        .iter()
        .map(|c| comparison_row(c, true))
        .chain(std::iter::once(comparison_row(&r.total, false)))
        .collect();
    format!(
        "<table><tr><th>pipeline</th><th>applied</th><th>holdout</th><th>p50 applied</th><th>p50 holdout</th>\
<th>failures applied</th><th>failures holdout</th><th>OOM applied</th><th>OOM holdout</th><th style=\"text-align:left\">effect (95% CI)</th></tr>{rows}</table>"
    )
}

fn model_summary(m: Option<&ModelMeta>) -> String {
    match m {
        None => "<p class=\"muted\">No active model yet: pods are admitted on defaults and history.</p>".into(),
        Some(m) => format!(
            "<p><b>{}</b> trained {} on {} rows · random holdout MAE {:.1}s, R² {:.3} · temporal holdout MAE {:.1}s, R² {:.3}</p>",
            esc(&m.version),
            m.created_at.format("%Y-%m-%d %H:%M UTC"),
            m.window.rows,
            m.random_holdout.mae_s,
            m.random_holdout.r2,
            m.temporal_holdout.mae_s,
            m.temporal_holdout.r2
        ),
    }
}

/// The overview: savings, builds per day, failures and OOMs by group, the active model.
pub fn overview(
    report: &SavingsReport,
    runs: &[RunRecord],
    active: Option<&ModelMeta>,
    advice: &[Advice],
    pipelines: &[String],
) -> String {
    let headline = match &report.total.effect {
        Some(e) => format!(
            "<p class=\"big\">Builds InfraMind sized ran {:.0}s faster at the median ({:.1}%), 95% CI {:.0}..{:.0}s</p>",
            e.median_saved_s.estimate,
            e.median_saved_share * 100.0,
            e.median_saved_s.low,
            e.median_saved_s.high
        ),
        None => format!("<p class=\"big\">{}</p>", esc(&report.total.status)),
    };
    let body = format!(
        "<section><h2>Realized savings since {}</h2>{headline}{}</section>\
<section><h2>Builds</h2><div class=\"charts\">{}{}</div></section>\
<section><h2>Cache advice</h2>{}</section>\
<section><h2>Active model</h2>{}</section>",
        report.since.format("%Y-%m-%d %H:%M UTC"),
        savings_table(report),
        chart(
            &plots::per_day("Builds per day", "builds", runs, |_| true),
            (570, 320)
        ),
        chart(
            &plots::per_day(
                "Failed builds per day (OOM included)",
                "failures",
                runs,
                |r| !r.success
            ),
            (570, 320)
        ),
        advice_list(advice, 5),
        model_summary(active),
    );
    layout("Overview", pipelines, &body)
}

/// Up to `n` advice lines, most time at stake first.
fn advice_list(advice: &[Advice], n: usize) -> String {
    if advice.is_empty() {
        return "<p class=\"muted\">No cache advice: no pipeline loses much time to cold caches (or none reports cache statistics yet).</p>".into();
    }
    let items: String = advice
        .iter()
        .take(n)
        .map(|a| format!("<li>{}</li>", esc(&a.text)))
        .collect();
    let more = if advice.len() > n {
        format!(
            "<p class=\"muted\">{} more: <code>inframind cache-advice</code>.</p>",
            advice.len() - n
        )
    } else {
        String::new()
    };
    format!("<ul class=\"advice\">{items}</ul>{more}")
}

/// A pipeline's cache: the figures, duration against hit ratio, and the advice.
fn cache_section(name: &str, c: &PipelineCache, runs: &[RunRecord]) -> String {
    let Some(h) = &c.hit_ratio else {
        return format!(
            "<p class=\"muted\">{}</p>",
            c.advice
                .first()
                .map_or_else(|| "No cache statistics yet.".to_string(), |a| esc(&a.text))
        );
    };
    let med = |s: CacheState| {
        c.durations.get(&s).map_or_else(
            || "–".into(),
            |d| format!("{:.0}s ({} builds)", d.median_s, d.builds),
        )
    };
    let figures = format!(
        "<table><tr><th>hit ratio p10 / p50 / p90</th><th>cold builds</th><th>median cold</th><th>median partial</th><th>median warm</th><th>lost to misses per day</th></tr>\
<tr><td>{:.2} / {:.2} / {:.2}</td><td>{:.0}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        h.p10,
        h.p50,
        h.p90,
        h.cold_share * 100.0,
        med(CacheState::Cold),
        med(CacheState::Partial),
        med(CacheState::Warm),
        secs(c.lost_s_per_day),
    );
    let points: Vec<(f64, f64)> = runs
        .iter()
        .filter(|r| r.success)
        .filter_map(|r| Some((r.cache_hit_ratio?, r.duration_s)))
        .collect();
    let plot = chart(
        &Chart {
            title: format!("{name}: duration vs cache hit ratio"),
            x_label: "cache hit ratio".into(),
            y_label: "duration (s)".into(),
            x_is_days: false,
            diagonal: false,
            series: vec![Series {
                name: "builds".into(),
                color: (31, 119, 180),
                mark: Mark::Points,
                points,
            }],
        },
        (570, 340),
    );
    format!(
        "{figures}<div class=\"charts\">{plot}</div>{}",
        advice_list(&c.advice, 10)
    )
}

fn observed_against(runs: &[RunRecord], x: fn(&RunRecord) -> f64) -> Vec<(f64, f64)> {
    runs.iter()
        .filter(|r| r.success)
        .map(|r| (x(r), r.duration_s))
        .collect()
}

fn curve_chart(name: &str, curve: &Curve, runs: &[RunRecord]) -> Chart {
    let x: fn(&RunRecord) -> f64 = match curve.knob {
        crate::partial_dependence::Knob::Concurrency => |r| r.concurrency as f64,
        crate::partial_dependence::Knob::Cpu => |r| r.cpu_req,
    };
    Chart {
        title: format!("{name}: duration vs {}", curve.knob.as_str()),
        x_label: curve.knob.as_str().into(),
        y_label: "duration (s)".into(),
        x_is_days: false,
        diagonal: false,
        series: vec![
            Series {
                name: "observed".into(),
                color: (160, 160, 160),
                mark: Mark::Points,
                points: observed_against(runs, x),
            },
            Series {
                name: "model".into(),
                color: (214, 39, 40),
                mark: Mark::Line,
                points: curve.points.clone(),
            },
        ],
    }
}

/// Rows in a pipeline page's last decisions.
pub const LAST_DECISIONS: usize = 20;

/// What a pipeline's page shows.
pub struct PipelineView<'a> {
    /// The pipeline.
    pub name: &'a str,
    /// Applied vs holdout.
    pub comparison: &'a Comparison,
    /// Its builds in the period, oldest first.
    pub runs: &'a [RunRecord],
    /// The model's curves around the last config (empty without a model that knows it).
    pub curves: &'a [Curve],
    /// Its build cache.
    pub cache: &'a PipelineCache,
    /// Why the last builds were decided so, by run_id.
    pub notes: &'a std::collections::HashMap<String, crate::outcome::DecisionNote>,
}

/// A pipeline: its savings, durations over time by decision, the model's curves next to what was
/// observed, its build cache, and the last decisions with why.
pub fn pipeline(v: &PipelineView<'_>, pipelines: &[String], now: DateTime<Utc>) -> String {
    let PipelineView {
        name,
        comparison,
        runs,
        curves,
        cache,
        notes,
    } = *v;
    let curves_html = if curves.is_empty() {
        "<p class=\"muted\">No active model knows this pipeline yet.</p>".to_string()
    } else {
        let baseline = &curves[0].baseline;
        format!(
            "<p class=\"muted\">Around the last config (cpu {} · memory {:.1} GB · concurrency {}), the other knobs held there.</p><div class=\"charts\">{}</div>",
            baseline.cpu,
            baseline.mem_gb,
            baseline.concurrency,
            curves
                .iter()
                .map(|c| chart(&curve_chart(name, c, runs), (570, 340)))
                .collect::<String>()
        )
    };
    let why = |r: &RunRecord| match notes.get(&r.run_id) {
        Some(n) => format!(
            "<details><summary>why</summary>{}{}{}</details>",
            esc(&n.rationale),
            n.expected_cache
                .as_ref()
                .map_or_else(String::new, |e| format!("<br>expected cache: {}", esc(e))),
            n.cache
                .as_ref()
                .map_or_else(String::new, |c| format!("<br>build cache: {}", esc(c))),
        ),
        None => "<span class=\"muted\">–</span>".into(),
    };
    let last: String = runs
        .iter()
        .rev()
        .take(LAST_DECISIONS)
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.0}s</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                r.started_at.format("%m-%d %H:%M"),
                esc(&r.branch),
                r.decision.map_or("untagged", |d| d.as_str()),
                r.cpu_req,
                r.mem_req_gb,
                r.concurrency,
                secs(r.predicted_duration_s),
                r.duration_s,
                if r.oom_killed { "OOM" } else if r.success { "ok" } else { "failed" },
                why(r),
            )
        })
        .collect();
    let body = format!(
        "<section><h2>Savings</h2><table><tr><th>pipeline</th><th>applied</th><th>holdout</th><th>p50 applied</th><th>p50 holdout</th>\
<th>failures applied</th><th>failures holdout</th><th>OOM applied</th><th>OOM holdout</th><th style=\"text-align:left\">effect (95% CI)</th></tr>{}</table></section>\
<section><h2>Durations</h2>{}</section><section><h2>Model</h2>{curves_html}</section>\
<section><h2>Build cache</h2>{}</section>\
<section><h2>Last decisions</h2><table><tr><th>started</th><th>branch</th><th>decision</th><th>cpu</th><th>memory GB</th><th>concurrency</th>\
<th>predicted</th><th>actual</th><th>outcome</th><th style=\"text-align:left\">rationale</th></tr>{last}</table><p class=\"muted\">as of {}</p></section>",
        comparison_row(comparison, false),
        chart(
            &plots::duration_over_time(&format!("{name}: duration by decision"), runs),
            (1180, 380)
        ),
        cache_section(name, cache, runs),
        now.format("%Y-%m-%d %H:%M UTC"),
    );
    layout(name, pipelines, &body)
}

/// The model versions with their metrics; `active` is marked.
pub fn models(
    list: &[ModelMeta],
    active: Option<&str>,
    history: &Result<Vec<crate::registry::PointerMove>, String>,
    pipelines: &[String],
) -> String {
    let rows: String = list
        .iter()
        .map(|m| {
            format!(
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{:.1}s</td><td>{:.3}</td><td>{:.1}s</td><td>{:.3}</td><td>{}</td></tr>",
                if Some(m.version.as_str()) == active { "★ " } else { "" },
                esc(&m.version),
                m.created_at.format("%Y-%m-%d %H:%M"),
                m.window.rows,
                m.random_holdout.mae_s,
                m.random_holdout.r2,
                m.temporal_holdout.mae_s,
                m.temporal_holdout.r2,
                m.importances
                    .first()
                    .map_or_else(String::new, |(f, _)| esc(f)),
            )
        })
        .collect();
    let body = if list.is_empty() {
        "<section><p class=\"muted\">No model versions yet: run <code>inframind train</code>.</p></section>".to_string()
    } else {
        format!(
            "<section><table><tr><th>version</th><th>created (UTC)</th><th>rows</th><th>MAE random</th><th>R² random</th>\
<th>MAE temporal</th><th>R² temporal</th><th>top feature</th></tr>{rows}</table>\
<p class=\"muted\">★ active (served by the webhook). Promote or roll back with <code>inframind models</code>.</p></section>"
        )
    };
    let moves = match history {
        Ok(h) if h.is_empty() => "<p class=\"muted\">No promotion yet.</p>".to_string(),
        Ok(h) => format!(
            "<table><tr><th>when (UTC)</th><th>action</th><th>version</th><th>replaced</th></tr>{}</table>",
            h.iter()
                .take(50)
                .map(|m| format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    m.at.format("%Y-%m-%d %H:%M:%S"),
                    esc(&m.action),
                    esc(&m.version),
                    esc(m.previous.as_deref().unwrap_or("–"))
                ))
                .collect::<String>()
        ),
        Err(e) => format!(
            "<p class=\"muted\">The promotion history is unavailable: {}</p>",
            esc(e)
        ),
    };
    let body = format!("{body}<section><h2>Promotions and rollbacks</h2>{moves}</section>");
    layout("Models", pipelines, &body)
}

/// What the TrainingJobs page can show.
pub enum TrainingJobsView {
    /// The TrainingJobs in the namespace the API creates them in.
    Listed {
        /// Namespace.
        namespace: String,
        /// The objects.
        jobs: Vec<crate::controller::TrainingJob>,
    },
    /// The API trains in-process: no TrainingJobs.
    InProcess,
    /// The cluster could not be asked.
    Unavailable(String),
}

/// The TrainingJobs and their status.
pub fn training_jobs(view: &TrainingJobsView, pipelines: &[String]) -> String {
    let body = match view {
        TrainingJobsView::InProcess => "<section><p class=\"muted\">This API trains in its own process (no <code>api.trainingNamespace</code>): there are no TrainingJobs to show. <code>kubectl get trainingjobs -A</code> lists those the controller runs.</p></section>".to_string(),
        TrainingJobsView::Unavailable(why) => format!(
            "<section><p class=\"muted\">The TrainingJobs cannot be listed: {}</p></section>",
            esc(why)
        ),
        TrainingJobsView::Listed { namespace, jobs } if jobs.is_empty() => format!(
            "<section><p class=\"muted\">No TrainingJobs in namespace {}.</p></section>",
            esc(namespace)
        ),
        TrainingJobsView::Listed { namespace, jobs } => {
            let rows: String = jobs
                .iter()
                .map(|tj| {
                    let st = tj.status.clone().unwrap_or_default();
                    let m = st.metrics.clone().unwrap_or_default();
                    let num = |x: Option<f64>, d: usize| {
                        x.map_or_else(|| "–".to_string(), |v| format!("{v:.d$}"))
                    };
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                        esc(&tj.metadata.name.clone().unwrap_or_default()),
                        st.phase.map_or_else(|| "–".to_string(), |p| format!("{p:?}")),
                        esc(st.version.as_deref().unwrap_or("–")),
                        match st.promoted {
                            Some(true) => "yes",
                            Some(false) => "no",
                            None => "–",
                        },
                        num(m.mae_seconds, 1),
                        num(m.r2, 3),
                        num(m.rank_accuracy, 3),
                        st.start_time
                            .map_or_else(|| "–".to_string(), |t| t.0.to_string()),
                        st.completion_time
                            .map_or_else(|| "–".to_string(), |t| t.0.to_string()),
                        esc(st.message.as_deref().unwrap_or("")),
                    )
                })
                .collect();
            format!(
                "<section><h2>Namespace {}</h2><table><tr><th>name</th><th>phase</th><th>version</th><th>promoted</th><th>MAE s</th><th>R²</th><th>rank acc.</th><th>started</th><th>finished</th><th style=\"text-align:left\">message</th></tr>{rows}</table></section>",
                esc(namespace)
            )
        }
    };
    layout("TrainingJobs", pipelines, &body)
}

/// The login form.
pub fn login(error: Option<&str>) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Log in · InfraMind</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head>\
<body><header><span class=\"brand\">InfraMind</span></header><main><section style=\"max-width:420px\"><h1>Log in</h1>{}\
<form method=\"post\" action=\"/login\"><p><label>API token<br><input type=\"password\" name=\"token\" autocomplete=\"current-password\" style=\"width:100%\"></label></p>\
<p><button type=\"submit\">Log in</button></p></form><p class=\"muted\">The ingest or admin token of this API; the dashboard is read-only.</p></section></main></body></html>",
        error.map_or_else(String::new, |e| format!("<p class=\"warn\">{}</p>", esc(e)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_names_are_encoded() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(path_segment("acme/api v2"), "acme%2Fapi%20v2");
        let page = layout("<script>", &["a/<b>".into()], "");
        assert!(!page.contains("<script>"));
        assert!(page.contains("/pipelines/a%2F%3Cb%3E"));
    }

    #[test]
    fn last_decisions_show_their_stored_rationale_escaped() {
        let now = chrono::Utc::now();
        let runs = crate::simulate::demo_runs(30, now, 3);
        let refs: Vec<&RunRecord> = runs.iter().collect();
        let cmp = crate::savings::compare("acme/api", &refs, &Default::default());
        let cache = crate::cache_advice::analyse_pipeline("acme/api", &refs);
        let last = runs.last().unwrap();
        let notes = std::collections::HashMap::from([(
            last.run_id.clone(),
            crate::outcome::DecisionNote {
                rationale: "chose cpu 4 <fast>".into(),
                expected_cache: Some("warm: last build of main hit 0.91".into()),
                cache: None,
            },
        )]);
        let view = PipelineView {
            name: "acme/api",
            comparison: &cmp,
            runs: &runs,
            curves: &[],
            cache: &cache,
            notes: &notes,
        };
        let page = pipeline(&view, &[], now);
        assert!(page.contains("<details><summary>why</summary>chose cpu 4 &lt;fast&gt;"));
        assert!(page.contains("expected cache: warm: last build of main hit 0.91"));
        assert!(!page.contains("<fast>"));
    }
}
