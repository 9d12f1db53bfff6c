//! `--plot`: one SVG with three panels, so a person can see the recycling: throughput over time,
//! live instances per host over time (every request's instance comes and goes, so the line
//! hovers near the concurrency and falls to 0 at the end), and the latency distribution.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use super::report::StressReport;

/// Size of the whole figure in pixels: three panels of 1000 × 300.
const FIGURE_SIZE: (u32, u32) = (1000, 900);
/// Title and axis-label font; SVG viewers pick the face, plotters only estimates widths.
const FONT: &str = "sans-serif";
const TITLE_SIZE: u32 = 22;
const CAPTION_SIZE: u32 = 16;
/// Room for tick labels around each panel's plotting area.
const X_LABEL_AREA: u32 = 35;
const Y_LABEL_AREA: u32 = 60;
const MARGIN: u32 = 12;

/// Writes the figure for `report` to `path` (overwriting it).
pub fn write_svg(report: &StressReport, path: &Path) -> anyhow::Result<()> {
    draw(report, path)
        .map_err(anyhow::Error::from_boxed)
        .with_context(|| format!("writing the plot to {}", path.display()))
}

fn draw(
    report: &StressReport,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root = SVGBackend::new(path, FIGURE_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let verdict = if report.passed() {
        "recycling: OK"
    } else {
        "recycling: FAILED"
    };
    let title = format!(
        "goldfish stress: {} — {} requests, {:.0} req/s, {verdict}",
        report.function, report.requests.sent, report.throughput_rps
    );
    let root = root.titled(&title, (FONT, TITLE_SIZE))?;
    let panels = root.split_evenly((3, 1));
    let end_seconds = report
        .timeline
        .last()
        .map_or(report.elapsed_seconds, |point| point.seconds)
        .max(report.elapsed_seconds)
        .max(f64::EPSILON);
    draw_throughput(report, &panels[0], end_seconds)?;
    draw_live_instances(report, &panels[1], end_seconds)?;
    draw_latency(report, &panels[2])?;
    root.present()?;
    Ok(())
}

/// Tick labels for counts and rates: "6000", not "6000.0".
fn whole(value: &f64) -> String {
    format!("{value:.0}")
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_throughput(
    report: &StressReport,
    panel: &Panel<'_>,
    end_seconds: f64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let top = report
        .timeline
        .iter()
        .map(|point| point.throughput_rps)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(panel)
        .caption(
            format!("throughput (mean {:.1} req/s)", report.throughput_rps),
            (FONT, CAPTION_SIZE),
        )
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..end_seconds, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("requests/s")
        .y_label_formatter(&whole)
        .draw()?;
    chart.draw_series(LineSeries::new(
        report
            .timeline
            .iter()
            .map(|point| (point.seconds, point.throughput_rps)),
        &BLUE,
    ))?;
    Ok(())
}

fn draw_live_instances(
    report: &StressReport,
    panel: &Panel<'_>,
    end_seconds: f64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let peak = report
        .hosts
        .iter()
        .map(|host| host.peak_live_instances)
        .max()
        .unwrap_or(0);
    let top = (peak + 1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(panel)
        .caption("live instances per host (sampled)", (FONT, CAPTION_SIZE))
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..end_seconds, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("instances")
        .y_label_formatter(&whole)
        .draw()?;
    for (index, host) in report.hosts.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let points = report.timeline.iter().filter_map(|point| {
            let live = point.live_instances.get(index).copied().flatten()?;
            Some((point.seconds, live as f64))
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!(
                "{} (peak >= {}, after {})",
                host.target, host.peak_live_instances, host.live_instances_after
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

fn draw_latency(
    report: &StressReport,
    panel: &Panel<'_>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let buckets = &report.latency_histogram;
    let right = buckets
        .last()
        .map_or(1.0, |bucket| bucket.to_ms)
        .max(f64::EPSILON);
    let top = buckets
        .iter()
        .map(|bucket| bucket.count)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let latency = &report.latency;
    let caption = format!(
        "latency (p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; last bar includes slower)",
        latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms
    );
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, (FONT, CAPTION_SIZE))
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..right, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("requests")
        .y_label_formatter(&whole)
        .draw()?;
    chart.draw_series(buckets.iter().map(|bucket| {
        Rectangle::new(
            [(bucket.from_ms, 0.0), (bucket.to_ms, bucket.count as f64)],
            BLUE.mix(0.6).filled(),
        )
    }))?;
    for (name, value, color) in [("p50", latency.p50_ms, GREEN), ("p99", latency.p99_ms, RED)] {
        if value <= right {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(value, 0.0), (value, top)],
                    color.stroke_width(2),
                )))?
                .label(format!("{name} {value:.2} ms"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
