//! The chunk stage's side of the BoolQ reproduction check (tests/boolq_reproduction.rs embeds each document as
//! `title + " " + text`; here the stage itself, which needs libtorch, is checked to embed exactly that).

use coltrast_testkit::*;

/// chunk.strategy = "none" keeps each BEIR document whole and embeds exactly `title + " " + text`.
#[test]
fn strategy_none_embeds_title_space_text() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipping: ../shared is absent (BoolQ lives there)");
        return;
    };
    let src = shared.join("data/boolq");
    let p = Project::new("[ingest]\npath = \"beir\"\n[chunk]\nstrategy = \"none\"\n");
    let corpus: Vec<String> =
        std::fs::read_to_string(src.join("corpus.jsonl")).unwrap().lines().take(3).map(String::from).collect();
    p.write("beir/corpus.jsonl", corpus.join("\n"));
    p.write(
        "beir/queries.jsonl",
        "{\"_id\": \"q0\", \"text\": \"does ethanol take more energy make that produces\"}\n",
    );
    p.write("beir/qrels.tsv", "query-id\tcorpus-id\tscore\nq0\tp0\t1\n");
    p.run(&["run", "chunk"]).ok();
    let (chunks, _, _) =
        coltrast::artifacts::chunks::read_chunks(&trusted_dirs(&p.path().join("artifacts"), "chunk")[0]).unwrap();
    assert_eq!(chunks.len(), 3);
    for (c, line) in chunks.iter().zip(&corpus) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let expected = format!("{} {}", v["title"].as_str().unwrap(), v["text"].as_str().unwrap());
        assert_eq!(c.embed_text, expected);
    }
}
