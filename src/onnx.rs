//! ONNX files edited in place: the pruned model written back as the user's own ONNX graph, with
//! only initializers changed (zeros for removed channels and heads, compensated biases).
//!
//! A group's consumer is found in the ONNX graph by name (tract keeps ONNX node names, adding
//! suffixes such as `.ab`); its weight is the initializer it multiplies by (possibly through a
//! `Transpose`), whose contracted axis follows from the op (`MatMul` B: rows; `Gemm`: rows, or
//! columns with `transB`). Anything that does not map exactly is refused, and the written file
//! is reloaded and checked against the pruned tract model before it is kept.

use crate::error::{Result, SlimError};
use crate::import::{import_onnx, ImportOptions};
use crate::verify::verify;
use crate::write::write_atomically;
use prost::Message;
use std::path::Path;
use tract_core::internal::*;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

/// One consumer's edit: zero the removed units' rows, add a delta to its bias.
#[derive(Clone, Debug)]
pub struct WeightEdit {
    /// The consumer's tract node name.
    pub consumer: String,
    /// Units of the consumer (channels or heads).
    pub units: usize,
    /// Units to zero.
    pub removed: Vec<usize>,
    /// What to add to the consumer's bias (bias compensation).
    pub bias_delta: Option<Vec<f32>>,
}

fn bad(path: &Path, message: impl Into<String>) -> SlimError {
    SlimError::NotOnnx {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads an ONNX file's protobuf.
pub fn read_proto(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| SlimError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    ModelProto::decode(bytes.as_slice()).map_err(|e| bad(path, e.to_string()))
}

/// The ONNX node a tract node name comes from: the same name, or the longest node name that
/// the tract name extends with `.suffix`.
fn onnx_node<'a>(proto: &'a ModelProto, tract_name: &str) -> Option<&'a NodeProto> {
    let graph = proto.graph.as_ref()?;
    graph
        .node
        .iter()
        .filter(|n| {
            !n.name.is_empty()
                && (n.name == tract_name
                    || tract_name
                        .strip_prefix(n.name.as_str())
                        .is_some_and(|rest| rest.starts_with('.')))
        })
        .max_by_key(|n| n.name.len())
}

fn attribute_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn initializer_index(proto: &ModelProto, name: &str) -> Option<usize> {
    proto
        .graph
        .as_ref()?
        .initializer
        .iter()
        .position(|t| t.name == name)
}

/// The initializer a node input reads (directly or through a `Transpose`) and the permutation
/// from the input's axes to the initializer's.
fn weight_source(proto: &ModelProto, input: &str) -> Option<(usize, Vec<usize>)> {
    if let Some(ix) = initializer_index(proto, input) {
        let rank = proto.graph.as_ref()?.initializer[ix].dims.len();
        return Some((ix, (0..rank).collect()));
    }
    let graph = proto.graph.as_ref()?;
    let transpose = graph.node.iter().find(|n| {
        n.op_type == "Transpose" && n.output.first().map(String::as_str) == Some(input)
    })?;
    let ix = initializer_index(proto, transpose.input.first()?)?;
    let rank = graph.initializer[ix].dims.len();
    let perm: Vec<usize> = match transpose.attribute.iter().find(|a| a.name == "perm") {
        Some(a) => a.ints.iter().map(|&p| p as usize).collect(),
        None => (0..rank).rev().collect(),
    };
    Some((ix, perm))
}

/// The consumer's weight initializer and the initializer axis it contracts (input channels).
fn consumer_weight(proto: &ModelProto, node: &NodeProto) -> Option<(usize, usize)> {
    let (slot, axis_of_input) = match node.op_type.as_str() {
        "MatMul" => (1, None),
        "Gemm" => (
            1,
            Some(if attribute_int(node, "transB") == Some(1) {
                1
            } else {
                0
            }),
        ),
        _ => return None,
    };
    let (ix, perm) = weight_source(proto, node.input.get(slot)?)?;
    let rank = perm.len();
    // MatMul's B contracts its second-to-last axis.
    let input_axis = axis_of_input.unwrap_or(rank.checked_sub(2)?);
    Some((ix, *perm.get(input_axis)?))
}

/// The initializer holding the consumer's bias: Gemm's C, or an Add right after a MatMul.
fn bias_initializer(proto: &ModelProto, node: &NodeProto) -> Option<usize> {
    if node.op_type == "Gemm" {
        return initializer_index(proto, node.input.get(2)?);
    }
    let output = node.output.first()?;
    let graph = proto.graph.as_ref()?;
    let add = graph
        .node
        .iter()
        .find(|n| n.op_type == "Add" && n.input.iter().any(|i| i == output))?;
    add.input.iter().find_map(|i| initializer_index(proto, i))
}

fn float_data(t: &TensorProto) -> std::result::Result<Vec<f32>, String> {
    if t.data_type != 1 {
        return Err(format!("initializer `{}` is not float32", t.name));
    }
    if !t.raw_data.is_empty() {
        return Ok(t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    if t.float_data.is_empty() && t.dims.iter().product::<i64>() > 0 {
        return Err(format!(
            "initializer `{}` keeps its data outside the file",
            t.name
        ));
    }
    Ok(t.float_data.clone())
}

fn set_float_data(t: &mut TensorProto, data: &[f32]) {
    t.float_data.clear();
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
}

/// Zeroes the slices `indices` of `axis` of a row-major tensor.
fn zero_slices(data: &mut [f32], dims: &[usize], axis: usize, indices: &[usize]) {
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    for o in 0..outer {
        for &i in indices {
            let start = (o * dims[axis] + i) * inner;
            data[start..start + inner].fill(0.0);
        }
    }
}

/// Applies the edits to the protobuf; an edit that cannot be mapped exactly is an error.
pub fn apply_edits(
    proto: &mut ModelProto,
    edits: &[WeightEdit],
) -> std::result::Result<(), String> {
    for edit in edits {
        let node = onnx_node(proto, &edit.consumer)
            .ok_or_else(|| format!("no ONNX node behind `{}`", edit.consumer))?
            .clone();
        let (weight, axis) = consumer_weight(proto, &node).ok_or_else(|| {
            format!(
                "cannot find the weight initializer of ONNX node `{}`",
                node.name
            )
        })?;
        let bias = bias_initializer(proto, &node);
        let graph = proto.graph.as_mut().ok_or("no graph")?;
        let tensor = &mut graph.initializer[weight];
        let dims: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
        if !dims[axis].is_multiple_of(edit.units.max(1)) {
            return Err(format!(
                "`{}`: {} units do not divide axis {axis} of {:?}",
                tensor.name, edit.units, dims
            ));
        }
        let block = dims[axis] / edit.units;
        let indices: Vec<usize> = edit
            .removed
            .iter()
            .flat_map(|u| u * block..(u + 1) * block)
            .collect();
        let mut data = float_data(tensor)?;
        zero_slices(&mut data, &dims, axis, &indices);
        set_float_data(tensor, &data);
        if let Some(delta) = &edit.bias_delta {
            let ix = bias.ok_or_else(|| format!("ONNX node `{}` has no bias initializer to compensate into (use --no-compensation)", node.name))?;
            let tensor = &mut graph.initializer[ix];
            let mut data = float_data(tensor)?;
            if data.len() != delta.len() {
                return Err(format!(
                    "bias `{}` has {} values, the compensation {}",
                    tensor.name,
                    data.len(),
                    delta.len()
                ));
            }
            data.iter_mut().zip(delta).for_each(|(d, x)| *d += x);
            set_float_data(tensor, &data);
        }
    }
    Ok(())
}

/// Writes `source` with `edits` applied to `output`, after checking that the written file
/// imports and computes what `expected` (the pruned tract model) computes.
pub fn write_edited(
    source: &Path,
    output: &Path,
    edits: &[WeightEdit],
    import: &ImportOptions,
    expected: &TypedModel,
) -> Result<()> {
    let mut proto = read_proto(source)?;
    apply_edits(&mut proto, edits).map_err(|message| SlimError::Write {
        path: output.display().to_string(),
        message,
    })?;
    let bytes = proto.encode_to_vec();
    let check = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .map_err(|e| SlimError::Write {
            path: output.display().to_string(),
            message: e.to_string(),
        })?;
    std::fs::write(check.path(), &bytes).map_err(|e| SlimError::Write {
        path: output.display().to_string(),
        message: e.to_string(),
    })?;
    let reloaded = import_onnx(check.path(), import)?;
    let v = verify(expected, &reloaded, 0, &SymbolValues::default())
        .map_err(|e| SlimError::stage("checking the written ONNX", e))?;
    if !v.passed {
        return Err(SlimError::Write {
            path: output.display().to_string(),
            message: format!(
                "the edited ONNX does not compute the pruned model: {:?}",
                v.outputs
            ),
        });
    }
    write_atomically(output, &bytes).map_err(|e| SlimError::Write {
        path: output.display().to_string(),
        message: e.to_string(),
    })
}
