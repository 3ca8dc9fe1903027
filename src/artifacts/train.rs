//! The train stage's artifact: the fine-tuned sentence-transformers model dir (`model/`), the per-step and
//! per-epoch log (`train_log.parquet`) and the training curves (`training_curves.png`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{Error, Result};
pub const MODEL_DIR: &str = "model";
pub const LOG: &str = "train_log.parquet";
pub const CURVES: &str = "training_curves.png";

pub fn log_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("step", DataType::Int64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("lr", DataType::Float64, true),
        Field::new("loss", DataType::Float64, false),
        Field::new("loss_contrastive", DataType::Float64, false),
        Field::new("loss_late", DataType::Float64, false),
        Field::new("grad_norm", DataType::Float64, true),
    ]))
}

/// The mean loss of one split ("train": over the epoch's steps; "val": the pass at the epoch's end).
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLoss {
    pub split: String,
    pub epoch: i64,
    pub loss: f64,
}

/// Per split and epoch (in that order), the mean `loss` of a train artifact dir's [`LOG`].
pub fn epoch_losses(train_dir: &std::path::Path) -> Result<Vec<EpochLoss>> {
    use arrow::array::Float64Array;
    let path = train_dir.join(LOG);
    let batch = crate::table::read_parquet(&path, "train", &log_schema())?;
    let epoch = crate::table::i64_col(&batch, "epoch")?;
    let split = crate::table::str_col(&batch, "split")?;
    let loss = batch
        .column_by_name("loss")
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or_else(|| Error::data(&path, "loss", "not a Float64 column"))?;
    let mut per: std::collections::BTreeMap<(String, i64), (f64, usize)> = Default::default();
    for i in 0..batch.num_rows() {
        let e = per.entry((split.value(i).to_string(), epoch.value(i))).or_insert((0.0, 0));
        e.0 += loss.value(i);
        e.1 += 1;
    }
    Ok(per.into_iter().map(|((split, epoch), (sum, n))| EpochLoss { split, epoch, loss: sum / n as f64 }).collect())
}
