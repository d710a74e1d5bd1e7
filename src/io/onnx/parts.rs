//! 1×1 convolutions that tract splits into matrix products over parts of their output channels
//! (a `Split` or `Slice`s read them: YOLOv8's C2f) and of their input channels (a concatenation
//! feeds them). Reading: the parts of the slimmed model, put back together into the one kernel
//! and bias of the ONNX `Conv`. Writing: the `Split` sizes or `Slice` bounds that cut its output,
//! moved with the channels each part keeps. Used by the conv replay ([`crate::io::onnx::convs`]),
//! whose unit, [`ConvEdit`], is defined here so that both build it.

use crate::io::onnx::error::{EditError, EditResult};
use crate::io::onnx::proto::{attribute_int, attribute_ints, opset};
use crate::io::onnx::restrict::{
    int64_tensor, int_attribute, int_values, BROADCASTING, POSITION_WISE,
};
use crate::model::discover::base_name;
use crate::model::ops;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::konst::Const;
use tract_onnx::pb::ModelProto;

/// A convolution as slimming left it: what the conv replay writes (a split one is put back
/// together here).
#[derive(Clone, Debug)]
pub struct ConvEdit {
    /// The ONNX node's name.
    pub node: String,
    /// The kernel, `[O, I / group, spatial..]` (spatial axes absent for a 1×1 matrix product).
    pub kernel: Tensor,
    /// The bias, one per output channel (`None`: zero).
    pub bias: Option<Tensor>,
    /// The group count.
    pub group: usize,
    /// For a 1×1 convolution whose output the ONNX graph splits (tract split its matrix
    /// product the same way): each part's channels before slimming, and how many it keeps.
    pub parts: Vec<(Range<usize>, usize)>,
}

/// A range of channels, start and end, as a part's name states it (`None`: all of them).
type Channels = Option<(usize, usize)>;

/// One matrix product of a 1×1 convolution tract split: the output and input channels it
/// computes, and its filters `[O, I]`.
struct Part {
    out: Channels,
    input: Channels,
    filters: Tensor,
}

/// The 1×1 convolutions tract split into matrix products over parts of their output channels
/// (a split or slices read them) and of their input channels (a concatenation feeds them), by
/// the ONNX node's name `N`: the parts are `N.einsum.split-over-1.A..B.concat-einsum-I.C..D…`
/// and the biases are added per output part (`N.split-over-1.A..B…`, or `N`). Each is put back
/// together into the one kernel of the ONNX `Conv`.
pub fn split_convolutions(model: &TypedModel) -> TractResult<Vec<ConvEdit>> {
    let mut parts: HashMap<String, Vec<Part>> = HashMap::new();
    for node in model.nodes() {
        let Some((conv, suffix)) = base_name(&node.name).split_once(".einsum.") else {
            continue;
        };
        let (Some(einsum), Some((out, input))) = (node.op_as::<EinSum>(), part_ranges(suffix))
        else {
            continue;
        };
        let Some(slot) = (0..node.inputs.len()).find(|&s| const_input(model, node, s).is_some())
        else {
            continue;
        };
        let filters = filters_oi(model, node, einsum, slot)?;
        let part = Part {
            out,
            input,
            filters,
        };
        parts.entry(conv.to_string()).or_default().push(part);
    }
    let mut found = vec![];
    for (node, parts) in parts {
        let (kernel, sizes) =
            assemble(&parts).with_context(|| format!("the parts of convolution `{node}`"))?;
        let bias = part_biases(model, &node, &sizes)?;
        let parts = sizes
            .into_iter()
            .filter_map(|(out, size)| out.map(|(a, b)| (a..b, size)))
            .collect();
        found.push(ConvEdit {
            node,
            kernel,
            bias,
            group: 1,
            parts,
        });
    }
    Ok(found)
}

/// The output and input channel ranges a part's name states (`split-over-1.A..B`,
/// `concat-einsum-I.C..D`), each within the range of its kind before it; `None` for a name
/// that states none.
fn part_ranges(suffix: &str) -> Option<(Channels, Channels)> {
    let mut marks: Vec<(usize, bool)> = suffix
        .match_indices("split-over-1.")
        .map(|(at, _)| (at, true))
        .chain(
            suffix
                .match_indices("concat-einsum-I.")
                .map(|(at, _)| (at, false)),
        )
        .collect();
    if marks.is_empty() {
        return None;
    }
    marks.sort_unstable();
    let (mut out, mut input) = (None, None);
    for (at, is_out) in marks {
        let mark = if is_out {
            "split-over-1."
        } else {
            "concat-einsum-I."
        };
        let (a, tail) = suffix[at + mark.len()..].split_once("..")?;
        let b: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
        let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
        let range: &mut Channels = if is_out { &mut out } else { &mut input };
        let base = range.map_or(0, |(start, _)| start);
        *range = Some((base + a, base + b));
    }
    Some((out, input))
}

/// The kernel `[O, I]` the parts make, output parts above each other and input parts side by
/// side, in channel order; and each output part's range with the rows it has.
fn assemble(parts: &[Part]) -> TractResult<(Tensor, Vec<(Channels, usize)>)> {
    let mut outs: Vec<_> = parts.iter().map(|p| p.out).collect();
    let mut ins: Vec<_> = parts.iter().map(|p| p.input).collect();
    outs.sort_unstable();
    outs.dedup();
    ins.sort_unstable();
    ins.dedup();
    ensure!(
        parts.len() == outs.len() * ins.len(),
        "{} parts, not {} output × {} input parts",
        parts.len(),
        outs.len(),
        ins.len()
    );
    let mut rows = vec![];
    let mut sizes = vec![];
    for out in outs {
        let mut blocks: Vec<&Part> = parts.iter().filter(|p| p.out == out).collect();
        blocks.sort_by_key(|p| p.input);
        let blocks: Vec<Tensor> = blocks.iter().map(|p| p.filters.clone()).collect();
        let row = Tensor::stack_tensors(1, &blocks)?;
        sizes.push((out, row.shape()[0]));
        rows.push(row);
    }
    Ok((Tensor::stack_tensors(0, &rows)?, sizes))
}

/// The bias of a split convolution `conv`: each output part's (zero where it has none), in
/// channel order; `None` when no part has one.
fn part_biases(
    model: &TypedModel,
    conv: &str,
    sizes: &[(Channels, usize)],
) -> TractResult<Option<Tensor>> {
    let mut biases: HashMap<Channels, Tensor> = HashMap::new();
    for node in model.nodes().iter().filter(|n| ops::is_add(n.op.as_ref())) {
        let base = base_name(&node.name);
        let out = match base.strip_prefix(conv) {
            Some("") => None,
            Some(rest) if rest.starts_with(".split-over-") => match part_ranges(rest) {
                Some((out, _)) => out,
                None => continue,
            },
            _ => continue,
        };
        if let Some(bias) = (0..node.inputs.len()).find_map(|s| const_input(model, node, s)) {
            let len = bias.len();
            biases.insert(out, bias.into_tensor().into_shape(&[len])?);
        }
    }
    if biases.is_empty() {
        return Ok(None);
    }
    let parts = sizes
        .iter()
        .map(|(out, size)| match biases.remove(out) {
            Some(bias) => Ok(bias),
            None => Tensor::zero::<f32>(&[*size]),
        })
        .collect::<TractResult<Vec<Tensor>>>()?;
    Ok(Some(Tensor::stack_tensors(0, &parts)?))
}

/// The constant operand (at `slot`) of a 1×1 convolution's matrix product, as `[O, I]`.
pub fn filters_oi(
    model: &TypedModel,
    node: &TypedNode,
    einsum: &EinSum,
    slot: usize,
) -> TractResult<Tensor> {
    let weight = const_input(model, node, slot).context("filters")?;
    ensure!(weight.rank() == 2, "`{}`: filters of rank 2", node.name);
    // The weight axis the output carries holds the output channels.
    let output_axis = einsum
        .axes
        .iter_all_axes()
        .find(|a| !a.outputs[0].is_empty() && !a.inputs[slot].is_empty())
        .map(|a| a.inputs[slot][0])
        .with_context(|| format!("`{}`: no output channel axis", node.name))?;
    if output_axis == 0 {
        Ok(weight.into_tensor())
    } else {
        Ok(weight.into_tensor().permute_axes(&[1, 0])?)
    }
}

/// The constant a node reads at `slot`, if it reads one there.
pub fn const_input(model: &TypedModel, node: &TypedNode, slot: usize) -> Option<Arc<Tensor>> {
    let input = node.inputs.get(slot)?;
    Some(model.node(input.node).op_as::<Const>()?.val().clone())
}

/// Gives the `Split` or `Slice`s that cut the output of the ONNX `Conv` `node` into `parts`
/// (through channel-wise ops) the channels each part keeps; `values` are the integer tensors
/// tract computes from shapes (the bounds of TorchScript's slices).
pub fn apply_parts(
    proto: &mut ModelProto,
    node: &str,
    parts: &[(Range<usize>, usize)],
    values: &HashMap<String, Vec<i64>>,
) -> EditResult<()> {
    let Some(total) = parts.last().map(|(range, _)| range.end) else {
        return Ok(());
    };
    // Where a bound between parts moves: the channels kept before it.
    let moved = |bound: i64| -> EditResult<i64> {
        let bound = if bound < 0 {
            bound + total as i64
        } else {
            bound.min(total as i64)
        };
        let mut kept = 0;
        for (range, size) in parts {
            if range.start as i64 == bound {
                return Ok(kept);
            }
            kept += *size as i64;
        }
        match bound == total as i64 {
            true => Ok(kept),
            false => Err(EditError::Unmapped(format!(
                "a split of `{node}` at channel {bound}, which is no bound between its parts"
            ))),
        }
    };
    let graph = proto.graph.as_ref().ok_or(EditError::NoGraph)?;
    let output = graph
        .node
        .iter()
        .find(|n| n.name == node && n.op_type == "Conv")
        .and_then(|n| n.output.first().cloned())
        .ok_or_else(|| EditError::NoOnnxNode(node.to_string()))?;
    let carried = channel_wise_closure(proto, &output);
    let graph = proto.graph.as_ref().ok_or(EditError::NoGraph)?;
    let cutters: Vec<usize> = (0..graph.node.len())
        .filter(|&ix| {
            let node = &graph.node[ix];
            matches!(node.op_type.as_str(), "Split" | "Slice")
                && node.input.first().is_some_and(|i| carried.contains(i))
        })
        .collect();
    for ix in cutters {
        match proto.graph.as_ref().ok_or(EditError::NoGraph)?.node[ix]
            .op_type
            .as_str()
        {
            "Split" => resize_split(proto, ix, total, &moved)?,
            _ => move_slice_bounds(proto, ix, values, &moved)?,
        }
    }
    Ok(())
}

/// The tensors computed from `output` position by position (by ops whose other inputs are
/// initializers or constants), `output` among them.
fn channel_wise_closure(proto: &ModelProto, output: &str) -> HashSet<String> {
    let mut carried = HashSet::from([output.to_string()]);
    let Some(graph) = proto.graph.as_ref() else {
        return carried;
    };
    let constants: HashSet<&String> = graph
        .initializer
        .iter()
        .map(|t| &t.name)
        .chain(
            graph
                .node
                .iter()
                .filter(|n| n.op_type == "Constant")
                .flat_map(|n| &n.output),
        )
        .collect();
    // Nodes are in topological order: one pass.
    for node in &graph.node {
        let reads = node.input.iter().any(|i| carried.contains(i));
        let others_constant = node
            .input
            .iter()
            .all(|i| i.is_empty() || carried.contains(i) || constants.contains(i));
        let op = node.op_type.as_str();
        let position_wise = POSITION_WISE.contains(&op) || BROADCASTING.contains(&op);
        if position_wise && reads && others_constant {
            carried.extend(node.output.iter().cloned());
        }
    }
    carried
}

/// Gives a channel `Split` (axis 1) the sizes its parts keep, as a `split` input (opset 13 and
/// later) or attribute.
fn resize_split(
    proto: &mut ModelProto,
    ix: usize,
    total: usize,
    moved: &dyn Fn(i64) -> EditResult<i64>,
) -> EditResult<()> {
    let version = opset(proto);
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    let node = &graph.node[ix];
    let unmapped = |why: &str| EditError::Unmapped(format!("`{}`: {why}", node.name));
    if attribute_int(node, "axis").unwrap_or(0) != 1 {
        return Err(unmapped("a split along another axis than 1 (the channels)"));
    }
    let sizes: Vec<i64> = match (attribute_ints(node, "split"), node.input.get(1)) {
        (Some(sizes), _) => sizes.to_vec(),
        (None, Some(input)) if !input.is_empty() => graph
            .initializer
            .iter()
            .find(|t| &t.name == input)
            .and_then(int_values)
            .ok_or_else(|| unmapped("split sizes that are not an initializer"))?,
        // Equal parts, one per output.
        _ => vec![(total / node.output.len()) as i64; node.output.len()],
    };
    let mut bounds = vec![0];
    bounds.extend(sizes.iter().scan(0, |end, size| {
        *end += size;
        Some(*end)
    }));
    let bounds = bounds
        .into_iter()
        .map(moved)
        .collect::<EditResult<Vec<i64>>>()?;
    let new_sizes: Vec<i64> = bounds.windows(2).map(|w| w[1] - w[0]).collect();
    let name = format!("{}.split", node.name);
    let node = &mut graph.node[ix];
    node.attribute
        .retain(|a| a.name != "split" && a.name != "num_outputs");
    if version >= 13 {
        node.input.resize(2, String::new());
        node.input[1] = name.clone();
        let count = new_sizes.len() as i64;
        graph
            .initializer
            .push(int64_tensor(&name, &[count], new_sizes.into_iter()));
    } else {
        let mut split = int_attribute("split", 0);
        split.r#type = tract_onnx::pb::attribute_proto::AttributeType::Ints as i32;
        split.ints = new_sizes;
        node.attribute.push(split);
    }
    Ok(())
}

/// Moves the channel bounds of a `Slice` (opset 10 and later: bounds as inputs, which tract
/// computed) to where the kept parts put them.
fn move_slice_bounds(
    proto: &mut ModelProto,
    ix: usize,
    values: &HashMap<String, Vec<i64>>,
    moved: &dyn Fn(i64) -> EditResult<i64>,
) -> EditResult<()> {
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    let node = &graph.node[ix];
    let unmapped = |why: &str| EditError::Unmapped(format!("`{}`: {why}", node.name));
    let known = |slot: usize| -> Option<Vec<i64>> {
        let name = node.input.get(slot).filter(|n| !n.is_empty())?;
        values.get(name).cloned().or_else(|| {
            let t = graph.initializer.iter().find(|t| &t.name == name)?;
            int_values(t)
        })
    };
    let (Some(starts), Some(ends)) = (known(1), known(2)) else {
        return Err(unmapped("slice bounds tract did not compute"));
    };
    let axes = known(3).unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = known(4).unwrap_or_else(|| vec![1; starts.len()]);
    let Some(k) = axes.iter().position(|&a| a == 1) else {
        return Err(unmapped("a slice that names no axis 1 (the channels)"));
    };
    if steps.get(k) != Some(&1) {
        return Err(unmapped("a strided slice of the channels"));
    }
    let (mut starts, mut ends) = (starts, ends);
    starts[k] = moved(starts[k])?;
    ends[k] = moved(ends[k])?;
    let name = node.name.clone();
    for (slot, bounds, kind) in [(1, starts, "starts"), (2, ends, "ends")] {
        let tensor = format!("{name}.{kind}");
        let count = bounds.len() as i64;
        graph
            .initializer
            .push(int64_tensor(&tensor, &[count], bounds.into_iter()));
        graph.node[ix].input[slot] = tensor;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

    #[test]
    fn part_names_state_ranges_each_within_the_one_before() {
        // As tract names the C2f's first 1×1 conv: split over its output, then over the
        // concatenation feeding it, then again over the (already split) output.
        let nested = "split-over-1.0..8.concat-einsum-I.0..16.split-over-1.0..8";
        assert_eq!(part_ranges(nested), Some((Some((0, 8)), Some((0, 16)))));
        let second = "split-over-1.8..16.concat-einsum-I.16..24";
        assert_eq!(part_ranges(second), Some((Some((8, 16)), Some((16, 24)))));
        assert_eq!(
            part_ranges("concat-einsum-I.8..16"),
            Some((None, Some((8, 16))))
        );
        // The sum of two parts, and names of no part.
        assert_eq!(part_ranges("concat-einsum-I.add-1"), None);
        assert_eq!(part_ranges("filters_as_co_ci"), None);
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![output.into()],
            ..NodeProto::default()
        }
    }

    #[test]
    fn a_conv_output_carries_its_channels_through_position_wise_ops_only() {
        let graph = GraphProto {
            node: vec![
                node("Clip", &["conv", "", "six"], "relu6"),
                node("Sigmoid", &["relu6"], "gate"),
                node("Mul", &["relu6", "gate"], "silu"),
                node("Mul", &["silu", "other"], "mixed"),
                node("Transpose", &["silu"], "moved"),
            ],
            initializer: vec![TensorProto {
                name: "six".into(),
                ..TensorProto::default()
            }],
            ..GraphProto::default()
        };
        let proto = ModelProto {
            graph: Some(graph),
            ..ModelProto::default()
        };
        let carried = channel_wise_closure(&proto, "conv");
        for tensor in ["conv", "relu6", "gate", "silu"] {
            assert!(carried.contains(tensor), "{tensor}");
        }
        // Another computed operand, or an op that moves positions, ends the walk.
        assert!(!carried.contains("mixed") && !carried.contains("moved"));
    }
}
