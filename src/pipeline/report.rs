//! `wquant run`'s report: what the pipeline found (`RunReport`, written as `report.json`), as
//! `report.md` (tables) and the KLD-vs-bits-per-weight SVG.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write;

/// A variant's mean KLD against its type's llama.cpp-identical file, paired over the same
/// tokens (`wquant kld --compare-per-token`): ± token-level and chunk-level standard errors.
#[derive(Clone, Debug, Serialize)]
pub struct VsLlama {
    pub ratio: Option<f64>,
    pub ratio_se: Option<f64>,
    pub ratio_se_chunks: Option<f64>,
    pub mean_diff: Option<f64>,
    pub mean_diff_se: Option<f64>,
}

/// One quantization's results.
#[derive(Clone, Debug, Serialize)]
pub struct TypeResult {
    /// The file's name in the report: the type (`Q4_K_M`), `TYPE-VARIANT` (`Q4_K_M-wide`) or
    /// `mix-B`.
    pub ftype: String,
    /// How it was quantized (`llama`, `wide`, `gptq`, `gptq+wide`, …).
    pub variant: String,
    /// Against the llama variant of the same type (variants other than llama).
    pub vs_llama: Option<VsLlama>,
    pub file: String,
    pub bytes: u64,
    pub bits_per_weight: f64,
    pub kld_mean: Option<f64>,
    pub kld_mean_unc: Option<f64>,
    pub same_top_p: Option<f64>,
    pub same_top_p_unc: Option<f64>,
    pub ppl_ratio: Option<f64>,
    pub ppl_ratio_unc: Option<f64>,
    pub quantize_seconds: f64,
    pub kld_seconds: f64,
}

/// What one `wquant run` found (`report.json`; `markdown` prints it as `report.md`).
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub model: String,
    pub base: String,
    pub calib: String,
    pub eval: String,
    pub device: String,
    pub n_ctx: usize,
    pub measured_tokens_per_second: Option<f64>,
    pub imatrix_chunks: usize,
    pub kld_chunks: usize,
    pub chunk_choice: String,
    pub steps: Vec<(String, f64, bool)>,
    pub types: Vec<TypeResult>,
    pub plots: Vec<String>,
}

fn pm(v: Option<f64>, u: Option<f64>, prec: usize, scale: f64) -> String {
    match (v, u) {
        (Some(v), Some(u)) => format!("{:.prec$} ± {:.prec$}", v * scale, u * scale),
        (Some(v), None) => format!("{:.prec$}", v * scale),
        _ => "n/a".to_string(),
    }
}

/// The Markdown report.
pub fn markdown(r: &RunReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# wquant run\n");
    let _ = writeln!(o, "- model: `{}` (base: `{}`)", r.model, r.base);
    let _ = writeln!(
        o,
        "- calibration text: `{}`; evaluation text: `{}`",
        r.calib, r.eval
    );
    let _ = writeln!(o, "- device: {}", r.device);
    let _ = writeln!(
        o,
        "- chunks of {} tokens: imatrix {} chunks, KLD {} chunks per type ({})\n",
        r.n_ctx, r.imatrix_chunks, r.kld_chunks, r.chunk_choice,
    );
    // With variants: their mean KLD over the llama file's, paired (± token-level SE).
    let paired = r.types.iter().any(|t| t.vs_llama.is_some());
    let _ = writeln!(
        o,
        "| type | size (MiB) | bits/weight | mean KLD |{} same top p (%) | PPL(Q)/PPL(base) | quantize (s) | KLD (s) |",
        if paired { " KLD / llama's (paired) |" } else { "" }
    );
    let _ = writeln!(
        o,
        "|---|---:|---:|---:|{}---:|---:|---:|---:|",
        if paired { "---:|" } else { "" }
    );
    for t in &r.types {
        let vs = match (&t.vs_llama, paired) {
            (_, false) => String::new(),
            (Some(v), true) => format!(" {} |", pm(v.ratio, v.ratio_se, 3, 1.0)),
            (None, true) => " |".to_string(),
        };
        let _ = writeln!(
            o,
            "| {} | {:.1} | {:.3} | {} |{vs} {} | {} | {:.1} | {:.1} |",
            t.ftype,
            t.bytes as f64 / (1024.0 * 1024.0),
            t.bits_per_weight,
            pm(t.kld_mean, t.kld_mean_unc, 6, 1.0),
            pm(t.same_top_p, t.same_top_p_unc, 3, 100.0),
            pm(t.ppl_ratio, t.ppl_ratio_unc, 4, 1.0),
            t.quantize_seconds,
            t.kld_seconds
        );
    }
    let _ = writeln!(o, "\n## Steps\n\n| step | time (s) | |\n|---|---:|---|");
    for (name, s, cached) in &r.steps {
        let _ = writeln!(
            o,
            "| {name} | {s:.1} | {} |",
            if *cached {
                "up to date (time of the earlier run)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(o, "\n## Plots\n");
    for p in &r.plots {
        let name = std::path::Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(o, "![{name}](plots/{name})");
    }
    o
}

/// Mean KLD against bits per weight, one labelled point per type, as SVG text.
pub fn kld_vs_bpw_svg(types: &[TypeResult]) -> Result<String> {
    let pts: Vec<(f64, f64, &str)> = types
        .iter()
        .filter_map(|t| t.kld_mean.map(|k| (t.bits_per_weight, k, t.ftype.as_str())))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 420)).into_drawing_area();
        let e = |e| anyhow!("kld-vs-bpw.svg: cannot draw: {e:?}");
        root.fill(&WHITE).map_err(e)?;
        let (mut x0, mut x1) = pts
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let mut y1 = pts.iter().fold(0.0f64, |a, p| a.max(p.1));
        if pts.is_empty() {
            (x0, x1, y1) = (0.0, 16.0, 1.0);
        }
        let pad = ((x1 - x0) * 0.15).max(0.25);
        let mut chart = ChartBuilder::on(&root)
            .caption("Mean KLD vs bits per weight", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), 0.0..(y1 * 1.2).max(1e-6))
            .map_err(|e| anyhow!("kld-vs-bpw.svg: cannot draw: {e:?}"))?;
        chart
            .configure_mesh()
            .x_desc("bits per weight")
            .y_desc("mean KLD")
            .draw()
            .map_err(|e| anyhow!("kld-vs-bpw.svg: cannot draw: {e:?}"))?;
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, y, _)| Circle::new((x, y), 5, BLUE.filled())),
            )
            .map_err(|e| anyhow!("kld-vs-bpw.svg: cannot draw: {e:?}"))?;
        chart
            .draw_series(
                pts.iter().map(|&(x, y, l)| {
                    Text::new(l.to_string(), (x, y), ("sans-serif", 14).into_font())
                }),
            )
            .map_err(|e| anyhow!("kld-vs-bpw.svg: cannot draw: {e:?}"))?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}
