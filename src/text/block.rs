//! Markdown blocks: a line-based pass that finds headings, paragraphs, list items, blockquotes, tables and
//! code blocks, and records for each the byte ranges of its content lines in the source.
//!
//! It follows CommonMark/GFM where that matters for splitting text (what starts and ends a block, what is
//! code) and is lenient elsewhere: nested containers are flattened (a list item inside a quote is a quote
//! block; an indented paragraph under a list item is a paragraph), and HTML blocks are paragraphs whose
//! tags inline stripping later removes.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Heading(u8),
    Paragraph,
    ListItem,
    Quote,
    Table,
    Code,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub kind: BlockKind,
    /// The block marker on its first line (`## `, `- `, `1. `, `> `, a task box `- [x] `), if any.
    pub marker: Option<Range<usize>>,
    /// Content ranges, one per source line, trimmed, never empty. Tables: one per row (delimiter rows left
    /// out). Code: the raw code lines between the fences (may be empty or blank).
    pub lines: Vec<Range<usize>>,
    /// The whole block in the source, from its first marker byte to its last non-blank byte.
    pub span: Range<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    /// End of the line, without `\n` or a `\r` before it.
    end: usize,
}

fn split_lines(src: &str, from: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = from;
    for (i, b) in src.bytes().enumerate().skip(from) {
        if b == b'\n' {
            let end = if i > start && src.as_bytes()[i - 1] == b'\r' { i - 1 } else { i };
            lines.push(Line { start, end });
            start = i + 1;
        }
    }
    if start < src.len() {
        let end = if src.ends_with('\r') { src.len() - 1 } else { src.len() };
        lines.push(Line { start, end });
    }
    lines
}

/// Leading whitespace of `t`: (columns, with tabs to the next multiple of 4; bytes).
fn indent(t: &str) -> (usize, usize) {
    let mut cols = 0;
    let mut bytes = 0;
    for b in t.bytes() {
        match b {
            b' ' => cols += 1,
            b'\t' => cols += 4 - cols % 4,
            _ => break,
        }
        bytes += 1;
    }
    (cols, bytes)
}

/// Opening code fence: at least three backticks or tildes; a backtick fence's info string has no backtick.
fn fence_open(rest: &str) -> Option<(u8, usize)> {
    let c = *rest.as_bytes().first()?;
    if c != b'`' && c != b'~' {
        return None;
    }
    let n = rest.bytes().take_while(|&b| b == c).count();
    if n < 3 || (c == b'`' && rest[n..].contains('`')) {
        return None;
    }
    Some((c, n))
}

fn fence_close(line: &str, c: u8, n: usize) -> bool {
    let t = line.trim_start();
    let m = t.bytes().take_while(|&b| b == c).count();
    m >= n && t[m..].trim().is_empty()
}

/// ATX heading: 1–6 `#` then a space or the end. Returns the level and the content range within `rest`,
/// without an optional closing `#` sequence.
fn atx_heading(rest: &str) -> Option<(u8, Range<usize>)> {
    let n = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&n) {
        return None;
    }
    let after = &rest[n..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let lead = after.len() - after.trim_start().len();
    let mut content = after.trim();
    let without_hashes = content.trim_end_matches('#');
    if without_hashes.is_empty() {
        content = "";
    } else if without_hashes.len() < content.len() && without_hashes.ends_with([' ', '\t']) {
        content = without_hashes.trim_end();
    }
    let start = n + lead;
    Some((n as u8, start..start + content.len()))
}

/// Setext underline: only `=` (level 1) or only `-` (level 2), trailing spaces allowed.
fn setext_level(rest: &str) -> Option<u8> {
    let t = rest.trim_end();
    let c = *t.as_bytes().first()?;
    if (c == b'=' || c == b'-') && t.bytes().all(|b| b == c) {
        Some(if c == b'=' { 1 } else { 2 })
    } else {
        None
    }
}

/// Thematic break: three or more of the same `*`, `-` or `_`, optionally spaced.
fn thematic_break(rest: &str) -> bool {
    let mut chars = rest.bytes().filter(|b| !b.is_ascii_whitespace());
    let Some(c) = chars.next() else { return false };
    if !matches!(c, b'*' | b'-' | b'_') {
        return false;
    }
    let mut n = 1;
    for b in chars {
        if b != c {
            return false;
        }
        n += 1;
    }
    n >= 3
}

/// GFM table delimiter row: cells of `-` with optional `:` at either end, separated by `|`.
fn delimiter_row(rest: &str) -> bool {
    let t = rest.trim();
    if !t.contains('-') || !t.bytes().all(|b| matches!(b, b'|' | b'-' | b':' | b' ' | b'\t')) {
        return false;
    }
    if !t.contains('|') {
        return false;
    }
    let inner = t.strip_prefix('|').unwrap_or(t);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').all(|cell| {
        let c = cell.trim();
        let c = c.strip_prefix(':').unwrap_or(c);
        let c = c.strip_suffix(':').unwrap_or(c);
        !c.is_empty() && c.bytes().all(|b| b == b'-')
    })
}

struct ListMarker {
    /// Bytes from the marker to the content (marker, spaces, and a task box if present).
    len: usize,
    /// Whether it may interrupt a paragraph (CommonMark: a bullet or `1.` with content).
    interrupts_paragraph: bool,
}

fn list_marker(rest: &str) -> Option<ListMarker> {
    let b = rest.as_bytes();
    let (marker_len, first_is_one) = match *b.first()? {
        b'-' | b'*' | b'+' => (1, true),
        b'0'..=b'9' => {
            let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 9 || !matches!(b.get(digits), Some(b'.' | b')')) {
                return None;
            }
            (digits + 1, &rest[..digits] == "1")
        }
        _ => return None,
    };
    let after = &rest[marker_len..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let mut len = marker_len + (after.len() - after.trim_start().len());
    let content = &rest[len..];
    for box_ in ["[ ]", "[x]", "[X]"] {
        if let Some(tail) = content.strip_prefix(box_) {
            if tail.is_empty() || tail.starts_with([' ', '\t']) {
                len += box_.len() + (tail.len() - tail.trim_start().len());
            }
        }
    }
    let has_content = !rest[len..].trim().is_empty();
    Some(ListMarker { len, interrupts_paragraph: first_is_one && has_content })
}

/// Link reference definition: `[label]: destination`.
fn reference_definition(rest: &str) -> bool {
    let Some(tail) = rest.strip_prefix('[') else {
        return false;
    };
    let Some(close) = tail.find("]:") else {
        return false;
    };
    close > 0 && !tail[..close].contains(['[', ']']) && !tail[close + 2..].trim().is_empty()
}

/// GitHub alert label inside a quote: `[!NOTE]`, `[!WARNING]`, ….
fn alert_label(content: &str) -> bool {
    let t = content.trim();
    t.len() > 3 && t.starts_with("[!") && t.ends_with(']') && t[2..t.len() - 1].bytes().all(|b| b.is_ascii_alphabetic())
}

enum Open {
    Flow(Block),
    /// Indented code: first line index and last non-blank line index.
    Indented(usize, usize),
}

struct Parser<'a> {
    src: &'a str,
    lines: Vec<Line>,
    out: Vec<Block>,
    open: Option<Open>,
    /// Inside a list (since the last list item, until a non-indented line starts another block), where
    /// indented lines are list content rather than indented code.
    in_list: bool,
}

impl Parser<'_> {
    fn flush(&mut self) {
        match self.open.take() {
            Some(Open::Flow(mut b)) => {
                if let Some(last) = b.lines.last() {
                    b.span.end = last.end;
                }
                self.out.push(b);
            }
            Some(Open::Indented(first, last)) => {
                let lines: Vec<Range<usize>> = (first..=last)
                    .map(|k| {
                        let l = self.lines[k];
                        l.start..l.end
                    })
                    .collect();
                let first_line = &self.src[lines[0].clone()];
                let start = lines[0].start + indent(first_line).1;
                let end = lines[lines.len() - 1].end;
                self.out.push(Block { kind: BlockKind::Code, marker: None, lines, span: start..end });
            }
            None => {}
        }
    }

    fn open_kind(&self) -> Option<BlockKind> {
        match &self.open {
            Some(Open::Flow(b)) => Some(b.kind),
            _ => None,
        }
    }

    fn start(&mut self, kind: BlockKind, marker: Option<Range<usize>>, content: Range<usize>) {
        self.flush();
        let span_start = marker.as_ref().map_or(content.start, |m| m.start);
        let lines = if content.is_empty() { Vec::new() } else { vec![content.clone()] };
        let span = span_start..content.end.max(span_start);
        self.open = Some(Open::Flow(Block { kind, marker, lines, span }));
    }

    fn push_line(&mut self, content: Range<usize>) {
        if let Some(Open::Flow(b)) = &mut self.open {
            if !content.is_empty() {
                b.lines.push(content);
            }
        }
    }

    fn emit(&mut self, block: Block) {
        self.flush();
        self.out.push(block);
    }

    /// A fenced code block opening at line `i`; returns the index of the line after it.
    fn fenced(&mut self, i: usize, fence_start: usize, c: u8, n: usize) -> usize {
        let mut j = i + 1;
        while j < self.lines.len() {
            let l = self.lines[j];
            if fence_close(&self.src[l.start..l.end], c, n) {
                break;
            }
            j += 1;
        }
        let lines: Vec<Range<usize>> =
            self.lines[i + 1..j.min(self.lines.len())].iter().map(|l| l.start..l.end).collect();
        let end = if j < self.lines.len() {
            let l = self.lines[j];
            l.start + self.src[l.start..l.end].trim_end().len()
        } else {
            // Unclosed: the block runs to the end of the document (CommonMark), trailing blank lines aside.
            lines.iter().rev().find(|r| !self.src[(*r).clone()].trim().is_empty()).map_or(self.lines[i].end, |r| r.end)
        };
        self.emit(Block { kind: BlockKind::Code, marker: None, lines, span: fence_start..end });
        j + 1
    }
}

pub(crate) fn parse_blocks(src: &str) -> Vec<Block> {
    let from = if src.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    let lines = split_lines(src, from);
    let mut p = Parser { src, lines, out: Vec::new(), open: None, in_list: false };
    let mut i = 0;
    while i < p.lines.len() {
        let line = p.lines[i];
        let text = &src[line.start..line.end];
        let (cols, ws) = indent(text);
        let rest_start = line.start + ws;
        let rest = &src[rest_start..line.end];
        let rest_end = line.start + text.trim_end().len();
        // Content from `from` to the end of the line, without Unicode whitespace (a no-break space
        // counts) at either end, so that sentence offsets and line joins agree.
        let content = |from: usize| {
            let end = rest_end.max(from);
            let piece = &src[from..end];
            from + (piece.len() - piece.trim_start().len())..end
        };
        i += 1;

        if rest.trim().is_empty() {
            if !matches!(p.open, Some(Open::Indented(..))) {
                p.flush();
            }
            continue;
        }
        // Indented code: four columns, not inside a list, and not continuing a paragraph.
        if cols >= 4 && !p.in_list {
            match p.open {
                Some(Open::Indented(first, _)) => {
                    p.open = Some(Open::Indented(first, i - 1));
                    continue;
                }
                None => {
                    p.open = Some(Open::Indented(i - 1, i - 1));
                    continue;
                }
                _ => {}
            }
        }
        if matches!(p.open, Some(Open::Indented(..))) {
            p.flush();
        }
        // A non-indented line that starts something other than a list item ends the list.
        let leaves_list = cols == 0;

        if let Some((c, n)) = fence_open(rest) {
            p.flush();
            if leaves_list {
                p.in_list = false;
            }
            i = p.fenced(i - 1, rest_start, c, n);
            continue;
        }
        if rest.starts_with("<!--") && !rest.contains("-->") {
            // A multi-line HTML comment: skip it whole, blank lines included.
            p.flush();
            while i < p.lines.len() && !src[p.lines[i].start..p.lines[i].end].contains("-->") {
                i += 1;
            }
            i += 1;
            continue;
        }
        if let Some((level, r)) = atx_heading(rest) {
            if leaves_list {
                p.in_list = false;
            }
            let content = rest_start + r.start..rest_start + r.end;
            let lines = if content.is_empty() { Vec::new() } else { vec![content.clone()] };
            let marker = rest_start..content.start.max(rest_start + level as usize);
            p.emit(Block { kind: BlockKind::Heading(level), marker: Some(marker), lines, span: rest_start..rest_end });
            continue;
        }
        if cols < 4 && p.open_kind() == Some(BlockKind::Paragraph) {
            if let Some(level) = setext_level(rest) {
                if let Some(Open::Flow(mut b)) = p.open.take() {
                    b.kind = BlockKind::Heading(level);
                    b.span.end = b.lines.last().map_or(b.span.end, |l| l.end);
                    p.out.push(b);
                }
                continue;
            }
        }
        if cols < 4 && thematic_break(rest) {
            p.flush();
            if leaves_list {
                p.in_list = false;
            }
            continue;
        }
        // Tables: rows start with `|`, or contain one when a delimiter row follows (GFM without edge pipes);
        // once in a table, any line with a `|` is a row.
        let in_table = p.open_kind() == Some(BlockKind::Table);
        let next_is_delimiter = p.lines.get(i).is_some_and(|l| delimiter_row(&src[l.start..l.end]));
        if (in_table && rest.contains('|')) || rest.starts_with('|') || (rest.contains('|') && next_is_delimiter) {
            if !in_table {
                p.start(BlockKind::Table, None, rest_start..rest_start);
                if leaves_list {
                    p.in_list = false;
                }
            }
            if !delimiter_row(rest) {
                p.push_line(content(rest_start));
            }
            continue;
        }
        if in_table {
            p.flush();
        }
        if cols < 4 && rest.starts_with('>') {
            if leaves_list {
                p.in_list = false;
            }
            // Nested quote markers (`> > x`, `>> x`) are flattened; the whitespace after them is dropped.
            let rb = rest.as_bytes();
            let mut k = 0;
            while rb.get(k) == Some(&b'>') {
                k += 1;
                while rb.get(k).is_some_and(|&b| b == b' ' || b == b'\t') {
                    k += 1;
                }
            }
            let inner = &rest[k..];
            let inner_start = rest_start + k;
            if inner.trim().is_empty() || alert_label(inner) {
                p.flush();
                continue;
            }
            // A heading or list item inside the quote starts a new quote block, its marker included.
            let inner_marker = atx_heading(inner).map(|(_, r)| r.start).or_else(|| list_marker(inner).map(|m| m.len));
            match inner_marker {
                None if p.open_kind() == Some(BlockKind::Quote) => p.push_line(content(inner_start)),
                m => {
                    let content_start = inner_start + m.unwrap_or(0);
                    p.start(BlockKind::Quote, Some(rest_start..content_start), content(content_start));
                }
            }
            continue;
        }
        if let Some(m) = list_marker(rest) {
            if p.open_kind() != Some(BlockKind::Paragraph) || m.interrupts_paragraph {
                p.in_list = true;
                let content_start = rest_start + m.len;
                p.start(BlockKind::ListItem, Some(rest_start..content_start), content(content_start));
                continue;
            }
        }
        if p.open.is_none() && cols < 4 && reference_definition(rest) {
            continue;
        }
        match p.open_kind() {
            Some(BlockKind::Paragraph | BlockKind::ListItem | BlockKind::Quote) => p.push_line(content(rest_start)),
            _ => {
                if leaves_list {
                    p.in_list = false;
                }
                p.start(BlockKind::Paragraph, None, content(rest_start));
            }
        }
    }
    p.flush();
    p.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(BlockKind, Vec<&str>)> {
        parse_blocks(src).into_iter().map(|b| (b.kind, b.lines.iter().map(|r| &src[r.clone()]).collect())).collect()
    }

    #[test]
    fn lines_handle_crlf_and_missing_final_newline() {
        let src = "a\r\nb\n\nc\r";
        let got: Vec<&str> = split_lines(src, 0).iter().map(|l| &src[l.start..l.end]).collect();
        assert_eq!(got, ["a", "b", "", "c"]);
    }

    #[test]
    fn atx_heading_forms() {
        assert_eq!(atx_heading("## Title ##").map(|(l, r)| (l, &"## Title ##"[r])), Some((2, "Title")));
        assert_eq!(atx_heading("# C#").map(|(l, r)| (l, &"# C#"[r])), Some((1, "C#")));
        assert!(atx_heading("#hashtag").is_none());
        assert!(atx_heading("####### seven").is_none());
        assert_eq!(atx_heading("###").map(|(l, r)| (l, r.is_empty())), Some((3, true)));
    }

    #[test]
    fn delimiter_rows() {
        assert!(delimiter_row("|---|:---:|--:|"));
        assert!(delimiter_row("--- | ---"));
        assert!(!delimiter_row("---"));
        assert!(!delimiter_row("| a | b |"));
        assert!(!delimiter_row("|---|x|"));
    }

    #[test]
    fn list_markers() {
        assert_eq!(list_marker("- a").map(|m| m.len), Some(2));
        assert_eq!(list_marker("10) a").map(|m| m.len), Some(4));
        assert_eq!(list_marker("- [x] done").map(|m| m.len), Some(6));
        assert!(list_marker("-5 degrees").is_none());
        assert!(list_marker("2.5 GB").is_none());
        assert!(list_marker("1.5").is_none());
        assert!(list_marker("2. b").is_some_and(|m| !m.interrupts_paragraph));
    }

    #[test]
    fn block_structure() {
        let src = "# T\n\npara one\nstill one\n\n- a\n- b\n  lazy b\n\n> q1\n> q2\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n```\nc\n\nd\n```\nafter\n";
        assert_eq!(
            kinds(src),
            vec![
                (BlockKind::Heading(1), vec!["T"]),
                (BlockKind::Paragraph, vec!["para one", "still one"]),
                (BlockKind::ListItem, vec!["a"]),
                (BlockKind::ListItem, vec!["b", "lazy b"]),
                (BlockKind::Quote, vec!["q1", "q2"]),
                (BlockKind::Table, vec!["| x | y |", "| 1 | 2 |"]),
                (BlockKind::Code, vec!["c", "", "d"]),
                (BlockKind::Paragraph, vec!["after"]),
            ]
        );
    }

    #[test]
    fn setext_thematic_and_list_interruptions() {
        let src = "Title\n=====\nSub\n---\n\n---\ntext\n2. not a list\n* * *\n";
        assert_eq!(
            kinds(src),
            vec![
                (BlockKind::Heading(1), vec!["Title"]),
                (BlockKind::Heading(2), vec!["Sub"]),
                (BlockKind::Paragraph, vec!["text", "2. not a list"]),
            ]
        );
    }

    #[test]
    fn indented_code_outside_lists_only() {
        let src = "intro\n\n    code line\n\n    more code\nback\n\n- item\n\n    item text\n";
        assert_eq!(
            kinds(src),
            vec![
                (BlockKind::Paragraph, vec!["intro"]),
                (BlockKind::Code, vec!["    code line", "", "    more code"]),
                (BlockKind::Paragraph, vec!["back"]),
                (BlockKind::ListItem, vec!["item"]),
                (BlockKind::Paragraph, vec!["item text"]),
            ]
        );
    }

    #[test]
    fn gfm_table_without_edge_pipes_and_quotes_with_inner_markers() {
        let src = "a | b\n--|--\n1 | 2\n\n> [!NOTE]\n> ## Inner\n> - one\n> - two\n>\n> >> deep\n";
        assert_eq!(
            kinds(src),
            vec![
                (BlockKind::Table, vec!["a | b", "1 | 2"]),
                (BlockKind::Quote, vec!["Inner"]),
                (BlockKind::Quote, vec!["one"]),
                (BlockKind::Quote, vec!["two"]),
                (BlockKind::Quote, vec!["deep"]),
            ]
        );
    }

    #[test]
    fn comments_and_reference_definitions_vanish() {
        let src = "<!--\nhidden\n\nstill hidden\n-->\n[ref]: https://example.com\ntext\n";
        assert_eq!(kinds(src), vec![(BlockKind::Paragraph, vec!["text"])]);
    }
}
