//! Inline Markdown: a small tokenizer over one block's text (code spans, links, images, autolinks, HTML,
//! escapes, entities and emphasis delimiters), used twice:
//! - [`strip_inline`] turns the tokens into plain text for embedding;
//! - [`protected_spans`] tells the sentence splitter where it must never cut (inside a code span, a link,
//!   an image, an autolink or an HTML tag, where periods belong to file names, URLs and attributes).
//!
//! The grammar is a pragmatic subset of CommonMark/GFM: it is meant to produce good plain text, not to
//! render HTML, so unmatched or odd syntax degrades to literal text instead of failing.

use std::ops::Range;

/// One piece of inline text. `span` is the byte range in the tokenized string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub span: Range<usize>,
    pub kind: TokenKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// Literal text, copied as is.
    Text,
    /// `` `code` ``: the range of the code itself, without the backticks.
    Code(Range<usize>),
    /// `[text](url)`, `[text][ref]` or `![alt](src)`: the range of the text (or alt), itself Markdown.
    Link(Range<usize>),
    /// `<https://…>` or `<user@host>`: the range of the address.
    Autolink(Range<usize>),
    /// An HTML tag or comment; `breaks` is true for tags that separate words (`<br>`, `<p>`, `<td>`, …).
    Html { breaks: bool },
    /// A backslash escape or an HTML entity, standing for one character.
    Char(char),
    /// Markup to drop: an emphasis run (`*`, `**`, `_`, `~~`) or a backtick run that opens no code span.
    Delimiter,
}

/// Splits `s` into inline tokens that cover it completely and in order.
pub(crate) fn tokenize(s: &str) -> Vec<Token> {
    let b = s.as_bytes();
    let mut out: Vec<Token> = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    // Only ASCII bytes start markup, and in UTF-8 an ASCII byte is always a whole character, so byte
    // stepping never lands inside a multi-byte character where it matters.
    while i < b.len() {
        let found = match b[i] {
            b'\\' => escape(s, i),
            b'`' => Some(code_span(s, i)),
            b'!' if b.get(i + 1) == Some(&b'[') => link(s, i + 1).map(|(text, end)| (TokenKind::Link(text), end)),
            b'[' => link(s, i).map(|(text, end)| (TokenKind::Link(text), end)),
            b'<' => angle(s, i),
            b'*' | b'_' | b'~' => delimiter_run(s, i),
            b'&' => entity(s, i),
            _ => None,
        };
        match found {
            Some((kind, end)) => {
                if text_start < i {
                    out.push(Token { span: text_start..i, kind: TokenKind::Text });
                }
                out.push(Token { span: i..end, kind });
                i = end;
                text_start = end;
            }
            None => i += 1,
        }
    }
    if text_start < b.len() {
        out.push(Token { span: text_start..b.len(), kind: TokenKind::Text });
    }
    out
}

/// Removes inline markup from one block's text and collapses whitespace (see the module docs of
/// [`crate::text`] for the exact rules).
pub(crate) fn strip_inline(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_stripped(s, &mut out);
    collapse_whitespace(&out)
}

fn push_stripped(s: &str, out: &mut String) {
    for t in tokenize(s) {
        match t.kind {
            TokenKind::Text => out.push_str(&s[t.span]),
            TokenKind::Code(r) | TokenKind::Autolink(r) => out.push_str(&s[r]),
            TokenKind::Link(r) => push_stripped(&s[r], out),
            TokenKind::Html { breaks } => {
                if breaks {
                    out.push(' ');
                }
            }
            TokenKind::Char(c) => out.push(c),
            TokenKind::Delimiter => {}
        }
    }
}

/// Byte ranges of `s` inside which a sentence must not be cut: code spans, links, images, autolinks and
/// HTML tags. Sorted and non-overlapping.
pub(crate) fn protected_spans(s: &str) -> Vec<Range<usize>> {
    tokenize(s)
        .into_iter()
        .filter(|t| {
            matches!(t.kind, TokenKind::Code(_) | TokenKind::Link(_) | TokenKind::Autolink(_) | TokenKind::Html { .. })
        })
        .map(|t| t.span)
        .collect()
}

/// Replaces every run of whitespace (Unicode, including no-break space) with one space and trims the ends.
pub(crate) fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn escape(s: &str, i: usize) -> Option<(TokenKind, usize)> {
    let next = *s.as_bytes().get(i + 1)?;
    next.is_ascii_punctuation().then(|| (TokenKind::Char(next as char), i + 2))
}

fn run_len(b: &[u8], i: usize, c: u8) -> usize {
    b[i..].iter().take_while(|&&x| x == c).count()
}

/// A backtick run opens a code span if a run of the same length closes it later; otherwise the run is
/// markup to drop (it cannot be literal code without a partner).
fn code_span(s: &str, i: usize) -> (TokenKind, usize) {
    let b = s.as_bytes();
    let n = run_len(b, i, b'`');
    let mut j = i + n;
    while j < b.len() {
        if b[j] == b'`' {
            let m = run_len(b, j, b'`');
            if m == n {
                let mut content = i + n..j;
                // CommonMark strips one space on each side when both are present (`` ` a ` `` is "a").
                let inner = &s[content.clone()];
                if inner.len() >= 2 && inner.starts_with(' ') && inner.ends_with(' ') && !inner.trim().is_empty() {
                    content = content.start + 1..content.end - 1;
                }
                return (TokenKind::Code(content), j + m);
            }
            j += m;
        } else {
            j += 1;
        }
    }
    (TokenKind::Delimiter, i + n)
}

/// Finds the byte after the bracket that closes the one at `open` (`open_c`/`close_c` nest, backslash
/// escapes are skipped).
fn matching(s: &str, open: usize, open_c: u8, close_c: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut j = open;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 1,
            c if c == open_c => depth += 1,
            c if c == close_c => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

/// `[text](dest)` or `[text][ref]` starting at the `[` at `i`: returns the text range and the end.
/// A bare `[text]` (a shortcut reference, a task box, a GitHub alert label) is not taken as a link.
fn link(s: &str, i: usize) -> Option<(Range<usize>, usize)> {
    let close = matching(s, i, b'[', b']')?;
    let text = i + 1..close - 1;
    match s.as_bytes().get(close) {
        Some(b'(') => matching(s, close, b'(', b')').map(|end| (text, end)),
        Some(b'[') => {
            let end = s[close..].find(']').map(|k| close + k + 1)?;
            Some((text, end))
        }
        _ => None,
    }
}

/// HTML elements that READMEs use and that separate words: dropping them leaves a space.
#[rustfmt::skip]
const BLOCK_TAGS: &[&str] = &[
    "address", "article", "aside", "blockquote", "br", "center", "dd", "details", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "img", "li",
    "main", "nav", "ol", "p", "picture", "pre", "section", "source", "summary", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "ul", "video",
];

/// HTML elements that READMEs use inside running text: dropping them leaves nothing.
/// Any other `<name …>` (`Vec<String>`, `x<y and z>w`) stays literal text.
#[rustfmt::skip]
const INLINE_TAGS: &[&str] = &[
    "a", "abbr", "b", "cite", "code", "del", "em", "font", "i", "ins", "kbd", "mark", "q", "s", "samp",
    "small", "span", "strike", "strong", "sub", "sup", "tt", "u", "var",
];

/// `<…>` at `i`: an autolink, an HTML comment or an HTML tag; anything else is a literal `<`.
fn angle(s: &str, i: usize) -> Option<(TokenKind, usize)> {
    let rest = &s[i + 1..];
    if let Some(body) = rest.strip_prefix("!--") {
        let end = body.find("-->")?;
        return Some((TokenKind::Html { breaks: true }, i + 4 + end + 3));
    }
    if let Some(close) = rest.find('>') {
        let inner = &rest[..close];
        // Autolink: scheme ":" address, or an e-mail address, with no spaces.
        if !inner.is_empty() && !inner.contains(|c: char| c.is_whitespace() || c == '<') {
            let scheme_ok = inner.find(':').is_some_and(|colon| {
                let scheme = &inner[..colon];
                (2..=32).contains(&scheme.len())
                    && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            });
            let email_ok = inner.contains('@') && !inner.starts_with('@') && !inner.ends_with('@');
            if scheme_ok || email_ok {
                return Some((TokenKind::Autolink(i + 1..i + 1 + close), i + 1 + close + 1));
            }
        }
    }
    html_tag(s, i)
}

/// An HTML open or close tag at `i` (`<name attr="v" flag>`, `</name>`, `<br/>`) of a known element
/// ([`BLOCK_TAGS`], [`INLINE_TAGS`]) with well-formed attributes, so prose such as `Vec<String>` stays literal. Quoted
/// attribute values may contain `>`.
fn html_tag(s: &str, i: usize) -> Option<(TokenKind, usize)> {
    let b = s.as_bytes();
    let mut j = i + 1;
    let closing = b.get(j) == Some(&b'/');
    if closing {
        j += 1;
    }
    let name_start = j;
    if !b.get(j)?.is_ascii_alphabetic() {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-') {
        j += 1;
    }
    let name = s[name_start..j].to_ascii_lowercase();
    let breaks = if BLOCK_TAGS.contains(&name.as_str()) {
        true
    } else if INLINE_TAGS.contains(&name.as_str()) {
        false
    } else {
        return None;
    };
    let skip_ws = |mut k: usize| {
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        k
    };
    loop {
        let before_ws = j;
        j = skip_ws(j);
        match b.get(j)? {
            b'>' => return Some((TokenKind::Html { breaks }, j + 1)),
            b'/' if b.get(j + 1) == Some(&b'>') => return Some((TokenKind::Html { breaks }, j + 2)),
            c if !closing && j > before_ws && (c.is_ascii_alphabetic() || *c == b'_' || *c == b':') => {
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b"_.:-".contains(&b[j])) {
                    j += 1;
                }
                let k = skip_ws(j);
                if b.get(k) == Some(&b'=') {
                    j = skip_ws(k + 1);
                    match *b.get(j)? {
                        q @ (b'"' | b'\'') => {
                            let close = s[j + 1..].find(q as char)?;
                            j = j + 1 + close + 1;
                        }
                        _ => {
                            let v = j;
                            while j < b.len() && !b[j].is_ascii_whitespace() && !b"\"'=<>`".contains(&b[j]) {
                                j += 1;
                            }
                            if j == v {
                                return None;
                            }
                        }
                    }
                }
            }
            _ => return None,
        }
    }
}

/// An emphasis/strikethrough run at `i`, taken as markup when it sits at a word edge.
///
/// - `*`: markup unless it has whitespace on both sides (`2 * 3`) or letters/digits on both sides (`5*3`).
/// - `_`: markup only at a word edge, so `snake_case` identifiers keep their underscores (CommonMark's rule:
///   `_` does not emphasize inside a word).
/// - `~`: only runs of two or more (`~~strike~~`); a single `~` is kept (`~5 GB`).
fn delimiter_run(s: &str, i: usize) -> Option<(TokenKind, usize)> {
    let b = s.as_bytes();
    let c = b[i];
    let n = run_len(b, i, c);
    let end = i + n;
    if c == b'~' && n < 2 {
        return None;
    }
    let prev = s[..i].chars().next_back();
    let next = s[end..].chars().next();
    let ws = |x: Option<char>| x.is_none_or(char::is_whitespace);
    let alnum = |x: Option<char>| x.is_some_and(char::is_alphanumeric);
    let markup = match c {
        b'_' => (!ws(next) && !alnum(prev)) || (!ws(prev) && !alnum(next)),
        _ => !((ws(prev) && ws(next)) || (alnum(prev) && alnum(next))),
    };
    markup.then_some((TokenKind::Delimiter, end))
}

/// `&name;`, `&#NNN;` or `&#xHH;` at `i`, for the entities that READMEs actually use.
fn entity(s: &str, i: usize) -> Option<(TokenKind, usize)> {
    let rest = &s[i + 1..];
    let semi = rest.bytes().take(10).position(|c| c == b';')?;
    let body = &rest[..semi];
    let c = if let Some(num) = body.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        char::from_u32(code)?
    } else {
        match body {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            "nbsp" => ' ',
            "ndash" => '–',
            "mdash" => '—',
            "hellip" => '…',
            "copy" => '©',
            "reg" => '®',
            "trade" => '™',
            "times" => '×',
            "rarr" => '→',
            "larr" => '←',
            _ => return None,
        }
    };
    Some((TokenKind::Char(c), i + 1 + semi + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_cover_the_input_in_order() {
        let s = "A **b** `c` [d](e) <br> &amp; \\* é_f_g ~~h~~";
        let toks = tokenize(s);
        let mut pos = 0;
        for t in &toks {
            assert_eq!(t.span.start, pos, "gap before {t:?}");
            pos = t.span.end;
        }
        assert_eq!(pos, s.len());
    }

    #[test]
    fn code_span_content_and_unmatched_backticks() {
        assert_eq!(strip_inline("run `cargo test` now"), "run cargo test now");
        assert_eq!(strip_inline("``a ` b``"), "a ` b");
        assert_eq!(strip_inline("`` `x` ``"), "`x`");
        assert_eq!(strip_inline("a ``` b"), "a b");
        // Markup inside a code span is code, not markup.
        assert_eq!(strip_inline("`**not bold** [x](y)`"), "**not bold** [x](y)");
    }

    #[test]
    fn links_images_and_nesting() {
        assert_eq!(strip_inline("see [the docs](https://x.io/a_(b).html) here"), "see the docs here");
        assert_eq!(strip_inline("![logo alt](img/logo.png \"title\")"), "logo alt");
        assert_eq!(strip_inline("[![CI](badge.svg)](https://ci)"), "CI");
        assert_eq!(strip_inline("[**bold link**][ref]"), "bold link");
        // Not links: kept literally.
        assert_eq!(strip_inline("[x] done [y]"), "[x] done [y]");
        assert_eq!(strip_inline("Wow! [unclosed"), "Wow! [unclosed");
    }

    #[test]
    fn html_autolinks_and_entities() {
        assert_eq!(strip_inline("a<br>b"), "a b");
        assert_eq!(strip_inline("<b>bold</b>."), "bold.");
        assert_eq!(strip_inline("x <!-- hidden --> y"), "x y");
        assert_eq!(strip_inline("<https://example.com/a?b=1>"), "https://example.com/a?b=1");
        assert_eq!(strip_inline("mail <dev@example.org>"), "mail dev@example.org");
        assert_eq!(strip_inline("1 < 2 and 3 > 2"), "1 < 2 and 3 > 2");
        assert_eq!(strip_inline("x<y and z>w, Vec<String>, Option<T>"), "x<y and z>w, Vec<String>, Option<T>");
        assert_eq!(strip_inline("<b x y>"), "");
        assert_eq!(strip_inline("<b x=>"), "<b x=>");
        assert_eq!(strip_inline("<img src=\"a.png\" alt='x > y' width=200/>logo"), "logo");
        assert_eq!(strip_inline("<p align=\"center\">Hi</p>"), "Hi");
        assert_eq!(strip_inline("R&amp;D &lt;tag&gt; &#233;t&#xE9; AT&T"), "R&D <tag> été AT&T");
    }

    #[test]
    fn emphasis_rules() {
        assert_eq!(strip_inline("**bold** and *it* and __b__ and _i_"), "bold and it and b and i");
        assert_eq!(strip_inline("snake_case_name and __init__"), "snake_case_name and init");
        assert_eq!(strip_inline("2 * 3 = 6 and 5*3"), "2 * 3 = 6 and 5*3");
        assert_eq!(strip_inline("~~old~~ new ~5 GB"), "old new ~5 GB");
        assert_eq!(strip_inline("\\*literal\\* \\_x\\_"), "*literal* _x_");
        // Half of a pair (a sentence cut inside emphasis) is still dropped.
        assert_eq!(strip_inline("**Bold."), "Bold.");
        assert_eq!(strip_inline("still bold.**"), "still bold.");
    }

    #[test]
    fn protected_spans_cover_code_links_and_tags() {
        let s = "a `x.y` b [c. D](e) <img alt=\"h. I\">";
        let spans = protected_spans(s);
        let texts: Vec<&str> = spans.iter().map(|r| &s[r.clone()]).collect();
        assert_eq!(texts, ["`x.y`", "[c. D](e)", "<img alt=\"h. I\">"]);
    }

    #[test]
    fn whitespace_collapses_including_nbsp() {
        assert_eq!(collapse_whitespace("  a\t\tb \u{a0} c\n"), "a b c");
    }
}
