//! Inputs that parse but are wrong, through every command that reads them, on the CPU and the GPU
//! (lavapipe without a hardware GPU). A tiny Llama model carrying SmolLM2's real tokenizer is
//! written, then mutated one fault at a time (dimensions, counts, shapes, missing tensors,
//! non-finite values, vocabularies, MoE counts, tensor names), alongside bad imatrix files, bad
//! texts and bad flags.
//!
//! Every run must end by itself within the time limit with exit code 0 or 1 (no panic, no abort,
//! no signal), leave no `NAME.tmp` behind, and either fail with a message naming the key, tensor,
//! or flag at fault (and no output file), or succeed without printing NaN or Inf as a result.
//! Where the input makes a result meaningless (the forward pass of a broken model, a NaN
//! importance), failing is required.

mod common;

use common::assets_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wquant::gguf::{write_gguf, GgmlType, GgufFile, TensorSpec, Value, ValueType};
use wquant::util::rng::Rng;

const N_EMBD: usize = 64;
const N_FF: usize = 128;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const N_LAYER: usize = 2;
const N_EXPERT: usize = 4;
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// A model as KVs and tensors, to be mutated and written.
#[derive(Clone)]
struct Model {
    kvs: Vec<(String, Value)>,
    tensors: Vec<(TensorSpec, Vec<u8>)>,
}

impl Model {
    fn set(&mut self, key: &str, v: Value) {
        match self.kvs.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = v,
            None => self.kvs.push((key.into(), v)),
        }
    }
    fn drop_tensor(&mut self, name: &str) {
        self.tensors.retain(|(s, _)| s.name != name);
    }
    fn tensor(&mut self, name: &str) -> &mut (TensorSpec, Vec<u8>) {
        self.tensors
            .iter_mut()
            .find(|(s, _)| s.name == name)
            .unwrap()
    }
    fn poke_f32(&mut self, name: &str, index: usize, v: f32) {
        let (_, d) = self.tensor(name);
        d[index * 4..index * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn write(&self, path: &Path) {
        write_gguf(path, &self.kvs, &self.tensors).unwrap();
    }
}

fn f32_tensor(
    rng: &mut Rng,
    name: &str,
    dims: &[usize],
    scale: f32,
    offset: f32,
) -> (TensorSpec, Vec<u8>) {
    let n: usize = dims.iter().product();
    let data = rng
        .vec(n, scale)
        .iter()
        .flat_map(|v| (v + offset).to_le_bytes())
        .collect();
    let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    (TensorSpec::new(name, &dims, GgmlType::F32), data)
}

/// 2 layers, n_embd 64, 4 heads / 2 KV heads, F32 random weights, SmolLM2's tokenizer keys and
/// vocabulary (49152 tokens); MoE with 4 experts (top 2) when `moe`.
fn tiny_model(moe: bool) -> Model {
    let smol = GgufFile::open(assets_dir().join("smollm2-135m-q4_1.gguf")).unwrap();
    let n_vocab = 49152;
    let u = |v: usize| Value::U32(v as u32);
    let mut kvs: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::str("llama")),
        ("general.name".into(), Value::str("corpus-tiny")),
        ("llama.block_count".into(), u(N_LAYER)),
        ("llama.context_length".into(), u(2048)),
        ("llama.embedding_length".into(), u(N_EMBD)),
        ("llama.feed_forward_length".into(), u(N_FF)),
        ("llama.attention.head_count".into(), u(N_HEAD)),
        ("llama.attention.head_count_kv".into(), u(N_HEAD_KV)),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.vocab_size".into(), u(n_vocab)),
        ("llama.rope.dimension_count".into(), u(N_EMBD / N_HEAD)),
    ];
    if moe {
        kvs.push(("llama.expert_count".into(), u(N_EXPERT)));
        kvs.push(("llama.expert_used_count".into(), u(2)));
    }
    kvs.extend(
        smol.kvs()
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer.") && k != "tokenizer.chat_template")
            .cloned(),
    );
    let mut rng = Rng::new(11);
    let kv = N_HEAD_KV * N_EMBD / N_HEAD;
    let w = 1.0 / (N_EMBD as f32).sqrt();
    let mut t = vec![
        f32_tensor(&mut rng, "token_embd.weight", &[N_EMBD, n_vocab], 0.1, 0.0),
        f32_tensor(&mut rng, "output_norm.weight", &[N_EMBD], 0.1, 1.0),
    ];
    for il in 0..N_LAYER {
        let n = |s: &str| format!("blk.{il}.{s}.weight");
        t.push(f32_tensor(&mut rng, &n("attn_norm"), &[N_EMBD], 0.1, 1.0));
        t.push(f32_tensor(
            &mut rng,
            &n("attn_q"),
            &[N_EMBD, N_EMBD],
            w,
            0.0,
        ));
        t.push(f32_tensor(&mut rng, &n("attn_k"), &[N_EMBD, kv], w, 0.0));
        t.push(f32_tensor(&mut rng, &n("attn_v"), &[N_EMBD, kv], w, 0.0));
        t.push(f32_tensor(
            &mut rng,
            &n("attn_output"),
            &[N_EMBD, N_EMBD],
            w,
            0.0,
        ));
        t.push(f32_tensor(&mut rng, &n("ffn_norm"), &[N_EMBD], 0.1, 1.0));
        if moe {
            t.push(f32_tensor(
                &mut rng,
                &n("ffn_gate_inp"),
                &[N_EMBD, N_EXPERT],
                w,
                0.0,
            ));
            t.push(f32_tensor(
                &mut rng,
                &n("ffn_gate_exps"),
                &[N_EMBD, N_FF, N_EXPERT],
                w,
                0.0,
            ));
            t.push(f32_tensor(
                &mut rng,
                &n("ffn_up_exps"),
                &[N_EMBD, N_FF, N_EXPERT],
                w,
                0.0,
            ));
            let wd = 1.0 / (N_FF as f32).sqrt();
            t.push(f32_tensor(
                &mut rng,
                &n("ffn_down_exps"),
                &[N_FF, N_EMBD, N_EXPERT],
                wd,
                0.0,
            ));
        } else {
            t.push(f32_tensor(
                &mut rng,
                &n("ffn_gate"),
                &[N_EMBD, N_FF],
                w,
                0.0,
            ));
            t.push(f32_tensor(&mut rng, &n("ffn_up"), &[N_EMBD, N_FF], w, 0.0));
            let wd = 1.0 / (N_FF as f32).sqrt();
            t.push(f32_tensor(
                &mut rng,
                &n("ffn_down"),
                &[N_FF, N_EMBD],
                wd,
                0.0,
            ));
        }
    }
    Model { kvs, tensors: t }
}

/// How a command must end for a case.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Must fail, naming one of the needles.
    Fail,
    /// May succeed (with sound output) or fail naming one of the needles.
    Either,
}

struct Outcome {
    problems: Vec<String>,
    runs: usize,
}

/// Run `args` (output file `out`, if any) and check the rules in the module comment.
fn check(
    o: &mut Outcome,
    case: &str,
    args: &[String],
    out: Option<&Path>,
    expect: Expect,
    needles: &[&str],
) {
    o.runs += 1;
    let what = format!("[{case}] wquant {}", args.join(" "));
    let mut child = Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut so, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut se, &mut s).ok();
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (t_out.join().unwrap(), t_err.join().unwrap());
    let Some(status) = status else {
        o.problems
            .push(format!("{what}: still running after {TIME_LIMIT:?} (hang)"));
        return;
    };
    if stderr.contains("panicked") {
        o.problems.push(format!("{what}: panicked:\n{stderr}"));
        return;
    }
    match status.code() {
        Some(0) | Some(1) => {}
        c => {
            o.problems
                .push(format!("{what}: exit {c:?} (signal or abort):\n{stderr}"));
            return;
        }
    }
    if let Some(p) = out {
        let tmp = PathBuf::from(format!("{}.tmp", p.display()));
        if tmp.exists() {
            o.problems
                .push(format!("{what}: left {} behind", tmp.display()));
        }
    }
    if status.success() {
        if expect == Expect::Fail {
            o.problems
                .push(format!("{what}: succeeded, must fail; stdout:\n{stdout}"));
            return;
        }
        // `inspect` prints the file's own values, not results.
        let lower = if args.first().is_some_and(|a| a == "inspect") {
            String::new()
        } else {
            stdout.to_lowercase()
        };
        for bad in ["nan", "inf"] {
            let printed = lower
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                .any(|w| w.trim_start_matches('-') == bad);
            if printed {
                o.problems
                    .push(format!("{what}: succeeded printing {bad}:\n{stdout}"));
            }
        }
    } else {
        if !needles.iter().any(|n| stderr.contains(n)) {
            o.problems.push(format!(
                "{what}: error does not name any of {needles:?}:\n{stderr}"
            ));
        }
        if let Some(p) = out {
            if p.exists() {
                o.problems
                    .push(format!("{what}: failed but wrote {}", p.display()));
            }
        }
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Paths and the shared arguments of the compute commands.
struct Ctx {
    dir: PathBuf,
    text: String,
    good: String,
}

impl Ctx {
    fn out(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A bad model through every command that reads a model: inspect, convert, quantize, and the
/// forward pass (imatrix, perplexity, kld as base and as quantized model) on the CPU, and imatrix
/// and kld on the GPU. `compute` says whether the forward pass must refuse it.
#[allow(clippy::too_many_arguments)]
fn model_case(
    o: &mut Outcome,
    c: &Ctx,
    name: &str,
    path: &Path,
    compute: Expect,
    quantize: Expect,
    needles: &[&str],
    good: &str,
) {
    let p = path.to_str().unwrap().to_string();
    let t = &c.text;
    check(o, name, &s(&["inspect", &p]), None, Expect::Either, needles);
    let out = c.out(&format!("{name}-conv.gguf"));
    check(
        o,
        name,
        &s(&["convert", &p, out.to_str().unwrap(), "--type", "F16"]),
        Some(&out),
        Expect::Either,
        needles,
    );
    let out = c.out(&format!("{name}-q8.gguf"));
    check(
        o,
        name,
        &s(&["quantize", &p, out.to_str().unwrap(), "Q8_0"]),
        Some(&out),
        quantize,
        needles,
    );
    let out = c.out(&format!("{name}-imatrix.gguf"));
    let run = ["-c", "32", "--chunks", "1"];
    for dev in ["cpu", "gpu"] {
        let mut a = s(&[
            "--device",
            dev,
            "imatrix",
            "-m",
            &p,
            "-f",
            t,
            "-o",
            out.to_str().unwrap(),
        ]);
        a.extend(s(&run));
        check(o, name, &a, Some(&out), compute, needles);
        let mut a = s(&[
            "--device",
            dev,
            "kld",
            "--base-model",
            &p,
            "-m",
            good,
            "-f",
            t,
        ]);
        a.extend(s(&run));
        check(o, name, &a, None, compute, needles);
    }
    let mut a = s(&["--device", "cpu", "perplexity", "-m", &p, "-f", t]);
    a.extend(s(&run));
    check(o, name, &a, None, compute, needles);
    let mut a = s(&[
        "--device",
        "cpu",
        "kld",
        "--base-model",
        good,
        "-m",
        &p,
        "-f",
        t,
    ]);
    a.extend(s(&run));
    check(o, name, &a, None, compute, needles);
}

#[test]
fn inputs_that_parse_but_are_wrong_through_every_command() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let mut o = Outcome {
        problems: Vec::new(),
        runs: 0,
    };
    let base = tiny_model(false);
    let good = dir.join("good.gguf");
    base.write(&good);
    let moe = tiny_model(true);
    let good_moe = dir.join("good-moe.gguf");
    moe.write(&good_moe);
    let c = Ctx {
        dir: dir.to_path_buf(),
        text: assets_dir().join("calib.txt").to_str().unwrap().to_string(),
        good: good.to_str().unwrap().to_string(),
    };

    use Expect::*;
    type Mutation = Box<dyn Fn(&mut Model)>;
    let kv = |k: &'static str, v: Value| -> Mutation {
        Box::new(move |m: &mut Model| m.set(k, v.clone()))
    };
    let strings =
        |v: &[&str]| Value::Array(ValueType::String, v.iter().map(|x| Value::str(x)).collect());
    // (name, MoE base, mutation, forward pass, quantize, what the error must name)
    type Case = (
        &'static str,
        bool,
        Mutation,
        Expect,
        Expect,
        &'static [&'static str],
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("n_embd-0", false, kv("llama.embedding_length", Value::U32(0)), Fail, Either, &["embedding_length"]),
        ("heads-0", false, kv("llama.attention.head_count", Value::U32(0)), Fail, Either, &["head_count"]),
        ("heads-not-dividing", false, kv("llama.attention.head_count", Value::U32(5)), Fail, Either, &["head_count"]),
        ("kv-heads-not-dividing", false, kv("llama.attention.head_count_kv", Value::U32(3)), Fail, Either, &["head_count_kv"]),
        ("layers-2^31", false, kv("llama.block_count", Value::U32(1 << 31)), Fail, Either, &["block_count"]),
        ("rope-dims-over-head", false, kv("llama.rope.dimension_count", Value::U32(64)), Fail, Either, &["dimension_count"]),
        ("context-0", false, kv("llama.context_length", Value::U32(0)), Fail, Either, &["context_length"]),
        ("eps-nan", false, kv("llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN)), Fail, Either, &["layer_norm_rms_epsilon"]),
        ("eps-negative", false, kv("llama.attention.layer_norm_rms_epsilon", Value::F32(-1.0)), Fail, Either, &["layer_norm_rms_epsilon"]),
        ("rope-base-inf", false, kv("llama.rope.freq_base", Value::F32(f32::INFINITY)), Fail, Either, &["freq_base"]),
        ("bos-out-of-range", false, kv("tokenizer.ggml.bos_token_id", Value::U32(1_000_000)), Fail, Either, &["bos_token_id"]),
        ("empty-vocab", false, Box::new(move |m: &mut Model| {
            m.set("tokenizer.ggml.tokens", strings(&[]));
            m.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, vec![]));
        }), Fail, Either, &["tokenizer.ggml.tokens"]),
        ("one-token-vocab", false, Box::new(move |m: &mut Model| {
            m.set("tokenizer.ggml.tokens", strings(&["a"]));
            m.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, vec![Value::I32(1)]));
            m.set("tokenizer.ggml.merges", strings(&[]));
        }), Fail, Either, &["tokenizer.ggml.tokens"]),
        ("bad-merges", false, kv("tokenizer.ggml.merges", strings(&["zzzqqq yyyqqq"])), Fail, Either, &["tokenizer.ggml.merges"]),
        ("shape-mismatch", false, Box::new(|m: &mut Model| {
            let (spec, _) = m.tensor("blk.0.attn_k.weight");
            spec.dims = vec![(N_HEAD_KV * N_EMBD / N_HEAD) as u64, N_EMBD as u64];
        }), Fail, Either, &["blk.0.attn_k.weight"]),
        ("missing-layer-tensor", false, Box::new(|m: &mut Model| m.drop_tensor("blk.1.ffn_up.weight")), Fail, Either, &["blk.1.ffn_up.weight"]),
        ("missing-norm", false, Box::new(|m: &mut Model| m.drop_tensor("output_norm.weight")), Fail, Either, &["output_norm.weight"]),
        ("nan-weight", false, Box::new(|m: &mut Model| m.poke_f32("blk.0.attn_q.weight", 5, f32::NAN)), Fail, Fail, &["blk.0"]),
        ("inf-norm", false, Box::new(|m: &mut Model| m.poke_f32("output_norm.weight", 0, f32::INFINITY)), Fail, Either, &["output_norm.weight"]),
        ("ne0-zero-tensor", false, Box::new(|m: &mut Model| {
            m.tensors.push((TensorSpec::new("blk.0.extra.weight", &[0, 64], GgmlType::F32), vec![]));
        }), Either, Either, &["blk.0.extra.weight"]),
        ("moe-used-over-count", true, kv("llama.expert_used_count", Value::U32(5)), Fail, Either, &["expert_used_count"]),
        ("moe-used-0", true, kv("llama.expert_used_count", Value::U32(0)), Fail, Either, &["expert_used_count"]),
    ];
    for (name, is_moe, mutate, compute, quantize, needles) in &cases {
        let mut m = if *is_moe { moe.clone() } else { base.clone() };
        mutate(&mut m);
        let path = dir.join(format!("{name}.gguf"));
        m.write(&path);
        let g = if *is_moe { &good_moe } else { &good };
        model_case(
            &mut o,
            &c,
            name,
            &path,
            *compute,
            *quantize,
            needles,
            g.to_str().unwrap(),
        );
    }

    // A tensor name holding a NUL byte (same length, so the file stays well-formed): refused
    // by the reader, so by every command.
    let nul = dir.join("nul-name.gguf");
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes
        .windows(19)
        .position(|w| w == b"blk.0.attn_q.weight")
        .unwrap();
    bytes[at + 12] = 0;
    std::fs::write(&nul, bytes).unwrap();
    model_case(&mut o, &c, "nul-name", &nul, Fail, Fail, &["NUL"], &c.good);

    let counted = (o.runs, cases.len() + 1);
    run_cases(&mut o, &c);
    text_cases(&mut o, &c);
    flag_cases(&mut o, &c);
    imatrix_cases(&mut o, &c);
    println!(
        "{} runs ({} of them over {} bad models), {} problems",
        o.runs,
        counted.0,
        counted.1,
        o.problems.len()
    );
    assert!(
        o.problems.is_empty(),
        "{} problems:\n{}",
        o.problems.len(),
        o.problems.join("\n\n")
    );
}

/// `wquant run` (the whole pipeline) on a broken model, and with a text that is not text.
fn run_cases(o: &mut Outcome, c: &Ctx) {
    let binary = c.out("run-binary.txt");
    std::fs::write(&binary, [0u8, 159, 146, 150, 0, 1, 2]).unwrap();
    let nan_model = c.out("nan-weight.gguf");
    let n_embd_0 = c.out("n_embd-0.gguf");
    #[rustfmt::skip]
    let runs: [(&str, &Path, &str, &[&str]); 3] = [
        ("run-nan-weight", &nan_model, c.text.as_str(), &["blk.0"]),
        ("run-n_embd-0", &n_embd_0, c.text.as_str(), &["embedding_length"]),
        ("run-binary-text", Path::new(&c.good), binary.to_str().unwrap(), &["run-binary.txt"]),
    ];
    for (name, model, calib, needles) in runs {
        let dir = c.out(name);
        let args = s(&[
            "-q",
            "--device",
            "cpu",
            "run",
            model.to_str().unwrap(),
            "--calib",
            calib,
            "--eval",
            calib,
            "--types",
            "Q8_0",
            "-c",
            "32",
            "--imatrix-chunks",
            "1",
            "--kld-chunks",
            "1",
            "-o",
            dir.to_str().unwrap(),
        ]);
        check(
            o,
            name,
            &args,
            Some(&dir.join("report.md")),
            Expect::Fail,
            needles,
        );
    }
}

/// Texts that are empty, binary or shorter than one chunk, through every command that reads text.
fn text_cases(o: &mut Outcome, c: &Ctx) {
    let mut rng = Rng::new(5);
    let binary: Vec<u8> = (0..4096).map(|_| (rng.next_u64() >> 56) as u8).collect();
    let texts: [(&str, Vec<u8>); 3] = [
        ("empty.txt", vec![]),
        ("binary.txt", binary),
        ("short.txt", b"Only a few words here.".to_vec()),
    ];
    for (name, bytes) in texts {
        let p = c.out(name);
        std::fs::write(&p, bytes).unwrap();
        let t = p.to_str().unwrap().to_string();
        let out = c.out("text-imatrix.gguf");
        let g = &c.good;
        check(
            o,
            name,
            &s(&[
                "--device",
                "cpu",
                "imatrix",
                "-m",
                g,
                "-f",
                &t,
                "-c",
                "32",
                "-o",
                out.to_str().unwrap(),
            ]),
            Some(&out),
            Expect::Fail,
            &[name],
        );
        check(
            o,
            name,
            &s(&[
                "--device",
                "cpu",
                "perplexity",
                "-m",
                g,
                "-f",
                &t,
                "-c",
                "32",
            ]),
            None,
            Expect::Fail,
            &[name],
        );
        check(
            o,
            name,
            &s(&[
                "--device",
                "cpu",
                "kld",
                "--base-model",
                g,
                "-m",
                g,
                "-f",
                &t,
                "-c",
                "32",
            ]),
            None,
            Expect::Fail,
            &[name],
        );
    }
}

/// Flags out of range or inconsistent.
fn flag_cases(o: &mut Outcome, c: &Ctx) {
    let (g, t) = (c.good.as_str(), c.text.as_str());
    let im = c.out("flag-imatrix.gguf");
    let imo = im.to_str().unwrap();
    let q = c.out("flag-q.gguf");
    let qo = q.to_str().unwrap();
    type Run<'a> = (
        &'static str,
        Vec<&'a str>,
        Option<&'a Path>,
        &'static [&'static str],
    );
    #[rustfmt::skip]
    let runs: Vec<Run> = vec![
        ("chunks-0", vec!["--device", "cpu", "perplexity", "-m", g, "-f", t, "-c", "32", "--chunks", "0"], None, &["--chunks"]),
        ("imatrix-chunks-0", vec!["--device", "cpu", "imatrix", "-m", g, "-f", t, "-c", "32", "--chunks", "0", "-o", imo], Some(&im), &["--chunks"]),
        ("ctx-0", vec!["--device", "cpu", "imatrix", "-m", g, "-f", t, "-c", "0", "-o", imo], Some(&im), &["-c"]),
        ("ctx-1", vec!["--device", "cpu", "perplexity", "-m", g, "-f", t, "-c", "1"], None, &["-c"]),
        ("kld-ctx-0", vec!["--device", "cpu", "kld", "--base-model", g, "-m", g, "-f", t, "-c", "0"], None, &["-c"]),
        ("batch-0", vec!["--device", "cpu", "imatrix", "-m", g, "-f", t, "-c", "32", "-b", "0", "-o", imo], Some(&im), &["-b"]),
        ("ppl-batch-0", vec!["--device", "cpu", "perplexity", "-m", g, "-f", t, "-c", "32", "-b", "0"], None, &["-b"]),
        ("huge-chunk", vec!["--device", "cpu", "imatrix", "-m", g, "-f", t, "-c", "32", "--chunk", "18446744073709551615", "-o", imo], Some(&im), &["--chunk"]),
        ("threads-0", vec!["--threads", "0", "--device", "cpu", "perplexity", "-m", g, "-f", t, "-c", "32", "--chunks", "1"], None, &["--threads"]),
        ("unknown-type", vec!["quantize", g, qo, "Q9_9"], Some(&q), &["Q9_9"]),
        ("unknown-tensor-type", vec!["quantize", "--tensor-type", "attn_q=Q9_9", g, qo, "Q8_0"], Some(&q), &["Q9_9"]),
        ("vram-budget-1KiB", vec!["--device", "gpu", "--vram-budget", "1KiB", "imatrix", "-m", g, "-f", t, "-c", "32", "--chunks", "1", "-o", imo], Some(&im), &["--vram-budget", "budget"]),
        ("vram-budget-lots", vec!["--device", "gpu", "--vram-budget", "lots", "imatrix", "-m", g, "-f", t, "-c", "32", "--chunks", "1", "-o", imo], Some(&im), &["--vram-budget"]),
        ("same-path-quantize", vec!["quantize", g, g, "Q8_0"], None, &["same"]),
        ("same-path-convert", vec!["convert", g, g, "--type", "F16"], None, &["same"]),
        ("unknown-device", vec!["--device", "tpu", "perplexity", "-m", g, "-f", t, "-c", "32"], None, &["--device", "tpu"]),
    ];
    for (name, args, out, needles) in runs {
        // Each case writes to its own output name, so one case's output cannot be taken for
        // another's.
        let own = out.map(|_| c.out(&format!("{name}.out.gguf")));
        let args: Vec<String> = args
            .iter()
            .map(|a| match (&own, Some(Path::new(a)) == out) {
                (Some(p), true) => p.to_str().unwrap().to_string(),
                _ => a.to_string(),
            })
            .collect();
        check(o, name, &args, own.as_deref(), Expect::Fail, needles);
    }
    // The input must be untouched by the same-path attempts.
    assert!(GgufFile::open(g).is_ok(), "same-path runs damaged {g}");
}

/// Bad imatrix files through quantize, stats and the merge/convert path.
fn imatrix_cases(o: &mut Outcome, c: &Ctx) {
    let (g, t) = (c.good.as_str(), c.text.as_str());
    let good_im = c.out("good.imatrix.gguf");
    check(
        o,
        "good-imatrix",
        &s(&[
            "-q",
            "--device",
            "cpu",
            "imatrix",
            "-m",
            g,
            "-f",
            t,
            "-c",
            "32",
            "--chunks",
            "2",
            "-o",
            good_im.to_str().unwrap(),
        ]),
        Some(&good_im),
        Expect::Either,
        &[],
    );
    let f = GgufFile::open(&good_im).unwrap();
    let base = Model {
        kvs: f.kvs().to_vec(),
        tensors: f
            .tensors()
            .iter()
            .map(|t| {
                (
                    TensorSpec::new(t.name.clone(), &t.dims, t.ggml_type),
                    f.tensor_data(t).to_vec(),
                )
            })
            .collect(),
    };
    let e = "blk.0.attn_q.weight";
    let sum2 = "blk.0.attn_q.weight.in_sum2";
    let counts = "blk.0.attn_q.weight.counts";
    type Mutation = Box<dyn Fn(&mut Model)>;
    #[rustfmt::skip]
    let cases: Vec<(&str, Mutation, Expect)> = vec![
        ("im-nan", Box::new(move |m: &mut Model| m.poke_f32(sum2, 3, f32::NAN)), Expect::Fail),
        ("im-inf", Box::new(move |m: &mut Model| m.poke_f32(sum2, 3, f32::INFINITY)), Expect::Fail),
        ("im-negative-sum", Box::new(move |m: &mut Model| m.poke_f32(sum2, 3, -1.0)), Expect::Fail),
        ("im-negative-count", Box::new(move |m: &mut Model| m.poke_f32(counts, 0, -64.0)), Expect::Fail),
        ("im-wrong-width", Box::new(move |m: &mut Model| {
            let (spec, data) = m.tensor(sum2);
            spec.dims = vec![32, 1];
            data.truncate(32 * 4);
            if let Some((spec, data)) = m.tensors.iter_mut().find(|(s, _)| s.name == format!("{e}.in_sum")) {
                spec.dims = vec![32, 1];
                data.truncate(32 * 4);
            }
        }), Expect::Either),
    ];
    let q = c.out("im-q.gguf");
    for (name, mutate, merge) in &cases {
        let mut m = base.clone();
        mutate(&mut m);
        let p = c.out(&format!("{name}.gguf"));
        m.write(&p);
        let ps = p.to_str().unwrap();
        check(
            o,
            name,
            &s(&[
                "quantize",
                "--pure",
                "--imatrix",
                ps,
                g,
                q.to_str().unwrap(),
                "Q4_0",
            ]),
            Some(&q),
            Expect::Fail,
            &[e],
        );
        check(o, name, &s(&["stats", ps]), None, *merge, &[e]);
        let out = c.out(&format!("{name}-merged.gguf"));
        check(
            o,
            name,
            &s(&["imatrix", "--in-file", ps, "-o", out.to_str().unwrap()]),
            Some(&out),
            *merge,
            &[e],
        );
        let out = c.out(&format!("{name}-merged2.gguf"));
        check(
            o,
            name,
            &s(&[
                "imatrix",
                "--in-file",
                good_im.to_str().unwrap(),
                "--in-file",
                ps,
                "-c",
                "32",
                "-o",
                out.to_str().unwrap(),
            ]),
            Some(&out),
            Expect::Fail,
            &[e],
        );
    }
    // Another model's imatrix (SmolLM2's, same tensor names, width 576 instead of 64), and an
    // empty file.
    let other = common::golden_dir().join("imatrix.gguf");
    let o_s = other.to_str().unwrap();
    check(
        o,
        "im-other-model",
        &s(&[
            "quantize",
            "--pure",
            "--imatrix",
            o_s,
            g,
            q.to_str().unwrap(),
            "Q4_0",
        ]),
        Some(&q),
        Expect::Fail,
        &["576"],
    );
    let out = c.out("other-merged.gguf");
    check(
        o,
        "im-other-model",
        &s(&[
            "imatrix",
            "--in-file",
            good_im.to_str().unwrap(),
            "--in-file",
            o_s,
            "-c",
            "32",
            "-o",
            out.to_str().unwrap(),
        ]),
        Some(&out),
        Expect::Fail,
        &["576"],
    );
    let empty = c.out("empty.imatrix");
    std::fs::write(&empty, b"").unwrap();
    let es = empty.to_str().unwrap();
    check(
        o,
        "im-empty",
        &s(&[
            "quantize",
            "--pure",
            "--imatrix",
            es,
            g,
            q.to_str().unwrap(),
            "Q4_0",
        ]),
        Some(&q),
        Expect::Fail,
        &["empty.imatrix"],
    );
    check(
        o,
        "im-empty",
        &s(&["stats", es]),
        None,
        Expect::Fail,
        &["empty.imatrix"],
    );
}

/// A model compared with itself: KLD 0 and a complete summary, no NaN (`-nan` uncertainties),
/// and `--json` with a summary.
#[test]
fn a_model_compared_with_itself_gives_a_complete_zero_summary() {
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good.gguf");
    tiny_model(false).write(&good);
    let g = good.to_str().unwrap();
    let t = assets_dir().join("calib.txt");
    let t = t.to_str().unwrap();
    let args = s(&[
        "--device",
        "cpu",
        "kld",
        "--base-model",
        g,
        "-m",
        g,
        "-f",
        t,
        "-c",
        "128",
        "--chunks",
        "2",
    ]);
    let mut o = Outcome {
        problems: Vec::new(),
        runs: 0,
    };
    check(&mut o, "self", &args, None, Expect::Either, &[]);
    assert!(o.problems.is_empty(), "{}", o.problems.join("\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_wquant"))
        .args(&args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let summary = &j["summary"];
    assert!(summary.is_object(), "summary: {summary}");
    // Every number in the summary is finite and the KLD figures are exactly 0.
    fn walk(v: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .for_each(|(k, x)| walk(x, &format!("{path}.{k}"), bad)),
            serde_json::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(x, &format!("{path}[{i}]"), bad)),
            serde_json::Value::Null => bad.push(format!("{path} is null")),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(summary, "summary", &mut bad);
    assert!(bad.is_empty(), "{bad:?}\n{summary}");
    // The same logits on both sides: the same top token everywhere, the same perplexity, and a
    // KL divergence of 0 up to the rounding of Σ p·(log p − log q) with equal logs.
    assert_eq!(summary["same_top"].as_f64(), Some(1.0), "{summary}");
    assert_eq!(summary["ppl"], summary["ppl_base"], "{summary}");
    assert!(
        summary["kld"]["mean"].as_f64().unwrap().abs() < 1e-9,
        "{summary}"
    );
}
