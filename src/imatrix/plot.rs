//! SVG plots of a `stats` report (plotters): per-layer curves of the main metrics and tensor ×
//! layer heatmaps. Deterministic output (same report → same bytes).

use super::metrics::Report;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("{}: cannot draw plot: {e:?}", path.display())
}

/// Write every plot into `dir`; returns the files written.
pub fn write_all(r: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let p = dir.join("layers.svg");
    layer_curves(r, &p)?;
    files.push(p);
    let p = dir.join("heatmap-sum-act2.svg");
    heatmap(r, &p, "log10 Σ(Act²) per tensor and layer", |t| {
        (t.sum_act2 > 0.0).then(|| (t.sum_act2 as f64).log10())
    })?;
    files.push(p);
    let p = dir.join("heatmap-cossim.svg");
    heatmap(r, &p, "CosSim with the previous layer", |t| {
        (t.layer != "0").then_some(t.cossim as f64)
    })?;
    files.push(p);
    Ok(files)
}

struct Series {
    title: &'static str,
    log: bool,
    points: Vec<(f64, f64)>,
}

fn layer_curves(r: &Report, path: &Path) -> Result<()> {
    let mut series = vec![
        Series {
            title: "μΣ(Act²) (weighted by N, log scale)",
            log: true,
            points: r
                .layers
                .iter()
                .map(|l| (l.layer as f64, l.mean_sum_act2 as f64))
                .collect(),
        },
        Series {
            title: "μZD: % of columns with z-score > 1",
            log: false,
            points: r
                .layers
                .iter()
                .map(|l| (l.layer as f64, 100.0 * l.mean_zd as f64))
                .collect(),
        },
        Series {
            title: "μCosSim of Σ(Act²) with the previous layer",
            log: false,
            points: r
                .layers
                .iter()
                .map(|l| (l.layer as f64, l.mean_cossim as f64))
                .collect(),
        },
    ];
    if r.has_in_sum {
        series.push(Series {
            title: "activation score: mean ‖μ‖·(1 − CosSim(μ))",
            log: false,
            points: r
                .activation_layers
                .iter()
                .map(|l| (l.layer as f64, l.score as f64))
                .collect(),
        });
    }
    let e = err(path);
    let height = 260 * series.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let panels = root.split_evenly((series.len(), 1));
    let n_layers = r.layers.iter().map(|l| l.layer).max().unwrap_or(0) as f64;
    for (s, area) in series.iter().zip(panels.iter()) {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite() && (!s.log || p.1 > 0.0))
            .copied()
            .collect();
        let (lo, hi) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.1), b.max(p.1))
            });
        let (lo, hi) = if pts.is_empty() {
            (0.0, 1.0)
        } else if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, hi + 0.5)
        };
        let mut b = ChartBuilder::on(area);
        b.caption(s.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(70);
        if s.log {
            let mut c = b
                .build_cartesian_2d(-0.5..n_layers + 0.5, (lo * 0.8..hi * 1.25).log_scale())
                .map_err(&e)?;
            c.configure_mesh()
                .x_desc("layer")
                .x_labels(16)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(&e)?;
            c.draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(2)))
                .map_err(&e)?;
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
                .map_err(&e)?;
        } else {
            let pad = (hi - lo) * 0.08;
            let mut c = b
                .build_cartesian_2d(-0.5..n_layers + 0.5, lo - pad..hi + pad)
                .map_err(&e)?;
            c.configure_mesh()
                .x_desc("layer")
                .x_labels(16)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(&e)?;
            c.draw_series(LineSeries::new(pts.iter().copied(), RED.stroke_width(2)))
                .map_err(&e)?;
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, RED.filled())))
                .map_err(&e)?;
        }
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Viridis-like ramp from dark blue (0) to yellow (1).
fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, (u8, u8, u8)); 5] = [
        (0.0, (68, 1, 84)),
        (0.25, (59, 82, 139)),
        (0.5, (33, 145, 140)),
        (0.75, (94, 201, 98)),
        (1.0, (253, 231, 37)),
    ];
    let t = t.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let (a, ca) = w[0];
        let (b, cb) = w[1];
        if t <= b {
            let f = (t - a) / (b - a);
            let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * f).round() as u8;
            return RGBColor(mix(ca.0, cb.0), mix(ca.1, cb.1), mix(ca.2, cb.2));
        }
    }
    RGBColor(253, 231, 37)
}

fn heatmap(
    r: &Report,
    path: &Path,
    title: &str,
    value: impl Fn(&super::metrics::TensorStats) -> Option<f64>,
) -> Result<()> {
    let e = err(path);
    // Rows: tensor kinds (sorted); columns: layers.
    let mut cells: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut kinds: Vec<String> = Vec::new();
    let mut max_layer = 0i64;
    for t in &r.tensors {
        let Ok(l) = t.layer.parse::<i64>() else {
            continue;
        };
        if !kinds.contains(&t.tensor) {
            kinds.push(t.tensor.clone());
        }
        max_layer = max_layer.max(l);
        if let Some(v) = value(t).filter(|v| v.is_finite()) {
            cells.insert((t.tensor.clone(), l), v);
        }
    }
    kinds.sort();
    let (lo, hi) = cells
        .values()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if cells.is_empty() {
        (0.0, 1.0)
    } else if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let n_kinds = kinds.len().max(1);
    let height = 140 + 34 * n_kinds as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (main, legend) = root.split_horizontally(900);
    let mut c = ChartBuilder::on(&main)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(110)
        .build_cartesian_2d(
            // A segmented range a..b has the segments a..=b.
            (0i64..max_layer).into_segmented(),
            (0usize..n_kinds - 1).into_segmented(),
        )
        .map_err(&e)?;
    let kinds_for_labels = kinds.clone();
    c.configure_mesh()
        .disable_mesh()
        .x_desc("layer")
        .x_labels((max_layer + 1) as usize)
        .y_labels(n_kinds)
        .label_style(("sans-serif", 13))
        .y_label_formatter(&|v| match v {
            // Row 0 is at the bottom: list the kinds top-down in name order.
            SegmentValue::CenterOf(i) => kinds_for_labels
                .get(n_kinds - 1 - *i)
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(l) => l.to_string(),
            _ => String::new(),
        })
        .draw()
        .map_err(&e)?;
    c.draw_series(cells.iter().map(|((k, l), &v)| {
        let row = n_kinds - 1 - kinds.iter().position(|x| x == k).unwrap_or(0);
        let color = ramp((v - lo) / (hi - lo));
        Rectangle::new(
            [
                (SegmentValue::Exact(*l), SegmentValue::Exact(row)),
                (SegmentValue::Exact(*l + 1), SegmentValue::Exact(row + 1)),
            ],
            color.filled(),
        )
    }))
    .map_err(&e)?;
    // Colour scale.
    let mut lc = ChartBuilder::on(&legend)
        .margin_top(40)
        .margin_bottom(50)
        .margin_right(45)
        .y_label_area_size(0)
        .right_y_label_area_size(40)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(&e)?;
    lc.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(&e)?;
    let steps = 64;
    lc.draw_series((0..steps).map(|i| {
        let a = lo + (hi - lo) * i as f64 / steps as f64;
        let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            ramp(i as f64 / (steps - 1) as f64).filled(),
        )
    }))
    .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}
