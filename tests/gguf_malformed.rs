//! A malformed-GGUF corpus built here from a small valid file: every case must give an error
//! naming the file (and the key or tensor where there is one), never panic, and never make an
//! allocation sized by an unchecked header field (a counting allocator checks the largest one).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use wquant::gguf::GgufFile;

/// Records the largest single allocation made by the current thread.
struct MaxAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(l.size())));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(n)));
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: MaxAlloc = MaxAlloc;

#[derive(Clone)]
struct Kv {
    key: Vec<u8>,
    key_len: Option<u64>,
    type_id: u32,
    payload: Vec<u8>,
}

#[derive(Clone)]
struct Ti {
    name: Vec<u8>,
    n_dims: Option<u32>,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

/// A GGUF described field by field, so each case can break exactly one field.
#[derive(Clone)]
struct G {
    magic: [u8; 4],
    version: u32,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
    kvs: Vec<Kv>,
    tis: Vec<Ti>,
    data: Vec<u8>,
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn kv(key: &str, type_id: u32, payload: Vec<u8>) -> Kv {
    Kv {
        key: key.as_bytes().to_vec(),
        key_len: None,
        type_id,
        payload,
    }
}

fn array(elem: u32, n: u64, items: &[u8]) -> Vec<u8> {
    let mut v = elem.to_le_bytes().to_vec();
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(items);
    v
}

fn ti(name: &str, dims: &[u64], type_id: u32, offset: u64) -> Ti {
    Ti {
        name: name.as_bytes().to_vec(),
        n_dims: None,
        dims: dims.to_vec(),
        type_id,
        offset,
    }
}

impl G {
    fn valid() -> G {
        let strs: Vec<u8> = [&b"x"[..], b"yy", b"zzz"]
            .iter()
            .flat_map(|s| string(s))
            .collect();
        let ints: Vec<u8> = [1i32, -2, 3, 4]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect();
        G {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kvs: vec![
                kv("general.architecture", 8, string(b"llama")),
                kv("test.u32", 4, 7u32.to_le_bytes().to_vec()),
                kv("general.alignment", 4, 32u32.to_le_bytes().to_vec()),
                kv("test.strings", 9, array(8, 3, &strs)),
                kv("test.ints", 9, array(5, 4, &ints)),
                kv("test.flag", 7, vec![1]),
            ],
            tis: vec![
                ti("a.weight", &[4, 2], 0, 0),   // F32, 32 bytes
                ti("b.weight", &[32, 2], 8, 32), // Q8_0, 68 bytes
                ti("c.weight", &[8], 1, 128),    // F16, 16 bytes
            ],
            data: (0..144u32).map(|i| (i * 7 % 251) as u8).collect(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = self.magic.to_vec();
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(
            &self
                .n_tensors
                .unwrap_or(self.tis.len() as u64)
                .to_le_bytes(),
        );
        v.extend_from_slice(&self.n_kv.unwrap_or(self.kvs.len() as u64).to_le_bytes());
        for k in &self.kvs {
            v.extend_from_slice(&k.key_len.unwrap_or(k.key.len() as u64).to_le_bytes());
            v.extend_from_slice(&k.key);
            v.extend_from_slice(&k.type_id.to_le_bytes());
            v.extend_from_slice(&k.payload);
        }
        for t in &self.tis {
            v.extend_from_slice(&string(&t.name));
            v.extend_from_slice(&t.n_dims.unwrap_or(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                v.extend_from_slice(&d.to_le_bytes());
            }
            v.extend_from_slice(&t.type_id.to_le_bytes());
            v.extend_from_slice(&t.offset.to_le_bytes());
        }
        v.resize(v.len().div_ceil(32) * 32, 0);
        v.extend_from_slice(&self.data);
        v
    }
}

/// Parse `bytes` as `NAME.gguf`; it must fail with a message naming the file and containing
/// every one of `needles`, and allocate nothing much larger than the file.
fn expect_err(name: &str, bytes: Vec<u8>, needles: &[&str]) {
    let path = format!("/corpus/{name}.gguf");
    let len = bytes.len();
    LARGEST.with(|m| m.set(0));
    let res = GgufFile::from_vec(&path, bytes);
    let largest = LARGEST.with(|m| m.get());
    let err = match res {
        Ok(_) => panic!("case {name}: malformed file was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&path),
        "case {name}: error does not name the file: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "case {name}: error lacks {n:?}: {err}");
    }
    // Parsed items may take a few times their encoded size (a Value is 32 bytes), never more.
    assert!(
        largest <= 64 * len + 4096,
        "case {name}: largest allocation {largest} bytes for a {len}-byte file"
    );
}

#[test]
fn valid_corpus_base_parses() {
    let bytes = G::valid().encode();
    let f = GgufFile::from_vec("/corpus/valid.gguf", bytes).unwrap();
    assert_eq!(f.kvs().len(), 6);
    assert_eq!(f.tensors().len(), 3);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.tensor_data(f.tensor("c.weight").unwrap()).len(), 16);
}

#[test]
fn every_truncation_is_an_error() {
    let full = G::valid().encode();
    for cut in 0..full.len() {
        expect_err(&format!("trunc{cut}"), full[..cut].to_vec(), &[]);
    }
    // Inside the data section the error names the tensor whose data is cut.
    expect_err(
        "trunc-data",
        full[..full.len() - 1].to_vec(),
        &["tensor c.weight"],
    );
}

#[test]
fn header_fields() {
    let mut g = G::valid();
    g.magic = *b"GGUG";
    expect_err("magic", g.encode(), &["bad magic"]);
    for v in [0u32, 1, 99] {
        let mut g = G::valid();
        g.version = v;
        expect_err(
            &format!("version{v}"),
            g.encode(),
            &[&format!("version {v}")],
        );
    }
    let mut g = G::valid();
    g.n_tensors = Some(1 << 60);
    expect_err("ntensors", g.encode(), &["tensor count"]);
    let mut g = G::valid();
    g.n_kv = Some(1 << 60);
    expect_err("nkv", g.encode(), &["KV count"]);
    let mut g = G::valid();
    g.n_kv = Some(u64::MAX);
    expect_err("nkv-max", g.encode(), &["KV count"]);
    // More KVs declared than present: the first tensor name is read as a key and fails.
    let mut g = G::valid();
    g.n_kv = Some(7);
    expect_err("nkv-plus1", g.encode(), &[]);
}

#[test]
fn kv_fields() {
    let mut g = G::valid();
    g.kvs[1].key_len = Some(1 << 40);
    expect_err("keylen", g.encode(), &["key of KV #1", "truncated"]);
    let mut g = G::valid();
    g.kvs[0].payload = {
        let mut p = (1u64 << 62).to_le_bytes().to_vec();
        p.extend_from_slice(b"llama");
        p
    };
    expect_err("strlen", g.encode(), &["key general.architecture"]);
    let mut g = G::valid();
    g.kvs[3].payload = array(8, 1 << 60, &[]);
    expect_err("arrlen", g.encode(), &["key test.strings"]);
    let mut g = G::valid();
    let mut items = string(b"x");
    items.extend_from_slice(&(1u64 << 50).to_le_bytes());
    items.extend_from_slice(b"yy");
    items.extend_from_slice(&string(b"zzz"));
    g.kvs[3].payload = array(8, 3, &items);
    expect_err("arr-item-len", g.encode(), &["key test.strings"]);
    let mut g = G::valid();
    g.kvs[4].payload = array(5, u64::MAX, &[]);
    expect_err("arrlen-max", g.encode(), &["key test.ints"]);
    let mut g = G::valid();
    g.kvs[3].payload = array(9, 1, &array(5, 1, &1i32.to_le_bytes()));
    expect_err("nested", g.encode(), &["key test.strings", "nested arrays"]);
    let mut g = G::valid();
    g.kvs[1].type_id = 13;
    expect_err(
        "kvtype",
        g.encode(),
        &["key test.u32", "unknown value type 13"],
    );
    let mut g = G::valid();
    g.kvs[4].payload = array(77, 0, &[]);
    expect_err(
        "elemtype",
        g.encode(),
        &["key test.ints", "element type 77"],
    );
    let mut g = G::valid();
    g.kvs[5].payload = vec![2];
    expect_err("bool", g.encode(), &["key test.flag"]);
    let mut g = G::valid();
    g.kvs[1].key = b"general.architecture".to_vec();
    expect_err(
        "dupkey",
        g.encode(),
        &["duplicate key general.architecture"],
    );
    let mut g = G::valid();
    g.kvs[1].key = vec![0xff, 0xfe];
    expect_err("utf8key", g.encode(), &["KV #1", "UTF-8"]);
    for (i, (t, p)) in [
        (4u32, 0u32.to_le_bytes().to_vec()),
        (4, 48u32.to_le_bytes().to_vec()),
        (10, 32u64.to_le_bytes().to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = G::valid();
        g.kvs[2].type_id = t;
        g.kvs[2].payload = p;
        expect_err(&format!("align{i}"), g.encode(), &["general.alignment"]);
    }
}

#[test]
fn tensor_fields() {
    let mut g = G::valid();
    g.tis[1].name = vec![0x80];
    expect_err("utf8name", g.encode(), &["tensor #1", "UTF-8"]);
    let mut g = G::valid();
    g.tis[1].name = vec![b'n'; 64];
    expect_err("longname", g.encode(), &["longer than 63"]);
    let mut g = G::valid();
    g.tis[2].name = b"a.weight".to_vec();
    expect_err("dupname", g.encode(), &["duplicate tensor name a.weight"]);
    let mut g = G::valid();
    g.tis[0].n_dims = Some(5);
    expect_err("ndims", g.encode(), &["tensor a.weight", "5 dimensions"]);
    let mut g = G::valid();
    g.tis[0].n_dims = Some(u32::MAX);
    expect_err("ndims-max", g.encode(), &["tensor a.weight"]);
    let mut g = G::valid();
    g.tis[0].dims = vec![1 << 32, 1 << 32];
    expect_err("overflow", g.encode(), &["tensor a.weight", "overflow"]);
    let mut g = G::valid();
    g.tis[0].dims = vec![4, 1 << 61, 4];
    expect_err("overflow-i64", g.encode(), &["tensor a.weight", "overflow"]);
    let mut g = G::valid();
    g.tis[0].dims = vec![4, u64::MAX];
    expect_err("negdim", g.encode(), &["tensor a.weight", "negative"]);
    let mut g = G::valid();
    g.tis[0].dims = vec![4, 1 << 40];
    expect_err("bigdim", g.encode(), &["tensor a.weight", "past the end"]);
    let mut g = G::valid();
    g.tis[1].type_id = 99;
    expect_err(
        "ggmltype",
        g.encode(),
        &["tensor b.weight", "unknown ggml type id 99"],
    );
    let mut g = G::valid();
    g.tis[1].type_id = 16; // IQ2_XXS: a real ggml type wquant does not know
    expect_err("ggmltype16", g.encode(), &["tensor b.weight", "16"]);
    let mut g = G::valid();
    g.tis[1].dims = vec![16, 2];
    expect_err("block", g.encode(), &["tensor b.weight", "block size"]);
    let mut g = G::valid();
    g.tis[1].offset = 40;
    expect_err("misaligned", g.encode(), &["tensor b.weight", "alignment"]);
    let mut g = G::valid();
    g.tis[1].offset = 0;
    expect_err("overlap", g.encode(), &["tensor b.weight", "overlaps"]);
    let mut g = G::valid();
    g.tis[2].offset = 1 << 40;
    expect_err("far", g.encode(), &["tensor c.weight"]);
    let mut g = G::valid();
    g.tis[2].offset = u64::MAX - 31;
    expect_err("offset-max", g.encode(), &["tensor c.weight"]);
}

#[test]
fn files_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty)
        .err()
        .expect("empty file accepted")
        .to_string();
    assert!(err.contains("empty.gguf"), "{err}");
    let missing = dir.path().join("missing.gguf");
    let err = GgufFile::open(&missing)
        .err()
        .expect("missing file opened")
        .to_string();
    assert!(err.contains("missing.gguf"), "{err}");
    let ok = dir.path().join("ok.gguf");
    std::fs::write(&ok, G::valid().encode()).unwrap();
    GgufFile::open(&ok).unwrap();
}

/// Every single-byte change of the valid file either parses or fails with the file's name;
/// no panic, no huge allocation.
#[test]
fn every_single_byte_change_is_handled() {
    let full = G::valid().encode();
    let path = "/corpus/flip.gguf";
    let mut rejected = 0;
    for pos in 0..full.len() {
        for val in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
            if full[pos] == val {
                continue;
            }
            let mut b = full.clone();
            b[pos] = val;
            LARGEST.with(|m| m.set(0));
            let res = GgufFile::from_vec(path, b);
            assert!(
                LARGEST.with(|m| m.get()) <= 64 * full.len() + 4096,
                "byte {pos} = {val}"
            );
            if let Err(e) = res {
                assert!(e.to_string().contains(path), "{e}");
                rejected += 1;
            }
        }
    }
    // Most header bytes matter; data bytes do not.
    assert!(rejected > 300, "only {rejected} changes rejected");
}
