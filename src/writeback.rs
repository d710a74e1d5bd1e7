//! Writing a slimmed model back to ONNX: the user's own file, with initializers sliced and head
//! counts changed, so ONNX Runtime (or any ONNX consumer) runs the slimmed model.
//!
//! tract has no ONNX writer, and the slimming decisions are small, so they are replayed on the
//! original `ModelProto`. The decisions come from comparing the original and slimmed tract
//! models group by group ([`crate::discover`]): which units of each consumer weight survive (the
//! slimmed weight's rows are copies of original rows), and, for units folded as constants, what
//! they added to the bias. In the ONNX graph each group is found by its consumer's name; the
//! layers computing its units (walking back from the consumer, through element-wise ops, head
//! reshapes, the attention products and splits, up to the projections) lose those units' output
//! channels and bias entries, and the reshape targets between them (head count, all-head width,
//! hard-coded Conv1D widths) and split sizes shrink with them. Everything else in the file stays
//! as it was, except the optional shape annotations of intermediate tensors (`value_info`),
//! which would state the old widths. The written file is imported again and must compute what the original computes;
//! otherwise nothing is written.

use crate::discover::{base_name, groups, Group, Kind};
use crate::error::{Result, SlimError};
use crate::import::{import_onnx, ImportOptions};
use crate::onnx::{
    decode, encode_preserving, float_data, initializer_index, linear_weight, onnx_node,
    producer_index, read_bytes, set_float_data, zero_slices,
};
use crate::prune::{activation_stats, compensation, weight_of, zero_units};
use crate::verify::{random_inputs, verify};
use crate::write::write_atomically;
use std::collections::HashMap;
use std::path::Path;
use tract_core::internal::*;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

/// What slimming did to one group, in terms of the original model's units.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    /// FFN channels or heads.
    pub kind: Kind,
    /// The consumer's node name in the original model.
    pub consumer: String,
    /// Units before.
    pub units: usize,
    /// Units the ONNX file keeps (at least one: an ONNX tensor cannot be empty here).
    pub kept: Vec<usize>,
    /// Kept units whose consumer rows must be zero (a block slimming removed entirely).
    pub zeroed: Vec<usize>,
    /// What removed constant units added to the consumer's output, to add to its bias.
    pub bias_delta: Option<Vec<f32>>,
}

/// The data of each unit of a group's consumer weight, as bits (for exact matching).
fn unit_rows(model: &TypedModel, group: &Group) -> TractResult<Vec<Vec<u32>>> {
    let weight = weight_of(model, group.weight)?;
    (0..group.units)
        .map(|u| {
            let part = group.weight_units.select(&weight, &[u])?;
            let part = part.cast_to::<f32>()?.into_owned();
            Ok(part
                .try_as_plain_ram()?
                .as_slice::<f32>()?
                .iter()
                .map(|v| v.to_bits())
                .collect())
        })
        .collect()
}

/// The original units the slimmed consumer weight keeps, in order.
fn kept_units(
    original: &TypedModel,
    group: &Group,
    slimmed: &TypedModel,
    after: &Group,
) -> TractResult<Vec<usize>> {
    let before_rows = unit_rows(original, group)?;
    let after_rows = unit_rows(slimmed, after)?;
    let mut kept = vec![];
    let mut next = 0;
    for row in &after_rows {
        let found = (next..before_rows.len())
            .find(|&u| &before_rows[u] == row)
            .with_context(|| {
                format!("`{}`: a slimmed row is no row of the original", group.name)
            })?;
        kept.push(found);
        next = found + 1;
    }
    Ok(kept)
}

/// The cuts slimming made, group by group.
pub fn derive_cuts(
    original: &TypedModel,
    slimmed: &TypedModel,
    values: &SymbolValues,
) -> TractResult<Vec<Cut>> {
    let before = groups(original)?;
    let after = groups(slimmed)?;
    let mut cuts = vec![];
    let mut sample = None;
    for group in &before {
        let matching = after
            .iter()
            .find(|a| a.kind == group.kind && base_name(&a.name) == base_name(&group.name));
        let kept = match matching {
            Some(a) => kept_units(original, group, slimmed, a)?,
            None => vec![],
        };
        if kept.len() == group.units {
            continue;
        }
        let zero = zero_units(original, group)?;
        let removed: Vec<usize> = (0..group.units).filter(|u| !kept.contains(u)).collect();
        let constant: Vec<usize> = removed
            .iter()
            .copied()
            .filter(|u| !zero.contains(u))
            .collect();
        let bias_delta = if constant.is_empty() {
            None
        } else {
            // Folded units are constant at every position: one run shows their values.
            if sample.is_none() {
                sample = Some(random_inputs(original, 0, values)?);
            }
            let inputs = sample.clone().context("no sample")?;
            let activation = crate::calibration::capture(original, &[group.activation], &[inputs])?;
            let stats = activation_stats(original, group, &activation[0])?;
            let delta = compensation(original, group, &stats, &constant)?;
            Some(
                delta
                    .cast_to::<f32>()?
                    .try_as_plain_ram()?
                    .as_slice::<f32>()?
                    .to_vec(),
            )
        };
        let (kept, zeroed) = if kept.is_empty() {
            (vec![removed[0]], vec![removed[0]])
        } else {
            (kept, vec![])
        };
        cuts.push(Cut {
            kind: group.kind,
            consumer: group.name.clone(),
            units: group.units,
            kept,
            zeroed,
            bias_delta,
        });
    }
    Ok(cuts)
}

fn graph_mut(proto: &mut ModelProto) -> std::result::Result<&mut GraphProto, String> {
    proto.graph.as_mut().ok_or_else(|| "no graph".to_string())
}

/// Makes input `slot` of node `node` read an initializer of its own (copying a shared one),
/// and returns that initializer's index.
fn own_initializer(
    proto: &mut ModelProto,
    node: usize,
    slot: usize,
) -> std::result::Result<usize, String> {
    let graph = graph_mut(proto)?;
    let name = graph.node[node].input[slot].clone();
    let ix = graph
        .initializer
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| format!("`{name}` is not an initializer"))?;
    if readers(graph, &name) <= 1 {
        return Ok(ix);
    }
    let mut copy = graph.initializer[ix].clone();
    let mut k = 1;
    while graph
        .initializer
        .iter()
        .any(|t| t.name == format!("{name}.slim{k}"))
    {
        k += 1;
    }
    copy.name = format!("{name}.slim{k}");
    graph.node[node].input[slot] = copy.name.clone();
    graph.initializer.push(copy);
    Ok(graph.initializer.len() - 1)
}

fn readers(graph: &GraphProto, name: &str) -> usize {
    graph
        .node
        .iter()
        .flat_map(|n| &n.input)
        .filter(|i| *i == name)
        .count()
        + graph.output.iter().filter(|o| o.name == name).count()
}

/// Makes input `slot` of node `node` read a value computed for it alone: a node whose output is
/// also read elsewhere (exporters share equal shape computations) is copied. Returns the
/// producing node, if the input is computed by one.
fn own_producer(
    proto: &mut ModelProto,
    node: usize,
    slot: usize,
) -> std::result::Result<Option<usize>, String> {
    let graph = graph_mut(proto)?;
    let name = graph.node[node].input[slot].clone();
    let Some(source) = producer_index(graph, &name) else {
        return Ok(None);
    };
    if readers(graph, &name) <= 1 {
        return Ok(Some(source));
    }
    let mut copy = graph.node[source].clone();
    let mut k = 1;
    while graph
        .node
        .iter()
        .any(|n| n.output.iter().any(|o| *o == format!("{name}.slim{k}")))
    {
        k += 1;
    }
    copy.output = vec![format!("{name}.slim{k}")];
    copy.name = format!("{}.slim{k}", copy.name);
    graph.node[node].input[slot] = copy.output[0].clone();
    // Appended (indices held by callers stay valid); `apply_cuts` sorts the graph at the end.
    graph.node.push(copy);
    Ok(Some(graph.node.len() - 1))
}

/// Orders the nodes so that each comes after the producers of its inputs (as ONNX requires),
/// keeping the original order where it already holds.
fn sort_topologically(graph: &mut GraphProto) -> std::result::Result<(), String> {
    let mut available: std::collections::HashSet<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .chain(std::iter::once(String::new()))
        .collect();
    let mut pending: Vec<NodeProto> = std::mem::take(&mut graph.node);
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|n| n.input.iter().all(|i| available.contains(i)))
            .ok_or("the edited graph has a cycle or a missing input")?;
        let node = pending.remove(ready);
        available.extend(node.output.iter().cloned());
        graph.node.push(node);
    }
    Ok(())
}

/// Keeps `indices` along `axis` of a float initializer.
fn slice_initializer(
    t: &mut TensorProto,
    axis: usize,
    indices: &[usize],
) -> std::result::Result<(), String> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let data = float_data(t)?;
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let mut out = Vec::with_capacity(outer * indices.len() * inner);
    for o in 0..outer {
        for &i in indices {
            let start = (o * dims[axis] + i) * inner;
            out.extend_from_slice(&data[start..start + inner]);
        }
    }
    t.dims[axis] = indices.len() as i64;
    set_float_data(t, &out);
    Ok(())
}

fn int_values(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != 7 {
        return None;
    }
    if !t.raw_data.is_empty() {
        return Some(
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
        );
    }
    Some(t.int64_data.clone())
}

fn set_int_values(t: &mut TensorProto, values: &[i64]) {
    t.int64_data.clear();
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
}

/// How the sizes inside a group's region change: `from → to` pairs for reshape targets and
/// split sizes.
struct Resize {
    pairs: Vec<(i64, i64)>,
}

impl Resize {
    fn apply(&self, values: &[i64]) -> Option<Vec<i64>> {
        let changed: Vec<i64> = values
            .iter()
            .map(|v| {
                self.pairs
                    .iter()
                    .find(|(from, _)| from == v)
                    .map(|(_, to)| *to)
                    .unwrap_or(*v)
            })
            .collect();
        (changed != values).then_some(changed)
    }
}

/// Rewrites the integer constant read by input `slot` of node `node` (an initializer or a
/// `Constant` node), or the pieces of a `Concat` computing it.
fn resize_shape_input(
    proto: &mut ModelProto,
    node: usize,
    slot: usize,
    resize: &Resize,
) -> std::result::Result<(), String> {
    let name = graph_mut(proto)?.node[node]
        .input
        .get(slot)
        .cloned()
        .unwrap_or_default();
    if name.is_empty() {
        return Ok(());
    }
    if initializer_index(proto, &name).is_some() {
        let ix = own_initializer(proto, node, slot)?;
        let t = &mut graph_mut(proto)?.initializer[ix];
        if let Some(changed) = int_values(t).and_then(|v| resize.apply(&v)) {
            set_int_values(t, &changed);
        }
        return Ok(());
    }
    let Some(source) = own_producer(proto, node, slot)? else {
        return Ok(());
    };
    let graph = graph_mut(proto)?;
    match graph.node[source].op_type.as_str() {
        "Constant" => {
            let node = &mut graph.node[source];
            for attribute in node.attribute.iter_mut() {
                if let Some(t) = attribute.t.as_mut() {
                    if let Some(changed) = int_values(t).and_then(|v| resize.apply(&v)) {
                        set_int_values(t, &changed);
                    }
                }
                if let Some(changed) = resize.apply(&attribute.ints) {
                    attribute.ints = changed;
                }
            }
            Ok(())
        }
        "Concat" | "Unsqueeze" | "Cast" => {
            let inputs = graph.node[source].input.len();
            for s in 0..inputs {
                resize_shape_input(proto, source, s, resize)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The nodes between a consumer and the layers computing its units, and those layers.
fn region(proto: &ModelProto, consumer: usize) -> (Vec<usize>, Vec<usize>) {
    let Some(graph) = proto.graph.as_ref() else {
        return (vec![], vec![]);
    };
    let mut inner = vec![];
    let mut producers = vec![];
    let mut frontier = vec![graph.node[consumer].input[0].clone()];
    while let Some(name) = frontier.pop() {
        let Some(ix) = producer_index(graph, &name) else {
            continue;
        };
        if inner.contains(&ix) || producers.contains(&ix) {
            continue;
        }
        let node = &graph.node[ix];
        if linear_weight(proto, ix).is_some() {
            producers.push(ix);
        } else if !matches!(node.op_type.as_str(), "Shape" | "Constant") {
            inner.push(ix);
            frontier.extend(node.input.iter().cloned());
        }
    }
    (inner, producers)
}

/// How many equal parts a producer's output is split into inside the region (GPT-2's fused
/// QKV: 3), and the Split nodes doing it.
fn split_parts(proto: &ModelProto, inner: &[usize], width: usize, part: usize) -> usize {
    if part == 0 || !width.is_multiple_of(part) {
        return 1;
    }
    let parts = width / part;
    let graph = proto.graph.as_ref();
    let splits = inner
        .iter()
        .filter(|&&ix| graph.is_some_and(|g| g.node[ix].op_type == "Split"))
        .count();
    if parts > 1 && splits > 0 {
        parts
    } else {
        1
    }
}

/// Where a cut's consumer is and how its units lie in its weight.
struct Target {
    /// The consumer's index and name.
    consumer: usize,
    name: String,
    /// The weight's input-channel axis, its size, and slices per unit.
    axis: usize,
    rows: usize,
    block: usize,
}

impl Target {
    fn slices(&self, units: &[usize]) -> Vec<usize> {
        units
            .iter()
            .flat_map(|u| u * self.block..(u + 1) * self.block)
            .collect()
    }
}

fn find_target(proto: &ModelProto, cut: &Cut) -> std::result::Result<Target, String> {
    let name = onnx_node(proto, &cut.consumer)
        .ok_or_else(|| format!("no ONNX node behind `{}`", cut.consumer))?
        .name
        .clone();
    let graph = proto.graph.as_ref().ok_or("no graph")?;
    let consumer = graph
        .node
        .iter()
        .position(|n| n.name == name)
        .ok_or("no consumer")?;
    let weight = linear_weight(proto, consumer)
        .ok_or_else(|| format!("cannot find the weight of ONNX node `{name}`"))?;
    let axis = weight.input_axis;
    let rows = graph.initializer[weight.initializer].dims[axis] as usize;
    if !rows.is_multiple_of(cut.units) {
        return Err(format!(
            "`{name}`: {} units do not divide {rows} rows",
            cut.units
        ));
    }
    Ok(Target {
        consumer,
        name,
        axis,
        rows,
        block: rows / cut.units,
    })
}

/// The consumer keeps its rows of the kept units (zeroed where a block went); folded
/// constants go into its bias.
fn cut_consumer(
    proto: &mut ModelProto,
    cut: &Cut,
    target: &Target,
) -> std::result::Result<(), String> {
    let weight = linear_weight(proto, target.consumer).ok_or("consumer weight not found")?;
    let ix = own_initializer(proto, weight.reader, weight.slot)?;
    let t = &mut graph_mut(proto)?.initializer[ix];
    if !cut.zeroed.is_empty() {
        let mut data = float_data(t)?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        zero_slices(&mut data, &dims, target.axis, &target.slices(&cut.zeroed));
        set_float_data(t, &data);
    }
    slice_initializer(t, target.axis, &target.slices(&cut.kept))?;
    let Some(delta) = &cut.bias_delta else {
        return Ok(());
    };
    let (node, slot) = bias_reader(proto, target.consumer)
        .ok_or_else(|| format!("`{}` has no bias to fold constants into", target.name))?;
    let ix = own_initializer(proto, node, slot)?;
    let t = &mut graph_mut(proto)?.initializer[ix];
    let mut data = float_data(t)?;
    if data.len() != delta.len() {
        return Err(format!(
            "bias `{}` has {} values, the folded constants {}",
            t.name,
            data.len(),
            delta.len()
        ));
    }
    data.iter_mut().zip(delta).for_each(|(d, x)| *d += x);
    set_float_data(t, &data);
    Ok(())
}

/// Each producer keeps the kept units' output channels (in each part of a fused output) and
/// bias entries; returns the size changes this makes inside the region.
fn cut_producer(
    proto: &mut ModelProto,
    producer: usize,
    inner: &[usize],
    target: &Target,
    kept_slices: &[usize],
) -> std::result::Result<Vec<(i64, i64)>, String> {
    let node = proto.graph.as_ref().ok_or("no graph")?.node[producer].clone();
    let weight = linear_weight(proto, producer).ok_or("producer weight not found")?;
    let ix = own_initializer(proto, weight.reader, weight.slot)?;
    let axis = weight.output_axis;
    let out_width = graph_mut(proto)?.initializer[ix].dims[axis] as usize;
    let rows = target.rows;
    let parts = split_parts(proto, inner, out_width, rows);
    if out_width != rows * parts {
        return Err(format!(
            "`{}`: output width {out_width} is not {rows} (× parts)",
            node.name
        ));
    }
    let keep: Vec<usize> = (0..parts)
        .flat_map(|k| kept_slices.iter().map(move |s| k * rows + s))
        .collect();
    slice_initializer(&mut graph_mut(proto)?.initializer[ix], axis, &keep)?;
    if let Some((b_node, b_slot)) = bias_reader(proto, producer) {
        let ix = own_initializer(proto, b_node, b_slot)?;
        let t = &mut graph_mut(proto)?.initializer[ix];
        let last = t.dims.len() - 1;
        if t.dims[last] as usize == out_width {
            slice_initializer(t, last, &keep)?;
        }
    }
    Ok(if parts > 1 {
        vec![((rows * parts) as i64, (kept_slices.len() * parts) as i64)]
    } else {
        vec![]
    })
}

/// Reshape targets and split sizes inside the region shrink with the units.
fn resize_region(
    proto: &mut ModelProto,
    inner: &[usize],
    resize: &Resize,
) -> std::result::Result<(), String> {
    for &ix in inner {
        let op = proto.graph.as_ref().ok_or("no graph")?.node[ix]
            .op_type
            .clone();
        match op.as_str() {
            "Reshape" => resize_shape_input(proto, ix, 1, resize)?,
            "Split" => {
                resize_shape_input(proto, ix, 1, resize)?;
                for a in graph_mut(proto)?.node[ix]
                    .attribute
                    .iter_mut()
                    .filter(|a| a.name == "split")
                {
                    if let Some(changed) = resize.apply(&a.ints) {
                        a.ints = changed;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies one cut to the protobuf.
fn apply_cut(proto: &mut ModelProto, cut: &Cut) -> std::result::Result<(), String> {
    let target = find_target(proto, cut)?;
    let kept_slices = target.slices(&cut.kept);
    cut_consumer(proto, cut, &target)?;
    let (inner, producers) = region(proto, target.consumer);
    if producers.is_empty() {
        return Err(format!(
            "`{}`: no layer computing its units found",
            target.name
        ));
    }
    let mut pairs = vec![(target.rows as i64, kept_slices.len() as i64)];
    for &p in &producers {
        pairs.extend(cut_producer(proto, p, &inner, &target, &kept_slices)?);
    }
    if cut.kind == Kind::Heads {
        if cut.units == target.block {
            return Err(format!(
                "`{}`: {} heads of size {}: reshape targets are ambiguous",
                target.name, cut.units, target.block
            ));
        }
        pairs.push((cut.units as i64, cut.kept.len() as i64));
    }
    resize_region(proto, &inner, &Resize { pairs })
}

/// The bias initializer added to a linear layer's output: Gemm's C, or an initializer operand
/// of the Add reading the output (its node and input slot).
fn bias_reader(proto: &ModelProto, producer: usize) -> Option<(usize, usize)> {
    let graph = proto.graph.as_ref()?;
    let node = &graph.node[producer];
    if node.op_type == "Gemm" {
        return initializer_index(proto, node.input.get(2)?).map(|_| (producer, 2));
    }
    let output = node.output.first()?;
    let add = graph
        .node
        .iter()
        .position(|n| n.op_type == "Add" && n.input.iter().any(|i| i == output))?;
    let slot = graph.node[add]
        .input
        .iter()
        .position(|i| initializer_index(proto, i).is_some())?;
    Some((add, slot))
}

/// Applies every cut to the protobuf.
pub fn apply_cuts(proto: &mut ModelProto, cuts: &[Cut]) -> std::result::Result<(), String> {
    for cut in cuts {
        apply_cut(proto, cut)?;
    }
    let graph = graph_mut(proto)?;
    if !cuts.is_empty() {
        // Shape annotations of intermediate tensors would state the old widths (ONNX Runtime
        // refuses a file whose annotations contradict its shapes); they are optional.
        graph.value_info.clear();
    }
    sort_topologically(graph)
}

/// Float parameters held in a model's initializers.
pub fn initializer_params(proto: &ModelProto) -> usize {
    proto
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .filter(|t| t.data_type == 1)
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum()
        })
        .unwrap_or(0)
}

/// Encodes the edited protobuf (keeping untouched parts of `source_bytes` as they were),
/// imports it again, and writes it to `output` only if it computes what `reference` computes
/// and passes `check`.
fn write_checked(
    source_bytes: &[u8],
    proto: &ModelProto,
    output: &Path,
    import: &ImportOptions,
    reference: &TypedModel,
    values: &SymbolValues,
    check: impl Fn(&TypedModel) -> std::result::Result<(), String>,
) -> Result<()> {
    let refuse = |message: String| SlimError::Write {
        path: output.display().to_string(),
        message,
    };
    let bytes = encode_preserving(source_bytes, proto).map_err(refuse)?;
    let scratch = tempfile::Builder::new()
        .suffix(".onnx")
        .tempfile()
        .map_err(|e| refuse(e.to_string()))?;
    std::fs::write(scratch.path(), &bytes).map_err(|e| refuse(e.to_string()))?;
    let reloaded = import_onnx(scratch.path(), import)
        .map_err(|e| refuse(format!("the edited ONNX does not load: {e}")))?;
    let v = verify(reference, &reloaded, 0, values).map_err(|e| refuse(format!("{e:#}")))?;
    if !v.passed {
        return Err(refuse(format!(
            "the edited ONNX does not compute the expected model ({:?}); nothing written",
            v.outputs
        )));
    }
    check(&reloaded).map_err(refuse)?;
    write_atomically(output, &bytes).map_err(|e| refuse(e.to_string()))
}

/// Writes the slimmed model as an edit of the ONNX file it came from, after checking that the
/// edited file imports, computes what `original` computes, and has the slimmed widths.
pub fn write_slimmed_onnx(
    source: &Path,
    output: &Path,
    import: &ImportOptions,
    original: &TypedModel,
    slimmed: &TypedModel,
    values: &SymbolValues,
) -> Result<()> {
    let refuse = |message: String| SlimError::Write {
        path: output.display().to_string(),
        message,
    };
    let cuts = derive_cuts(original, slimmed, values).map_err(|e| refuse(format!("{e:#}")))?;
    let source_bytes = read_bytes(source)?;
    let mut proto = decode(source, &source_bytes)?;
    apply_cuts(&mut proto, &cuts)
        .map_err(|m| refuse(format!("cannot map the slimming back to ONNX: {m}")))?;
    write_checked(
        &source_bytes,
        &proto,
        output,
        import,
        original,
        values,
        |reloaded| shrunk_as_planned(reloaded, &cuts),
    )
}

/// Every cut consumer has the planned number of units in the reloaded model.
fn shrunk_as_planned(reloaded: &TypedModel, cuts: &[Cut]) -> std::result::Result<(), String> {
    let sizes: HashMap<String, usize> = groups(reloaded)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|g| (base_name(&g.name).to_string(), g.units))
        .collect();
    for cut in cuts {
        // A block kept as one zeroed unit may be simplified away by tract when reloaded.
        let size = sizes.get(base_name(&cut.consumer));
        let shrunk = size == Some(&cut.kept.len()) || (!cut.zeroed.is_empty() && size.is_none());
        if !shrunk {
            return Err(format!("`{}` did not shrink as slimming did", cut.consumer));
        }
    }
    Ok(())
}

/// Writes a pruned model — the plan's zeros and compensated biases, nothing removed — as an
/// edit of its source ONNX file, after checking that it computes what `pruned` computes. Each
/// cut keeps every unit and zeroes the removed ones in its consumer.
pub fn write_pruned_onnx(
    source: &Path,
    output: &Path,
    import: &ImportOptions,
    cuts: &[Cut],
    pruned: &TypedModel,
) -> Result<()> {
    let source_bytes = read_bytes(source)?;
    let mut proto = decode(source, &source_bytes)?;
    for cut in cuts {
        let target = find_target(&proto, cut)
            .and_then(|target| cut_consumer(&mut proto, cut, &target).map(|_| target));
        target.map_err(|message| SlimError::Write {
            path: output.display().to_string(),
            message,
        })?;
    }
    let values = SymbolValues::default();
    write_checked(
        &source_bytes,
        &proto,
        output,
        import,
        pruned,
        &values,
        |_| Ok(()),
    )
}
