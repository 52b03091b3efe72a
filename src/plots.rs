//! SVG charts (plotters' SVG backend): the dashboard's and the CLI's. Pure: data in, SVG text out.
//!
//! No fonts and no bitmaps are involved (plotters lays text out with its own metrics and the
//! browser renders it), so the charts work in an air-gapped cluster with nothing to fetch.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use plotters::prelude::*;

use crate::record::{DecisionTag, RunRecord};

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart `{chart}`: {reason}")]
pub struct PlotError {
    /// The chart's title.
    pub chart: String,
    /// What plotters said.
    pub reason: String,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// One dot per point.
    Points,
    /// A line through the points in order.
    Line,
}

/// One named series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// RGB colour.
    pub color: (u8, u8, u8),
    /// How it is drawn.
    pub mark: Mark,
    /// The points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// A chart description.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title (caption).
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X values are unix days: the axis shows dates.
    pub x_is_days: bool,
    /// Draw the y = x diagonal (predicted vs actual).
    pub diagonal: bool,
    /// The series.
    pub series: Vec<Series>,
}

/// Colour of each decision tag (applied blue, holdout orange, explored green, others grey).
pub fn tag_color(tag: Option<DecisionTag>) -> (u8, u8, u8) {
    match tag {
        Some(DecisionTag::Applied) => (31, 119, 180),
        Some(DecisionTag::Holdout) => (255, 127, 14),
        Some(DecisionTag::Explored) => (44, 160, 44),
        _ => (140, 140, 140),
    }
}

fn range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.05;
    (if from_zero { lo } else { lo - pad }, hi + pad)
}

fn day_label(x: f64) -> String {
    DateTime::<Utc>::from_timestamp((x * 86_400.0) as i64, 0)
        .map_or_else(String::new, |t| t.format("%m-%d").to_string())
}

/// Renders `chart` as an SVG document of `size` pixels.
pub fn svg(chart: &Chart, size: (u32, u32)) -> Result<String, PlotError> {
    let fail = |e: &dyn std::fmt::Display| PlotError {
        chart: chart.title.clone(),
        reason: e.to_string(),
    };
    let all = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(all().map(|p| p.0), false);
    let (y0, y1) = range(
        all().map(|p| p.1).chain(
            chart
                .diagonal
                .then(|| all().map(|p| p.0))
                .into_iter()
                .flatten(),
        ),
        true,
    );
    let (x0, x1) = if chart.diagonal {
        (x0.min(y0), x1.max(y1))
    } else {
        (x0, x1)
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| fail(&e))?;
        let days = chart.x_is_days;
        let fmt_x = move |x: &f64| {
            if days {
                day_label(*x)
            } else {
                format!("{x:.4}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        };
        c.configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&|y| {
                // Whole numbers as such; small fractional ticks (counts of a few) with a decimal.
                if (y - y.round()).abs() < 1e-6 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| fail(&e))?;
        if chart.diagonal {
            let lo = x0.max(y0);
            let hi = x1.min(y1);
            c.draw_series(LineSeries::new(
                [(lo, lo), (hi, hi)],
                RGBColor(120, 120, 120).stroke_width(1),
            ))
            .map_err(|e| fail(&e))?
            .label("predicted = actual")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RGBColor(120, 120, 120)));
        }
        for s in &chart.series {
            let color = RGBColor(s.color.0, s.color.1, s.color.2);
            let drawn = match s.mark {
                Mark::Points => c
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| Circle::new(p, 3, color.mix(0.75).filled())),
                    )
                    .map_err(|e| fail(&e))?,
                Mark::Line => c
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| fail(&e))?,
            };
            drawn.label(s.name.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 4), (x + 12, y + 4)], color.filled())
            });
        }
        if chart.series.iter().any(|s| !s.name.is_empty()) {
            c.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| fail(&e))?;
        }
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(out)
}

/// Unix days (fractional) of a time: the x of time charts.
pub fn days(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 / 86_400.0
}

fn tag_name(tag: Option<DecisionTag>) -> &'static str {
    tag.map_or("untagged", DecisionTag::as_str)
}

/// Build durations over time, one colour per decision tag.
pub fn duration_over_time(title: &str, runs: &[RunRecord]) -> Chart {
    let mut by_tag: BTreeMap<Option<DecisionTag>, Vec<(f64, f64)>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.success) {
        by_tag
            .entry(r.decision)
            .or_default()
            .push((days(r.started_at), r.duration_s));
    }
    Chart {
        title: title.to_string(),
        x_label: "started (UTC)".into(),
        y_label: "duration (s)".into(),
        x_is_days: true,
        diagonal: false,
        series: by_tag
            .into_iter()
            .map(|(tag, points)| Series {
                name: tag_name(tag).to_string(),
                color: tag_color(tag),
                mark: Mark::Points,
                points,
            })
            .collect(),
    }
}

/// Builds per day matching `count`, one line per group (applied and explored, holdout).
pub fn per_day(
    title: &str,
    y_label: &str,
    runs: &[RunRecord],
    count: fn(&RunRecord) -> bool,
) -> Chart {
    type Arm = (
        &'static str,
        Option<DecisionTag>,
        fn(Option<DecisionTag>) -> bool,
    );
    let arms: [Arm; 2] = [
        ("applied", Some(DecisionTag::Applied), |t| {
            t.is_some_and(DecisionTag::changed_the_pod)
        }),
        ("holdout", Some(DecisionTag::Holdout), |t| {
            t == Some(DecisionTag::Holdout)
        }),
    ];
    let day_of = |r: &RunRecord| (r.started_at.timestamp().div_euclid(86_400)) as f64;
    let all_days: std::collections::BTreeSet<i64> = runs.iter().map(|r| day_of(r) as i64).collect();
    Chart {
        title: title.to_string(),
        x_label: "day (UTC)".into(),
        y_label: y_label.to_string(),
        x_is_days: true,
        diagonal: false,
        series: arms
            .iter()
            .map(|(name, tag, is)| {
                let mut per: BTreeMap<i64, f64> = all_days.iter().map(|d| (*d, 0.0)).collect();
                for r in runs.iter().filter(|r| is(r.decision) && count(r)) {
                    *per.entry(day_of(r) as i64).or_default() += 1.0;
                }
                Series {
                    name: name.to_string(),
                    color: tag_color(*tag),
                    mark: Mark::Line,
                    points: per.into_iter().map(|(d, n)| (d as f64, n)).collect(),
                }
            })
            .collect(),
    }
}

/// Predicted against actual durations (seconds) with the diagonal.
pub fn predicted_vs_actual(title: &str, pairs: &[(f64, f64)]) -> Chart {
    Chart {
        title: title.to_string(),
        x_label: "actual duration (s)".into(),
        y_label: "predicted duration (s)".into(),
        x_is_days: false,
        diagonal: true,
        series: vec![Series {
            name: "holdout builds".into(),
            color: tag_color(Some(DecisionTag::Applied)),
            mark: Mark::Points,
            points: pairs.iter().map(|&(p, a)| (a, p)).collect(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week() -> Vec<RunRecord> {
        let end = DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        crate::simulate::controlled_week(end, 5, 0.2, &crate::simulate::right_size)
            .into_iter()
            .map(|r| r.record)
            .collect()
    }

    #[test]
    fn charts_render_every_series_as_svg() {
        let runs = week();
        let chart = duration_over_time("acme", &runs);
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["applied", "holdout"]);
        let text = svg(&chart, (800, 400)).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..80]);
        let dots = text.matches("<circle").count();
        assert!(dots >= runs.iter().filter(|r| r.success).count(), "{dots}");
        assert!(text.contains("applied") && text.contains("holdout"));
        assert!(text.contains("duration (s)"));
    }

    #[test]
    fn per_day_counts_add_up_and_lines_are_drawn() {
        let runs = week();
        let c = per_day("builds", "builds", &runs, |_| true);
        let total: f64 = c
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .sum();
        assert_eq!(total as usize, runs.len());
        assert!(c.series[0].points.len() >= 7);
        let text = svg(&c, (800, 300)).unwrap();
        assert!(text.contains("<polyline"), "lines are drawn");
    }

    #[test]
    fn empty_and_diagonal_charts_still_render() {
        let empty = predicted_vs_actual("nothing yet", &[]);
        assert!(svg(&empty, (400, 400)).unwrap().contains("nothing yet"));
        let c = predicted_vs_actual("fit", &[(100.0, 110.0), (200.0, 190.0)]);
        let text = svg(&c, (400, 400)).unwrap();
        assert!(text.contains("predicted = actual"));
        assert_eq!(text.matches("<circle").count(), 2);
    }
}
