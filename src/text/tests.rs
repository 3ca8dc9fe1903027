//! Behaviour of `split_sentences` and `strip_markdown` on whole documents.

use super::*;

fn texts(md: &str) -> Vec<String> {
    split_sentences(md).into_iter().map(|s| s.text).collect()
}

fn plains(md: &str) -> Vec<String> {
    split_sentences(md).into_iter().map(|s| s.plain).collect()
}

/// `src` with every line break, and the indentation of the line after it, turned into one space; in a
/// quote, also the `>` markers of lines indented less than four columns. Indentation is spaces and tabs,
/// as in CommonMark, and then any Unicode whitespace before the text. This is what `text` must be for a
/// sentence that is not code.
fn joined_source(src: &str, quote: bool) -> String {
    let mut out = String::new();
    for (k, line) in src.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if k == 0 {
            out.push_str(line.trim_end());
            continue;
        }
        let mut rest = line.trim_start_matches([' ', '\t']);
        let indent = &line[..line.len() - rest.len()];
        let cols: usize = indent.chars().map(|c| if c == '\t' { 4 } else { 1 }).sum();
        if quote && cols < 4 {
            while let Some(r) = rest.strip_prefix('>') {
                rest = r.trim_start_matches([' ', '\t']);
            }
        }
        let rest = rest.trim();
        if !rest.is_empty() {
            out.push(' ');
            out.push_str(rest);
        }
    }
    out
}

/// Invariants every split must satisfy, whatever the input.
fn check_invariants(md: &str, sentences: &[Sentence]) {
    let mut last_end = 0;
    let mut last_block = 0;
    for (k, s) in sentences.iter().enumerate() {
        assert!(s.start < s.end && s.end <= md.len(), "bad span {k}: {s:?}");
        assert!(s.start >= last_end, "sentence {k} overlaps the one before: {s:?}");
        assert!(!s.plain.is_empty() && s.plain == s.plain.trim(), "bad plain {k}: {s:?}");
        assert!(!s.plain.contains("  "), "plain not collapsed {k}: {s:?}");
        assert_eq!(s.heading, matches!(s.kind, SentenceKind::Heading { .. }));
        if k == 0 {
            assert_eq!(s.block, 0, "blocks are numbered from 0");
        } else {
            assert!(s.block == last_block || s.block == last_block + 1, "block gap at {k}");
        }
        let src = &md[s.start..s.end];
        if s.kind == SentenceKind::Code {
            assert_eq!(s.text, src);
        } else {
            let quote = s.kind == SentenceKind::Quote;
            assert_eq!(s.text, joined_source(src, quote), "text of {k} differs from its source span");
        }
        last_end = s.end;
        last_block = s.block;
    }
}

fn split_checked(md: &str) -> Vec<Sentence> {
    let s = split_sentences(md);
    check_invariants(md, &s);
    s
}

#[test]
fn heading_then_paragraph() {
    let md =
        "# Sentiment Analysis\n\nWe fine-tune BERT. It works well!\n\n## Data Size\nThe corpus has 500,000 reviews.\n";
    let s = split_checked(md);
    let got: Vec<(&str, SentenceKind, bool, usize)> =
        s.iter().map(|s| (s.text.as_str(), s.kind, s.heading, s.block)).collect();
    assert_eq!(
        got,
        [
            ("# Sentiment Analysis", SentenceKind::Heading { level: 1 }, true, 0),
            ("We fine-tune BERT.", SentenceKind::Paragraph, false, 1),
            ("It works well!", SentenceKind::Paragraph, false, 1),
            ("## Data Size", SentenceKind::Heading { level: 2 }, true, 2),
            ("The corpus has 500,000 reviews.", SentenceKind::Paragraph, false, 3),
        ]
    );
    assert_eq!(s[0].plain, "Sentiment Analysis");
    assert_eq!(s[3].plain, "Data Size");
    assert_eq!(&md[s[2].start..s[2].end], "It works well!");
    assert_eq!(&md[s[3].start..s[3].end], "## Data Size");
}

#[test]
fn headings_are_never_split_and_lose_closing_hashes() {
    let s = split_checked("### Step 1. Install v1.2.0! Then run. ###\n");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].text, "### Step 1. Install v1.2.0! Then run.");
    assert_eq!(s[0].plain, "Step 1. Install v1.2.0! Then run.");
    assert_eq!(s[0].kind, SentenceKind::Heading { level: 3 });
    // Not headings: no space after the hashes, or seven of them.
    let s = split_checked("#hashtag here\n\n####### seven\n");
    assert!(s.iter().all(|s| !s.heading));
}

#[test]
fn setext_headings() {
    let md = "Project Title\n=============\n\nIntro text.\n\nSection\n-------\nBody.\n";
    let s = split_checked(md);
    let got: Vec<(&str, SentenceKind)> = s.iter().map(|s| (s.text.as_str(), s.kind)).collect();
    assert_eq!(
        got,
        [
            ("Project Title", SentenceKind::Heading { level: 1 }),
            ("Intro text.", SentenceKind::Paragraph),
            ("Section", SentenceKind::Heading { level: 2 }),
            ("Body.", SentenceKind::Paragraph),
        ]
    );
    // A `---` after a blank line is a thematic break, not a heading, and yields nothing.
    assert_eq!(texts("Text.\n\n---\n\nMore."), ["Text.", "More."]);
}

#[test]
fn line_wraps_are_joined_and_do_not_end_sentences() {
    let md = "The model was trained\non 2.5 GB of text, e.g.\nBERT-style corpora. It\nconverged quickly.\n";
    let s = split_checked(md);
    assert_eq!(
        s.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
        ["The model was trained on 2.5 GB of text, e.g. BERT-style corpora.", "It converged quickly."]
    );
    assert_eq!(&md[s[1].start..s[1].end], "It\nconverged quickly.");
}

#[test]
fn abbreviations_in_documents() {
    let md = "Dr. Smith et al. reported results in Fig. 2. The gain was approx. 3 points, i.e. a lot. \
              Mr. J. Doe of Acme Inc. agreed. We compared BERT vs. DistilBERT etc. Results follow.";
    assert_eq!(
        texts(md),
        [
            "Dr. Smith et al. reported results in Fig. 2.",
            "The gain was approx. 3 points, i.e. a lot.",
            "Mr. J. Doe of Acme Inc. agreed.",
            "We compared BERT vs. DistilBERT etc. Results follow.",
        ]
    );
}

#[test]
fn decimals_versions_urls_emails_files() {
    let md = "Mean AUROC is 0.841. We used PyTorch 2.1 and Python 3.11.7. Release v1.2.0 is out. \
              Docs live at https://example.com/docs/v1.2/index.html?lang=en. Write to team@example.org. \
              Weights are in model.safetensors. Read README.md first.";
    assert_eq!(
        texts(md),
        [
            "Mean AUROC is 0.841.",
            "We used PyTorch 2.1 and Python 3.11.7.",
            "Release v1.2.0 is out.",
            "Docs live at https://example.com/docs/v1.2/index.html?lang=en.",
            "Write to team@example.org.",
            "Weights are in model.safetensors.",
            "Read README.md first.",
        ]
    );
}

#[test]
fn inline_code_and_links_are_never_cut() {
    let md = "Run `python train.py --lr 1e-4. Then` to start. See [the guide. It helps](https://x.io/a.b) now. Done.";
    assert_eq!(
        texts(md),
        [
            "Run `python train.py --lr 1e-4. Then` to start.",
            "See [the guide. It helps](https://x.io/a.b) now.",
            "Done."
        ]
    );
    assert_eq!(plains(md), ["Run python train.py --lr 1e-4. Then to start.", "See the guide. It helps now.", "Done."]);
}

#[test]
fn ellipses_in_documents() {
    assert_eq!(
        texts("It was slow... Then it got faster. Wait… really?"),
        ["It was slow...", "Then it got faster.", "Wait… really?"]
    );
}

#[test]
fn list_items_are_blocks_and_keep_their_marker() {
    let md = "Intro:\n\n- First item. Has two sentences.\n* Second item\n  wraps here.\n+ Third\n1. Ordered one.\n2) Ordered two.\n- [x] Done task.\n- [ ] Open task.\n";
    let s = split_checked(md);
    let got: Vec<(&str, &str, usize)> = s.iter().map(|s| (s.text.as_str(), s.plain.as_str(), s.block)).collect();
    assert_eq!(
        got,
        [
            ("Intro:", "Intro:", 0),
            ("- First item.", "First item.", 1),
            ("Has two sentences.", "Has two sentences.", 1),
            ("* Second item wraps here.", "Second item wraps here.", 2),
            ("+ Third", "Third", 3),
            ("1. Ordered one.", "Ordered one.", 4),
            ("2) Ordered two.", "Ordered two.", 5),
            ("- [x] Done task.", "Done task.", 6),
            ("- [ ] Open task.", "Open task.", 7),
        ]
    );
    assert!(s[1..].iter().all(|s| s.kind == SentenceKind::ListItem));
    assert_eq!(&md[s[1].start..s[1].end], "- First item.");
}

#[test]
fn nested_lists_and_item_paragraphs() {
    let md = "- Parent item.\n    - Child item.\n        1. Grandchild.\n\n    Item paragraph after a blank line.\n\nBack to text.\n";
    let s = split_checked(md);
    let got: Vec<(&str, SentenceKind)> = s.iter().map(|s| (s.plain.as_str(), s.kind)).collect();
    assert_eq!(
        got,
        [
            ("Parent item.", SentenceKind::ListItem),
            ("Child item.", SentenceKind::ListItem),
            ("Grandchild.", SentenceKind::ListItem),
            ("Item paragraph after a blank line.", SentenceKind::Paragraph),
            ("Back to text.", SentenceKind::Paragraph),
        ]
    );
}

#[test]
fn ordered_list_needs_one_to_interrupt_a_paragraph() {
    let md = "Released in\n2019. The year after, 1. this\nline stays.\n";
    let s = split_checked(md);
    assert_eq!(
        s.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
        ["Released in 2019.", "The year after, 1. this line stays."]
    );
    assert!(s.iter().all(|s| s.kind == SentenceKind::Paragraph && s.block == 0));
}

#[test]
fn tables_rows_are_sentences_and_delimiters_are_skipped() {
    let md = "| Model | Accuracy | F1 |\n|:------|--------:|:--:|\n| **BERT-base** | 0.94 | 0.93 |\n| `distilbert` | 0.92 | 0.91 |\n| a \\| b | | x |\n\nAfter the table.\n";
    let s = split_checked(md);
    let got: Vec<(&str, &str, SentenceKind, usize)> =
        s.iter().map(|s| (s.text.as_str(), s.plain.as_str(), s.kind, s.block)).collect();
    assert_eq!(
        got,
        [
            ("| Model | Accuracy | F1 |", "Model | Accuracy | F1", SentenceKind::TableRow, 0),
            ("| **BERT-base** | 0.94 | 0.93 |", "BERT-base | 0.94 | 0.93", SentenceKind::TableRow, 0),
            ("| `distilbert` | 0.92 | 0.91 |", "distilbert | 0.92 | 0.91", SentenceKind::TableRow, 0),
            ("| a \\| b | | x |", "a | b | x", SentenceKind::TableRow, 0),
            ("After the table.", "After the table.", SentenceKind::Paragraph, 1),
        ]
    );
}

#[test]
fn table_without_edge_pipes() {
    let md = "Metric | Value\n--- | ---\nAUROC | 0.84\n";
    assert_eq!(plains(md), ["Metric | Value", "AUROC | 0.84"]);
}

#[test]
fn fenced_code_is_one_sentence_with_periods_and_blank_lines() {
    let md = "Train it:\n\n```bash\npython train.py --epochs 10. \n\n# Then evaluate. Really.\npython eval.py\n```\nDone. Next.\n";
    let s = split_checked(md);
    let got: Vec<(&str, SentenceKind)> = s.iter().map(|s| (s.text.as_str(), s.kind)).collect();
    assert_eq!(
        got,
        [
            ("Train it:", SentenceKind::Paragraph),
            (
                "```bash\npython train.py --epochs 10. \n\n# Then evaluate. Really.\npython eval.py\n```",
                SentenceKind::Code
            ),
            ("Done.", SentenceKind::Paragraph),
            ("Next.", SentenceKind::Paragraph),
        ]
    );
    assert_eq!(s[1].plain, "python train.py --epochs 10. # Then evaluate. Really. python eval.py");
    assert!(!s[1].heading, "a `#` line inside code is not a heading");
}

#[test]
fn fence_variants() {
    // Tildes, a longer backtick fence containing a shorter one, and a fence inside a list item.
    let md = "~~~python\nx = 1.5\n~~~\n\n````md\n```\ninner\n```\n````\n\n1. Install:\n   ```sh\n   pip install coltrast\n   ```\n";
    let s = split_checked(md);
    let got: Vec<(&str, SentenceKind)> = s.iter().map(|s| (s.plain.as_str(), s.kind)).collect();
    assert_eq!(
        got,
        [
            ("x = 1.5", SentenceKind::Code),
            ("``` inner ```", SentenceKind::Code),
            ("Install:", SentenceKind::ListItem),
            ("pip install coltrast", SentenceKind::Code),
        ]
    );
    assert_eq!(s[3].text, "```sh\n   pip install coltrast\n   ```");
}

#[test]
fn unclosed_fence_runs_to_the_end() {
    let md = "Text.\n\n```\ncode. More code.\n\nNot prose. Still code.\n\n";
    let s = split_checked(md);
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].kind, SentenceKind::Code);
    assert_eq!(s[1].plain, "code. More code. Not prose. Still code.");
    assert!(s[1].text.ends_with("Still code."));
}

#[test]
fn indented_code_block() {
    let md = "Example:\n\n    let x = 1.0;\n    let y = x.sqrt();\n\nAfter.\n";
    let s = split_checked(md);
    assert_eq!(
        s.iter().map(|s| s.kind).collect::<Vec<_>>(),
        [SentenceKind::Paragraph, SentenceKind::Code, SentenceKind::Paragraph]
    );
    assert_eq!(s[1].text, "let x = 1.0;\n    let y = x.sqrt();");
    assert_eq!(s[1].plain, "let x = 1.0; let y = x.sqrt();");
}

#[test]
fn blockquotes() {
    let md = "> Quoted first. Quoted\n> second sentence.\n>\n> New quote paragraph.\nLazy continuation.\n\n> [!NOTE]\n> Alert body.\n";
    let s = split_checked(md);
    let got: Vec<(&str, &str, usize)> = s.iter().map(|s| (s.text.as_str(), s.plain.as_str(), s.block)).collect();
    assert_eq!(
        got,
        [
            ("> Quoted first.", "Quoted first.", 0),
            ("Quoted second sentence.", "Quoted second sentence.", 0),
            ("> New quote paragraph.", "New quote paragraph.", 1),
            ("Lazy continuation.", "Lazy continuation.", 1),
            ("> Alert body.", "Alert body.", 2),
        ]
    );
    assert!(s.iter().all(|s| s.kind == SentenceKind::Quote));
}

#[test]
fn crlf_input_gives_the_same_sentences() {
    let lf = "# Title\n\nLine one\ncontinues. Second.\n\n- item\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode\n```\n";
    let crlf = lf.replace('\n', "\r\n");
    let a = split_checked(lf);
    let b = split_checked(&crlf);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.plain.as_str(), x.kind, x.block), (y.plain.as_str(), y.kind, y.block));
        if x.kind != SentenceKind::Code {
            assert_eq!(x.text, y.text);
        }
        assert!(!y.plain.contains('\r') && !y.text.ends_with('\r'));
    }
    assert_eq!(&crlf[b[1].start..b[1].end], "Line one\r\ncontinues.");
}

#[test]
fn unicode_offsets_are_byte_offsets() {
    let md = "## Über uns\n\nÇa marche très bien. Naïve façade — 日本語も。Ещё одно предложение.\n";
    let s = split_checked(md);
    let got: Vec<&str> = s.iter().map(|s| &md[s.start..s.end]).collect();
    assert_eq!(got, ["## Über uns", "Ça marche très bien.", "Naïve façade — 日本語も。", "Ещё одно предложение."]);
}

#[test]
fn byte_order_mark_is_ignored() {
    let md = "\u{feff}# Title\nText.";
    let s = split_checked(md);
    assert_eq!(s[0].text, "# Title");
    assert_eq!(s[0].start, 3);
    assert!(s[0].heading);
}

#[test]
fn empty_sentences_and_blocks_are_dropped() {
    assert!(split_sentences("").is_empty());
    assert!(split_sentences(" \n\n\t\n").is_empty());
    let md = "![](badge.svg) [![](ci.svg)](https://ci)\n\n<p align=\"center\">\n</p>\n\n#\n\n```\n```\n\nReal text.\n";
    let s = split_checked(md);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].text.as_str(), s[0].block), ("Real text.", 0));
}

#[test]
fn html_blocks_keep_their_text() {
    let md =
        "<p align=\"center\">\n  <img src=\"logo.png\" alt=\"Logo\">\n  <b>Fast retrieval.</b> For READMEs.\n</p>\n";
    assert_eq!(plains(md), ["Fast retrieval.", "For READMEs."]);
}

#[test]
fn strip_markdown_removes_each_kind_of_markup() {
    let cases = [
        ("## Heading ##", "Heading"),
        ("- item one\n- item two", "item one item two"),
        ("1. first\n2. second", "first second"),
        ("> quoted **bold**\n> text", "quoted bold text"),
        ("*it* _it_ **b** __b__ ~~s~~ snake_case", "it it b b s snake_case"),
        ("Use `cargo test --release` now", "Use cargo test --release now"),
        ("[link text](https://example.com/a.b) and ![alt text](img.png)", "link text and alt text"),
        ("a <span class=\"x\">b</span><br/>c", "a b c"),
        ("| a | b |\n|---|---|\n| 1 | 2 |", "a | b 1 | 2"),
        ("```rust\nfn main() {}\n```", "fn main() {}"),
        ("Line one\n\n\nLine   two\twith  spaces", "Line one Line two with spaces"),
        ("Title\n=====", "Title"),
        ("Escaped \\*stars\\* &amp; entities", "Escaped *stars* & entities"),
    ];
    for (md, want) in cases {
        assert_eq!(strip_markdown(md), want, "input: {md:?}");
    }
}

#[test]
fn strip_markdown_agrees_with_sentence_plains() {
    let md = "# T\n\nOne **two**. Three [four](x).\n\n- five\n";
    assert_eq!(strip_markdown(md), plains(md).join(" "));
}

#[test]
fn sentence_spans_on_plain_text() {
    let t = "First one, e.g. here.\nSecond on a new line. Third!";
    let got: Vec<&str> = sentence_spans(t).into_iter().map(|r| &t[r]).collect();
    assert_eq!(got, ["First one, e.g. here.", "Second on a new line.", "Third!"]);
}

#[test]
fn sentence_serializes_with_snake_case_kinds() {
    let s = &split_sentences("## Hi")[0];
    let v = serde_json::to_value(s).unwrap();
    assert_eq!(v["kind"], serde_json::json!({"heading": {"level": 2}}));
    let back: Sentence = serde_json::from_value(v).unwrap();
    assert_eq!(&back, s);
}

#[test]
fn sample_dataset_readmes_split_cleanly() {
    let raw = include_str!("../../data/ai_projects_dataset.json");
    let v: serde_json::Value = serde_json::from_str(raw).expect("dataset is JSON");
    let projects = v["projects"].as_array().expect("projects array");
    assert_eq!(projects.len(), 3);
    let sections = [
        "Overview",
        "Objective",
        "AI Model Used",
        "Data Source",
        "Data Size",
        "Technical Implementation",
        "Performance Metrics",
        "Lessons Learned",
        "Future Work",
    ];
    for p in projects {
        let md = p["readme_content"].as_str().expect("readme_content");
        let s = split_checked(md);
        let headings: Vec<(&str, SentenceKind)> =
            s.iter().filter(|s| s.heading).map(|s| (s.plain.as_str(), s.kind)).collect();
        assert_eq!(headings.len(), 10, "{}", p["project_id"]);
        assert_eq!(headings[0].1, SentenceKind::Heading { level: 1 });
        for (h, want) in headings[1..].iter().zip(sections) {
            assert_eq!(*h, (want, SentenceKind::Heading { level: 2 }));
        }
        for kind in [SentenceKind::ListItem, SentenceKind::TableRow, SentenceKind::Code] {
            assert!(s.iter().any(|s| s.kind == kind), "{}: no {kind:?}", p["project_id"]);
        }
        // Paragraph sentences end where sentences end: a wrong cut would leave a fragment behind.
        for x in s.iter().filter(|x| x.kind == SentenceKind::Paragraph) {
            assert!(x.plain.ends_with(['.', '!', '?', ':']), "odd paragraph sentence: {:?}", x.text);
        }
        let qa = p["qa_pairs"].as_array().expect("qa_pairs");
        assert_eq!(qa.len(), 6);
        for pair in qa {
            for field in ["question", "answer"] {
                assert!(pair[field].as_str().is_some_and(|t| !t.trim().is_empty()), "{pair}");
            }
            let context = pair["context"].as_str().expect("context");
            assert!(sections.contains(&context), "context {context:?} is not a section");
        }
    }
    // Facts the retrieval examples ask about must be stated in the READMEs.
    let readme = |id: &str| {
        projects.iter().find(|p| p["project_id"] == id).and_then(|p| p["readme_content"].as_str()).expect(id)
    };
    assert!(readme("medical-image-diagnosis").contains("The AI model used for medical diagnosis is a ResNet-50"));
    assert!(readme("medical-image-diagnosis").contains("112,120 frontal-view chest X-ray images from 30,805"));
    assert!(readme("customer-sentiment-nlp").contains("The data size for sentiment analysis is 500,000"));
    assert!(readme("rl-trading-bot").contains("uses reinforcement\nlearning"));
    assert!(readme("rl-trading-bot").contains("## Lessons Learned"));
}

/// Random Markdown-ish soup: the splitter must never panic, and every split must satisfy the invariants.
#[test]
fn random_markdown_never_panics_and_keeps_invariants() {
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "word", "Word", " ", "\u{a0}", "\n", "\n\n", "\r\n", ". ", "! ", "? ", "...", "…", "e.g. ", "Dr. ", "J. ",
        "2.5", "v1.2.3", "https://a.b/c.d?e=1", "# ", "## ", "- ", "* ", "1. ", "2) ", "> ", ">", "|",
        "| a | b |\n", "|---|---|\n", "```", "~~~", "`", "**", "*", "_", "~~", "[", "]", "(", ")", "![", "<",
        ">", "<br>", "<b>", "</b>", "<!--", "-->", "&amp;", "&#", ";", "\\", "é", "日本", "。", "\t", "    ",
        "===", "---", "[!NOTE]", "[ref]: x", "\u{feff}", "\"", "'",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let len = (next() % 60) as usize;
        let md: String = (0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
        let s = split_sentences(&md);
        check_invariants(&md, &s);
        let _ = strip_markdown(&md);
        for r in sentence_spans(&md) {
            assert!(md.is_char_boundary(r.start) && md.is_char_boundary(r.end) && r.start < r.end);
        }
    }
}
