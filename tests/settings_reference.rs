//! The settings reference has one source: the settings types in `src/settings.rs` and their doc comments.
//! From them (and `Settings::default()` for the values) this test renders `docs/settings.md` and the commented
//! `pipeline.toml`, and fails when either file on disk differs. `make docs` (this test with
//! `COLTRAST_WRITE_DOCS=1`) writes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coltrast::settings::Settings;

/// A documented struct field or enum variant.
struct Item {
    /// The name as a user writes it (serde's renaming applied to variants).
    name: String,
    /// The Rust type, as written (fields only).
    ty: String,
    doc: Vec<String>,
}

/// A struct or enum of the settings.
struct Type {
    doc: Vec<String>,
    items: Vec<Item>,
    is_enum: bool,
}

fn doc_of(attrs: &[syn::Attribute]) -> Vec<String> {
    let mut out = Vec::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta {
            if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value {
                let line = s.value();
                out.push(line.strip_prefix(' ').unwrap_or(&line).trim_end().to_string());
            }
        }
    }
    out.iter().map(|l| plain(l)).collect()
}

/// Rustdoc links (`` [`X`] ``, `` [`crate::x::Y`] ``) as plain code spans.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("[`") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find("`]") {
            Some(j) if !after[j + 2..].starts_with('(') => {
                let path = &after[..j];
                let short = path.rsplit("::").next().unwrap_or(path);
                out.push('`');
                out.push_str(if path.starts_with("crate::") && !short.is_empty() { path } else { short });
                out.push('`');
                rest = &after[j + 2..];
            }
            _ => {
                out.push_str("[`");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `#[serde(...)]` option `word` (`skip`, `rename_all = "..."`): None when absent, else its string value
/// ("" for a bare word).
fn has_serde(attrs: &[syn::Attribute], word: &str) -> Option<String> {
    let mut found = None;
    for a in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = a.parse_nested_meta(|m| {
            if m.path.is_ident(word) {
                found = Some(match m.value() {
                    Ok(v) => v.parse::<syn::LitStr>()?.value(),
                    Err(_) => String::new(),
                });
            } else if m.input.peek(syn::Token![=]) {
                m.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        });
    }
    found
}

fn rename(variant: &str, rule: Option<&str>) -> String {
    let mut words = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push('-');
        }
        words.extend(c.to_lowercase());
    }
    match rule {
        Some("kebab-case") => words,
        Some("lowercase") => variant.to_lowercase(),
        _ => variant.to_string(),
    }
}

fn type_string(ty: &syn::Type) -> String {
    quote::ToTokens::to_token_stream(ty).to_string().replace(' ', "")
}

/// Every struct and enum of the files, by name (the settings types live in settings.rs; a few enums elsewhere).
fn types(root: &Path, files: &[&str]) -> BTreeMap<String, Type> {
    let mut out = BTreeMap::new();
    for f in files {
        let path = root.join(f);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for item in file.items {
            match item {
                syn::Item::Struct(s) => {
                    let items = s
                        .fields
                        .iter()
                        .filter(|f| has_serde(&f.attrs, "skip").is_none())
                        .filter_map(|f| {
                            Some(Item {
                                name: f.ident.as_ref()?.to_string(),
                                ty: type_string(&f.ty),
                                doc: doc_of(&f.attrs),
                            })
                        })
                        .collect();
                    out.insert(s.ident.to_string(), Type { doc: doc_of(&s.attrs), items, is_enum: false });
                }
                syn::Item::Enum(e) => {
                    let rule = has_serde(&e.attrs, "rename_all");
                    let items = e
                        .variants
                        .iter()
                        .map(|v| Item {
                            name: rename(&v.ident.to_string(), rule.as_deref()),
                            ty: String::new(),
                            doc: doc_of(&v.attrs),
                        })
                        .collect();
                    // only enums that serde writes as plain strings list their values
                    let listed = rule.is_some();
                    out.insert(
                        e.ident.to_string(),
                        Type { doc: doc_of(&e.attrs), items: if listed { items } else { vec![] }, is_enum: true },
                    );
                }
                _ => {}
            }
        }
    }
    out
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        other => other.to_string(),
    }
}

/// The last path segment of a type (`crate::onnx::Quantize` → `Quantize`) and its `Vec<…>` element.
fn type_name(ty: &str) -> (&str, bool) {
    // an optional value reads as the value (absent, or "" for a path, means the default)
    let ty = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')).unwrap_or(ty);
    let (inner, list) = match ty.strip_prefix("Vec<").and_then(|t| t.strip_suffix('>')) {
        Some(t) => (t, true),
        None => (ty, false),
    };
    (inner.rsplit("::").next().unwrap_or(inner), list)
}

fn kind_words(ty: &str, types: &BTreeMap<String, Type>) -> String {
    let (name, list) = type_name(ty);
    let one = match name {
        "String" | "PathBuf" => "text".to_string(),
        "i64" | "u64" | "usize" | "u32" | "NonZeroUsize" => "integer".to_string(),
        "f64" | "f32" => "number".to_string(),
        "bool" => "true or false".to_string(),
        other => match types.get(other) {
            Some(t) if t.is_enum && !t.items.is_empty() => {
                let names: Vec<String> = t.items.iter().map(|v| format!("`\"{}\"`", v.name)).collect();
                format!("one of {}", names.join(", "))
            }
            Some(t) if t.is_enum => t.doc.first().cloned().unwrap_or_else(|| other.to_string()),
            _ => other.to_string(),
        },
    };
    if list {
        format!("list of: {one}")
    } else {
        one
    }
}

/// The section's struct doc without its `` `[name]`: `` prefix.
fn section_doc(doc: &[String], name: &str) -> Vec<String> {
    let mut d = doc.to_vec();
    if let Some(first) = d.first_mut() {
        let prefix = format!("`[{name}]`: ");
        if let Some(rest) = first.strip_prefix(&prefix) {
            let mut c = rest.chars();
            *first = c.next().map(|h| h.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default();
        }
    }
    d
}

const PRECEDENCE: &str =
    "Precedence, lowest first: defaults < this file < COLTRAST_<SECTION>__<KEY> env vars < --set section.key=value.";

struct Rendered {
    toml: String,
    markdown: String,
}

fn render(root: &Path) -> Rendered {
    let types = types(root, &["src/settings.rs"]);
    let defaults = toml::Value::try_from(Settings::default()).expect("defaults serialise");
    let defaults = defaults.as_table().expect("a table");
    let top = &types["Settings"];

    let mut t = String::new();
    t.push_str("# coltrast pipeline settings. Every key is optional; the value shown is the default.\n");
    t.push_str(&format!("# {PRECEDENCE}\n"));
    t.push_str("# Relative paths are relative to this file's directory.\n");
    t.push_str(
        "# Generated from the doc comments of src/settings.rs by `make docs` (docs/settings.md has the same text);\n",
    );
    t.push_str("# edit those, not this file: a test fails when the two disagree.\n");

    let mut m = String::new();
    m.push_str("# Settings reference\n\n");
    m.push_str("Generated by `make docs` from the settings types in `src/settings.rs` and their doc comments, which\n");
    m.push_str(
        "also give the commented `pipeline.toml`; `cargo test --test settings_reference` fails when either file is\n",
    );
    m.push_str("stale. Every key is optional.\n\n");
    m.push_str(&format!("{}\n", PRECEDENCE.replace("this file", "`pipeline.toml`")));
    m.push_str("Relative paths are relative to the directory of `pipeline.toml` (or of `--config FILE`).\n\n");
    m.push_str("Sections: ");
    let sections: Vec<&Item> = top.items.iter().filter(|f| types.get(&f.ty).is_some_and(|t| !t.is_enum)).collect();
    let links: Vec<String> = sections.iter().map(|s| format!("[`[{0}]`](#{0})", s.name)).collect();
    m.push_str(&links.join(", "));
    m.push_str(".\n");

    let field = |t: &mut String, m: &mut String, key: &str, it: &Item, value: &toml::Value| {
        t.push('\n');
        for l in &it.doc {
            t.push_str(&format!("# {l}").trim_end());
            t.push('\n');
        }
        t.push_str(&format!("{} = {}\n", it.name, value_text(value)));
        m.push_str(&format!("\n### `{key}`\n\n"));
        m.push_str(&format!("Default `{}`; {}.\n\n", value_text(value), kind_words(&it.ty, &types)));
        // a doc comment's lines joined into paragraphs (an empty line separates them)
        let para = it.doc.split(|l| l.is_empty()).map(|p| p.join(" ")).collect::<Vec<_>>().join("\n\n");
        m.push_str(para.trim());
        m.push('\n');
        let (name, _) = type_name(&it.ty);
        if let Some(e) = types.get(name).filter(|e| e.is_enum && !e.items.is_empty()) {
            m.push('\n');
            for v in &e.items {
                m.push_str(&format!("- `\"{}\"`: {}\n", v.name, v.doc.join(" ")));
            }
        }
    };

    m.push_str("\n## Top level\n");
    for it in top.items.iter().filter(|f| !sections.iter().any(|s| s.name == f.name)) {
        let v = defaults.get(&it.name).unwrap_or_else(|| panic!("no default for {}", it.name));
        field(&mut t, &mut m, &it.name, it, v);
    }
    for s in &sections {
        let st = &types[&s.ty];
        let values = defaults[&s.name].as_table().expect("a section is a table");
        t.push_str(&format!("\n[{}]\n", s.name));
        for l in section_doc(&st.doc, &s.name) {
            t.push_str(&format!("# {l}\n"));
        }
        m.push_str(&format!("\n## `[{}]`\n\n{}\n", s.name, section_doc(&st.doc, &s.name).join(" ")));
        for it in &st.items {
            let v = values.get(&it.name).unwrap_or_else(|| panic!("no default for {}.{}", s.name, it.name));
            field(&mut t, &mut m, &format!("{}.{}", s.name, it.name), it, v);
        }
        assert_eq!(values.len(), st.items.len(), "[{}]: every key has a documented field", s.name);
    }
    Rendered { toml: t, markdown: m }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_settings_reference_and_pipeline_toml_are_generated_from_the_settings_types() {
    let root = root();
    let r = render(&root);
    let write = std::env::var_os("COLTRAST_WRITE_DOCS").is_some();
    let mut stale = Vec::new();
    for (rel, text) in [("docs/settings.md", &r.markdown), ("pipeline.toml", &r.toml)] {
        let path = root.join(rel);
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        if &now == text {
            continue;
        }
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            eprintln!("wrote {rel}");
        } else {
            stale.push(rel);
        }
    }
    assert!(stale.is_empty(), "{stale:?} differ from src/settings.rs's settings types and docs: run `make docs`");
}

/// The generated pipeline.toml is a valid config that resolves to the defaults, and documents every key.
#[test]
fn the_generated_pipeline_toml_holds_the_defaults_and_a_comment_for_every_key() {
    let r = render(&root());
    let parsed: Settings = toml::from_str(&r.toml).expect("the generated pipeline.toml parses");
    assert_eq!(Settings { root: Settings::default().root, ..parsed }, Settings::default());
    let lines: Vec<&str> = r.toml.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains(" = ") && !l.starts_with('#') {
            assert!(i > 0 && lines[i - 1].starts_with('#'), "{l:?} has no comment above it");
        }
    }
}

/// A field whose doc comment is removed, or a new undocumented field, would render without a description.
#[test]
fn every_setting_has_a_doc_comment() {
    let types = types(&root(), &["src/settings.rs"]);
    for s in &types["Settings"].items {
        let Some(t) = types.get(&s.ty) else {
            assert!(!s.doc.is_empty(), "{} has no doc comment", s.name);
            continue;
        };
        for f in &t.items {
            assert!(!f.doc.is_empty(), "{}.{} has no doc comment in src/settings.rs", s.name, f.name);
            // the values of an enum-typed setting are documented one by one
            if let Some(e) = types.get(type_name(&f.ty).0).filter(|e| e.is_enum) {
                for v in &e.items {
                    assert!(!v.doc.is_empty(), "{}.{} = \"{}\" has no doc comment", s.name, f.name, v.name);
                }
            }
        }
    }
    assert_eq!(plain("see [`ModelDevice`] and [`crate::executor`]"), "see `ModelDevice` and `crate::executor`");
}
