//! Sweep expansion: `--set KEY=V1,V2,...` flags become the Cartesian product of their values, each
//! combination resolved and validated exactly as `coltrast run --set` resolves it, before anything runs.
//!
//! Values are split at commas outside double quotes; a value in double quotes is taken as it is, for string
//! settings that contain a comma: `--set 'index.factory="IVF4,Flat",Flat'` is two values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::settings::{self, Resolved, Sources};

/// One combination: `(key, value)` per axis.
pub type Combo = Vec<(String, String)>;

/// One swept key and its values (as typed on the command line).
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

/// One planned experiment: the `--set` values that define it, its derived name and its resolved settings.
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    /// `(key, value)` in the order the keys were given, the value as the setting resolved (`0.50` → `0.5`).
    pub params: Vec<(String, String)>,
    pub resolved: Resolved,
}

fn layer(set: &str) -> String {
    format!("--set {set}")
}

/// Split `a,b,"c,d"` into `a`, `b`, `c,d`.
pub fn split_values(raw: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in raw.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unbalanced double quote".into());
    }
    out.push(cur);
    Ok(out.into_iter().map(|v| v.trim().to_string()).collect())
}

/// The axes of `--set` flags, in order. A key given twice is an error.
pub fn parse_axes(sets: &[String]) -> Result<Vec<Axis>> {
    let mut axes: Vec<Axis> = Vec::new();
    for set in sets {
        let Some((key, raw)) = set.split_once('=') else {
            return Err(Error::config(layer(set), set, "expected section.key=value or section.key=v1,v2,..."));
        };
        let key = key.trim().to_string();
        if axes.iter().any(|a| a.key == key) {
            return Err(Error::config(
                layer(set),
                &key,
                "given twice; list all its values in one --set, comma-separated",
            ));
        }
        let values = split_values(raw).map_err(|m| Error::config(layer(set), &key, m))?;
        axes.push(Axis { key, values });
    }
    Ok(axes)
}

/// The Cartesian product, the first axis varying slowest: `a=1,2 b=x,y` → (1,x) (1,y) (2,x) (2,y).
pub fn expand(axes: &[Axis]) -> Vec<Vec<(String, String)>> {
    let mut combos: Vec<Vec<(String, String)>> = vec![vec![]];
    for axis in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                axis.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((axis.key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    combos
}

/// A resolved setting by dotted key, written as `--set` takes it (strings unquoted).
pub fn setting_text(s: &settings::Settings, key: &str) -> Option<String> {
    let mut v = toml::Value::try_from(s).ok()?;
    for part in key.split('.') {
        v = v.get(part)?.clone();
    }
    Some(match v {
        toml::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// A name from the values: `key=value` joined by commas, each key by its last part unless two keys share it.
pub fn derive_name(params: &[(String, String)]) -> String {
    if params.is_empty() {
        return "base".into();
    }
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let parts: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            let short = last(k);
            let clash = params.iter().filter(|(o, _)| last(o) == short).count() > 1;
            format!("{}={v}", if clash { k.clone() } else { short })
        })
        .collect();
    parts.join(",")
}

/// Resolve every combination (defaults < file < environment < these `--set` values), so that a bad value
/// fails here, before anything runs, with the error `coltrast run --set` gives. `prefix` (`--name`) names a
/// single experiment, or prefixes each derived name.
pub fn plan(config: Option<PathBuf>, sets: &[String], prefix: Option<&str>) -> Result<Vec<Planned>> {
    plan_with(sets, prefix, |sets| settings::resolve(&Sources::from_process(config.clone(), sets)))
}

/// [`plan`] with the resolution injected (tests resolve without the process environment).
pub fn plan_with(
    sets: &[String],
    prefix: Option<&str>,
    resolve: impl Fn(Vec<String>) -> Result<Resolved>,
) -> Result<Vec<Planned>> {
    let axes = parse_axes(sets)?;
    let combos = expand(&axes);
    let mut planned = Vec::with_capacity(combos.len());
    let mut seen: BTreeMap<Vec<(String, String)>, &Combo> = BTreeMap::new();
    for combo in &combos {
        let sets: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let resolved = resolve(sets.clone())?;
        let params: Vec<(String, String)> = combo
            .iter()
            .map(|(k, v)| (k.clone(), setting_text(&resolved.settings, k).unwrap_or_else(|| v.clone())))
            .collect();
        if let Some(earlier) = seen.get(&params) {
            // The key whose values differ as typed but are the same setting (0.5 and 0.50), else the first.
            let j = (0..combo.len()).find(|&j| combo[j].1 != earlier[j].1).unwrap_or(0);
            let (k, v) = &params[j];
            return Err(Error::config(layer(&sets[j]), k, format!("value {v} is listed twice")));
        }
        seen.insert(params.clone(), combo);
        planned.push(Planned { name: derive_name(&params), params, resolved });
    }
    if let Some(p) = prefix {
        let single = planned.len() == 1;
        for e in &mut planned {
            e.name = if single { p.to_string() } else { format!("{p}-{}", e.name) };
        }
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(sets: Vec<String>) -> Result<Resolved> {
        settings::resolve(&Sources { config: None, env: vec![], sets })
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn values_split_at_commas_outside_quotes() {
        assert_eq!(split_values("0.5,0.6, 0.7").unwrap(), ["0.5", "0.6", "0.7"]);
        assert_eq!(split_values(r#""IVF4,Flat",HNSW32"#).unwrap(), ["IVF4,Flat", "HNSW32"]);
        assert_eq!(split_values("x").unwrap(), ["x"]);
        assert!(split_values(r#""IVF4,Flat"#).is_err());
    }

    #[test]
    fn cartesian_product_first_key_slowest() {
        let axes = parse_axes(&s(&["mine.num_negatives=1,2", "train.epochs=3,4,5"])).unwrap();
        let combos = expand(&axes);
        assert_eq!(combos.len(), 6);
        let flat: Vec<String> = combos.iter().map(|c| format!("{}/{}", c[0].1, c[1].1)).collect();
        assert_eq!(flat, ["1/3", "1/4", "1/5", "2/3", "2/4", "2/5"]);
        assert_eq!(expand(&[]), vec![Vec::<(String, String)>::new()]);
    }

    #[test]
    fn plan_types_values_and_derives_stable_names() {
        let p =
            plan_with(&s(&["chunk.similarity_threshold=0.50,0.6", "chunk.strategy=semantic"]), None, resolve).unwrap();
        let names: Vec<&str> = p.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["similarity_threshold=0.5,strategy=semantic", "similarity_threshold=0.6,strategy=semantic"]);
        assert_eq!(p[0].resolved.settings.chunk.similarity_threshold, 0.5);
        // the integer 1 for a float setting is typed as the float 1
        let p = plan_with(&s(&["chunk.similarity_threshold=1"]), Some("edge"), resolve).unwrap();
        assert_eq!(p[0].name, "edge");
        assert_eq!(p[0].params, [("chunk.similarity_threshold".to_string(), "1.0".to_string())]);
        // two keys with the same last part keep their sections
        let p = plan_with(&s(&["chunk.batch_size=8", "mine.batch_size=4,8"]), Some("speed"), resolve).unwrap();
        assert_eq!(p[1].name, "speed-chunk.batch_size=8,mine.batch_size=8");
        assert_eq!(plan_with(&[], None, resolve).unwrap()[0].name, "base");
    }

    #[test]
    fn a_bad_value_fails_with_one_line_naming_the_key() {
        let err = plan_with(&s(&["chunk.similarity_threshold=0.5,1.5"]), None, resolve).unwrap_err().to_string();
        assert_eq!(
            err,
            "--set chunk.similarity_threshold=1.5: chunk.similarity_threshold: expected a number in [-1, 1], got 1.5"
        );
        let err = plan_with(&s(&["mine.num_negatives=1,two"]), None, resolve).unwrap_err().to_string();
        assert_eq!(err, "--set mine.num_negatives=two: mine.num_negatives: expected an integer, got \"two\"");
        let err = plan_with(&s(&["chunk.strategy=sections,paragraphs"]), None, resolve).unwrap_err().to_string();
        assert!(err.starts_with("--set chunk.strategy=paragraphs: chunk.strategy: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = plan_with(&s(&["mine.nope=1,2"]), None, resolve).unwrap_err().to_string();
        assert!(err.contains("mine.nope: unknown key"), "{err}");
        let err = plan_with(&s(&["mine.seed=1", "mine.seed=2"]), None, resolve).unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");
        let err = plan_with(&s(&["chunk.similarity_threshold=0.5,0.50"]), None, resolve).unwrap_err().to_string();
        assert!(err.contains("value 0.5 is listed twice"), "{err}");
    }
}
