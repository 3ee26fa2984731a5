//! llama.cpp side by side: with `LLAMA_CPP_BIN` (a llama.cpp build folder holding
//! `llama-imatrix` and `llama-perplexity`, or their `bin/`), the same work is timed with
//! llama.cpp in the same run — whole processes, model load included, compared with wquant's
//! rate with its load included. Without it, recorded anchors from another run are printed (and
//! labelled so) when the model is the demo's. llama.cpp is never built or shipped by wquant.

use super::{BenchModel, BenchOptions, Out};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Recorded llama-imatrix rates for SmolLM2 F32, -c 512 (tokens/s, where they come from).
pub const IMATRIX_ANCHORS: [(f64, &str); 2] = [
    (
        4096.0 / 6.8,
        "llama-imatrix, 8×512 SmolLM2 F32 tokens in 6.8 s, 2 threads, load included, side by side \
         with wquant on this project's 2-core machine (issue 19)",
    ),
    (
        4096.0 / 15.8,
        "llama-imatrix -c 512 --chunks 8 -t 2, 15.8 s, load included, median of 3 on the 2-core \
         reference machine (../shared/golden/README.md)",
    ),
];

/// Recorded llama-perplexity --kl-divergence rate for SmolLM2, -c 512.
pub const KLD_ANCHORS: [(f64, &str); 1] = [(
    302.0,
    "llama-perplexity --kl-divergence of Q4_K_M against a base file, 141 chunks in 239 s, \
     2 threads, load included, on the 2-core reference machine (../shared/golden/README.md)",
)];

/// The llama.cpp tools in a build folder.
pub struct Tools {
    pub imatrix: PathBuf,
    pub perplexity: PathBuf,
}

impl Tools {
    pub fn find(dir: &Path) -> Result<Tools> {
        let find = |name: &str| {
            [dir.join(name), dir.join("bin").join(name)]
                .into_iter()
                .find(|p| p.is_file())
                .with_context(|| {
                    format!(
                        "LLAMA_CPP_BIN={}: no {name} there (nor in its bin/); point it at a llama.cpp build folder",
                        dir.display()
                    )
                })
        };
        Ok(Tools {
            imatrix: find("llama-imatrix")?,
            perplexity: find("llama-perplexity")?,
        })
    }
}

/// Run a llama.cpp tool to completion; its wall seconds. Output goes to `log`.
fn timed(cmd: &mut Command, log: &Path) -> Result<f64> {
    let t = Instant::now();
    let o = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    let secs = t.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::write(log, &text);
    if !o.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "{:?} failed ({}); last lines:\n{}",
            cmd.get_program(),
            o.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(secs)
}

fn anchors(out: &Out, list: &[(f64, &str)], ours: f64, applies: bool, what: &str) -> Value {
    if !applies {
        out.line(&format!(
            "llama.cpp: no recorded {what} anchor for this model/context (set LLAMA_CPP_BIN to a llama.cpp build to time it here)"
        ));
        return json!({"source": "none"});
    }
    out.line(
        "llama.cpp: not run here (LLAMA_CPP_BIN unset); recorded anchors from ANOTHER run, another machine state — indicative only:",
    );
    let rows: Vec<Value> = list
        .iter()
        .map(|&(tps, from)| {
            out.line(&format!(
                "  {tps:.0} tokens/s → wquant (load incl.) {:.2}× — {from}",
                ours / tps
            ));
            json!({"tokens_per_second": tps, "ratio": ours / tps, "from": from})
        })
        .collect();
    json!({"source": "recorded", "anchors": rows})
}

fn threads() -> String {
    rayon::current_num_threads().to_string()
}

/// llama-imatrix over the same chunks of the same text.
pub(super) fn imatrix_side(
    o: &BenchOptions,
    out: &Out,
    m: &BenchModel,
    n_chunk: usize,
    ours_with_load: f64,
    work: &Path,
) -> Result<Value> {
    let Some(dir) = &o.llama_cpp else {
        return Ok(anchors(
            out,
            &IMATRIX_ANCHORS,
            ours_with_load,
            m.demo && o.n_ctx == 512 && o.text.is_none(),
            "imatrix",
        ));
    };
    let Some(text) = &m.imatrix_text else {
        out.line("llama.cpp: not run (this model is fed random token ids; give --file TEXT)");
        return Ok(json!({"source": "not run"}));
    };
    let tools = Tools::find(dir)?;
    let mut cmd = Command::new(&tools.imatrix);
    cmd.arg("-m")
        .arg(&m.path)
        .arg("-f")
        .arg(text)
        .arg("-o")
        .arg(work.join("llama-imatrix.gguf"))
        .args(["-c", &o.n_ctx.to_string(), "-b", &o.batch.to_string()])
        .args(["--chunks", &n_chunk.to_string(), "-t", &threads()])
        .args(&o.llama_args);
    let secs = timed(&mut cmd, &work.join("llama-imatrix.log"))?;
    let tps = (n_chunk * o.n_ctx) as f64 / secs;
    out.line(&format!(
        "llama.cpp (this run): llama-imatrix {n_chunk} chunk(s) in {secs:.2} s = {tps:.1} tokens/s (load incl.); wquant/llama.cpp = **{:.2}×**",
        ours_with_load / tps
    ));
    Ok(json!({
        "source": "measured", "seconds": secs, "tokens_per_second": tps,
        "ratio": ours_with_load / tps, "args": o.llama_args,
    }))
}

/// llama-perplexity's base run (untimed) and its --kl-divergence run (timed) on the same chunks
/// and the same quantized file.
pub(super) fn kld_side(
    o: &BenchOptions,
    out: &Out,
    m: &BenchModel,
    quant: &Path,
    n_chunk: usize,
    ours_with_load: f64,
    work: &Path,
) -> Result<Value> {
    let Some(dir) = &o.llama_cpp else {
        return Ok(anchors(
            out,
            &KLD_ANCHORS,
            ours_with_load,
            m.demo && o.n_ctx == 512 && o.text.is_none(),
            "KLD",
        ));
    };
    let Some(text) = &m.kld_text else {
        out.line("llama.cpp: not run (this model is fed random token ids; give --file TEXT)");
        return Ok(json!({"source": "not run"}));
    };
    let tools = Tools::find(dir)?;
    let base = work.join("llama-base.kld");
    let mut cmd = Command::new(&tools.perplexity);
    cmd.arg("-m")
        .arg(&m.path)
        .arg("-f")
        .arg(text)
        .args(["-c", &o.n_ctx.to_string(), "-b", &o.batch.to_string()])
        .args(["--chunks", &n_chunk.to_string(), "-t", &threads()])
        .arg("--kl-divergence-base")
        .arg(&base)
        .args(&o.llama_args);
    timed(&mut cmd, &work.join("llama-perplexity-base.log"))?;
    let mut cmd = Command::new(&tools.perplexity);
    cmd.arg("-m")
        .arg(quant)
        .args(["-c", &o.n_ctx.to_string(), "-b", &o.batch.to_string()])
        .args(["-t", &threads()])
        .arg("--kl-divergence-base")
        .arg(&base)
        .arg("--kl-divergence")
        .args(&o.llama_args);
    let secs = timed(&mut cmd, &work.join("llama-perplexity-kld.log"))?;
    let _ = std::fs::remove_file(&base);
    let tps = (n_chunk * o.n_ctx) as f64 / secs;
    out.line(&format!(
        "llama.cpp (this run): llama-perplexity --kl-divergence {n_chunk} chunk(s) in {secs:.2} s = {tps:.1} tokens/s (load incl.); wquant/llama.cpp = **{:.2}×**",
        ours_with_load / tps
    ));
    Ok(json!({
        "source": "measured", "seconds": secs, "tokens_per_second": tps,
        "ratio": ours_with_load / tps, "args": o.llama_args,
    }))
}
