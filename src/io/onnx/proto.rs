//! ONNX protobuf access for writing models back ([`crate::io::onnx::writeback`]): reading, finding the
//! node behind a tract node (tract keeps ONNX node names, adding suffixes such as `.ab`) and the
//! initializer it multiplies by (possibly through a `Transpose`), float and integer data, and
//! re-encoding an edited model so that everything not edited stays byte for byte as it was.

use crate::io::error::{IoError, IoResult};
use crate::io::onnx::error::{EditError, EditResult};
use prost::Message;
use std::path::Path;
use tract_core::prelude::f16;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// Field numbers of the ONNX protobuf schema (`onnx.proto`) that re-encoding walks.
mod field {
    /// `ModelProto.graph`.
    pub const MODEL_GRAPH: u64 = 7;
    /// `GraphProto.node`.
    pub const GRAPH_NODE: u64 = 1;
    /// `GraphProto.initializer`.
    pub const GRAPH_INITIALIZER: u64 = 5;
    /// `GraphProto.input`.
    pub const GRAPH_INPUT: u64 = 11;
    /// `GraphProto.output`.
    pub const GRAPH_OUTPUT: u64 = 12;
    /// `GraphProto.value_info`.
    pub const GRAPH_VALUE_INFO: u64 = 13;
}

/// Reads a file's bytes.
pub fn read_bytes(path: &Path) -> IoResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| IoError::read(path, e))
}

/// Decodes an ONNX model's protobuf (`path` names it in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> IoResult<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| IoError::NotOnnx {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Reads an ONNX file's protobuf.
pub fn read_proto(path: &Path) -> IoResult<ModelProto> {
    decode(path, &read_bytes(path)?)
}

/// The ONNX node a tract node name comes from: the same name, or the longest node name that
/// the tract name extends with `.suffix`.
pub(crate) fn onnx_node<'a>(proto: &'a ModelProto, tract_name: &str) -> Option<&'a NodeProto> {
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

/// A node's integer attribute.
pub(crate) fn attribute_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// A node's integer-list attribute.
pub(crate) fn attribute_ints<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [i64]> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.as_slice())
}

/// The version of the default ONNX operator set the model imports.
pub(crate) fn opset(proto: &ModelProto) -> i64 {
    proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(1)
}

pub(crate) fn initializer_index(proto: &ModelProto, name: &str) -> Option<usize> {
    proto
        .graph
        .as_ref()?
        .initializer
        .iter()
        .position(|t| t.name == name)
}

/// The node producing the value `name`.
pub(crate) fn producer_index(graph: &GraphProto, name: &str) -> Option<usize> {
    graph
        .node
        .iter()
        .position(|n| n.output.iter().any(|o| o == name))
}

/// The weight of a linear node (`MatMul` or `Gemm` multiplying by an initializer, possibly
/// through a `Transpose`): who reads the initializer, and which of its axes carry the node's
/// input channels (contracted).
pub(crate) struct Weight {
    /// The node and input slot reading the initializer (the linear node, or the Transpose).
    pub reader: usize,
    pub slot: usize,
    pub initializer: usize,
    pub input_axis: usize,
}

/// The weight of linear node `node`, if it is one.
pub(crate) fn linear_weight(proto: &ModelProto, node: usize) -> Option<Weight> {
    let graph = proto.graph.as_ref()?;
    let linear = &graph.node[node];
    let input = linear.input.get(1)?;
    let (reader, slot, initializer, perm) = match initializer_index(proto, input) {
        Some(ix) => (
            node,
            1,
            ix,
            (0..graph.initializer[ix].dims.len()).collect::<Vec<_>>(),
        ),
        None => {
            let t = producer_index(graph, input)?;
            let transpose = &graph.node[t];
            if transpose.op_type != "Transpose" {
                return None;
            }
            let ix = initializer_index(proto, transpose.input.first()?)?;
            let rank = graph.initializer[ix].dims.len();
            let perm = match transpose.attribute.iter().find(|a| a.name == "perm") {
                Some(a) => a.ints.iter().map(|&p| p as usize).collect(),
                None => (0..rank).rev().collect(),
            };
            (t, 0, ix, perm)
        }
    };
    let rank = perm.len();
    // As the node sees its weight: MatMul's B is [.., in, out]; Gemm's is [in, out], or
    // [out, in] with transB.
    let input_view = match linear.op_type.as_str() {
        "MatMul" if rank >= 2 => rank - 2,
        "Gemm" if attribute_int(linear, "transB") == Some(1) => 1,
        "Gemm" => 0,
        _ => return None,
    };
    Some(Weight {
        reader,
        slot,
        initializer,
        input_axis: *perm.get(input_view)?,
    })
}

/// Whether a tensor holds floats of a type the writer edits (float32, float16, float64).
pub(crate) fn is_float(t: &TensorProto) -> bool {
    [DataType::Float, DataType::Float16, DataType::Double]
        .iter()
        .any(|d| t.data_type == *d as i32)
}

/// A float tensor's values in f32 (float16 and float64 converted), whichever field holds them.
pub(crate) fn float_data(t: &TensorProto) -> EditResult<Vec<f32>> {
    if !is_float(t) {
        return Err(EditError::NotFloat(t.name.clone()));
    }
    let elements = t.dims.iter().product::<i64>() as usize;
    let values: Vec<f32> = match DataType::try_from(t.data_type) {
        Ok(DataType::Float16) if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        // float16 outside raw data: one per int32, in its low 16 bits.
        Ok(DataType::Float16) => t
            .int32_data
            .iter()
            .map(|v| f16::from_bits(*v as u16).to_f32())
            .collect(),
        Ok(DataType::Double) if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Ok(DataType::Double) => t.double_data.iter().map(|v| *v as f32).collect(),
        _ if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        _ => t.float_data.clone(),
    };
    if values.len() != elements {
        return Err(EditError::ExternalData(t.name.clone()));
    }
    Ok(values)
}

/// Sets a float tensor's values, stored as raw data of its own type (never upcast).
pub(crate) fn set_float_data(t: &mut TensorProto, data: &[f32]) {
    t.float_data.clear();
    t.int32_data.clear();
    t.double_data.clear();
    t.raw_data = match DataType::try_from(t.data_type) {
        Ok(DataType::Float16) => data
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        Ok(DataType::Double) => data
            .iter()
            .flat_map(|v| (*v as f64).to_le_bytes())
            .collect(),
        _ => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
}

/// One protobuf field as written: its number and its whole encoding (tag included).
struct RawField<'a> {
    number: u64,
    bytes: &'a [u8],
    /// For length-delimited fields, the payload.
    payload: &'a [u8],
}

fn varint(bytes: &[u8], at: &mut usize) -> EditResult<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes
            .get(*at)
            .ok_or(EditError::Protobuf("truncated varint"))?;
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(EditError::Protobuf("varint too long"))
}

/// Splits a message into its fields, in order, without decoding them.
fn raw_fields(bytes: &[u8]) -> EditResult<Vec<RawField<'_>>> {
    let mut fields = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let tag = varint(bytes, &mut at)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let payload_start;
        match wire {
            0 => {
                varint(bytes, &mut at)?;
                payload_start = at;
            }
            1 => {
                at += 8;
                payload_start = at;
            }
            2 => {
                let len = varint(bytes, &mut at)? as usize;
                payload_start = at;
                at += len;
            }
            5 => {
                at += 4;
                payload_start = at;
            }
            _ => return Err(EditError::Protobuf("unsupported wire type")),
        }
        if at > bytes.len() {
            return Err(EditError::Protobuf("truncated field"));
        }
        let payload = if wire == 2 {
            &bytes[payload_start..at]
        } else {
            &[][..]
        };
        fields.push(RawField {
            number,
            bytes: &bytes[start..at],
            payload,
        });
    }
    Ok(fields)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn length_delimited(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    put_varint(&mut out, number << 3 | 2);
    put_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// The fields of `raw` that prost's message type `M` does not know (newer ONNX fields such as
/// `metadata_props`), as written.
fn unknown_fields<M: Message + Default>(raw: &[u8]) -> EditResult<Vec<u8>> {
    let decoded = M::decode(raw)?;
    let again = decoded.encode_to_vec();
    let known: std::collections::HashSet<u64> =
        raw_fields(&again)?.iter().map(|f| f.number).collect();
    Ok(raw_fields(raw)?
        .iter()
        .filter(|f| !known.contains(&f.number))
        .flat_map(|f| f.bytes.iter().copied())
        .collect())
}

/// Encodes `message`, keeping the unknown fields of the original it was edited from: its own
/// original bytes when unchanged.
fn encode_like<M: Message + Default + PartialEq>(
    message: &M,
    original: Option<&[u8]>,
) -> EditResult<Vec<u8>> {
    let Some(raw) = original else {
        return Ok(message.encode_to_vec());
    };
    if M::decode(raw)? == *message {
        return Ok(raw.to_vec());
    }
    let mut bytes = message.encode_to_vec();
    bytes.extend(unknown_fields::<M>(raw)?);
    Ok(bytes)
}

/// The name a copy made by model-slim was made from (`x.slim2` → `x`).
fn source_name(name: &str) -> &str {
    match name.rsplit_once(".slim") {
        Some((head, tail)) if tail.chars().all(|c| c.is_ascii_digit()) && !tail.is_empty() => head,
        _ => name,
    }
}

/// Encodes an edited model so that everything not edited stays byte for byte as it was in
/// `original` — including fields tract's ONNX schema does not know, which a plain re-encoding
/// would drop. Nodes are matched by first output, initializers by name.
pub fn encode_preserving(original: &[u8], edited: &ModelProto) -> EditResult<Vec<u8>> {
    let graph = edited.graph.as_ref().ok_or(EditError::NoGraph)?;
    let model_fields = raw_fields(original)?;
    let graph_raw = model_fields
        .iter()
        .find(|f| f.number == field::MODEL_GRAPH)
        .ok_or(EditError::NoGraph)?
        .payload;
    let graph_fields = raw_fields(graph_raw)?;
    let by_name = |number: u64,
                   name_of: &dyn Fn(&[u8]) -> Option<String>|
     -> std::collections::HashMap<String, &[u8]> {
        graph_fields
            .iter()
            .filter(|f| f.number == number)
            .filter_map(|f| name_of(f.payload).map(|n| (n, f.payload)))
            .collect()
    };
    // Nodes by their first output (unique in SSA form; node names may be empty).
    let node_name = |b: &[u8]| {
        NodeProto::decode(b)
            .ok()
            .and_then(|n| n.output.first().cloned())
    };
    let tensor_name = |b: &[u8]| TensorProto::decode(b).ok().map(|t| t.name);
    let nodes = by_name(field::GRAPH_NODE, &node_name);
    let initializers = by_name(field::GRAPH_INITIALIZER, &tensor_name);
    let mut graph_bytes = vec![];
    let (mut nodes_done, mut initializers_done) = (false, false);
    for raw in &graph_fields {
        match raw.number {
            field::GRAPH_NODE if !nodes_done => {
                nodes_done = true;
                for node in &graph.node {
                    let key = node.output.first().map(String::as_str).unwrap_or_default();
                    let original = nodes.get(source_name(key)).copied();
                    let bytes = encode_like(node, original)?;
                    graph_bytes.extend(length_delimited(field::GRAPH_NODE, &bytes));
                }
            }
            field::GRAPH_INITIALIZER if !initializers_done => {
                initializers_done = true;
                for t in &graph.initializer {
                    let original = initializers.get(source_name(&t.name)).copied();
                    let bytes = encode_like(t, original)?;
                    graph_bytes.extend(length_delimited(field::GRAPH_INITIALIZER, &bytes));
                }
            }
            field::GRAPH_NODE | field::GRAPH_INITIALIZER => {}
            // A cut state input or output (a KV cache) is declared with its new shape.
            field::GRAPH_INPUT | field::GRAPH_OUTPUT => {
                let info = ValueInfoProto::decode(raw.payload)?;
                let declared = match raw.number {
                    field::GRAPH_INPUT => &graph.input,
                    _ => &graph.output,
                };
                let edited = declared.iter().find(|v| v.name == info.name);
                match edited {
                    Some(edited) if *edited != info => {
                        let bytes = encode_like(edited, Some(raw.payload))?;
                        graph_bytes.extend(length_delimited(raw.number, &bytes));
                    }
                    _ => graph_bytes.extend_from_slice(raw.bytes),
                }
            }
            field::GRAPH_VALUE_INFO => {
                let info = ValueInfoProto::decode(raw.payload)?;
                if graph.value_info.iter().any(|v| v.name == info.name) {
                    graph_bytes.extend_from_slice(raw.bytes);
                }
            }
            _ => graph_bytes.extend_from_slice(raw.bytes),
        }
    }
    let mut out = vec![];
    for raw in &model_fields {
        if raw.number == field::MODEL_GRAPH {
            out.extend(length_delimited(field::MODEL_GRAPH, &graph_bytes));
        } else {
            out.extend_from_slice(raw.bytes);
        }
    }
    Ok(out)
}
