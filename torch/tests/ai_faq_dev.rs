//! The quality dev set (`../shared/data/ai_faq_dev`, BEIR layout with train and test qrels, no dev split) on
//! the real MiniLM: validation is carved out of the train queries only, and the default chunking keeps every
//! passage that fits whole (embedded as sentence-transformers embeds it) while splitting the long ones without
//! truncating them. Skips with a message when `../shared` is absent.

use std::collections::{BTreeMap, BTreeSet};

use coltrast::artifacts::Split;
use coltrast_testkit::*;

/// `../shared/data/ai_faq_dev`, or None (with the reason on stderr) when it is absent.
fn ai_faq_dev() -> Option<std::path::PathBuf> {
    let Some(shared) = shared_dir() else {
        eprintln!("skipping: ../shared is absent (ai_faq_dev lives in ../shared/data/ai_faq_dev)");
        return None;
    };
    let dev = shared.join("data/ai_faq_dev");
    if !dev.is_dir() {
        eprintln!("skipping: {} not found", dev.display());
        return None;
    }
    Some(dev)
}

#[test]
fn validation_comes_from_train_queries_and_short_passages_stay_whole() {
    let Some(dev) = ai_faq_dev() else { return };
    let p = Project::new(&format!("[ingest]\npath = \"{}\"\n", dev.display()));
    p.run(&["run", "mine"]).ok();
    let arts = p.path().join("artifacts");
    let pairs = coltrast::artifacts::pairs::read_pairs(&trusted_dirs(&arts, "mine")[0]).unwrap();
    let mut by_split: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for pair in &pairs {
        by_split.entry(pair.split.as_str()).or_default().insert(pair.qa_id.as_str());
    }
    let read_qrels = |name: &str| -> BTreeSet<String> {
        std::fs::read_to_string(dev.join("qrels").join(name))
            .unwrap()
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next().map(String::from))
            .collect()
    };
    let (train_q, test_q) = (read_qrels("train.tsv"), read_qrels("test.tsv"));
    // test stays test, whole; val and train together are exactly the train qrels
    assert_eq!(by_split["test"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(), test_q);
    let val = &by_split["val"];
    assert!(!val.is_empty() && val.len() < train_q.len() / 2, "{val:?}");
    let carved: BTreeSet<String> = by_split["train"].union(val).map(|s| s.to_string()).collect();
    assert_eq!(carved, train_q);
    for q in val {
        assert!(coltrast::stages::mine::is_val_query(q, 0.2, 42), "{q}");
    }

    let (chunks, _, _) = coltrast::artifacts::chunks::read_chunks(&trusted_dirs(&arts, "chunk")[0]).unwrap();
    let ds = coltrast::artifacts::dataset::read(&trusted_dirs(&arts, "ingest")[0]).unwrap();
    let (mut whole, mut split) = (0, 0);
    for proj in &ds.projects {
        let mine: Vec<_> = chunks.iter().filter(|c| c.project_id == proj.project_id).collect();
        let titled = format!("{} {}", proj.title, proj.text);
        for c in &mine {
            assert!(c.n_tokens <= 256, "{}: {} tokens", proj.project_id, c.n_tokens);
        }
        if mine.len() == 1 && mine[0].embed_text == titled {
            whole += 1;
        } else {
            // over max_tokens as it stands: packed from its sentences (Markdown stripped, so it may fit in one)
            split += 1;
            // a split passage's later chunks name their passage's title first
            for c in &mine[1..] {
                assert!(c.embed_text.starts_with(&proj.title), "{}: {:?}", proj.project_id, c.embed_text);
            }
            // and its last words are still there
            let last = coltrast::text::split_sentences(&proj.text).pop().unwrap();
            let tail = last.plain.split_whitespace().last().unwrap().to_string();
            assert!(mine.iter().any(|c| c.embed_text.contains(&tail)), "{}: lost {tail:?}", proj.project_id);
        }
    }
    // 84 of the 233 passages exceed 256 tokens as `title + " " + text` (counted with sentence-transformers)
    assert_eq!(whole + split, 233);
    assert_eq!(split, 84, "{split} passages packed from sentences");
}

/// The generate stage on the real MiniLM and ai_faq_dev: headings and inverse-cloze queries for chunks of every
/// kind of passage, each kept only when the base model ranks its own chunk in the top `filter_top_k`; the mine
/// stage turns them into pairs with their own split and source, and never into test pairs.
#[test]
fn synthetic_queries_cover_the_corpus_and_pass_the_consistency_filter() {
    let Some(dev) = ai_faq_dev() else { return };
    let p = Project::new(&format!(
        "[ingest]\npath = \"{}\"\n[generate]\nsources = [\"headings\", \"cloze\"]\n",
        dev.display()
    ));
    p.run(&["run", "mine"]).ok();
    let arts = p.path().join("artifacts");
    let qs = coltrast::artifacts::synthetic::read_queries(&trusted_dirs(&arts, "generate")[0]).unwrap();
    let (chunks, _, _) = coltrast::artifacts::chunks::read_chunks(&trusted_dirs(&arts, "chunk")[0]).unwrap();
    let by_source = |s: &str| qs.iter().filter(|q| q.source.as_str() == s).count();
    assert!(
        by_source("headings") > 20 && by_source("cloze") > 50,
        "{} headings, {} cloze",
        by_source("headings"),
        by_source("cloze")
    );
    let covered: BTreeSet<&str> = qs.iter().map(|q| q.chunk_id.as_str()).collect();
    assert!(covered.len() * 2 > chunks.len(), "{} of {} chunks have a query", covered.len(), chunks.len());
    for q in &qs {
        assert!((1..=3).contains(&q.base_rank), "{q:?}");
        assert!(chunks.iter().any(|c| c.chunk_id == q.chunk_id && c.project_id == q.project_id), "{q:?}");
        if q.source.as_str() == "cloze" {
            assert!(!q.positive_text.contains(&q.query), "{q:?}");
        }
    }
    let val = qs.iter().filter(|q| q.split == Split::Val).count();
    assert!(val > 0 && val < qs.len() / 2, "{val} of {}", qs.len());
    let pairs = coltrast::artifacts::pairs::read_pairs(&trusted_dirs(&arts, "mine")[0]).unwrap();
    let synthetic: Vec<_> = pairs.iter().filter(|p| !p.is_labelled()).collect();
    assert_eq!(synthetic.len(), qs.len());
    assert!(synthetic.iter().all(|p| p.split == Split::Train || p.split == Split::Val));
    let test = pairs.iter().filter(|p| p.split == Split::Test).count();
    assert_eq!(test, pairs.iter().filter(|p| p.is_labelled() && p.split == Split::Test).count());
}
