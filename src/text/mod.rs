//! Markdown-aware sentence splitting, the first step of semantic chunking.
//!
//! # What
//! Splits a README (or any Markdown) into sentences that know where they came from: each keeps its
//! Markdown text, a plain-text version for the encoder, its kind (heading, paragraph, list item, quote,
//! table row, code), its byte offsets in the input and the index of the Markdown block it belongs to. The
//! chunk stage embeds consecutive sentences and merges them by similarity; it starts a new chunk at each
//! heading and keeps the heading with the text under it.
//!
//! Block rules (a pragmatic CommonMark/GFM subset, see `block.rs`):
//! - ATX headings (`## Title`) and setext headings (`Title` over `===`/`---`) are one sentence each, never
//!   split, with `heading = true`.
//! - Each list item (`-`, `*`, `+`, `1.`, `1)`, task boxes included) and each paragraph (blank-line
//!   separated) is a block; so is each blockquote paragraph (`>`; nested quotes are flattened).
//! - A table is one block and each row one sentence; delimiter rows (`|---|:--:|`) are skipped.
//! - Fenced (```` ``` ```` or `~~~`, with an info string) and indented code blocks are one sentence each,
//!   never split, blank lines and periods inside included. An unclosed fence runs to the end.
//! - Thematic breaks, link reference definitions, GitHub alert labels (`[!NOTE]`) and HTML comments
//!   produce no sentences.
//!
//! Sentence rules inside a paragraph, list item or quote (see `segment.rs`): the lines are joined with one
//! space, then cut after `.`, `!`, `?` or `…` (plus closing quotes, brackets or emphasis) that are followed
//! by whitespace and an uppercase letter, digit, quote or opening bracket. Not after abbreviations (e.g.,
//! i.e., etc., vs., Dr., Fig., et al., Inc., U.S., … see [`ABBREVIATIONS`]), capital initials (J. Smith),
//! or inside code spans, links and HTML tags. Decimals, versions, URLs, e-mails and file names are safe
//! because their periods are not followed by whitespace.
//!
//! Plain text ([`strip_markdown`], and [`Sentence::plain`]): heading `#`s, list bullets and task boxes,
//! quote `>`s, emphasis (`*`, `**`, `_`, `__`, `~~`), backticks (the code is kept), link and image syntax
//! (`[text](url)` → `text`, `![alt](src)` → `alt`), HTML tags and comments are removed; escapes and common
//! entities are decoded; code fences are removed and the code kept. **Table cells are joined with `" | "`**
//! (edge pipes and empty cells dropped), so cell boundaries survive without the table syntax: `| a | b |`
//! → `a | b`. Whitespace is collapsed to single spaces.
//!
//! # Inputs
//! A `&str` of Markdown. LF or CRLF line endings, a leading byte-order mark, and any Unicode text.
//!
//! # Outputs
//! `Vec<Sentence>` in document order. Sentences whose plain text is empty (an image without alt text, a
//! lone HTML tag) are dropped. `start..end` are byte offsets into the input: for the first sentence of a
//! heading, list item or quote, `start` is at its marker (`#`, `-`, `>`); `end` is after the last character
//! of the sentence. `text` is the source between them with each line break (and the next line's
//! indentation and `>` markers) replaced by one space; code blocks keep their text verbatim. `block`
//! numbers the blocks that produced sentences, from 0, with no gaps.
//!
//! # Example
//! ```
//! use coltrast::text::{split_sentences, SentenceKind};
//!
//! let md = "# Demo\n\nWe use BERT, e.g. for sentiment.\nIt needs 2.5 GB. See [docs](https://x.io/a.b).\n\n- Fast.\n";
//! let s = split_sentences(md);
//! let texts: Vec<&str> = s.iter().map(|s| s.text.as_str()).collect();
//! assert_eq!(texts, [
//!     "# Demo",
//!     "We use BERT, e.g. for sentiment.",
//!     "It needs 2.5 GB.",
//!     "See [docs](https://x.io/a.b).",
//!     "- Fast.",
//! ]);
//! assert!(s[0].heading && s[0].kind == SentenceKind::Heading { level: 1 });
//! assert_eq!(s[3].plain, "See docs.");
//! assert_eq!((s[1].block, s[2].block, s[4].block), (1, 1, 2));
//! assert_eq!(&md[s[4].start..s[4].end], "- Fast.");
//! ```

mod block;
mod inline;
mod segment;
/// The first Markdown heading (ATX `#` or setext), without its markers.
pub fn first_heading(text: &str) -> Option<String> {
    let mut in_fence = false;
    let mut prev: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            prev = None;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(rest) = t.strip_prefix('#') {
            let rest = rest.trim_start_matches('#');
            if rest.is_empty() || rest.starts_with(' ') {
                let h = rest.trim().trim_end_matches('#').trim();
                if !h.is_empty() {
                    return Some(h.to_string());
                }
            }
        }
        let u = t.trim_end();
        if let Some(p) = prev {
            if !u.is_empty() && (u.chars().all(|c| c == '=') || (u.len() >= 2 && u.chars().all(|c| c == '-'))) {
                return Some(p.trim().to_string());
            }
        }
        prev = if t.trim().is_empty() { None } else { Some(line) };
    }
    None
}

#[cfg(test)]
mod tests;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use block::{Block, BlockKind};
pub use segment::{ABBREVIATIONS, NUMBERED_ABBREVIATIONS};

/// What kind of Markdown a sentence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SentenceKind {
    /// An ATX (`#`…`######`) or setext heading, level 1–6.
    Heading {
        level: u8,
    },
    Paragraph,
    ListItem,
    /// Text inside a blockquote.
    Quote,
    TableRow,
    /// A whole fenced or indented code block.
    Code,
}

/// One sentence of a Markdown document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentence {
    /// The sentence as Markdown, as in the source, with line breaks joined by a space.
    pub text: String,
    /// The sentence with Markdown removed and whitespace collapsed: what gets embedded. Never empty.
    pub plain: String,
    pub kind: SentenceKind,
    /// Whether this is a heading (`kind` is `Heading`): the chunker starts a new chunk here.
    pub heading: bool,
    /// Byte offset of the sentence's first byte in the input (its block marker for a block's first sentence).
    pub start: usize,
    /// Byte offset just after the sentence's last byte in the input.
    pub end: usize,
    /// Index of the Markdown block the sentence belongs to, counting only blocks that produced sentences.
    pub block: usize,
}

/// Splits Markdown into sentences; see the [module docs](self) for the rules.
pub fn split_sentences(markdown: &str) -> Vec<Sentence> {
    let mut out = Vec::new();
    let mut block_index = 0;
    for b in block::parse_blocks(markdown) {
        let before = out.len();
        let mut push = |text: String, plain: String, kind: SentenceKind, span: Range<usize>| {
            if !plain.is_empty() {
                let heading = matches!(kind, SentenceKind::Heading { .. });
                out.push(Sentence { text, plain, kind, heading, start: span.start, end: span.end, block: block_index });
            }
        };
        match b.kind {
            BlockKind::Code => {
                push(
                    markdown[b.span.clone()].to_string(),
                    code_plain(markdown, &b),
                    SentenceKind::Code,
                    b.span.clone(),
                );
            }
            BlockKind::Table => {
                for row in &b.lines {
                    let text = &markdown[row.clone()];
                    push(text.to_string(), table_row_plain(text), SentenceKind::TableRow, row.clone());
                }
            }
            BlockKind::Heading(level) => {
                if !b.lines.is_empty() {
                    let joined = Joined::new(markdown, &b.lines);
                    let (text, start) = with_marker(markdown, &b, &joined.text);
                    let plain = inline::strip_inline(&joined.text);
                    let end = joined.source(joined.text.len());
                    push(text, plain, SentenceKind::Heading { level }, start..end);
                }
            }
            BlockKind::Paragraph | BlockKind::ListItem | BlockKind::Quote => {
                let kind = match b.kind {
                    BlockKind::ListItem => SentenceKind::ListItem,
                    BlockKind::Quote => SentenceKind::Quote,
                    _ => SentenceKind::Paragraph,
                };
                if b.lines.is_empty() {
                    continue;
                }
                let joined = Joined::new(markdown, &b.lines);
                let protected = inline::protected_spans(&joined.text);
                for (k, r) in segment::sentence_ranges(&joined.text, &protected).into_iter().enumerate() {
                    let body = &joined.text[r.clone()];
                    let plain = inline::strip_inline(body);
                    let (text, start) = if k == 0 {
                        with_marker(markdown, &b, body)
                    } else {
                        (body.to_string(), joined.source(r.start))
                    };
                    push(text, plain, kind, start..joined.source(r.end));
                }
            }
        }
        if out.len() > before {
            block_index += 1;
        }
    }
    out
}

/// Removes Markdown from `s` and collapses whitespace, block by block (see the [module docs](self)):
/// blocks are joined with one space, table cells with `" | "`, and code blocks keep their code.
pub fn strip_markdown(s: &str) -> String {
    let mut out = String::new();
    for b in block::parse_blocks(s) {
        let plain = match b.kind {
            BlockKind::Code => code_plain(s, &b),
            BlockKind::Table => {
                let rows: Vec<String> = b.lines.iter().map(|r| table_row_plain(&s[r.clone()])).collect();
                inline::collapse_whitespace(&rows.join(" "))
            }
            _ => inline::strip_inline(&Joined::new(s, &b.lines).text),
        };
        if !plain.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&plain);
        }
    }
    out
}

/// Sentence boundaries in running text with no block structure (line breaks count as spaces), by the same
/// rules as inside a Markdown paragraph, inline code and links included. Byte ranges, trimmed, in order.
pub fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    segment::sentence_ranges(text, &inline::protected_spans(text))
}

/// A block's content lines joined with single spaces, with a map back to source offsets.
struct Joined {
    text: String,
    /// (offset in `text`, offset in the source, length) for each line.
    pieces: Vec<(usize, usize, usize)>,
}

impl Joined {
    fn new(src: &str, lines: &[Range<usize>]) -> Self {
        let mut text = String::new();
        let mut pieces = Vec::with_capacity(lines.len());
        for r in lines {
            if !text.is_empty() {
                text.push(' ');
            }
            pieces.push((text.len(), r.start, r.len()));
            text.push_str(&src[r.clone()]);
        }
        Joined { text, pieces }
    }

    /// The source offset of offset `j` of the joined text. An offset on a joining space maps to the end of
    /// the line before it.
    fn source(&self, j: usize) -> usize {
        let k = self.pieces.partition_point(|p| p.0 <= j).saturating_sub(1);
        let (at, src, len) = self.pieces[k];
        src + (j - at).min(len)
    }
}

/// The text and start of a block's first sentence: its marker (`## `, `- `, `> `) in front of `body`.
fn with_marker(src: &str, b: &Block, body: &str) -> (String, usize) {
    let Some(marker) = &b.marker else {
        return (body.to_string(), b.lines[0].start);
    };
    let first = b.lines[0].start;
    let between = &src[marker.start..first];
    let prefix = if between.contains('\n') {
        // The content starts on a later line ("-\n  text"): keep the marker, joined by one space.
        format!("{} ", src[marker.clone()].trim_end())
    } else {
        between.to_string()
    };
    (prefix + body, marker.start)
}

fn code_plain(src: &str, b: &Block) -> String {
    let code: Vec<&str> = b.lines.iter().map(|r| &src[r.clone()]).collect();
    inline::collapse_whitespace(&code.join("\n"))
}

/// A table row's cells, inline Markdown stripped, joined with `" | "`; edge pipes and empty cells dropped.
/// `\|` is a literal pipe inside a cell.
fn table_row_plain(row: &str) -> String {
    let mut cells = Vec::new();
    let mut cell_start = 0;
    let b = row.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'|' => {
                cells.push(&row[cell_start..i]);
                cell_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    cells.push(&row[cell_start.min(row.len())..]);
    let stripped: Vec<String> = cells.into_iter().map(inline::strip_inline).filter(|c| !c.is_empty()).collect();
    stripped.join(" | ")
}
