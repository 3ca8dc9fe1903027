//! The README is an entry point (at most 200 lines), and every relative link in it and in docs/ and
//! CONTRIBUTING.md resolves: the file exists and, with a `#fragment`, the target has a heading with that GitHub
//! anchor.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The targets of inline links `[text](target)` outside code spans and fenced code blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // drop code spans, whose brackets are not links
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation other than `-` and `_` dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

fn check(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, fragment) = match target.split_once('#') {
            Some((p, f)) => (p, Some(f)),
            None => (target.as_str(), None),
        };
        let dest = if path.is_empty() { file.to_path_buf() } else { file.parent().unwrap().join(path) };
        if !dest.exists() {
            broken.push(format!("{}: link ({target}): {} does not exist", file.display(), dest.display()));
            continue;
        }
        if let Some(fragment) = fragment {
            if dest.is_file() && dest.extension().is_some_and(|e| e == "md") {
                let target_text = std::fs::read_to_string(&dest).unwrap();
                if !anchors(&target_text).iter().any(|a| a == fragment) {
                    broken.push(format!(
                        "{}: link ({target}): {} has no heading with anchor #{fragment}",
                        file.display(),
                        dest.display()
                    ));
                }
            }
        }
    }
    broken
}

#[test]
fn the_readme_is_at_most_200_lines() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = text.lines().count();
    assert!(lines <= 200, "README.md has {lines} lines; the manual belongs in docs/");
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let files = markdown_files();
    assert!(files.len() > 3, "README.md, CONTRIBUTING.md and docs/*.md: {files:?}");
    let broken: Vec<String> = files.iter().flat_map(|f| check(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_sees_a_missing_file_and_a_missing_anchor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.md"), "# Build time\n\ntext\n").unwrap();
    let a = dir.path().join("a.md");
    std::fs::write(
        &a,
        "[ok](b.md#build-time) [gone](c.md) [no anchor](b.md#setup) `[code](d.md)`\n```\n[fenced](e.md)\n```\n",
    )
    .unwrap();
    let broken = check(&a);
    assert_eq!(broken.len(), 2, "{broken:#?}");
    assert!(broken[0].contains("c.md does not exist"), "{}", broken[0]);
    assert!(broken[1].contains("no heading with anchor #setup"), "{}", broken[1]);
    assert_eq!(anchor("Setup and the Makefile"), "setup-and-the-makefile");
    assert_eq!(anchor("`make bench`: what it runs"), "make-bench-what-it-runs");
}
