//! Convolutions replayed from the slimmed model itself. Raising names every rebuilt node after
//! the node it came from, so each ONNX `Conv` the rules cut has a counterpart in the slimmed tract
//! model: a convolution (`N`, `N.kept`) holding its new kernel, bias and group, or, for a 1×1
//! convolution tract made a matrix product, an EinSum `N.einsum` over `N.filters_as_co_ci` and
//! the bias addition `N` (or the parts of that product tract split: [`crate::io::onnx::parts`]).
//! The ONNX node takes those weights and that group as they are: no channel bookkeeping is
//! repeated here, and the tensors between convolutions change width by themselves. Where
//! slimming kept some channels of a tensor the model computes whole (a gather the rules could
//! not push further), the same `Gather` goes in front of the ONNX readers; a branch nothing
//! reads any more leaves the graph with the concatenation's input. The written file is then
//! verified against the original like any other edit.

use crate::io::onnx::error::{EditError, EditResult};
use crate::io::onnx::parts::{apply_parts, const_input, filters_oi, split_convolutions, ConvEdit};
use crate::io::onnx::proto::{
    initializer_index, linear_weight, onnx_node, producer_index, set_float_data,
};
use crate::io::onnx::restrict::{gather_node, int64_tensor, int_attribute, int_values, set_int_at};
use crate::model::discover::base_name;
use std::collections::{HashMap, HashSet};
use tract_core::internal::*;
use tract_core::ops::array::{Gather, TypedConcat};
use tract_core::ops::cnn::Conv;
use tract_core::ops::einsum::EinSum;
use tract_onnx::pb::ModelProto;

/// Slices slimming keeps of a tensor the model computes whole.
#[derive(Clone, Debug)]
pub struct GatherEdit {
    /// The axis and the kept slices.
    pub axis: usize,
    pub kept: Vec<usize>,
    /// The tract nodes reading the kept slices, and the input slot each reads them at.
    pub readers: Vec<(String, usize)>,
}

/// A linear layer reading a convolution's output flattened (`[batch, C, H, W]` into `[batch,
/// C·H·W]`, a VGG-style classifier). tract folds the flattening into the contraction, over a
/// weight `[out, C, H, W]`, so slimming cuts whole channels' columns: the ONNX layer takes the
/// weight flattened, and the `Reshape` feeding it (if any) the new width.
#[derive(Clone, Debug)]
pub struct ClassifierEdit {
    /// The tract node's name (the ONNX node's, with tract's suffixes).
    pub node: String,
    /// The weight, `[out, C·H·W]` as slimming left it.
    pub weight: Tensor,
    /// The flattened width before slimming.
    pub width_before: usize,
}

/// A concatenation some of whose inputs slimming no longer reads: a branch whose channels all
/// went (the readers' kernels dropped them), which leaves the graph with its producers.
#[derive(Clone, Debug)]
pub struct ConcatEdit {
    /// The tract node's name (the ONNX node's).
    pub node: String,
    /// How many inputs it has, and the ones it keeps.
    pub inputs: usize,
    pub kept: Vec<usize>,
}

/// What slimming did to the convolutions of a model.
#[derive(Clone, Debug, Default)]
pub struct ConvReplay {
    pub convs: Vec<ConvEdit>,
    pub classifiers: Vec<ClassifierEdit>,
    pub concats: Vec<ConcatEdit>,
    /// Convolutions gone from the slimmed model (nothing reads them any more).
    pub gone: Vec<String>,
    pub gathers: Vec<GatherEdit>,
}

impl ConvReplay {
    /// Whether slimming cut any convolution.
    pub fn is_empty(&self) -> bool {
        self.convs.is_empty() && self.classifiers.is_empty() && self.concats.is_empty()
    }

    /// Whether the tract node `name` is a convolution this replay writes (its matrix product or
    /// its bias, for a 1×1 one), so that no other writer edits it.
    pub fn covers(&self, name: &str) -> bool {
        let base = base_name(name);
        // `N.einsum`, or a part of it (`N.einsum.concat-einsum-I.0..8`).
        let conv = base.split_once(".einsum").map_or(base, |(conv, _)| conv);
        self.convs.iter().any(|c| c.node == conv)
            || self.classifiers.iter().any(|c| base_name(&c.node) == base)
    }
}

/// The convolutions and flattened classifiers of `original` whose weights `slimmed` changes,
/// and the gathers it keeps (only when it changes one of them: transformer gathers are the
/// restriction writer's).
pub fn conv_replay(original: &TypedModel, slimmed: &TypedModel) -> TractResult<ConvReplay> {
    let before: HashMap<String, ConvEdit> = convolutions(original)?.into_iter().collect();
    let after = convolutions(slimmed)?;
    let kept: HashSet<&String> = after.iter().map(|(name, _)| name).collect();
    let mut gone: Vec<String> = before
        .keys()
        .filter(|name| !kept.contains(name))
        .cloned()
        .collect();
    gone.sort_unstable();
    let mut convs = vec![];
    for (name, after) in after {
        let Some(was) = before.get(&name) else {
            continue;
        };
        if was.kernel.shape() != after.kernel.shape() || was.group != after.group {
            convs.push(after);
        }
    }
    ensure!(
        convs.len() == convs.iter().map(|c| &c.node).collect::<HashSet<_>>().len(),
        "a convolution is computed twice, restricted and whole"
    );
    let classifiers_before: HashMap<String, Tensor> =
        flattened_classifiers(original)?.into_iter().collect();
    let classifiers: Vec<ClassifierEdit> = flattened_classifiers(slimmed)?
        .into_iter()
        .filter_map(|(node, weight)| {
            let was = classifiers_before.get(&node)?;
            (was.shape() != weight.shape()).then(|| ClassifierEdit {
                width_before: was.shape()[1],
                node,
                weight,
            })
        })
        .collect();
    // Only a convolution's going (a branch nothing reads) drops inputs of concatenations:
    // tract renames others (a transformer's) without slimming touching them.
    let concats = if gone.is_empty() {
        vec![]
    } else {
        dropped_concat_inputs(original, slimmed)
    };
    let gathers = if convs.is_empty() && classifiers.is_empty() {
        vec![]
    } else {
        kept_gathers(original, slimmed)?
    };
    Ok(ConvReplay {
        convs,
        classifiers,
        concats,
        gone,
        gathers,
    })
}

/// The concatenations of `original` that `slimmed` no longer computes, with the inputs whose
/// producers it still has: the others' channels all went, so the readers read the kept ones
/// alone (a restriction to one input's slices replaces the concatenation by that input).
fn dropped_concat_inputs(original: &TypedModel, slimmed: &TypedModel) -> Vec<ConcatEdit> {
    let present: HashSet<&str> = slimmed.nodes().iter().map(|n| base_name(&n.name)).collect();
    let concats = original.nodes().iter().filter(|n| n.op_is::<TypedConcat>());
    concats
        .filter(|n| !present.contains(base_name(&n.name)))
        .filter_map(|n| {
            let kept: Vec<usize> = (0..n.inputs.len())
                .filter(|&slot| {
                    present.contains(base_name(&original.node(n.inputs[slot].node).name))
                })
                .collect();
            (!kept.is_empty() && kept.len() < n.inputs.len()).then(|| ConcatEdit {
                node: n.name.clone(),
                inputs: n.inputs.len(),
                kept,
            })
        })
        .collect()
}

/// Every linear layer of a model reading data `[batch, axes..]` flattened: an EinSum of the
/// data by a constant `[out, axes..]` (rank 3 or more) into `[batch, out]`, by name, with its
/// weight flattened to `[out, product of axes]`.
fn flattened_classifiers(model: &TypedModel) -> TractResult<Vec<(String, Tensor)>> {
    let mut found = vec![];
    for node in model.nodes() {
        let Some(einsum) = node.op_as::<EinSum>().filter(|e| e.q_params.is_none()) else {
            continue;
        };
        let weight = (0..node.inputs.len()).find_map(|slot| {
            let w = const_input(model, node, slot).filter(|w| w.rank() >= 3)?;
            Some((slot, w))
        });
        let Some((slot, weight)) = weight else {
            continue;
        };
        if node.inputs.len() == 2 && flattens(einsum, slot, weight.rank()) {
            let (out, len) = (weight.shape()[0], weight.len());
            let flat = weight.into_tensor().into_shape(&[out, len / out])?;
            found.push((node.name.clone(), flat));
        }
    }
    Ok(found)
}

/// Whether the EinSum contracts every axis but the first of its data operand with the
/// weight's axes `1..rank` in the same order, and outputs `[batch, out]`.
fn flattens(einsum: &EinSum, weight_slot: usize, rank: usize) -> bool {
    let data_slot = 1 - weight_slot;
    let axis = |io, a| einsum.axes.axis((io, a)).ok();
    let out = axis(InOut::In(weight_slot), 0)
        .is_some_and(|l| l.outputs[0][..] == [1] && l.inputs[data_slot].is_empty());
    let batch = axis(InOut::In(data_slot), 0)
        .is_some_and(|l| l.outputs[0][..] == [0] && l.inputs[weight_slot].is_empty());
    let flattened = (1..rank).all(|a| {
        axis(InOut::In(weight_slot), a)
            .is_some_and(|l| l.inputs[data_slot][..] == [a] && l.outputs[0].is_empty())
    });
    let ranks =
        einsum.axes.rank(InOut::In(data_slot)) == rank && einsum.axes.rank(InOut::Out(0)) == 2;
    out && batch && flattened && ranks
}

/// Every convolution of a model by its ONNX node's name: tract convolutions, and the 1×1
/// convolutions tract turned into matrix products.
fn convolutions(model: &TypedModel) -> TractResult<Vec<(String, ConvEdit)>> {
    let mut found = vec![];
    for node in model.nodes() {
        if let Some(conv) = node.op_as::<Conv>() {
            let kernel = const_input(model, node, 1).context("a convolution's kernel")?;
            let bias = const_input(model, node, 2).filter(|b| !is_zero(b));
            let o = conv.output_channels();
            let bias = bias.map(|b| b.broadcast_to_shape(&[o])).transpose()?;
            let name = base_name(&node.name).to_string();
            let edit = ConvEdit {
                node: name.clone(),
                kernel: kernel.into_tensor(),
                bias,
                group: conv.group,
                parts: vec![],
            };
            found.push((name, edit));
        } else if let Some(edit) = matmul_conv(model, node)? {
            found.push((edit.node.clone(), edit));
        }
    }
    let split = split_convolutions(model)?;
    found.extend(split.into_iter().map(|edit| (edit.node.clone(), edit)));
    Ok(found)
}

/// A 1×1 convolution tract made an EinSum (`N.einsum`, or `N` when its bias is zero) of the
/// data by `N.filters_as_co_ci` (`[O, I]`), its bias added by the node `N` that reads it.
fn matmul_conv(model: &TypedModel, node: &TypedNode) -> TractResult<Option<ConvEdit>> {
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    let filters = node.inputs.iter().enumerate().find_map(|(slot, i)| {
        let name = &model.node(i.node).name;
        let conv = base_name(name).strip_suffix(".filters_as_co_ci")?;
        Some((slot, conv.to_string()))
    });
    let Some((slot, conv)) = filters else {
        return Ok(None);
    };
    let kernel = filters_oi(model, node, einsum, slot)?;
    let bias = bias_after(model, node, &conv)?;
    Ok(Some(ConvEdit {
        node: conv,
        kernel,
        bias,
        group: 1,
        parts: vec![],
    }))
}

/// The bias the node named `conv` adds to the EinSum's output: `[1, O, 1, ..]` made `[O]`.
fn bias_after(model: &TypedModel, einsum: &TypedNode, conv: &str) -> TractResult<Option<Tensor>> {
    let readers = &einsum.outputs[0].successors;
    let add = readers
        .iter()
        .map(|r| model.node(r.node))
        .find(|n| base_name(&n.name) == conv);
    let Some(add) = add else {
        return Ok(None);
    };
    let bias = (0..add.inputs.len()).find_map(|slot| const_input(model, add, slot));
    bias.filter(|b| !is_zero(b))
        .map(|b| {
            let len = b.len();
            b.into_tensor().into_shape(&[len])
        })
        .transpose()
}

fn is_zero(t: &Tensor) -> bool {
    let values = t.cast_to::<f32>();
    let view = values
        .as_ref()
        .ok()
        .and_then(|t| t.to_plain_array_view::<f32>().ok());
    view.is_some_and(|v| v.iter().all(|x| *x == 0.0))
}

/// The gathers raising wrote for restrictions of tensors the model needs whole (`X.kept`, a
/// node the original does not have, reading `X`).
fn kept_gathers(original: &TypedModel, slimmed: &TypedModel) -> TractResult<Vec<GatherEdit>> {
    let mut found = vec![];
    for node in slimmed.nodes() {
        let Some(gather) = node.op_as::<Gather>() else {
            continue;
        };
        if original.node_by_name(&node.name).is_ok() {
            continue;
        }
        let indices = const_input(slimmed, node, 1).context("a gather's indices")?;
        let indices = indices.cast_to::<i64>()?;
        let kept = indices
            .to_plain_array_view::<i64>()?
            .iter()
            .map(|&i| i as usize)
            .collect();
        let readers = node.outputs[0]
            .successors
            .iter()
            .map(|r| (slimmed.node(r.node).name.clone(), r.slot))
            .collect();
        found.push(GatherEdit {
            axis: gather.axis,
            kept,
            readers,
        });
    }
    Ok(found)
}

/// Writes the replay into the ONNX graph: kernels, biases and group attributes (and the sizes
/// of the parts a split convolution's output is cut into), then gathers. `values` are the
/// integer tensors tract computes from shapes (the bounds of TorchScript's slices).
pub fn apply_conv_replay(
    proto: &mut ModelProto,
    replay: &ConvReplay,
    values: &HashMap<String, Vec<i64>>,
) -> EditResult<()> {
    for conv in &replay.convs {
        apply_conv(proto, conv)?;
        apply_parts(proto, &conv.node, &conv.parts, values)?;
    }
    for classifier in &replay.classifiers {
        apply_classifier(proto, classifier)?;
    }
    for concat in &replay.concats {
        apply_concat(proto, concat)?;
    }
    for (n, gather) in replay.gathers.iter().enumerate() {
        insert_gather(proto, gather, n)?;
    }
    // A dropped branch, or the computation of slice bounds replaced by constants, is left
    // unread.
    if !replay.gone.is_empty() || replay.convs.iter().any(|c| !c.parts.is_empty()) {
        remove_unread(proto)?;
    }
    match replay.gone.iter().find(|conv| onnx_node(proto, conv).is_some()) {
        Some(conv) => Err(EditError::Unmapped(format!(
            "convolution `{conv}` is gone from the slimmed model (nothing reads it), but its ONNX node is still read"
        ))),
        None => Ok(()),
    }
}

/// Keeps, of an ONNX concatenation, the inputs slimming still reads.
fn apply_concat(proto: &mut ModelProto, edit: &ConcatEdit) -> EditResult<()> {
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.name == edit.node && n.op_type == "Concat" && n.input.len() == edit.inputs)
        .ok_or_else(|| EditError::NoOnnxNode(edit.node.clone()))?;
    node.input = edit
        .kept
        .iter()
        .map(|&slot| node.input[slot].clone())
        .collect();
    Ok(())
}

/// Removes the nodes whose outputs nothing reads, and the initializers only they read: a
/// branch a concatenation dropped. (A graph with subgraphs, which may read outer tensors by
/// name, is left whole.)
fn remove_unread(proto: &mut ModelProto) -> EditResult<()> {
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    if graph.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return Ok(());
    }
    let mut read: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut needed = vec![false; graph.node.len()];
    // Readers come after producers but for a few edits (gathers are appended): sweep until
    // nothing changes.
    let mut changed = true;
    while changed {
        changed = false;
        for (ix, node) in graph.node.iter().enumerate().rev() {
            if !needed[ix] && node.output.iter().any(|o| read.contains(o)) {
                needed[ix] = true;
                changed = true;
                read.extend(node.input.iter().cloned());
            }
        }
    }
    let mut ix = 0;
    graph.node.retain(|_| {
        ix += 1;
        needed[ix - 1]
    });
    // Old files list initializers among the inputs too: those go with them.
    let unread: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !read.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !unread.contains(&t.name));
    graph.input.retain(|i| !unread.contains(&i.name));
    Ok(())
}

fn apply_conv(proto: &mut ModelProto, conv: &ConvEdit) -> EditResult<()> {
    let graph = proto.graph.as_ref().ok_or(EditError::NoGraph)?;
    let ix = graph
        .node
        .iter()
        .position(|n| n.name == conv.node && n.op_type == "Conv")
        .ok_or_else(|| EditError::NoOnnxNode(conv.node.clone()))?;
    let weight = own_initializer(proto, ix, 1)?;
    set_initializer(proto, &weight, &conv.kernel, None)?;
    let bias = proto.graph.as_ref().ok_or(EditError::NoGraph)?.node[ix]
        .input
        .get(2)
        .filter(|b| !b.is_empty())
        .cloned();
    match (bias, &conv.bias) {
        (Some(_), Some(values)) => {
            let bias = own_initializer(proto, ix, 2)?;
            set_initializer(proto, &bias, values, Some(1))?
        }
        (None, Some(_)) => return Err(EditError::NoWeight(conv.node.clone())),
        // A zero bias: zeros where the file stores one, else no bias (an optional input).
        (Some(bias), None) if initializer_index(proto, &bias).is_some() => {
            let bias = own_initializer(proto, ix, 2)?;
            let o = conv.kernel.shape()[0];
            let zero = Tensor::zero::<f32>(&[o]).map_err(|_| EditError::NotFloat(bias.clone()))?;
            set_initializer(proto, &bias, &zero, Some(1))?
        }
        (_, None) => proto.graph.as_mut().ok_or(EditError::NoGraph)?.node[ix]
            .input
            .truncate(2),
    }
    let node = &mut proto.graph.as_mut().ok_or(EditError::NoGraph)?.node[ix];
    node.attribute.retain(|a| a.name != "group");
    node.attribute
        .push(int_attribute("group", conv.group as i64));
    Ok(())
}

/// Writes a flattened classifier's weight as its ONNX node stores it (`[out, in]` or `[in, out]`)
/// and its new width into the target of a `Reshape` feeding it (a `Flatten` states none).
fn apply_classifier(proto: &mut ModelProto, edit: &ClassifierEdit) -> EditResult<()> {
    let no_weight = || EditError::NoWeight(edit.node.clone());
    let name = onnx_node(proto, &edit.node)
        .ok_or_else(no_weight)?
        .name
        .clone();
    let graph = proto.graph.as_ref().ok_or(EditError::NoGraph)?;
    let ix = graph
        .node
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(no_weight)?;
    let weight = linear_weight(proto, ix)
        .filter(|w| w.reader == ix)
        .ok_or_else(no_weight)?;
    let stored = match weight.input_axis {
        1 => edit.weight.clone(),
        _ => edit
            .weight
            .clone()
            .permute_axes(&[1, 0])
            .map_err(|_| no_weight())?,
    };
    let initializer = own_initializer(proto, ix, 1)?;
    set_initializer(proto, &initializer, &stored, None)?;
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    let flattened = graph.node[ix].input[0].clone();
    let Some(reshape) = producer_index(graph, &flattened) else {
        return Ok(());
    };
    if graph.node[reshape].op_type != "Reshape" {
        return Ok(());
    }
    let target = own_initializer(proto, reshape, 1)?;
    let width = edit.weight.shape()[1] as i64;
    set_int_entries(proto, &target, edit.width_before as i64, width)
}

/// Replaces every entry `from` of the integer initializer `name` by `to`.
fn set_int_entries(proto: &mut ModelProto, name: &str, from: i64, to: i64) -> EditResult<()> {
    let ix =
        initializer_index(proto, name).ok_or_else(|| EditError::NotInitializer(name.into()))?;
    let t = &mut proto.graph.as_mut().ok_or(EditError::NoGraph)?.initializer[ix];
    let values = int_values(t).ok_or_else(|| EditError::NotInteger(name.into()))?;
    for (position, _) in values.iter().enumerate().filter(|(_, v)| **v == from) {
        set_int_at(t, position, to)?;
    }
    Ok(())
}

/// The initializer input `slot` of node `ix` reads, made its own: exporters share identical
/// tensors (zero biases) between nodes, and the others must keep theirs.
fn own_initializer(proto: &mut ModelProto, ix: usize, slot: usize) -> EditResult<String> {
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    let name = graph.node[ix].input.get(slot).cloned().unwrap_or_default();
    let position = graph
        .initializer
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| EditError::NotInitializer(name.clone()))?;
    let readers = graph
        .node
        .iter()
        .flat_map(|n| &n.input)
        .filter(|i| **i == name)
        .count();
    if readers == 1 {
        return Ok(name);
    }
    let own = format!("{name}.{}", graph.node[ix].name);
    let mut copy = graph.initializer[position].clone();
    copy.name = own.clone();
    graph.initializer.push(copy);
    graph.node[ix].input[slot] = own.clone();
    Ok(own)
}

/// Sets initializer `name` to `values`, keeping its element type and rank: a 1×1 kernel comes
/// without its spatial axes, which are 1; `rank` overrides the rank (a bias is a vector).
fn set_initializer(
    proto: &mut ModelProto,
    name: &str,
    values: &Tensor,
    rank: Option<usize>,
) -> EditResult<()> {
    let ix =
        initializer_index(proto, name).ok_or_else(|| EditError::NotInitializer(name.into()))?;
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    let t = &mut graph.initializer[ix];
    let rank = rank.unwrap_or(t.dims.len());
    let mut dims: Vec<i64> = values.shape().iter().map(|&d| d as i64).collect();
    if dims.len() > rank {
        return Err(EditError::AxisOutOfRank {
            tensor: name.into(),
            axis: dims.len(),
            rank,
        });
    }
    dims.resize(rank, 1);
    let not_float = |_| EditError::NotFloat(name.into());
    let values = values.cast_to::<f32>().map_err(not_float)?;
    let data: Vec<f32> = values
        .to_plain_array_view::<f32>()
        .map_err(not_float)?
        .iter()
        .copied()
        .collect();
    t.dims = dims;
    set_float_data(t, &data);
    Ok(())
}

/// Puts a `Gather` of the kept slices in front of the ONNX nodes the gather's readers come
/// from, reading the tensor each of them reads at the gather's slot. (Not the output of the
/// node the gathered tensor comes from: tract fuses ONNX nodes, as `x · sigmoid(x)` into one
/// SiLU named after the `Sigmoid`, whose own output is another tensor.)
fn insert_gather(proto: &mut ModelProto, gather: &GatherEdit, n: usize) -> EditResult<()> {
    let mut reads: Vec<(String, String)> = vec![];
    for (reader, slot) in &gather.readers {
        let node = onnx_node(proto, reader).ok_or_else(|| EditError::NoOnnxNode(reader.clone()))?;
        let tensor = node.input.get(*slot).cloned();
        let tensor =
            tensor.ok_or_else(|| EditError::NoOnnxNode(format!("{reader} input {slot}")))?;
        reads.push((node.name.clone(), tensor));
    }
    let mut sources: Vec<&String> = reads.iter().map(|(_, t)| t).collect();
    sources.sort_unstable();
    sources.dedup();
    for (m, source) in sources.into_iter().enumerate() {
        let output = format!("{source}.kept{n}.{m}");
        let indices = format!("{output}.indices");
        let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
        graph.initializer.push(int64_tensor(
            &indices,
            &[gather.kept.len() as i64],
            gather.kept.iter().map(|&i| i as i64),
        ));
        let readers: Vec<&String> = reads
            .iter()
            .filter(|(_, t)| t == source)
            .map(|(r, _)| r)
            .collect();
        for reader in graph.node.iter_mut().filter(|n| readers.contains(&&n.name)) {
            for input in reader.input.iter_mut().filter(|i| *i == source) {
                *input = output.clone();
            }
        }
        graph
            .node
            .push(gather_node(&output, source, &indices, gather.axis));
    }
    Ok(())
}
