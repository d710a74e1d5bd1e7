//! Calibration data: samples of a model's inputs read from an `.npz` file, and runs of the model
//! on them that read intermediate tensors (for activation-aware scores and bias compensation).
//!
//! The file holds one array per model input, named after it (as `numpy.savez(path,
//! input_ids=..., attention_mask=...)` writes them). The first axis counts samples: an array one
//! rank above the input holds one input per entry; an array of the input's rank is cut into
//! batch-1 samples along its first axis.

use crate::error::{Result, SlimError};
use crate::io::IoError;
use ndarray_npy::NpzReader;
use std::fs::File;
use std::path::Path;
use tract_core::internal::*;

/// Input samples, each one value per model input in order.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// One entry per sample, holding a value for each model input in order.
    pub samples: Vec<TVec<TValue>>,
    /// The input that marks real tokens (1) and padding (0), if the model has one: statistics
    /// are taken over real tokens only.
    pub mask: Option<usize>,
}

impl Calibration {
    /// Samples for `model`, with its attention mask found by name (an input whose name
    /// contains `mask`).
    pub fn new(model: &TypedModel, samples: Vec<TVec<TValue>>) -> Calibration {
        let mask = model.input_outlets().ok().and_then(|inputs| {
            inputs
                .iter()
                .position(|o| model.node(o.node).name.to_lowercase().contains("mask"))
        });
        Calibration { samples, mask }
    }
}

fn bad(path: &Path, message: impl Into<String>) -> SlimError {
    SlimError::Calibration {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads one array of whatever numeric type it holds.
fn read_array(npz: &mut NpzReader<File>, name: &str, path: &Path) -> Result<Tensor> {
    macro_rules! try_types {
        ($($t:ty),*) => {
            $(if let Ok(a) = npz.by_name::<tract_ndarray::OwnedRepr<$t>, tract_ndarray::IxDyn>(name) {
                return Ok(a.into_tensor());
            })*
        };
    }
    try_types!(f32, f64, i64, i32, i16, i8, u8, bool);
    Err(bad(
        path,
        format!("array `{name}` has an unsupported element type"),
    ))
}

/// Splits array `name` of `path` into per-sample inputs of `fact`'s rank.
fn split_samples(array: &Tensor, fact: &TypedFact, name: &str, path: &Path) -> Result<Vec<Tensor>> {
    let bad = |message: String| bad(path, format!("`{name}`: {message}"));
    let rank = fact.rank();
    let per_entry = array.rank() == rank + 1;
    if !per_entry && array.rank() != rank {
        return Err(bad(format!(
            "rank {} where the input has rank {rank} (expected samples × input, or batch-1 samples along the first axis)",
            array.rank()
        )));
    }
    let samples = array.shape().first().copied().unwrap_or(0);
    (0..samples)
        .map(|i| {
            let sample = array.slice(0, i, i + 1).map_err(|e| bad(e.to_string()))?;
            let sample = if per_entry {
                sample
                    .into_shape(&array.shape()[1..])
                    .map_err(|e| bad(e.to_string()))?
            } else {
                sample
            };
            let concrete = fact
                .shape
                .iter()
                .zip(sample.shape())
                .all(|(d, s)| d.to_usize().map(|d| d == *s).unwrap_or(true));
            if !concrete {
                return Err(bad(format!(
                    "sample shape {:?} does not fit the input's {:?}",
                    sample.shape(),
                    fact.shape
                )));
            }
            sample
                .cast_to_dt(fact.datum_type)
                .map(|t| t.into_owned())
                .map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// Reads calibration samples for `model` from an `.npz` file.
pub fn load_npz(path: &Path, model: &TypedModel) -> Result<Calibration> {
    let file = File::open(path).map_err(|e| IoError::read(path, e))?;
    let mut npz = NpzReader::new(file).map_err(|e| bad(path, format!("not an .npz file ({e})")))?;
    let names = npz.names().map_err(|e| bad(path, e.to_string()))?;
    let mut per_input: Vec<Vec<Tensor>> = vec![];
    for outlet in model
        .input_outlets()
        .map_err(|e| bad(path, e.to_string()))?
    {
        let input = &model.node(outlet.node).name;
        let entry = names
            .iter()
            .find(|n| n.trim_end_matches(".npy") == input)
            .ok_or_else(|| {
                bad(
                    path,
                    format!("no array named `{input}` (it has: {})", names.join(", ")),
                )
            })?;
        let array = read_array(&mut npz, entry, path)?;
        let fact = model
            .outlet_fact(*outlet)
            .map_err(|e| bad(path, e.to_string()))?;
        let samples = split_samples(&array, fact, input, path)?;
        per_input.push(samples);
    }
    let count = per_input.first().map(|s| s.len()).unwrap_or(0);
    if count == 0 || per_input.iter().any(|s| s.len() != count) {
        return Err(bad(
            path,
            "the arrays must hold the same, non-zero number of samples",
        ));
    }
    let samples = (0..count)
        .map(|i| {
            per_input
                .iter()
                .map(|s| s[i].clone().into_tvalue())
                .collect()
        })
        .collect();
    Ok(Calibration::new(model, samples))
}
