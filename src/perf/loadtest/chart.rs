//! Load-test charts as SVG (plotters): one run's latency and throughput per second, and the
//! stored baselines over time.

use std::path::Path;

use plotters::prelude::*;

use super::report::{Report, Statuses, StoredRun};

const SIZE: (u32, u32) = (1000, 700);

/// A line of the answers panel: its label, colour and what it counts.
type Series = (&'static str, RGBColor, fn(&Statuses) -> u64);

fn to_text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn top(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0_f64, f64::max).max(1.0) * 1.1
}

/// Latency (p50, p99 per second) above, answers per second (ok, 429, 5xx) below.
pub fn run_chart(path: &Path, r: &Report) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(to_text)?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2);
    let seconds = r.timeline.len().max(1) as f64;
    let title = format!("{} at {}/s against {} — p99 {:.1} ms, {:.0} answers/s", r.level, r.rate, r.target, r.p99_ms, r.throughput);

    let mut latency = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..top(r.timeline.iter().map(|s| s.p99_ms)))
        .map_err(to_text)?;
    latency.configure_mesh().x_desc("second").y_desc("latency (ms)").draw().map_err(to_text)?;
    for (label, color, pick) in [("p50", BLUE, 0usize), ("p99", RED, 1)] {
        let points = r.timeline.iter().map(|s| (s.second as f64, if pick == 0 { s.p50_ms } else { s.p99_ms }));
        latency
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(to_text)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    latency.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(to_text)?;

    let per_second = |f: fn(&Statuses) -> u64| r.timeline.iter().map(move |s| (s.second as f64, f(&s.statuses) as f64)).collect::<Vec<_>>();
    let mut rate = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..top(r.timeline.iter().map(|s| s.sent as f64)))
        .map_err(to_text)?;
    rate.configure_mesh().x_desc("second").y_desc("answers per second").draw().map_err(to_text)?;
    let series: [Series; 3] =
        [("2xx/3xx", GREEN, |s| s.ok + s.client_error), ("429", MAGENTA, |s| s.limited), ("5xx or none", BLACK, |s| s.server_error + s.failed)];
    for (label, color, f) in series {
        rate.draw_series(LineSeries::new(per_second(f), color.stroke_width(2)))
            .map_err(to_text)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    rate.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(to_text)?;
    root.present().map_err(to_text)
}

/// p99 latency and throughput of every stored run, by run date (one line per level).
pub fn history_chart(path: &Path, runs: &[StoredRun]) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(to_text)?;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2);
    let first = runs.first().map_or(0, |r| r.started_at.timestamp());
    let days = |r: &StoredRun| (r.started_at.timestamp() - first) as f64 / 86_400.0;
    let span = runs.iter().map(days).fold(0.0_f64, f64::max).max(1.0);
    let mut levels: Vec<&str> = runs.iter().map(|r| r.level.as_str()).collect();
    levels.sort_unstable();
    levels.dedup();
    let palette = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    for (area, title, y_desc, pick) in [
        (&upper, "Load-test baselines: p99 latency", "p99 (ms)", 0usize),
        (&lower, "Load-test baselines: throughput", "answers per second", 1),
    ] {
        let value = |r: &StoredRun| if pick == 0 { r.p99_ms } else { r.throughput };
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..span, 0.0..top(runs.iter().map(value)))
            .map_err(to_text)?;
        chart.configure_mesh().x_desc("days since the first run").y_desc(y_desc).draw().map_err(to_text)?;
        for (i, level) in levels.iter().enumerate() {
            let color = palette[i % palette.len()];
            let points: Vec<(f64, f64)> = runs.iter().filter(|r| r.level == *level).map(|r| (days(r), value(r))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(to_text)?
                .label(*level)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(to_text)?;
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(to_text)?;
    }
    root.present().map_err(to_text)
}
