use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const FACTORIES: [&str; 3] = ["Flat", "HNSW32", "IVF4,Flat"];

/// `n` seeded pseudo-random unit vectors of `dim` floats (splitmix64, Box–Muller).
fn random_unit(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row: Vec<f32> = (0..dim)
            .map(|_| {
                let (u1, u2) = (next(), next());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
            })
            .collect();
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(row.iter().map(|x| x / norm));
    }
    out
}

/// Same ids in the same order and scores equal up to float rounding (exhaustive IVF and Flat sum in a
/// different order).
fn assert_same_hits(a: &[Vec<(i64, f32)>], b: &[Vec<(i64, f32)>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.iter().map(|h| h.0).collect::<Vec<_>>(), y.iter().map(|h| h.0).collect::<Vec<_>>());
        for (p, q) in x.iter().zip(y) {
            assert!((p.1 - q.1).abs() < 1e-5, "{} vs {}", p.1, q.1);
        }
    }
}

const N: usize = 2000;
const DIM: usize = 32;

/// Fraction of the first `nq` stored vectors whose top-1 hit is themselves.
fn self_recall(index: &VectorIndex, data: &[f32], nq: usize, id_of: impl Fn(usize) -> i64) -> f64 {
    let hits = index.search(&data[..nq * DIM], 1).expect("search");
    let found = hits.iter().enumerate().filter(|(q, h)| h.first().map(|x| x.0) == Some(id_of(*q))).count();
    found as f64 / nq as f64
}

#[test]
fn vector_index_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<VectorIndex>();
}

#[test]
fn each_factory_finds_stored_vectors() {
    let data = random_unit(N, DIM, 7);
    for factory in FACTORIES {
        let index = VectorIndex::build(factory, DIM, &data, None).expect(factory);
        assert_eq!(index.len(), N);
        assert_eq!(index.dim(), DIM);
        let recall = self_recall(&index, &data, 200, |q| q as i64);
        println!("{factory}: top-1 self recall {recall:.3}");
        if factory == "Flat" {
            assert_eq!(recall, 1.0);
            let hits = index.search(&data[..DIM], 3).unwrap();
            assert!((hits[0][0].1 - 1.0).abs() < 1e-5, "score of self is the inner product 1");
            assert!(hits[0][0].1 >= hits[0][1].1 && hits[0][1].1 >= hits[0][2].1);
        } else {
            assert!(recall >= 0.95, "{factory}: recall {recall}");
        }
    }
}

#[test]
fn ivf_lists_and_nprobe() {
    let data = random_unit(N, DIM, 8);
    let index = VectorIndex::build("IVF4,Flat", DIM, &data, None).unwrap();
    assert_eq!(index.nlist(), Some(4));
    // nprobe 8 > nlist 4 is clamped: every list is scanned, so the result equals exact search.
    let flat = VectorIndex::build("Flat", DIM, &data, None).unwrap();
    let queries = random_unit(50, DIM, 99);
    assert_same_hits(&index.search(&queries, 5).unwrap(), &flat.search(&queries, 5).unwrap());

    let mut one =
        VectorIndex::build_with("IVF16,Flat", DIM, &data, None, SearchParams { nprobe: 1, ef_search: 64 }).unwrap();
    assert_eq!(one.nlist(), Some(16));
    assert!(self_recall(&one, &data, 200, |q| q as i64) >= 0.95);
    one.set_search_params(SearchParams { nprobe: 16, ef_search: 64 }).unwrap();
    assert_same_hits(&one.search(&queries, 5).unwrap(), &flat.search(&queries, 5).unwrap());
    assert_eq!(VectorIndex::build("Flat", DIM, &data, None).unwrap().nlist(), None);
}

#[test]
fn write_read_round_trip_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_unit(N, DIM, 11);
    let queries = random_unit(100, DIM, 12);
    for factory in FACTORIES {
        let index = VectorIndex::build(factory, DIM, &data, None).unwrap();
        let path = dir.path().join(format!("{}.faiss", factory.replace(',', "_")));
        index.write(&path).unwrap();
        let back = VectorIndex::read(&path).unwrap();
        assert_eq!(back.len(), N);
        assert_eq!(back.dim(), DIM);
        assert_eq!(back.nlist(), index.nlist());
        assert_eq!(index.search(&queries, 10).unwrap(), back.search(&queries, 10).unwrap(), "{factory}");
        // No temporary file is left next to it.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}

#[test]
fn explicit_ids_are_returned_and_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_unit(500, DIM, 13);
    let ids: Vec<i64> = (0..500).map(|i| 1_000 + 3 * i as i64).collect();
    for factory in FACTORIES {
        let index = VectorIndex::build(factory, DIM, &data, Some(&ids)).unwrap();
        assert!(self_recall(&index, &data, 100, |q| ids[q]) >= 0.95, "{factory}");
        let path = dir.path().join("ids.faiss");
        index.write(&path).unwrap();
        let back = VectorIndex::read(&path).unwrap();
        assert_eq!(back.nlist(), index.nlist(), "{factory}");
        assert_eq!(index.search(&data[..20 * DIM], 4).unwrap(), back.search(&data[..20 * DIM], 4).unwrap());
    }
    // Identity ids are the same as none.
    let identity: Vec<i64> = (0..500).collect();
    let a = VectorIndex::build("Flat", DIM, &data, Some(&identity)).unwrap();
    assert_eq!(self_recall(&a, &data, 50, |q| q as i64), 1.0);
    // Bad ids.
    assert!(matches!(VectorIndex::build("Flat", DIM, &data, Some(&ids[..10])), Err(Error::Usage(_))));
    let mut dup = ids.clone();
    dup[5] = dup[4];
    assert!(matches!(VectorIndex::build("Flat", DIM, &data, Some(&dup)), Err(Error::Usage(m)) if m.contains("twice")));
    let mut neg = ids.clone();
    neg[0] = -1;
    assert!(matches!(VectorIndex::build("Flat", DIM, &data, Some(&neg)), Err(Error::Usage(_))));
}

#[test]
fn concurrent_searches_agree_with_serial() {
    let data = random_unit(N, DIM, 14);
    let queries = random_unit(64, DIM, 15);
    for factory in FACTORIES {
        let index = VectorIndex::build(factory, DIM, &data, None).unwrap();
        let serial: Vec<Vec<(i64, f32)>> =
            (0..64).map(|q| index.search(&queries[q * DIM..(q + 1) * DIM], 5).unwrap().remove(0)).collect();
        let parallel: Vec<Vec<(i64, f32)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (index, queries) = (&index, &queries);
                    s.spawn(move || {
                        (t * 16..(t + 1) * 16)
                            .map(|q| index.search(&queries[q * DIM..(q + 1) * DIM], 5).unwrap().remove(0))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(serial, parallel, "{factory}");
    }
}

#[test]
fn single_query_search_restores_the_openmp_team_and_agrees_with_batched() {
    let data = random_unit(N, DIM, 16);
    let queries = random_unit(8, DIM, 17);
    for factory in FACTORIES {
        let index = VectorIndex::build(factory, DIM, &data, None).unwrap();
        let batched = index.search(&queries, 5).unwrap();
        let before = omp::max_threads();
        let single: Vec<Vec<(i64, f32)>> =
            (0..8).map(|q| index.search(&queries[q * DIM..(q + 1) * DIM], 5).unwrap().remove(0)).collect();
        // a single-query search runs on one OpenMP thread, then gives the thread back its team size
        assert_eq!(omp::max_threads(), before, "{factory}");
        assert_eq!(single, batched, "{factory}");
    }
}

#[test]
fn small_and_empty_inputs() {
    // k larger than the index, k = 0, no queries, no vectors.
    let data = random_unit(3, DIM, 16);
    let index = VectorIndex::build("Flat", DIM, &data, None).unwrap();
    let hits = index.search(&data[..DIM], 10).unwrap();
    assert_eq!(hits[0].len(), 3);
    assert_eq!(index.search(&data[..DIM], 0).unwrap(), vec![Vec::<(i64, f32)>::new()]);
    assert!(index.search(&[], 5).unwrap().is_empty());
    for factory in ["Flat", "HNSW32"] {
        let empty = VectorIndex::build(factory, DIM, &[], None).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.search(&data[..2 * DIM], 5).unwrap(), vec![Vec::new(), Vec::new()]);
    }
    // Ragged input.
    assert!(matches!(index.search(&data[..DIM - 1], 1), Err(Error::Usage(_))));
    assert!(matches!(VectorIndex::build("Flat", DIM, &data[..DIM + 1], None), Err(Error::Usage(_))));
    assert!(matches!(VectorIndex::build("Flat", 0, &[], None), Err(Error::Usage(_))));
    let mut nan = data.clone();
    nan[DIM + 2] = f32::NAN;
    assert!(matches!(VectorIndex::build("Flat", DIM, &nan, None), Err(Error::Usage(m)) if m.contains("vector 1")));
}

#[test]
fn bad_factory_and_too_few_vectors_name_the_setting() {
    let data = random_unit(10, DIM, 17);
    match VectorIndex::build("NoSuchIndex42", DIM, &data, None) {
        Err(Error::Usage(m)) => assert!(m.contains("index.factory") && m.contains("NoSuchIndex42"), "{m}"),
        other => panic!("{other:?}"),
    }
    match VectorIndex::build("IVF64,Flat", DIM, &data, None) {
        Err(Error::Usage(m)) => {
            println!("{m}");
            assert!(m.contains("index.factory") && m.contains("64") && m.contains("10"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    // Enough to train (>= nlist), below the recommendation: builds.
    let data = random_unit(40, DIM, 18);
    let index = VectorIndex::build("IVF8,Flat", DIM, &data, None).unwrap();
    assert_eq!(index.len(), 40);
}

fn write_flat(dir: &Path) -> PathBuf {
    let path = dir.join("index.faiss");
    VectorIndex::build("Flat", DIM, &random_unit(100, DIM, 19), None).unwrap().write(&path).unwrap();
    path
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.faiss");
    match VectorIndex::read(&missing) {
        Err(e @ Error::Io { .. }) => {
            assert!(e.to_string().contains("nope.faiss"));
            assert_eq!(e.exit_code(), 1);
        }
        other => panic!("{other:?}"),
    }
    let expect_corrupt = |path: &Path, what: &str| match VectorIndex::read(path) {
        Err(e @ Error::Corrupt { .. }) => {
            println!("{what}: {e}");
            assert!(e.to_string().contains(&path.display().to_string()));
        }
        other => panic!("{what}: {other:?}"),
    };
    // Truncated at several points.
    let path = write_flat(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 2, 4, 10, 40, bytes.len() / 2, bytes.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.faiss"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        expect_corrupt(&p, &format!("truncated to {cut}"));
    }
    // Not a FAISS file at all.
    let p = dir.path().join("garbage.faiss");
    std::fs::write(&p, b"PAR1 this is not an index, just some bytes that go on for a while").unwrap();
    expect_corrupt(&p, "garbage");
    // A directory where the file should be.
    expect_corrupt(dir.path(), "directory");
    // Truncated HNSW and IVF files too.
    for factory in ["HNSW32", "IVF4,Flat"] {
        let p = dir.path().join("other.faiss");
        VectorIndex::build(factory, DIM, &random_unit(400, DIM, 20), None).unwrap().write(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() * 2 / 3]).unwrap();
        expect_corrupt(&p, factory);
    }
}

/// A Python with faiss and numpy, if there is one.
fn python_with_faiss() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("COLTRAST_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/coltrast/bench-venv/bin/python"));
    }
    candidates.push(PathBuf::from("python3"));
    candidates.into_iter().find(|py| {
        Command::new(py).args(["-c", "import faiss, numpy"]).output().map(|o| o.status.success()).unwrap_or(false)
    })
}

#[test]
fn python_faiss_reads_our_files() {
    let Some(python) = python_with_faiss() else {
        println!("SKIP python_faiss_reads_our_files: no python with faiss and numpy (tried COLTRAST_PYTHON, the bench venv, python3)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = random_unit(N, DIM, 21);
    let queries = random_unit(8, DIM, 22);
    let qpath = dir.path().join("queries.f32");
    let qbytes: Vec<u8> = queries.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&qpath, qbytes).unwrap();
    let script = r#"
import sys, json, faiss, numpy as np
path, qpath, dim, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
index = faiss.read_index(path)
q = np.fromfile(qpath, dtype="<f4").reshape(-1, dim)
D, I = index.search(q, k)
params = {}
try:
    params["nprobe"] = int(faiss.extract_index_ivf(index).nprobe)
except Exception:
    pass
try:
    params["efSearch"] = int(faiss.downcast_index(index).hnsw.efSearch)
except Exception:
    pass
print(json.dumps({"ntotal": int(index.ntotal), "d": int(index.d), "metric": int(index.metric_type), "ids": I.tolist(), "scores": D.tolist(), "params": params}))
"#;
    for factory in FACTORIES {
        let index = VectorIndex::build(factory, DIM, &data, None).unwrap();
        let path = dir.path().join("py.faiss");
        index.write(&path).unwrap();
        let out = Command::new(&python)
            .args(["-c", script])
            .arg(&path)
            .arg(&qpath)
            .args([DIM.to_string(), "5".into()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{factory}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ntotal"], N as u64);
        assert_eq!(v["d"], DIM as u64);
        assert_eq!(v["metric"], 0, "METRIC_INNER_PRODUCT is 0");
        // The search parameters coltrast set are in the file.
        match factory {
            "HNSW32" => assert_eq!(v["params"]["efSearch"], 64, "{}", v["params"]),
            "IVF4,Flat" => assert_eq!(v["params"]["nprobe"], 4, "nprobe 8 clamped to nlist: {}", v["params"]),
            _ => {}
        }
        let ours = index.search(&queries, 5).unwrap();
        for (q, hits) in ours.iter().enumerate() {
            let py_ids: Vec<i64> = v["ids"][q].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
            let our_ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
            assert_eq!(py_ids, our_ids, "{factory}, query {q}");
            for (j, h) in hits.iter().enumerate() {
                let s = v["scores"][q][j].as_f64().unwrap() as f32;
                assert!((s - h.1).abs() < 1e-5, "{factory}: score {s} vs {}", h.1);
            }
        }
        println!("{factory}: Python faiss returns the same ids for {} queries", ours.len());
    }
}
