use wquant::gguf::{GgmlType, GgufFile};
use wquant::gpu_quantize::*;
use wquant::imatrix::file::Imatrix;
#[test]
fn dbg() {
    let g = GpuQuantizer::open("auto").unwrap();
    let dir = wquant::testutil::golden_dir().join("synth");
    let f = GgufFile::open(dir.join("synth-moe.gguf")).unwrap();
    let im = Imatrix::load(dir.join("synth-moe.imatrix.gguf")).unwrap();
    let t = f
        .tensors()
        .iter()
        .find(|t| t.name == "blk.1.ffn_gate_exps.weight")
        .unwrap()
        .clone();
    let n = t.n_elements() as usize;
    let x = wquant::quant::dequantize_to_vec(t.ggml_type, f.tensor_data(&t), n).unwrap();
    let ne0 = t.dims[0] as usize;
    let rpe = t.ne(1) as usize;
    let qw = im.importance(&t.name, 0.0).unwrap();
    println!("dims {:?} rpe {rpe}", t.dims);
    for e in 0..t.ne(2) as usize {
        let xs = &x[e * rpe * ne0..(e + 1) * rpe * ne0];
        let w = &qw[e * ne0..(e + 1) * ne0];
        let a = g.kernel_rows(GgmlType::Q4K, xs, ne0, Some(w)).unwrap();
        let b = cpu_quantize(GgmlType::Q4K, xs, ne0, Some(w)).unwrap();
        let (s, tot) = blocks_identical(GgmlType::Q4K, &a, &b);
        let wmax = w.iter().cloned().fold(0f32, f32::max);
        let wmin = w.iter().cloned().fold(f32::MAX, f32::min);
        println!("expert {e}: {s}/{tot} w {wmin}..{wmax}");
        if s != tot {
            let k = first_mismatch(GgmlType::Q4K, &a, &b).unwrap();
            println!(
                " gpu {:?}\n cpu {:?}\n x {:?}\n w {:?}",
                &a[144 * k..144 * k + 16],
                &b[144 * k..144 * k + 16],
                &xs[256 * k..256 * k + 256],
                &w[(256 * k) % ne0..(256 * k) % ne0 + 256]
            );
        }
    }
    panic!();
}
