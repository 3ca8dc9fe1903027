use super::*;

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Seeded pseudo-random unit token vectors.
fn random_tokens(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row: Vec<f32> = (0..dim)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        out.extend(unit(&row));
    }
    out
}

#[test]
fn maxsim_hand_computed() {
    // dim 2. Query tokens: e1, e2. Doc tokens: e1, (0.6, 0.8), -e2.
    let q = [1.0, 0.0, 0.0, 1.0];
    let d = [1.0, 0.0, 0.6, 0.8, 0.0, -1.0];
    // e1: max(1, 0.6, 0) = 1; e2: max(0, 0.8, -1) = 0.8; mean = 0.9.
    assert!((maxsim(&q, &d, 2) - 0.9).abs() < 1e-6);
    // Asymmetric: doc as query. e1: 1; (0.6,0.8): max(0.6, 0.8) = 0.8; -e2: max(0, -1) = 0. Mean 0.6.
    assert!((maxsim(&d, &q, 2) - 0.6).abs() < 1e-6);
    // Opposite vectors give -1; identical give 1.
    assert!((maxsim(&[1.0, 0.0], &[-1.0, 0.0], 2) + 1.0).abs() < 1e-6);
    assert!((maxsim(&d, &d, 2) - 1.0).abs() < 1e-6);
    // Empty sides.
    assert_eq!(maxsim(&[], &d, 2), 0.0);
    assert_eq!(maxsim(&q, &[], 2), 0.0);
    assert_eq!(maxsim(&q, &d, 0), 0.0);
    // Longer vectors (exercise the 8-wide dot product and its remainder).
    let a = random_tokens(3, 37, 1);
    let b = random_tokens(5, 37, 2);
    let naive: f32 = a
        .chunks(37)
        .map(|x| b.chunks(37).map(|y| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>()).fold(f32::MIN, f32::max))
        .sum::<f32>()
        / 3.0;
    assert!((maxsim(&a, &b, 37) - naive).abs() < 1e-5);
}

#[test]
fn token_store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 48;
    let chunks: Vec<(i64, Vec<f32>)> =
        (0..20).map(|i| (100 - 3 * i as i64, random_tokens(1 + (i * 7) % 13, dim, i as u64))).collect();
    let mut w = TokenStoreWriter::create(dir.path(), dim).unwrap();
    for (row, t) in &chunks {
        w.add(*row, t).unwrap();
    }
    let meta = w.finish().unwrap();
    let total: usize = chunks.iter().map(|(_, t)| t.len() / dim).sum();
    assert_eq!(meta.count as usize, total);
    assert_eq!(meta.chunks, 20);
    assert_eq!(std::fs::metadata(dir.path().join(TOKENS_FILE)).unwrap().len() as usize, total * dim * 2);

    let store = TokenStore::read(dir.path()).unwrap();
    assert_eq!((store.dim(), store.num_chunks(), store.num_tokens() as usize), (dim, 20, total));
    let mut worst = 0f32;
    for (row, t) in &chunks {
        let back = store.tokens(*row).unwrap();
        assert_eq!(back.len(), t.len());
        assert_eq!(store.n_tokens(*row), Some(t.len() / dim));
        for (a, b) in t.iter().zip(&back) {
            worst = worst.max((a - b).abs());
        }
    }
    println!("largest f16 round-trip error: {worst:e}");
    assert!(worst <= 1e-3, "{worst}");
    assert!(store.tokens(5).is_none());
    assert!(!store.contains(5));

    // The offsets table is a plain Parquet file with the documented columns.
    let batch = table::read_parquet(&dir.path().join(OFFSETS_FILE), STAGE, &offsets_schema()).unwrap();
    assert_eq!(batch.num_rows(), 20);
    let offs = table::i64_col(&batch, "offset").unwrap();
    assert_eq!(offs.value(0), 0);
    assert_eq!(offs.value(1), (chunks[0].1.len() / dim) as i64);
    let meta_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(META_FILE)).unwrap()).unwrap();
    assert_eq!(meta_json["dim"], dim as u64);
    assert_eq!(meta_json["dtype"], "f16");
    assert_eq!(meta_json["count"], total as u64);
}

#[test]
fn writer_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TokenStoreWriter::create(dir.path(), 2).unwrap();
    w.add(0, &[1.0, 0.0]).unwrap();
    assert!(matches!(w.add(0, &[1.0, 0.0]), Err(Error::Usage(m)) if m.contains("twice")));
    assert!(matches!(w.add(1, &[]), Err(Error::Usage(_))));
    assert!(matches!(w.add(1, &[1.0, 0.0, 1.0]), Err(Error::Usage(_))));
    assert!(matches!(w.add(-1, &[1.0, 0.0]), Err(Error::Usage(_))));
    assert!(matches!(w.add(2, &[f32::NAN, 0.0]), Err(Error::Usage(_))));
    assert!(TokenStoreWriter::create(dir.path(), 0).is_err());
}

#[test]
fn reader_reports_missing_and_inconsistent_files() {
    let dir = tempfile::tempdir().unwrap();
    // Missing.
    match TokenStore::read(dir.path()) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains(META_FILE)),
        other => panic!("{other:?}"),
    }
    let mut w = TokenStoreWriter::create(dir.path(), 4).unwrap();
    w.add(0, &random_tokens(3, 4, 1)).unwrap();
    w.add(1, &random_tokens(2, 4, 2)).unwrap();
    w.finish().unwrap();
    TokenStore::read(dir.path()).unwrap();
    // Truncated vectors.
    let tokens = dir.path().join(TOKENS_FILE);
    let bytes = std::fs::read(&tokens).unwrap();
    std::fs::write(&tokens, &bytes[..bytes.len() - 2]).unwrap();
    match TokenStore::read(dir.path()) {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains(TOKENS_FILE), "{e}"),
        other => panic!("{other:?}"),
    }
    std::fs::write(&tokens, &bytes).unwrap();
    // Bad JSON.
    let meta = dir.path().join(META_FILE);
    let good = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, b"{not json").unwrap();
    assert!(matches!(TokenStore::read(dir.path()), Err(Error::Corrupt { .. })));
    let mut m: TokenStoreMeta = serde_json::from_slice(&good).unwrap();
    m.dtype = "f32".into();
    std::fs::write(&meta, serde_json::to_vec(&m).unwrap()).unwrap();
    assert!(matches!(TokenStore::read(dir.path()), Err(Error::Corrupt { message, .. }) if message.contains("f32")));
    std::fs::write(&meta, &good).unwrap();
    // Offsets pointing past the end.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![0, 1])),
        Arc::new(Int64Array::from(vec![0, 4])),
        Arc::new(Int32Array::from(vec![3, 2])),
    ];
    table::write_parquet(&dir.path().join(OFFSETS_FILE), offsets_schema(), columns).unwrap();
    match TokenStore::read(dir.path()) {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains(OFFSETS_FILE), "{e}"),
        other => panic!("{other:?}"),
    }
    // Not Parquet.
    std::fs::write(dir.path().join(OFFSETS_FILE), b"garbage").unwrap();
    assert!(matches!(TokenStore::read(dir.path()), Err(Error::Corrupt { .. })));
}

#[test]
fn rerank_changes_order_only_within_depth() {
    let dir = tempfile::tempdir().unwrap();
    let dim = 16;
    let query = random_tokens(4, dim, 99);
    // 30 chunks with random tokens; first-stage scores descending in row order.
    let mut w = TokenStoreWriter::create(dir.path(), dim).unwrap();
    for row in 0..30i64 {
        w.add(row, &random_tokens(3 + (row as usize % 5), dim, row as u64 + 1)).unwrap();
    }
    w.finish().unwrap();
    let store = TokenStore::read(dir.path()).unwrap();
    let candidates: Vec<(i64, f32)> = (0..30).map(|r| (r as i64, 1.0 - r as f32 / 100.0)).collect();

    let depth = 10;
    let out = rerank(candidates.clone(), &query, &store, depth, 1.0).unwrap();
    assert_eq!(out.len(), 30);
    // Beyond depth: untouched, same order, same scores.
    assert_eq!(&out[depth..], &candidates[depth..]);
    // Within depth: the same set, sorted by MaxSim, with MaxSim scores.
    let mut head_rows: Vec<i64> = out[..depth].iter().map(|x| x.0).collect();
    head_rows.sort();
    assert_eq!(head_rows, (0..depth as i64).collect::<Vec<_>>());
    for w in out[..depth].windows(2) {
        assert!(w[0].1 >= w[1].1);
    }
    for &(row, s) in &out[..depth] {
        let expect = maxsim(&query, &store.tokens(row).unwrap(), dim);
        assert_eq!(s, expect);
    }
    // The order did change (random tokens: the MaxSim order is not the first-stage order).
    assert_ne!(out[..depth].iter().map(|x| x.0).collect::<Vec<_>>(), (0..depth as i64).collect::<Vec<_>>());

    // Depth 0 is the identity; depth beyond the list reranks everything.
    assert_eq!(rerank(candidates.clone(), &query, &store, 0, 1.0).unwrap(), candidates);
    let all = rerank(candidates.clone(), &query, &store, 1000, 1.0).unwrap();
    assert_eq!(all.len(), 30);
    for w in all.windows(2) {
        assert!(w[0].1 >= w[1].1);
    }
}

#[test]
fn rerank_promotes_the_late_interaction_match() {
    let dir = tempfile::tempdir().unwrap();
    // Chunk 7 contains both query tokens exactly; chunk 3 only one of them.
    let e = |i: usize| {
        let mut v = vec![0f32; 4];
        v[i] = 1.0;
        v
    };
    let mut w = TokenStoreWriter::create(dir.path(), 4).unwrap();
    w.add(3, &[e(0), e(2)].concat()).unwrap();
    w.add(7, &[e(0), e(1), e(3)].concat()).unwrap();
    w.add(9, &e(3)).unwrap();
    w.finish().unwrap();
    let store = TokenStore::read(dir.path()).unwrap();
    let query = [e(0), e(1)].concat();
    let out = rerank(vec![(3, 0.9), (7, 0.8), (9, 0.7)], &query, &store, 2, 1.0).unwrap();
    assert_eq!(out, vec![(7, 1.0), (3, 0.5), (9, 0.7)]);
    // A candidate the store does not know is an error naming the offsets file.
    match rerank(vec![(4, 0.9)], &query, &store, 2, 1.0) {
        Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("chunk row 4")),
        other => panic!("{other:?}"),
    }
    // ... but only if it is within depth.
    assert_eq!(rerank(vec![(3, 0.9), (4, 0.1)], &query, &store, 1, 1.0).unwrap(), vec![(3, 0.5), (4, 0.1)]);
    // A ragged query is an error.
    assert!(rerank(vec![(3, 0.9)], &[1.0, 0.0, 0.0], &store, 1, 1.0).is_err());
}
