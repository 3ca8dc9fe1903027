//! Sentence boundaries inside one block of running text (a paragraph, a list item, a quote), after its
//! lines have been joined with spaces.
//!
//! A boundary is a terminator run (`.`, `!`, `?`, `…`, in any combination, e.g. `?!` or `...`), then any
//! closing quotes, brackets or emphasis markers, then whitespace, then something that starts a sentence: an
//! uppercase or caseless letter, a digit, a currency sign, an opening quote or bracket, or a backtick
//! (optionally behind emphasis markers, as in `**Note:**`). CJK full stops (`。！？`) end a sentence with
//! no whitespace needed.
//!
//! A single `.` is not a boundary when the word before it is an abbreviation ([`ABBREVIATIONS`], or one of
//! [`NUMBERED_ABBREVIATIONS`] when a number follows, as in "No. 5"), a single capital initial ("J. Smith",
//! except the pronoun "I"), or a dotted acronym ("U.S.", "a.k.a."). Periods inside numbers, versions, URLs,
//! e-mail addresses and file names need no rule: they are never followed by whitespace. Nothing inside a
//! protected span (code, link, HTML tag) is ever a boundary.

use std::ops::Range;

/// Words (lowercase, without their final period) that a period does not end. Compared case-insensitively.
#[rustfmt::skip]
pub const ABBREVIATIONS: &[&str] = &[
    // Latin and scholarly
    "e.g", "eg", "i.e", "etc", "vs", "cf", "viz", "al", "approx", "ca", "resp", "incl", "esp", "ibid",
    "fig", "figs", "eq", "eqs", "vol", "vols", "pp", "ch", "chap", "ph.d", "m.sc", "b.sc",
    // titles
    "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "messrs", "rev", "hon", "gen", "col",
    "lt", "capt", "sgt", "gov", "sen", "rep",
    // organisations
    "inc", "ltd", "corp", "co", "dept", "univ", "bros",
    // months
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
];

/// Abbreviations that are only abbreviations before a number ("No. 5", "p. 12", "Sec. 3", "Ref. (4)");
/// elsewhere they are ordinary words that may end a sentence ("The answer is no. Then …").
pub const NUMBERED_ABBREVIATIONS: &[&str] =
    &["no", "nos", "nr", "p", "sec", "ref", "refs", "tab", "art", "op", "pt", "pts"];

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

/// What may follow a terminator and still belong to the sentence it ends.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | '»' | ')' | ']' | '}' | '*' | '_' | '~' | '」' | '』' | '）' | '】' | '》')
}

/// What may precede a word without being part of it, for the abbreviation test ("(e.g." is "e.g").
fn is_opener(c: char) -> bool {
    matches!(c, '"' | '\'' | '“' | '‘' | '«' | '(' | '[' | '{' | '*' | '_' | '~' | '`')
}

/// Whether the text at the start of `rest` can start a new sentence.
fn starts_sentence(rest: &[(usize, char)]) -> bool {
    for &(_, c) in rest {
        match c {
            '*' | '_' | '~' => continue,
            '"' | '\'' | '“' | '‘' | '„' | '«' | '(' | '[' | '{' | '`' | '¿' | '¡' | '「' | '『' | '（' => {
                return true
            }
            '$' | '€' | '£' | '¥' => return true,
            c if c.is_numeric() || c.is_uppercase() => return true,
            // Letters of caseless scripts (CJK, Arabic, Hebrew, Devanagari, …).
            c if c.is_alphabetic() && !c.is_lowercase() => return true,
            _ => return false,
        }
    }
    false
}

/// Whether the period at `chars[dot]` ends an abbreviation rather than a sentence; `next` is the first
/// character after the whitespace that follows.
fn is_abbreviation(s: &str, chars: &[(usize, char)], dot: usize, next: char) -> bool {
    let mut b = dot;
    while b > 0 && !chars[b - 1].1.is_whitespace() {
        b -= 1;
    }
    if b == dot {
        return false;
    }
    let word = s[chars[b].0..chars[dot].0].trim_start_matches(is_opener);
    if word.is_empty() {
        return false;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    if NUMBERED_ABBREVIATIONS.contains(&lower.as_str()) && (next.is_ascii_digit() || next == '(') {
        return true;
    }
    let mut cs = word.chars();
    if let (Some(c), None) = (cs.next(), cs.next()) {
        // A capital initial ("J. Smith"); "I" is far more often the pronoun ending a sentence.
        return c.is_uppercase() && c != 'I';
    }
    // Dotted acronyms of single letters: U.S, a.k.a, w.r.t, J.R.R.
    let mut parts = 0;
    for part in word.split('.') {
        let mut pc = part.chars();
        match (pc.next(), pc.next()) {
            (Some(c), None) if c.is_alphabetic() => parts += 1,
            _ => return false,
        }
    }
    parts >= 2
}

/// Byte ranges of the sentences of `s`, trimmed and non-empty, in order. `protected` (sorted) are ranges
/// inside which no boundary may fall.
pub(crate) fn sentence_ranges(s: &str, protected: &[Range<usize>]) -> Vec<Range<usize>> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let n = chars.len();
    let byte_at = |k: usize| if k < n { chars[k].0 } else { s.len() };
    let in_protected = |pos: usize| {
        let k = protected.partition_point(|r| r.end <= pos);
        k < protected.len() && protected[k].start <= pos
    };
    let skip_ws = |mut k: usize| {
        while k < n && chars[k].1.is_whitespace() {
            k += 1;
        }
        k
    };

    let mut out = Vec::new();
    let mut start = skip_ws(0);
    let mut k = start;
    while k < n {
        let (pos, c) = chars[k];
        if !is_terminator(c) || in_protected(pos) {
            k += 1;
            continue;
        }
        let run_start = k;
        while k < n && is_terminator(chars[k].1) {
            k += 1;
        }
        let run = &chars[run_start..k];
        loop {
            if k < n && is_closer(chars[k].1) {
                k += 1;
                continue;
            }
            // An HTML end tag right after the terminator (`done.</b> Next`) belongs to the sentence.
            if k + 1 < n && chars[k].1 == '<' && chars[k + 1].1 == '/' {
                let name = chars[k + 2..].iter().take_while(|&&(_, c)| c.is_ascii_alphanumeric()).count();
                if name > 0 && chars.get(k + 2 + name).is_some_and(|&(_, c)| c == '>') {
                    k += name + 3;
                    continue;
                }
            }
            break;
        }
        let end = k;
        let next = skip_ws(end);
        if next >= n {
            break;
        }
        let cjk = run.iter().any(|&(_, c)| is_cjk_terminator(c));
        if !cjk {
            let spaced = next > end;
            let single_period = run.len() == 1 && run[0].1 == '.';
            if !spaced
                || !starts_sentence(&chars[next..])
                || (single_period && is_abbreviation(s, &chars, run_start, chars[next].1))
            {
                continue;
            }
        }
        out.push(chars[start].0..byte_at(end));
        start = next;
        k = next;
    }
    if start < n {
        let tail = &s[chars[start].0..];
        out.push(chars[start].0..chars[start].0 + tail.trim_end().len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        sentence_ranges(s, &[]).into_iter().map(|r| &s[r]).collect()
    }

    #[test]
    fn basic_terminators_and_closers() {
        assert_eq!(split("One. Two! Three? Four"), ["One.", "Two!", "Three?", "Four"]);
        assert_eq!(split("Really?! Yes."), ["Really?!", "Yes."]);
        assert_eq!(split("He said \"stop.\" Then left."), ["He said \"stop.\"", "Then left."]);
        assert_eq!(split("(See above.) Next one."), ["(See above.)", "Next one."]);
        assert_eq!(split("**Done.** Next"), ["**Done.**", "Next"]);
        assert_eq!(split("<b>Done.</b> Next"), ["<b>Done.</b>", "Next"]);
    }

    #[test]
    fn next_sentence_must_look_like_a_start() {
        assert_eq!(split("It ends. and continues"), ["It ends. and continues"]);
        assert_eq!(split("Costs rose. 42 users left."), ["Costs rose.", "42 users left."]);
        assert_eq!(split("It is cheap. $5 a month."), ["It is cheap.", "$5 a month."]);
        assert_eq!(split("Build it. `cargo run` starts it."), ["Build it.", "`cargo run` starts it."]);
        assert_eq!(split("Read it. **Note:** careful."), ["Read it.", "**Note:** careful."]);
        assert_eq!(split("Done. (Optional) clean up."), ["Done.", "(Optional) clean up."]);
    }

    #[test]
    fn abbreviation_classes() {
        assert_eq!(split("Use a GPU, e.g. An H100 works."), ["Use a GPU, e.g. An H100 works."]);
        assert_eq!(split("Models (i.e. BERT) help."), ["Models (i.e. BERT) help."]);
        assert_eq!(split("CSV, JSON, etc. Are supported."), ["CSV, JSON, etc. Are supported."]);
        assert_eq!(split("BERT vs. DistilBERT is close."), ["BERT vs. DistilBERT is close."]);
        assert_eq!(split("Ask Dr. Lee and Prof. Kim."), ["Ask Dr. Lee and Prof. Kim."]);
        assert_eq!(split("MR. SMITH and Mrs. Jones and Ms. Wu."), ["MR. SMITH and Mrs. Jones and Ms. Wu."]);
        assert_eq!(split("Shown in Fig. 3 and approx. 5 GB."), ["Shown in Fig. 3 and approx. 5 GB."]);
        assert_eq!(split("Wang et al. Showed it."), ["Wang et al. Showed it."]);
        assert_eq!(split("Acme Inc. And Foo Ltd. Merged."), ["Acme Inc. And Foo Ltd. Merged."]);
        assert_eq!(split("Martin Jr. Went to St. Louis."), ["Martin Jr. Went to St. Louis."]);
        assert_eq!(split("Made in the U.S. By hand."), ["Made in the U.S. By hand."]);
        assert_eq!(split("See cf. Section 2."), ["See cf. Section 2."]);
    }

    #[test]
    fn numbered_abbreviations_need_a_number() {
        assert_eq!(split("Item No. 5 is here."), ["Item No. 5 is here."]);
        assert_eq!(split("See p. 12 and Sec. (3)."), ["See p. 12 and Sec. (3)."]);
        assert_eq!(split("The answer is no. Then we left."), ["The answer is no.", "Then we left."]);
    }

    #[test]
    fn initials_and_acronyms() {
        assert_eq!(split("J. Smith wrote it."), ["J. Smith wrote it."]);
        assert_eq!(split("By J.R.R. Tolkien."), ["By J.R.R. Tolkien."]);
        assert_eq!(split("It is a.k.a. Foo."), ["It is a.k.a. Foo."]);
        // The pronoun I and ordinary words still end sentences.
        assert_eq!(split("So did I. Then we left."), ["So did I.", "Then we left."]);
        assert_eq!(split("We use BERT. It works."), ["We use BERT.", "It works."]);
    }

    #[test]
    fn numbers_versions_urls_emails_files() {
        assert_eq!(split("It takes 2.5 GB. Next."), ["It takes 2.5 GB.", "Next."]);
        assert_eq!(split("AUROC was 0.93. Good."), ["AUROC was 0.93.", "Good."]);
        assert_eq!(split("Use v1.2.3 or 3.11.7. Then run."), ["Use v1.2.3 or 3.11.7.", "Then run."]);
        assert_eq!(
            split("Go to https://example.com/a.b?x=1. Then log in."),
            ["Go to https://example.com/a.b?x=1.", "Then log in."]
        );
        assert_eq!(split("Mail jane.doe@example.org. Thanks."), ["Mail jane.doe@example.org.", "Thanks."]);
        assert_eq!(
            split("Load model.safetensors and README.md. Done."),
            ["Load model.safetensors and README.md.", "Done."]
        );
    }

    #[test]
    fn ellipses() {
        assert_eq!(split("Wait... what happened?"), ["Wait... what happened?"]);
        assert_eq!(split("Loading... Done."), ["Loading...", "Done."]);
        assert_eq!(split("Hmm… Maybe."), ["Hmm…", "Maybe."]);
        assert_eq!(split("and so . . . The end."), ["and so . . .", "The end."]);
    }

    #[test]
    fn unicode_text() {
        assert_eq!(split("Ça marche. Élégant! Über gut."), ["Ça marche.", "Élégant!", "Über gut."]);
        assert_eq!(split("Это тест. Второе предложение."), ["Это тест.", "Второе предложение."]);
        assert_eq!(split("这是第一句。这是第二句！好吗？"), ["这是第一句。", "这是第二句！", "好吗？"]);
        assert_eq!(split("「引用。」次の文。"), ["「引用。」", "次の文。"]);
    }

    #[test]
    fn protected_ranges_are_never_cut() {
        let s = "Run `a. B` now. Next.";
        let code = s.find('`').unwrap()..s.rfind('`').unwrap() + 1;
        let got: Vec<&str> = sentence_ranges(s, &[code]).into_iter().map(|r| &s[r]).collect();
        assert_eq!(got, ["Run `a. B` now.", "Next."]);
        // Without the protection the same text is cut inside the code.
        assert_eq!(split(s).len(), 3);
    }

    #[test]
    fn whitespace_only_and_trimming() {
        assert!(split("   ").is_empty());
        assert_eq!(split("  One.   Two.  "), ["One.", "Two."]);
    }
}
