//! The comparison as an SVG chart: one horizontal bar chart per workload, systems on the
//! vertical axis, Ferry's bars in its own colour.

use super::{PeersReport, SystemResult};
use plotters::prelude::*;

type Pick = fn(&SystemResult) -> Option<f64>;

fn ok<T: Clone>(v: &[(usize, Result<T, String>)], n: usize) -> Option<T> {
    v.iter()
        .find(|(k, _)| *k == n)
        .and_then(|(_, x)| x.clone().ok())
}

/// The panels: title, unit, and how to read the figure from a system's result.
fn panels(rep: &PeersReport) -> Vec<(String, Pick)> {
    let mut p: Vec<(String, Pick)> = vec![
        ("durable produce, 1 producer (k records/s)".into(), |r| {
            ok(&r.produce, 1).map(|x| x / 1000.0)
        }),
        ("durable produce, 16 producers (k records/s)".into(), |r| {
            ok(&r.produce, 16).map(|x| x / 1000.0)
        }),
        ("single-record produce (k records/s)".into(), |r| {
            r.single
                .as_ref()
                .and_then(|x| x.as_ref().ok())
                .map(|x| x / 1000.0)
        }),
        ("consume and ack, 1 consumer (k records/s)".into(), |r| {
            ok(&r.consume, 1).map(|x| x / 1000.0)
        }),
        ("consume and ack, 4 consumers (k records/s)".into(), |r| {
            ok(&r.consume, 4).map(|x| x / 1000.0)
        }),
        ("end-to-end latency p99 (ms, lower is better)".into(), |r| {
            r.latency
                .as_ref()
                .and_then(|l| l.as_ref().ok())
                .map(|l| l.p99_ms)
        }),
        (
            "single-record latency p99 (ms, lower is better)".into(),
            |r| {
                r.single_latency
                    .as_ref()
                    .and_then(|l| l.as_ref().ok())
                    .map(|l| l.p99_ms)
            },
        ),
    ];
    if rep.options.backlog_records > 0 {
        p.push((
            "backlog: peak memory (MiB, PSS, lower is better)".into(),
            |r| {
                r.backlog
                    .as_ref()
                    .and_then(|b| b.as_ref().ok())
                    .map(|b| b.peak_mib)
            },
        ));
    }
    p
}

/// Renders the chart as SVG text. Longer than most functions on purpose: one drawing,
/// axis to legend.
pub fn svg(rep: &PeersReport) -> anyhow::Result<String> {
    let panels = panels(rep);
    let rows = panels.len().div_ceil(2) as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1200, 300 * rows)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            &format!(
                "Ferry and its peers, one run on one machine, {} (1 KiB records; disk {:.0} MB/s, {:.0} fsync/s)",
                rep.date, rep.disk.seq_mb_s, rep.disk.fsyncs_per_s
            ),
            ("sans-serif", 18),
        )?;
        let names: Vec<&str> = rep.results.iter().map(|r| r.system.id()).collect();
        let n = names.len();
        for (area, (title, pick)) in root
            .split_evenly((rows as usize, 2))
            .iter()
            .zip(panels.iter())
        {
            let values: Vec<Option<f64>> = rep.results.iter().map(pick).collect();
            let max = values.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 15))
                .margin(8)
                .x_label_area_size(24)
                .y_label_area_size(130)
                .build_cartesian_2d(0.0..(max * 1.2).max(1e-9), (0..n).into_segmented())?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .light_line_style(WHITE)
                .y_labels(n)
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                        names.get(*i).copied().unwrap_or("").to_string()
                    }
                    SegmentValue::Last => String::new(),
                })
                .x_label_formatter(&|x| format!("{x:.0}"))
                .draw()?;
            for (i, v) in values.iter().enumerate() {
                let Some(v) = *v else { continue };
                let colour = if rep.results[i].system.is_ferry() {
                    RGBColor(0, 110, 180)
                } else {
                    RGBColor(150, 150, 150)
                };
                chart.draw_series(
                    Histogram::horizontal(&chart)
                        .style(colour.filled())
                        .margin(4)
                        .data([(i, v)]),
                )?;
                let label = if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                };
                chart.draw_series(std::iter::once(Text::new(
                    label,
                    (v, SegmentValue::CenterOf(i)),
                    ("sans-serif", 12),
                )))?;
            }
        }
        root.present()?;
    }
    Ok(out)
}
