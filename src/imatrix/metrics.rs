//! The `stats` command's metrics (SPEC §6.6): llama-imatrix `--show-statistics` per tensor and
//! per layer, reproduced value for value (same f32 operations, same order), plus the
//! activation-based statistics that need Σx (`in_sum`, wquant's files).

use super::file::{Imatrix, ImatrixEntry};
use serde::Serialize;

/// One row of llama-imatrix's table.
#[derive(Clone, Debug, Serialize)]
pub struct TensorStats {
    /// Full weight name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    /// Layer as printed: the number after `blk.`, or `-`.
    pub layer: String,
    /// Short name: the part before `.weight` (e.g. `attn_q`).
    pub tensor: String,
    pub sum_act2: f32,
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    pub stddev: f32,
    /// Fraction of means above 1e-5 in magnitude (0..1).
    pub active: f32,
    pub n: usize,
    pub entropy: f32,
    /// 100·entropy/log2(N), computed in f64 as llama.cpp does (std::log2 of an int).
    pub entropy_norm: f64,
    /// Fraction with z-score > 1 (0..1).
    pub zd: f32,
    /// Cosine similarity of the raw Σx² vectors with the same tensor in the previous layer.
    pub cossim: f32,
    #[serde(skip)]
    values: Vec<f32>,
}

/// llama.cpp's per-layer weighted averages.
#[derive(Clone, Debug, Serialize)]
pub struct LayerStats {
    pub layer: i32,
    pub mean_sum_act2: f32,
    pub mean_zd: f32,
    pub mean_cossim: f32,
    pub n: i32,
}

/// Σx-based statistics of one matrix (wquant files with `in_sum`).
#[derive(Clone, Debug, Serialize)]
pub struct ActivationStats {
    pub name: String,
    pub layer: String,
    pub tensor: String,
    /// ‖μ‖₂ of the mean activation vector μ = in_sum / count (experts concatenated).
    pub mean_norm: f32,
    /// RMS activation sqrt(mean over columns of Σx²/count).
    pub rms: f32,
    /// cos(μ_l, μ_{l−1}) for the same tensor in the previous layer (None in the first layer).
    pub mean_cossim: Option<f32>,
}

/// Per-layer activation score (see `activation_layers` for the formula).
#[derive(Clone, Debug, Serialize)]
pub struct ActivationLayer {
    pub layer: i32,
    pub mean_norm: f32,
    pub mean_cossim: Option<f32>,
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub tensors: Vec<TensorStats>,
    pub layers: Vec<LayerStats>,
    /// True when every entry has `in_sum` (activation-based statistics below are complete).
    pub has_in_sum: bool,
    pub activations: Vec<ActivationStats>,
    pub activation_layers: Vec<ActivationLayer>,
}

/// llama.cpp's process_tensor_name: layer = the item after `blk`, tensor = the item before
/// `weight` (else the whole name).
pub fn split_name(name: &str) -> (String, String) {
    let items: Vec<&str> = name.split('.').collect();
    let layer = items
        .iter()
        .position(|&s| s == "blk")
        .and_then(|i| items.get(i + 1))
        .map_or("-".to_string(), |s| s.to_string());
    let tensor = items
        .iter()
        .position(|&s| s == "weight")
        .filter(|&i| i > 0)
        .map_or(name.to_string(), |i| items[i - 1].to_string());
    let layer = if layer.is_empty() { "-".into() } else { layer };
    (layer, tensor)
}

/// std::stoi of the layer string: leading digits (after optional sign/space), else -1.
fn layer_number(layer: &str) -> i32 {
    let t = layer.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    match digits[..end].parse::<i32>() {
        Ok(v) if end > 0 => {
            if neg {
                -v
            } else {
                v
            }
        }
        _ => -1,
    }
}

/// f32 inner product, sequential (std::inner_product with 0.0f).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        acc += x * y;
    }
    acc
}

/// compute_statistics: None when every matrix has count 0.
fn tensor_stats(name: &str, e: &ImatrixEntry) -> Option<TensorStats> {
    if e.counts.is_empty() || !e.in_sum2.len().is_multiple_of(e.counts.len()) {
        return None;
    }
    let ne0 = e.ne0();
    let mut a = Vec::with_capacity(e.in_sum2.len());
    for (i, &c) in e.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let cf = c as f32;
        a.extend(e.in_sum2[i * ne0..(i + 1) * ne0].iter().map(|&v| v / cf));
    }
    if a.is_empty() {
        return None;
    }
    let n = a.len();
    let mut total = 0.0f32;
    for &v in &a {
        total += v;
    }
    let max = a
        .iter()
        .copied()
        .fold(a[0], |m, v| if m < v { v } else { m });
    let min = a
        .iter()
        .copied()
        .fold(a[0], |m, v| if v < m { v } else { m });
    let mean = total / n as f32;
    let sq = dot(&a, &a);
    let var = sq / n as f32 - mean * mean;
    let dev = var.max(0.0).sqrt();
    let inactive = a.iter().filter(|v| v.abs() <= 1e-5).count();
    let active = 1.0 - inactive as f32 / n as f32;
    let mut entropy = 0.0f32;
    if total > 0.0 {
        for &v in &a {
            let p = v / total;
            if p > 0.0 {
                entropy -= p * p.log2();
            }
        }
    }
    let mut z = 0i32;
    if dev > 0.0 {
        for &v in &a {
            if (v - mean) / dev > 1.0 {
                z += 1;
            }
        }
    }
    let (layer, tensor) = split_name(name);
    let entropy_norm = if n > 0 {
        100.0 * (entropy as f64 / (n as f64).log2())
    } else {
        0.0
    };
    Some(TensorStats {
        name: name.to_string(),
        layer,
        tensor,
        sum_act2: total,
        min,
        max,
        mean,
        stddev: dev,
        active,
        n,
        entropy,
        entropy_norm,
        zd: z as f32 / n as f32,
        cossim: 0.0,
        values: e.in_sum2.clone(),
    })
}

/// The name of the same tensor in the previous layer (`blk.N.` → `blk.N-1.`), as
/// compute_cossim's regex does on the first `blk.<digits>.` match.
fn previous_layer_name(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut i = 0;
    while let Some(p) = name[i..].find("blk.") {
        let start = i + p + 4;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        if end > start && bytes.get(end) == Some(&b'.') {
            let blk: i64 = name[start..end].parse().ok()?;
            return Some(format!("{}{}{}", &name[..start], blk - 1, &name[end..]));
        }
        i = i + p + 1;
    }
    None
}

impl Report {
    /// Compute the report of an imatrix in GGUF form (load a legacy file through
    /// `Imatrix::merge_from` first, as llama-imatrix does with chunk size 512).
    pub fn new(file: &str, im: &Imatrix) -> Report {
        // llama.cpp iterates an unordered_map here; the result does not depend on the order
        // except for exact ties in the sort below.
        let mut ts: Vec<TensorStats> = im
            .entries
            .iter()
            .filter_map(|(n, e)| tensor_stats(n, e))
            .collect();
        let index: std::collections::HashMap<String, usize> = ts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let cossims: Vec<f32> = ts
            .iter()
            .map(|t| match previous_layer_name(&t.name) {
                Some(prev) => match index.get(&prev) {
                    Some(&j) => {
                        let p = &ts[j].values;
                        let dp = dot(&t.values, p);
                        let cm = dot(&t.values, &t.values).sqrt();
                        let pm = dot(p, p).sqrt();
                        dp / (cm * pm)
                    }
                    None => 0.0,
                },
                None => 0.0,
            })
            .collect();
        for (t, c) in ts.iter_mut().zip(cossims) {
            t.cossim = c;
        }
        ts.sort_by(|a, b| {
            a.tensor.cmp(&b.tensor).then(
                b.sum_act2
                    .partial_cmp(&a.sum_act2)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        });
        // Weighted sums per layer, accumulated in table order (f32), as llama.cpp does.
        let mut ws: std::collections::BTreeMap<i32, (f32, f32, f32, i32)> = Default::default();
        for t in &ts {
            let blk = layer_number(&t.layer);
            let n = t.n as i32 as f32;
            let w = ws.entry(blk).or_insert((0.0, 0.0, 0.0, 0));
            w.0 += n * t.sum_act2;
            w.1 += n * t.zd;
            w.2 += n * t.cossim;
            w.3 += t.n as i32;
        }
        let layers = ws
            .iter()
            .filter(|(&l, w)| l >= 0 && w.3 != 0)
            .map(|(&l, w)| LayerStats {
                layer: l,
                mean_sum_act2: w.0 / w.3 as f32,
                mean_zd: w.1 / w.3 as f32,
                mean_cossim: w.2 / w.3 as f32,
                n: w.3,
            })
            .collect();
        let has_in_sum = !im.entries.is_empty() && im.entries.values().all(|e| e.in_sum.is_some());
        let (activations, activation_layers) = if has_in_sum {
            activation_stats(im)
        } else {
            (Vec::new(), Vec::new())
        };
        Report {
            file: file.to_string(),
            tensors: ts,
            layers,
            has_in_sum,
            activations,
            activation_layers,
        }
    }

    /// llama-imatrix `--show-statistics`' text, without its log prefixes.
    pub fn llama_text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "\nComputing statistics for {} ({} tensors)\n",
            self.file,
            self.tensors.len()
        ));
        s.push_str(&format!(
            "\n{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            " Layer",
            "       Tensor",
            "          Σ(Act²)",
            "  Min",
            "            Max",
            "           μ",
            "   σ",
            " % Active",
            "N",
            "   Entropy",
            "E (norm)",
            "ZD",
            "  CosSim"
        ));
        s.push_str(&"=".repeat(169));
        s.push('\n');
        for t in &self.tensors {
            s.push_str(&format!(
                "{:>5}\t{:<20}\t{:10.2}\t{:8.4}\t{:11.4}\t{:6.2}\t{:6.2}\t{:8.2}%\t{:6}\t{:10.4}\t{:6.2}%\t{:10.2}%\t{:8.4}\n",
                t.layer,
                t.tensor,
                t.sum_act2,
                t.min,
                t.max,
                t.mean,
                t.stddev,
                t.active * 100.0,
                t.n,
                t.entropy,
                t.entropy_norm,
                100.0 * t.zd,
                t.cossim
            ));
        }
        s.push_str(&format!(
            "\nComputing weighted average statistics per layer ({} layers)\n",
            self.layers.len()
        ));
        s.push_str(&format!(
            "\n{}\t{}\t{}\t{}\n",
            "  Layer", "     μΣ(Act²)", "      μZD", "μCosSim"
        ));
        s.push_str(&"=".repeat(48));
        s.push('\n');
        for l in &self.layers {
            s.push_str(&format!(
                "{:5}\t{:14.2}\t{:10.4}%\t{:6.4}\n",
                l.layer,
                l.mean_sum_act2,
                100.0 * l.mean_zd,
                l.mean_cossim
            ));
        }
        s.push('\n');
        s
    }

    /// The activation-based tables (or a note saying they need `in_sum`).
    pub fn activation_text(&self) -> String {
        let mut s = String::new();
        if !self.has_in_sum {
            s.push_str(
                "No in_sum (Σx) in this file: activation-based statistics need an imatrix \
                 collected by wquant; the Σ(Act²)-based metrics above are all there is.\n",
            );
            return s;
        }
        s.push_str("Activation-based statistics (mean activation μ = in_sum/count)\n\n");
        s.push_str(" Layer\tTensor              \t     ‖μ‖\t     RMS\t CosSim(μ)\n");
        s.push_str(&"=".repeat(60));
        s.push('\n');
        for a in &self.activations {
            s.push_str(&format!(
                "{:>5}\t{:<20}\t{:8.4}\t{:8.4}\t{:>10}\n",
                a.layer,
                a.tensor,
                a.mean_norm,
                a.rms,
                a.mean_cossim.map_or("-".to_string(), |c| format!("{c:.4}"))
            ));
        }
        s.push_str(
            "\nPer layer: score = mean over tensors of ‖μ‖·(1 − CosSim(μ)) (first layer: ‖μ‖)\n\n",
        );
        s.push_str("  Layer\t   mean ‖μ‖\t mean CosSim(μ)\t     score\n");
        s.push_str(&"=".repeat(52));
        s.push('\n');
        for l in &self.activation_layers {
            s.push_str(&format!(
                "{:5}\t{:11.4}\t{:>15}\t{:10.4}\n",
                l.layer,
                l.mean_norm,
                l.mean_cossim.map_or("-".to_string(), |c| format!("{c:.4}")),
                l.score
            ));
        }
        s
    }

    /// One CSV row per tensor (llama.cpp's columns, plus the activation ones when present).
    pub fn csv(&self) -> String {
        let act: std::collections::HashMap<&str, &ActivationStats> = self
            .activations
            .iter()
            .map(|a| (a.name.as_str(), a))
            .collect();
        let mut s = String::from(
            "name,layer,tensor,sum_act2,min,max,mean,stddev,active,n,entropy,entropy_norm,zd,cossim,mean_norm,rms,mean_cossim\n",
        );
        for t in &self.tensors {
            let (mn, rms, mc) = match act.get(t.name.as_str()) {
                Some(a) => (
                    a.mean_norm.to_string(),
                    a.rms.to_string(),
                    a.mean_cossim.map_or(String::new(), |c| c.to_string()),
                ),
                None => (String::new(), String::new(), String::new()),
            };
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                t.name,
                t.layer,
                t.tensor,
                t.sum_act2,
                t.min,
                t.max,
                t.mean,
                t.stddev,
                t.active,
                t.n,
                t.entropy,
                t.entropy_norm,
                t.zd,
                t.cossim,
                mn,
                rms,
                mc
            ));
        }
        s
    }
}

/// Σx-based statistics per matrix, and per layer:
/// `score_l = mean over the layer's tensors of ‖μ_t,l‖ · (1 − cos(μ_t,l, μ_t,l−1))`,
/// i.e. how far the mean activation moves between consecutive layers, in activation units:
/// large when activations are big *and* change direction; a tensor with no previous layer
/// contributes ‖μ‖ (cos taken as 0).
fn activation_stats(im: &Imatrix) -> (Vec<ActivationStats>, Vec<ActivationLayer>) {
    let mut means: std::collections::BTreeMap<&str, Vec<f32>> = Default::default();
    let mut out = Vec::new();
    for (name, e) in &im.entries {
        let Some(s) = e.in_sum.as_ref() else { continue };
        let ne0 = e.ne0();
        let mut mu = Vec::with_capacity(s.len());
        let mut sq = 0.0f64;
        let mut n = 0usize;
        for (m, &c) in e.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let cf = c as f32;
            mu.extend(s[m * ne0..(m + 1) * ne0].iter().map(|&v| v / cf));
            for &v in &e.in_sum2[m * ne0..(m + 1) * ne0] {
                sq += (v / cf) as f64;
                n += 1;
            }
        }
        if mu.is_empty() {
            continue;
        }
        let (layer, tensor) = split_name(name);
        out.push(ActivationStats {
            name: name.clone(),
            layer,
            tensor,
            mean_norm: dot(&mu, &mu).sqrt(),
            rms: ((sq / n as f64).sqrt()) as f32,
            mean_cossim: None,
        });
        means.insert(name.as_str(), mu);
    }
    for a in out.iter_mut() {
        if let Some(prev) = previous_layer_name(&a.name) {
            if let (Some(p), Some(c)) = (means.get(prev.as_str()), means.get(a.name.as_str())) {
                if p.len() == c.len() {
                    let d = dot(c, p) / (dot(c, c).sqrt() * dot(p, p).sqrt());
                    a.mean_cossim = Some(d);
                }
            }
        }
    }
    out.sort_by(|a, b| {
        a.tensor
            .cmp(&b.tensor)
            .then(layer_number(&a.layer).cmp(&layer_number(&b.layer)))
    });
    let mut per: std::collections::BTreeMap<i32, (f64, f64, usize, f64, usize)> =
        Default::default();
    for a in &out {
        let l = layer_number(&a.layer);
        if l < 0 {
            continue;
        }
        let w = per.entry(l).or_insert((0.0, 0.0, 0, 0.0, 0));
        w.0 += a.mean_norm as f64;
        let c = a.mean_cossim.unwrap_or(0.0) as f64;
        w.3 += a.mean_norm as f64 * (1.0 - c);
        w.4 += 1;
        if let Some(c) = a.mean_cossim {
            w.1 += c as f64;
            w.2 += 1;
        }
    }
    let layers = per
        .into_iter()
        .map(|(l, w)| ActivationLayer {
            layer: l,
            mean_norm: (w.0 / w.4 as f64) as f32,
            mean_cossim: (w.2 > 0).then(|| (w.1 / w.2 as f64) as f32),
            score: (w.3 / w.4 as f64) as f32,
        })
        .collect();
    (out, layers)
}
