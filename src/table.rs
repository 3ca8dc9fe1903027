//! Arrow/Parquet helpers shared by the stages: one way to write a table (explicit writer properties, zstd,
//! closed writer) and one way to read one back with errors that name the file.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::Schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, IoContext, Result};

fn props() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by(format!("coltrast {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Write one table to `path` (inside a stage's temporary dir; the engine makes it atomic).
pub fn write_parquet(path: &Path, schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<u64> {
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::internal(format!("{}: building table: {e}", path.display())))?;
    let rows = batch.num_rows() as u64;
    let file = fs::File::create(path).at(path)?;
    let mut w = ArrowWriter::try_new(file, schema, Some(props()))
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    w.write(&batch).map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    w.close().map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    Ok(rows)
}

/// One table as Parquet bytes (same writer properties), for files that are replaced atomically as a whole
/// ([`crate::fsutil::write_atomic`]) rather than written inside a stage's temporary dir.
pub fn parquet_bytes(schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<Vec<u8>> {
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::internal(format!("building table: {e}")))?;
    let mut bytes = Vec::new();
    let mut w = ArrowWriter::try_new(&mut bytes, schema, Some(props())).map_err(Error::internal)?;
    w.write(&batch).map_err(Error::internal)?;
    w.close().map_err(Error::internal)?;
    Ok(bytes)
}

/// Read a whole Parquet file into one batch, checking it has the expected columns and types.
pub fn read_parquet(path: &Path, stage: &str, expected: &Schema) -> Result<RecordBatch> {
    let corrupt = |m: String| Error::Corrupt { path: path.to_path_buf(), stage: stage.to_string(), message: m };
    let file = fs::File::open(path).at(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| corrupt(format!("not a readable Parquet file: {e}")))?;
    let schema = builder.schema().clone();
    let reader = builder.build().map_err(|e| corrupt(e.to_string()))?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| corrupt(e.to_string()))?);
    }
    for f in expected.fields() {
        let got = schema.field_with_name(f.name()).map_err(|_| corrupt(format!("missing column {:?}", f.name())))?;
        if got.data_type() != f.data_type() {
            return Err(corrupt(format!(
                "column {:?} is {} but should be {}",
                f.name(),
                got.data_type(),
                f.data_type()
            )));
        }
    }
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| corrupt(e.to_string()))
}

/// A Utf8 column by name.
pub fn str_col<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::internal(format!("column {name} is not Utf8")))
}

/// Value of a nullable Utf8 column at `i`.
pub fn opt_str(col: &StringArray, i: usize) -> Option<&str> {
    if col.is_null(i) {
        None
    } else {
        Some(col.value(i))
    }
}

/// The type of an embedding column: `FixedSizeList<Float32, dim>` (polars reads it as `Array(Float32, dim)`).
pub fn embedding_type(dim: usize) -> arrow::datatypes::DataType {
    use arrow::datatypes::{DataType, Field};
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32)
}

/// Wrap a flat row-major buffer of `rows × dim` floats as one `FixedSizeList<Float32, dim>` column.
pub fn embedding_array(flat: Vec<f32>, dim: usize) -> Result<ArrayRef> {
    use arrow::array::{FixedSizeListArray, Float32Array};
    use arrow::datatypes::{DataType, Field};
    let values = Arc::new(Float32Array::from(flat));
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let arr = FixedSizeListArray::try_new(field, dim as i32, values, None).map_err(Error::internal)?;
    Ok(Arc::new(arr))
}

/// Read an embedding column back as (flat row-major buffer, dim).
pub fn embedding_values(batch: &RecordBatch, name: &str) -> Result<(Vec<f32>, usize)> {
    use arrow::array::{FixedSizeListArray, Float32Array};
    let col = batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .ok_or_else(|| Error::internal(format!("column {name} is not a FixedSizeList")))?;
    let dim = col.value_length() as usize;
    let values = col
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| Error::internal(format!("column {name} is not a list of Float32")))?;
    let start = col.offset() * dim;
    Ok((values.values()[start..start + col.len() * dim].to_vec(), dim))
}

/// An Int64 column by name.
pub fn i64_col<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a arrow::array::Int64Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>())
        .ok_or_else(|| Error::internal(format!("column {name} is not Int64")))
}
