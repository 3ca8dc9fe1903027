use super::*;

const DOCS: [&str; 4] = [
    "Set OLLAMA_HOST to bind the server to another address.",
    "Use n_jobs=-1 to run on every core.",
    "The model is trained with a contrastive loss.",
    "Bind the host name and the port of the server.",
];

#[test]
fn bm25_finds_exact_identifiers_and_returns_rows() {
    let idx = LexicalIndex::build(None, &DOCS).unwrap();
    assert_eq!(idx.len(), 4);
    // tantivy's default tokenizer splits identifiers at punctuation and lowercases them; the document's
    // OLLAMA_HOST splits the same way, so both of its parts match
    assert_eq!(idx.terms("What does OLLAMA_HOST do?").unwrap(), ["what", "does", "ollama", "host", "do"]);
    let hits = idx.search("How do I set n_jobs?", 10).unwrap();
    assert_eq!(hits[0].0, 1, "{hits:?}");
    let hits = idx.search("ollama_host server", 10).unwrap();
    assert_eq!(hits[0].0, 0, "{hits:?}");
    // doc 3 shares "server" only
    assert!(hits.iter().any(|h| h.0 == 3));
    assert!(hits.iter().all(|h| h.0 != 1 && h.0 != 2), "{hits:?}");
    for w in hits.windows(2) {
        assert!(w[0].1 >= w[1].1);
    }
}

#[test]
fn queries_without_terms_and_odd_syntax_never_fail() {
    let idx = LexicalIndex::build(None, &DOCS).unwrap();
    assert!(idx.search("", 5).unwrap().is_empty());
    assert!(idx.search("?! -- ...", 5).unwrap().is_empty());
    assert!(idx.search("zzzz", 5).unwrap().is_empty());
    // query-parser syntax is plain text here
    let hits = idx.search("text:\"bind AND (host) OR -server*\"", 5).unwrap();
    assert!(!hits.is_empty());
    assert_eq!(idx.search("server", 1).unwrap().len(), 1);
}

#[test]
fn on_disk_index_reopens_with_the_same_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bm25");
    let texts: Vec<String> = (0..300).map(|i| format!("chunk {i} about topic{} and word{}", i % 7, i % 13)).collect();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let built = LexicalIndex::build(Some(&p), &refs).unwrap();
    let a = built.search("topic3 word5", 20).unwrap();
    drop(built);
    let reopened = LexicalIndex::open(&p).unwrap();
    assert_eq!(reopened.len(), 300);
    let b = reopened.search("topic3 word5", 20).unwrap();
    assert_eq!(a, b);
    // the best rows hold both terms
    for (row, _) in b.iter().take(3) {
        assert!(texts[*row as usize].contains("topic3") && texts[*row as usize].contains("word5"), "{row}");
    }
    assert!(LexicalIndex::open(&dir.path().join("missing")).is_err());
}

#[test]
fn fusion_weights() {
    let dense = vec![(0, 0.9), (1, 0.8), (2, 0.1)];
    let lexical = vec![(2, 12.0), (3, 6.0), (0, 0.0)];
    assert_eq!(fuse(&dense, &lexical, 0.0), dense);
    let all_lex: Vec<i64> = fuse(&dense, &lexical, 1.0).iter().map(|r| r.0).collect();
    assert_eq!(&all_lex[..2], [2, 3]);
    // w = 0.5: row 2 = 0.5*0 + 0.5*1 = 0.5, row 0 = 0.5*1 + 0 = 0.5 (tie: dense order first), row 1 = 0.5*0.875
    let f = fuse(&dense, &lexical, 0.5);
    let rows: Vec<i64> = f.iter().map(|r| r.0).collect();
    assert_eq!(rows, [0, 2, 1, 3]);
    assert!((f[2].1 - 0.4375).abs() < 1e-6 && (f[3].1 - 0.25).abs() < 1e-6, "{f:?}");
    assert_eq!(fuse(&dense, &[], 0.5), dense);
}

#[test]
fn maxsim_fusion_interpolates_between_first_stage_and_rerank() {
    let ranked = vec![(10, 0.9), (11, 0.8), (12, 0.7), (13, 0.6)];
    let maxsim = [0.1, 0.5, 0.95];
    let rows = |v: Vec<(i64, f32)>| v.into_iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(rows(fuse_maxsim(&ranked, &maxsim, 0.0)), [10, 11, 12, 13]);
    assert_eq!(rows(fuse_maxsim(&ranked, &maxsim, 1.0)), [12, 11, 10, 13]);
    // w = 0.5: 0.5, 0.65, 0.825
    assert_eq!(rows(fuse_maxsim(&ranked, &maxsim, 0.5)), [12, 11, 10, 13]);
    // w = 0.2 with MaxSim 0.1, 0.2, 0.95: 0.74, 0.68, 0.75
    assert_eq!(rows(fuse_maxsim(&ranked, &[0.1, 0.2, 0.95], 0.2)), [12, 10, 11, 13]);
}
