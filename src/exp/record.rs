//! `artifacts/experiments/experiments.parquet`: one row per recorded experiment, read and replaced as a whole.
//!
//! The table is wide, in the manner of MLflow's runs table (`params.*`, `metrics.*` columns): a few fixed
//! columns, then families of columns named by prefix, so that polars, pandas or duckdb see one typed column
//! per setting and per metric (`pl.read_parquet(p).select("name", "^metric\\..*/document/ndcg@10$")`).
//!
//! | column | type | |
//! |---|---|---|
//! | `experiment_id` | Utf8 | blake3 of the resolved settings and every stage fingerprint: the identity reruns dedupe by |
//! | `name` | Utf8 | unique; given (`--name`) or derived from the experiment's `--set` values |
//! | `created_unix` | Int64 | when it was recorded |
//! | `coltrast_version` | Utf8 | |
//! | `run_time_s` | Float64 | wall time of the experiment in the sweep that recorded it (cached stages cost ms) |
//! | `params` | List<Utf8> | the keys set on the `exp run` command line |
//! | `settings.<key>` | Int64, Float64, Boolean or Utf8 | every resolved setting (`settings.chunk.similarity_threshold`) |
//! | `stage.<stage>.fingerprint` | Utf8 | the artifact dir `artifacts/<stage>/<fingerprint>/` |
//! | `stage.<stage>.ran` | Boolean | whether this experiment ran the stage (false: it was cached, e.g. shared) |
//! | `stage.<stage>.wall_time_s` | Float64 | what the stage took when it ran (its manifest's wall time) |
//! | `metric.<system>/<level>/<metric>` | Float64 | eval.parquet's values (`metric.coltrast/document/ndcg@10`) |
//! | `stat.<stage>.<key>` | Int64, Float64, Boolean or Utf8 | each stage's manifest stats (`stat.chunk.chunks`, `stat.train.best_epoch`) |
//! | `loss.train`, `loss.val` | List<Float64> | training loss per epoch (mean over steps, epochs 1..) and validation loss per epoch (0 = untrained) |
//!
//! A column's type is the type of its values; a setting whose values differ in type between experiments
//! (`train.base_mix`: `"auto"` or a number) is Utf8. A missing value is null.
//!
//! Appending takes `artifacts/experiments/.lock` (flock), reads the file, adds the row and replaces the file
//! through a temporary sibling and a rename ([`crate::fsutil::write_atomic`]): readers and a killed writer
//! see the old table or the new one, never half of one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Float64Builder, Int64Array, LargeStringArray, ListArray, ListBuilder,
    StringArray, StringBuilder, StringViewArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, IoContext, Result};

pub const DIR: &str = "experiments";
pub const FILE: &str = "experiments.parquet";

pub const ID: &str = "experiment_id";
pub const NAME: &str = "name";
pub const CREATED: &str = "created_unix";
pub const VERSION: &str = "coltrast_version";
pub const RUN_TIME: &str = "run_time_s";
pub const PARAMS: &str = "params";
pub const SETTINGS: &str = "settings.";
pub const STAGE: &str = "stage.";
pub const METRIC: &str = "metric.";
pub const STAT: &str = "stat.";
pub const LOSS: &str = "loss.";

const FIXED: [&str; 6] = [ID, NAME, CREATED, VERSION, RUN_TIME, PARAMS];
const FAMILIES: [&str; 5] = [SETTINGS, STAGE, METRIC, STAT, LOSS];

/// `artifacts/experiments/experiments.parquet` under an artifacts dir.
pub fn path(artifacts: &Path) -> PathBuf {
    artifacts.join(DIR).join(FILE)
}

/// One value of a record. A null is an absent key.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    FloatList(Vec<f64>),
    StrList(Vec<String>),
}

impl Cell {
    /// A number, for sorting and plotting: ints and floats, and strings that parse as one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(f) => Some(*f),
            Cell::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn from_toml(v: &toml::Value) -> Cell {
        match v {
            toml::Value::Integer(i) => Cell::Int(*i),
            toml::Value::Float(f) => Cell::Float(*f),
            toml::Value::Boolean(b) => Cell::Bool(*b),
            toml::Value::String(s) => Cell::Str(s.clone()),
            other => Cell::Str(other.to_string()),
        }
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Cell> {
        Some(match v {
            serde_json::Value::Bool(b) => Cell::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Cell::Int(i),
                None => Cell::Float(n.as_f64()?),
            },
            serde_json::Value::String(s) => Cell::Str(s.clone()),
            _ => return None,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Cell::Bool(b) => (*b).into(),
            Cell::Int(i) => (*i).into(),
            Cell::Float(f) => serde_json::Number::from_f64(*f).map(Into::into).unwrap_or(serde_json::Value::Null),
            Cell::Str(s) => s.clone().into(),
            Cell::FloatList(v) => v.iter().map(|f| Cell::Float(*f).to_json()).collect(),
            Cell::StrList(v) => v.clone().into(),
        }
    }
}

impl std::fmt::Display for Cell {
    /// As a value is written after `--set key=`: strings without quotes, floats in their shortest form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Float(x) => write!(f, "{x:?}"),
            Cell::Str(s) => f.write_str(s),
            Cell::FloatList(v) => {
                let items: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Cell::StrList(v) => write!(f, "[{}]", v.join(", ")),
        }
    }
}

/// One experiment: its columns by name (absent = null).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub cells: BTreeMap<String, Cell>,
}

impl Record {
    pub fn get(&self, col: &str) -> Option<&Cell> {
        self.cells.get(col)
    }
    pub fn set(&mut self, col: impl Into<String>, cell: Cell) {
        self.cells.insert(col.into(), cell);
    }
    fn text(&self, col: &str) -> &str {
        match self.cells.get(col) {
            Some(Cell::Str(s)) => s,
            _ => "",
        }
    }
    pub fn id(&self) -> &str {
        self.text(ID)
    }
    pub fn name(&self) -> &str {
        self.text(NAME)
    }
    /// The keys set on the `exp run` command line, in the order given.
    pub fn params(&self) -> Vec<String> {
        match self.cells.get(PARAMS) {
            Some(Cell::StrList(v)) => v.clone(),
            _ => vec![],
        }
    }
    /// A resolved setting by dotted key.
    pub fn setting(&self, key: &str) -> Option<&Cell> {
        self.cells.get(&format!("{SETTINGS}{key}"))
    }
    /// Every resolved setting, by dotted key.
    pub fn settings(&self) -> BTreeMap<&str, &Cell> {
        self.cells.iter().filter_map(|(k, v)| k.strip_prefix(SETTINGS).map(|k| (k, v))).collect()
    }
    pub fn number(&self, col: &str) -> Option<f64> {
        self.cells.get(col).and_then(Cell::as_f64)
    }
    /// `(stage, fingerprint)` of every stage the experiment used.
    pub fn fingerprints(&self) -> Vec<(String, String)> {
        self.cells
            .iter()
            .filter_map(|(k, v)| {
                let stage = k.strip_prefix(STAGE)?.strip_suffix(".fingerprint")?;
                match v {
                    Cell::Str(fp) => Some((stage.to_string(), fp.clone())),
                    _ => None,
                }
            })
            .collect()
    }
}

/// Where a column goes: fixed columns first, then the families, stages in pipeline order.
fn column_rank(col: &str) -> (usize, usize, String) {
    if let Some(i) = FIXED.iter().position(|c| *c == col) {
        return (0, i, String::new());
    }
    for (f, prefix) in FAMILIES.iter().enumerate() {
        if let Some(rest) = col.strip_prefix(prefix) {
            if *prefix == STAGE {
                let stage = rest.split('.').next().unwrap_or("");
                let pos = crate::artifacts::StageId::ALL.iter().position(|s| s.as_str() == stage).unwrap_or(usize::MAX);
                return (1 + f, pos, rest.to_string());
            }
            return (1 + f, 0, rest.to_string());
        }
    }
    (1 + FAMILIES.len(), 0, col.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    FloatList,
    StrList,
}

fn kind(c: &Cell) -> Kind {
    match c {
        Cell::Bool(_) => Kind::Bool,
        Cell::Int(_) => Kind::Int,
        Cell::Float(_) => Kind::Float,
        Cell::Str(_) => Kind::Str,
        Cell::FloatList(_) => Kind::FloatList,
        Cell::StrList(_) => Kind::StrList,
    }
}

/// One type per column: the values' own, Float64 when ints and floats mix, else Utf8.
fn column_kind(values: &[Option<&Cell>]) -> Kind {
    let kinds: BTreeSet<u8> = values.iter().flatten().map(|c| kind(c) as u8).collect();
    let has = |k: Kind| kinds.contains(&(k as u8));
    match kinds.len() {
        0 => Kind::Str,
        1 => values.iter().flatten().map(|c| kind(c)).next().unwrap_or(Kind::Str),
        2 if has(Kind::Int) && has(Kind::Float) => Kind::Float,
        _ => Kind::Str,
    }
}

/// The records as one Parquet table (bytes).
pub fn to_parquet(records: &[Record]) -> Result<Vec<u8>> {
    let mut cols: Vec<&String> =
        records.iter().flat_map(|r| r.cells.keys()).collect::<BTreeSet<_>>().into_iter().collect();
    for fixed in [ID, NAME] {
        if !cols.iter().any(|c| c.as_str() == fixed) {
            return Err(Error::internal(format!("experiment records without {fixed}")));
        }
    }
    cols.sort_by_key(|c| column_rank(c));
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for col in cols {
        let values: Vec<Option<&Cell>> = records.iter().map(|r| r.cells.get(col)).collect();
        let k = column_kind(&values);
        let nullable = !(col == ID || col == NAME);
        let (dt, array): (DataType, ArrayRef) = match k {
            Kind::Bool => (
                DataType::Boolean,
                Arc::new(
                    values
                        .iter()
                        .map(|v| match v {
                            Some(Cell::Bool(b)) => Some(*b),
                            _ => None,
                        })
                        .collect::<BooleanArray>(),
                ),
            ),
            Kind::Int => (
                DataType::Int64,
                Arc::new(
                    values
                        .iter()
                        .map(|v| match v {
                            Some(Cell::Int(i)) => Some(*i),
                            _ => None,
                        })
                        .collect::<Int64Array>(),
                ),
            ),
            Kind::Float => {
                (DataType::Float64, Arc::new(values.iter().map(|v| v.and_then(Cell::as_f64)).collect::<Float64Array>()))
            }
            Kind::Str => {
                (DataType::Utf8, Arc::new(values.iter().map(|v| v.map(|c| c.to_string())).collect::<StringArray>()))
            }
            Kind::FloatList => {
                let mut b = ListBuilder::new(Float64Builder::new());
                for v in &values {
                    match v {
                        Some(Cell::FloatList(xs)) => {
                            b.values().append_slice(xs);
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                let a = b.finish();
                (a.data_type().clone(), Arc::new(a))
            }
            Kind::StrList => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for v in &values {
                    match v {
                        Some(Cell::StrList(xs)) => {
                            for x in xs {
                                b.values().append_value(x);
                            }
                            b.append(true);
                        }
                        _ => b.append(false),
                    }
                }
                let a = b.finish();
                (a.data_type().clone(), Arc::new(a))
            }
        };
        fields.push(Field::new(col.as_str(), dt, nullable));
        arrays.push(array);
    }
    crate::table::parquet_bytes(Arc::new(Schema::new(fields)), arrays)
}

fn corrupt(path: &Path, message: String) -> Error {
    Error::Corrupt { path: path.to_path_buf(), stage: "exp".into(), message }
}

/// Every record of the file, in file order; an absent file is no records.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(path, e)),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| corrupt(path, format!("not a readable Parquet file: {e}")))?;
    let mut records = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(path, e.to_string()))?;
        let first = records.len();
        records.extend((0..batch.num_rows()).map(|_| Record::default()));
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let col = field.name();
            for i in 0..array.len() {
                if let Some(cell) = cell_at(array.as_ref(), i).map_err(|t| {
                    Error::data(path, format!("row {}", first + i), format!("column {col:?}: unsupported type {t}"))
                })? {
                    records[first + i].cells.insert(col.clone(), cell);
                }
            }
        }
    }
    for (i, r) in records.iter().enumerate() {
        for col in [ID, NAME] {
            if !matches!(r.get(col), Some(Cell::Str(s)) if !s.is_empty()) {
                return Err(Error::data(path, format!("row {i}"), format!("column {col:?}: missing")));
            }
        }
    }
    Ok(records)
}

/// The value at row `i`, or `Err(type)` for a column type this table never holds.
fn cell_at(a: &dyn Array, i: usize) -> std::result::Result<Option<Cell>, String> {
    if a.is_null(i) {
        return Ok(None);
    }
    let any = a.as_any();
    let cell = match a.data_type() {
        DataType::Boolean => any.downcast_ref::<BooleanArray>().map(|x| Cell::Bool(x.value(i))),
        DataType::Int64 => any.downcast_ref::<Int64Array>().map(|x| Cell::Int(x.value(i))),
        DataType::Float64 => any.downcast_ref::<Float64Array>().map(|x| Cell::Float(x.value(i))),
        DataType::Utf8 => any.downcast_ref::<StringArray>().map(|x| Cell::Str(x.value(i).to_string())),
        DataType::LargeUtf8 => any.downcast_ref::<LargeStringArray>().map(|x| Cell::Str(x.value(i).to_string())),
        DataType::Utf8View => any.downcast_ref::<StringViewArray>().map(|x| Cell::Str(x.value(i).to_string())),
        DataType::List(f) if matches!(f.data_type(), DataType::Float64 | DataType::Utf8) => {
            let list = any.downcast_ref::<ListArray>().ok_or_else(|| a.data_type().to_string())?;
            let items = list.value(i);
            let item_any = items.as_any();
            if let Some(xs) = item_any.downcast_ref::<Float64Array>() {
                Some(Cell::FloatList(xs.iter().map(|x| x.unwrap_or(f64::NAN)).collect()))
            } else {
                item_any
                    .downcast_ref::<StringArray>()
                    .map(|xs| Cell::StrList(xs.iter().map(|x| x.unwrap_or("").to_string()).collect()))
            }
        }
        other => return Err(other.to_string()),
    };
    cell.map(Some).ok_or_else(|| a.data_type().to_string())
}

/// What [`append`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// Added under this name (the derived name, or it with `-2`, `-3`... when another experiment has it).
    Added(String),
    /// An experiment with the same id was recorded before, under this name; nothing changed.
    AlreadyRecorded(String),
}

/// Holds `artifacts/experiments/.lock` while the table is read, changed and replaced.
fn with_lock<T>(file: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let dir = file.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    let lock_path = dir.join(".lock");
    let lock = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    let out = f();
    let _ = lock.unlock();
    out
}

/// Add a record unless its id is there already (a rerun of a finished experiment). Atomic.
pub fn append(file: &Path, mut record: Record) -> Result<Appended> {
    with_lock(file, || {
        let mut records = read(file)?;
        if let Some(r) = records.iter().find(|r| r.id() == record.id()) {
            return Ok(Appended::AlreadyRecorded(r.name().to_string()));
        }
        let taken: BTreeSet<&str> = records.iter().map(|r| r.name()).collect();
        let base = record.name().to_string();
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(name.as_str()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        record.set(NAME, Cell::Str(name.clone()));
        records.push(record);
        crate::fsutil::write_atomic(file, &to_parquet(&records)?)?;
        Ok(Appended::Added(name))
    })
}

/// Forget the named experiments (their artifacts stay until `coltrast gc`). Atomic. Returns the names removed;
/// an unknown name is an error and nothing is removed.
pub fn remove(file: &Path, names: &[String]) -> Result<Vec<String>> {
    with_lock(file, || {
        let records = read(file)?;
        for n in names {
            if !records.iter().any(|r| r.name() == n) {
                return Err(unknown(file, n, &records));
            }
        }
        let (gone, kept): (Vec<Record>, Vec<Record>) =
            records.into_iter().partition(|r| names.iter().any(|n| n == r.name()));
        if kept.is_empty() {
            fs::remove_file(file).at(file)?;
        } else {
            crate::fsutil::write_atomic(file, &to_parquet(&kept)?)?;
        }
        Ok(gone.iter().map(|r| r.name().to_string()).collect())
    })
}

/// The error for a name that is not recorded, with the names that are.
pub fn unknown(file: &Path, name: &str, records: &[Record]) -> Error {
    let names: Vec<&str> = records.iter().map(|r| r.name()).collect();
    let known =
        if names.is_empty() { "none is recorded".to_string() } else { format!("recorded: {}", names.join(", ")) };
    Error::Usage(format!("{}: no experiment named {name:?} ({known})", file.display()))
}

/// Look one experiment up by name.
pub fn find<'a>(file: &Path, records: &'a [Record], name: &str) -> Result<&'a Record> {
    records.iter().find(|r| r.name() == name).ok_or_else(|| unknown(file, name, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str, threshold: Cell, ndcg: Option<f64>) -> Record {
        let mut r = Record::default();
        r.set(ID, Cell::Str(id.into()));
        r.set(NAME, Cell::Str(name.into()));
        r.set(CREATED, Cell::Int(1_700_000_000));
        r.set(PARAMS, Cell::StrList(vec!["chunk.similarity_threshold".into()]));
        r.set("settings.chunk.similarity_threshold", threshold);
        r.set("settings.chunk.strategy", Cell::Str("semantic".into()));
        r.set("stage.train.fingerprint", Cell::Str(format!("fp-{id}")));
        r.set("stage.train.ran", Cell::Bool(true));
        r.set("stage.ingest.fingerprint", Cell::Str("shared".into()));
        if let Some(v) = ndcg {
            r.set("metric.coltrast/document/ndcg@10", Cell::Float(v));
        }
        r.set("loss.val", Cell::FloatList(vec![0.9, 0.5, 0.45]));
        r
    }

    #[test]
    fn parquet_round_trip_keeps_types_nulls_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        let a = rec("a", "t=0.5", Cell::Float(0.5), Some(0.8));
        let b = rec("b", "t=1", Cell::Int(1), None);
        assert_eq!(append(&file, a.clone()).unwrap(), Appended::Added("t=0.5".into()));
        assert_eq!(append(&file, b).unwrap(), Appended::Added("t=1".into()));
        // the same id again: nothing is added
        assert_eq!(append(&file, a.clone()).unwrap(), Appended::AlreadyRecorded("t=0.5".into()));
        let back = read(&file).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], a);
        // ints and floats in one column become Float64; a missing metric is null
        assert_eq!(back[1].setting("chunk.similarity_threshold"), Some(&Cell::Float(1.0)));
        assert_eq!(back[1].get("metric.coltrast/document/ndcg@10"), None);
        assert_eq!(
            back[1].fingerprints(),
            [("ingest".to_string(), "shared".to_string()), ("train".into(), "fp-b".into())]
        );
        // a different experiment under a taken name gets a suffix
        let c = rec("c", "t=0.5", Cell::Float(0.5), Some(0.7));
        assert_eq!(append(&file, c).unwrap(), Appended::Added("t=0.5-2".into()));
        assert_eq!(remove(&file, &["t=1".into()]).unwrap(), ["t=1"]);
        let names: Vec<String> = read(&file).unwrap().iter().map(|r| r.name().to_string()).collect();
        assert_eq!(names, ["t=0.5", "t=0.5-2"]);
        assert!(remove(&file, &["nope".into()]).unwrap_err().to_string().contains("no experiment named \"nope\""));
        // no temporary file is left beside it
        let left: Vec<String> = fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n != FILE && n != ".lock")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn opens_in_polars_with_one_typed_column_per_setting_and_metric() {
        use polars::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        append(&file, rec("a", "x", Cell::Float(0.5), Some(0.8))).unwrap();
        append(&file, rec("b", "y", Cell::Float(0.9), Some(0.6))).unwrap();
        let df = LazyFrame::scan_parquet(PlRefPath::new(file.to_str().unwrap()), ScanArgsParquet::default())
            .unwrap()
            .sort(["metric.coltrast/document/ndcg@10"], SortMultipleOptions::default().with_order_descending(true))
            .collect()
            .unwrap();
        assert_eq!(df.height(), 2);
        let names = df.column(NAME).unwrap().str().unwrap();
        assert_eq!(names.get(0), Some("x"));
        assert_eq!(df.column("settings.chunk.similarity_threshold").unwrap().dtype(), &DataType::Float64);
        assert_eq!(df.column("stage.train.ran").unwrap().dtype(), &DataType::Boolean);
        assert_eq!(df.column("created_unix").unwrap().dtype(), &DataType::Int64);
        assert!(matches!(df.column("loss.val").unwrap().dtype(), DataType::List(_)));
    }

    #[test]
    fn a_row_without_a_name_is_an_error_naming_file_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        let mut r = rec("a", "x", Cell::Float(0.5), None);
        r.set(NAME, Cell::Str(String::new()));
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, to_parquet(&[r]).unwrap()).unwrap();
        let err = read(&file).unwrap_err().to_string();
        assert_eq!(err, format!("{}: row 0: column \"name\": missing", file.display()));
        fs::write(&file, b"not parquet").unwrap();
        assert!(read(&file).unwrap_err().to_string().contains("not a readable Parquet file"));
    }
}
