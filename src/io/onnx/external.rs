//! ONNX external data: tensors whose bytes live in files beside the model (`data_location:
//! EXTERNAL`, with `location`, `offset` and `length` entries), as exporters write models over
//! protobuf's 2 GB limit (`torch.onnx.export(..., external_data=True)`,
//! `onnx.save_model(..., save_as_external_data=True)`).
//!
//! The writer edits tensors in the protobuf, so external tensors are read in first (each tensor
//! read once into its place) and, when the source had any, written out again after the
//! edit: every tensor of at least [`EXTERNAL_THRESHOLD`] bytes goes into one data file beside
//! the output, the rest stays inline (as `onnx.save_model` does).

use crate::io::error::{IoError, IoResult};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use tract_onnx::pb::tensor_proto::DataLocation;
use tract_onnx::pb::{ModelProto, StringStringEntryProto, TensorProto};

/// Tensors at least this large (in bytes) are written as external data.
pub const EXTERNAL_THRESHOLD: usize = 1024;

fn is_external(t: &TensorProto) -> bool {
    t.data_location == Some(DataLocation::External as i32)
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

/// The data file of an external tensor: a relative path inside the model's directory (ONNX's
/// rule, which also keeps a model from reading arbitrary files).
fn data_path(model_dir: &Path, t: &TensorProto, shown: &str) -> IoResult<PathBuf> {
    let bad = |message: String| IoError::NotOnnx {
        path: shown.to_string(),
        message,
    };
    let location = entry(t, "location").ok_or_else(|| {
        bad(format!(
            "tensor `{}` is external but has no location",
            t.name
        ))
    })?;
    let relative = Path::new(location);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(format!(
            "tensor `{}`: external data location `{location}` is not a relative path inside the model's directory",
            t.name
        )));
    }
    Ok(model_dir.join(relative))
}

/// A number of an external tensor's entry (`offset`, `length`), if given.
fn number(t: &TensorProto, key: &str, shown: &str) -> IoResult<Option<usize>> {
    entry(t, key)
        .map(|v| {
            v.parse().map_err(|_| IoError::NotOnnx {
                path: shown.to_string(),
                message: format!(
                    "tensor `{}`: external data {key} `{v}` is not a number",
                    t.name
                ),
            })
        })
        .transpose()
}

/// Every tensor of a graph: its initializers and the tensor attributes of its nodes
/// (`Constant` values, which the TorchScript exporter also writes as external data).
fn tensors_mut(graph: &mut tract_onnx::pb::GraphProto) -> impl Iterator<Item = &mut TensorProto> {
    let attributes = graph
        .node
        .iter_mut()
        .flat_map(|n| n.attribute.iter_mut())
        .filter_map(|a| a.t.as_mut());
    graph.initializer.iter_mut().chain(attributes)
}

/// Reads every external tensor of `proto` (loaded from `source`) into the protobuf; returns
/// whether there was any.
pub fn internalize(proto: &mut ModelProto, source: &Path) -> IoResult<bool> {
    let shown = source.display().to_string();
    let model_dir = source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(false);
    };
    let mut files: HashMap<PathBuf, (File, u64)> = HashMap::new();
    let mut any = false;
    for t in tensors_mut(graph).filter(|t| is_external(t)) {
        any = true;
        let path = data_path(model_dir, t, &shown)?;
        if !files.contains_key(&path) {
            let file = File::open(&path).map_err(|e| IoError::read(&path, e))?;
            let size = file.metadata().map_err(|e| IoError::read(&path, e))?.len();
            files.insert(path.clone(), (file, size));
        }
        let (file, size) = files.get_mut(&path).expect("opened above");
        let offset = number(t, "offset", &shown)?.unwrap_or(0);
        let length =
            number(t, "length", &shown)?.unwrap_or((*size as usize).saturating_sub(offset));
        if offset
            .checked_add(length)
            .is_none_or(|end| end as u64 > *size)
        {
            return Err(IoError::NotOnnx {
                path: shown.clone(),
                message: format!(
                    "tensor `{}`: external data {}..{} lies beyond the end of {} ({} bytes)",
                    t.name,
                    offset,
                    offset.saturating_add(length),
                    path.display(),
                    size
                ),
            });
        }
        // Read, not mapped: the bytes are copied into the protobuf anyway, and mapped pages
        // would count as resident beside the copy.
        let mut bytes = vec![0u8; length];
        file.seek(SeekFrom::Start(offset as u64))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| IoError::read(&path, e))?;
        t.raw_data = bytes;
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(any)
}

/// Moves every initializer of at least [`EXTERNAL_THRESHOLD`] bytes out of `proto` into `data`,
/// referenced by `location` (the data file's name beside the model).
pub fn externalize(
    proto: &mut ModelProto,
    data: &mut impl Write,
    location: &str,
) -> std::io::Result<()> {
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(());
    };
    let mut offset = 0usize;
    for t in graph
        .initializer
        .iter_mut()
        .filter(|t| t.raw_data.len() >= EXTERNAL_THRESHOLD)
    {
        data.write_all(&t.raw_data)?;
        let length = t.raw_data.len();
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: key.to_string(),
            value,
        };
        t.external_data = vec![
            entry("location", location.to_string()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        t.raw_data = vec![];
        offset += length;
    }
    Ok(())
}
