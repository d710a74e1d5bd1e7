//! Writing a slimmed model back to ONNX: the user's own file, with initializers sliced and head
//! counts changed, so ONNX Runtime (or any ONNX consumer) runs the slimmed model.
//!
//! tract has no ONNX writer, and the slimming decisions are small, so they are replayed on the
//! original `ModelProto`. The decisions come from comparing the original and slimmed tract
//! models group by group ([`crate::model::discover`]): which units of each consumer weight survive (the
//! slimmed weight's rows are copies of original rows), and, for units folded as constants, what
//! they added to the bias. In the ONNX graph each group is found by its consumer's name; the
//! layers computing its units (walking back from the consumer, through element-wise ops, head
//! reshapes, the attention products and splits, up to the projections) lose those units' output
//! channels and bias entries, and the reshape targets between them (head count, all-head width,
//! hard-coded Conv1D widths) and split sizes shrink with them. State inputs and outputs slimming
//! cut (a decoder step's KV cache) are declared with their kept slices, and the model's own
//! reading of such an output is one more reader needing them. Everything else in the file stays
//! as it was, except the optional shape annotations of intermediate tensors (`value_info`),
//! and the convolutions slimming cut, which take the slimmed model's weights and groups
//! ([`crate::io::onnx::convs`]),
//! which would state the old widths. A pruned model's edits come first (zeros, repaired biases,
//! and refit weights, written slice by slice along the weight's input axis so that the file's
//! layout need not be tract's). The written file is imported again and must compute what the
//! original computes; otherwise nothing is written.

use crate::io::error::{IoError, IoResult, NNEF_INSTEAD};
use crate::io::import::{import_onnx, tensor_facts, ImportOptions, TensorFacts};
use crate::io::nnef::ArtifactCheck;
use crate::io::onnx::convs::{apply_conv_replay, conv_replay, ConvReplay};
use crate::io::onnx::error::{EditError, EditResult};
use crate::io::onnx::external::{externalize, internalize};
use crate::io::onnx::proto::{
    decode, encode_preserving, is_float, linear_weight, onnx_node, read_bytes,
};
use crate::io::onnx::restrict::{Need, OnnxGraph};
use crate::model::discover::{base_name, groups, zero_inputs, Group, Kind, Units};
use crate::model::state::StateCut;
use crate::model::stats::{activation_stats, capture, compensation, weight_of, zero_units};
use crate::model::verify::random_inputs;
use crate::model::verify::Verification;
use crate::util::files::{persist, scratch_beside};
use crate::util::slices::{around, bits_hash, slices_first};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use tract_core::internal::*;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

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
    /// New values of the consumer's weight (a least-squares refit of the kept units).
    pub refit: Option<Refit>,
}

/// A consumer weight's new values, in the order of its slices along its input axis (slice
/// after slice, each in the order of the other axes), which is the same whether a file stores
/// the weight `[in, out]` or `[out, in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Refit {
    /// The new values.
    pub values: Vec<f32>,
    /// A hash of the original values in that order: the file's weight must hash the same, or
    /// its layout is not the one the values are in.
    pub original: u64,
}

impl Refit {
    /// The refit of `units`' consumer weight from `original` to `refit` (tract weights).
    pub fn between(original: &Tensor, refit: &Tensor, units: Units) -> TractResult<Refit> {
        Ok(Refit {
            values: input_slices_first(refit, units)?,
            original: bits_hash(&input_slices_first(original, units)?),
        })
    }
}

/// A tract weight's values in the order of its slices along the units' (merged) axis.
fn input_slices_first(weight: &Tensor, units: Units) -> TractResult<Vec<f32>> {
    let view = units.view(weight)?.cast_to::<f32>()?.into_owned();
    let (outer, size, inner) = around(view.shape(), units.axis);
    Ok(slices_first(
        view.try_as_plain_ram()?.as_slice::<f32>()?,
        outer,
        size,
        inner,
    ))
}

/// A hash of the data of each unit of a group's consumer weight (its values' bits), to match
/// units exactly without holding a copy of every unit: the weights of a 1B-parameter model are
/// large beside the memory left while both models are held.
fn unit_hashes(model: &TypedModel, group: &Group) -> TractResult<Vec<u64>> {
    let weight = weight_of(model, group.weight)?;
    let units = group.weight_units;
    // One merged view and one cast for every unit: per unit, they would copy the whole weight.
    let view = units.view(&weight)?;
    let view = view.cast_to::<f32>()?;
    let array = view.to_plain_array_view::<f32>()?;
    let axis = tract_ndarray::Axis(units.axis);
    Ok((0..group.units)
        .map(|u| {
            let slices = units.slices(&[u]);
            bits_hash(
                slices
                    .into_iter()
                    .flat_map(|slice| array.index_axis(axis, slice)),
            )
        })
        .collect())
}

/// The original units the slimmed consumer weight keeps, in order.
fn kept_units(
    original: &TypedModel,
    group: &Group,
    slimmed: &TypedModel,
    after: &Group,
) -> TractResult<Vec<usize>> {
    // Equal hashes are taken as equal data: a wrong match would change the outputs, and the
    // written file is compared with the original's outputs before it is kept.
    let before_rows = unit_hashes(original, group)?;
    let after_rows = unit_hashes(slimmed, after)?;
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
    replay: &ConvReplay,
) -> TractResult<Vec<Cut>> {
    let before = groups(original)?;
    let after = groups(slimmed)?;
    let mut cuts = vec![];
    let mut sample = None;
    // A convolution the replay writes is not cut again through its units.
    for group in before.iter().filter(|g| !replay.covers(&g.name)) {
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
            let activation = capture(original, &[group.activation], &[inputs])?;
            let stats = activation_stats(original, group, &activation[0])?;
            let delta = compensation(original, group, &stats, &constant)?;
            let delta = delta
                .cast_to::<f32>()?
                .try_as_plain_ram()?
                .as_slice::<f32>()?
                .to_vec();
            // Units constant at zero (gated channels without biases) add nothing.
            delta.iter().any(|d| *d != 0.0).then_some(delta)
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
            refit: None,
        });
    }
    Ok(cuts)
}

/// Where a cut's consumer is and how its units lie in its weight.
struct Target {
    /// The consumer's index.
    consumer: usize,
    /// The node and slot reading the weight initializer, and its input-channel axis.
    weight_reader: (usize, usize),
    axis: usize,
    /// Rows of that axis per unit.
    block: usize,
    /// The consumer's data input axis the units lie along.
    data_axis: usize,
}

impl Target {
    fn slices(&self, units: &[usize]) -> Vec<usize> {
        units
            .iter()
            .flat_map(|u| u * self.block..(u + 1) * self.block)
            .collect()
    }
}

fn find_target(graph: &OnnxGraph, cut: &Cut) -> EditResult<Target> {
    let proto = graph.proto();
    let name = onnx_node(proto, &cut.consumer)
        .ok_or_else(|| EditError::NoOnnxNode(cut.consumer.clone()))?
        .name
        .clone();
    let onnx_graph = proto.graph.as_ref().ok_or(EditError::NoGraph)?;
    let nodes = &onnx_graph.node;
    let consumer = nodes
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| EditError::NoOnnxNode(cut.consumer.clone()))?;
    let weight = linear_weight(proto, consumer).ok_or_else(|| EditError::NoWeight(name.clone()))?;
    let rows = onnx_graph.initializer[weight.initializer].dims[weight.input_axis] as usize;
    if !rows.is_multiple_of(cut.units) {
        return Err(EditError::UnitRows {
            node: name,
            units: cut.units,
            rows,
        });
    }
    let node = &nodes[consumer];
    let data_rank = graph
        .dims(&node.input[0])
        .map(|d| d.len())
        .ok_or_else(|| EditError::UnknownShape(name.clone()))?;
    let trans_a = node.op_type == "Gemm"
        && node
            .attribute
            .iter()
            .any(|a| a.name == "transA" && a.i == 1);
    let data_axis = if trans_a { 0 } else { data_rank - 1 };
    Ok(Target {
        consumer,
        weight_reader: (weight.reader, weight.slot),
        axis: weight.input_axis,
        block: rows / cut.units,
        data_axis,
    })
}

/// The consumer's part of a cut: a refit's values replace its weight, its rows of the units a
/// block lost entirely are zeroed, and the folded constants go into its bias.
fn edit_consumer(graph: &mut OnnxGraph, cut: &Cut, target: &Target) -> EditResult<()> {
    let (reader, slot) = target.weight_reader;
    if let Some(refit) = &cut.refit {
        graph.set_constant_slices(reader, slot, target.axis, &refit.values, refit.original)?;
    }
    if !cut.zeroed.is_empty() {
        graph.zero_constant(reader, slot, target.axis, &target.slices(&cut.zeroed))?;
    }
    if let Some(delta) = &cut.bias_delta {
        graph.add_to_bias(target.consumer, delta)?;
    }
    Ok(())
}

/// Applies one cut: the consumer keeps its rows of the kept units (see [`edit_consumer`]); then
/// the restriction of its input travels back to the layers computing the units.
fn apply_cut(graph: &mut OnnxGraph, cut: &Cut) -> EditResult<()> {
    let target = find_target(graph, cut)?;
    edit_consumer(graph, cut, &target)?;
    let kept = target.slices(&cut.kept);
    let (reader, slot) = target.weight_reader;
    graph.restrict_constant(reader, slot, target.axis, &kept)?;
    graph.restrict(target.consumer, 0, Need::from([(target.data_axis, kept)]))
}

/// Applies every cut to the protobuf, and cuts the state inputs and outputs `state` says (the
/// model's interface changes with them); `shapes` are the source model's tensor shapes.
pub fn apply_cuts(
    proto: &mut ModelProto,
    shapes: HashMap<String, TVec<TDim>>,
    cuts: &[Cut],
    state: &[StateCut],
) -> EditResult<()> {
    if proto.graph.is_none() {
        return Err(EditError::NoGraph);
    }
    let mut graph = OnnxGraph::new(proto, shapes);
    for cut in state {
        let need = Need::from([(cut.axis, cut.kept.clone())]);
        graph.cut_state(&cut.pair.input, need.clone());
        graph.cut_state(&cut.pair.output, need);
    }
    for cut in cuts {
        apply_cut(&mut graph, cut)?;
    }
    if let Some(name) = graph.undeclared_state().into_iter().next() {
        return Err(EditError::StateNotCut(name));
    }
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    if !cuts.is_empty() {
        // Shape annotations of intermediate tensors would state the old widths (ONNX Runtime
        // refuses a file whose annotations contradict its shapes); they are optional.
        graph.value_info.clear();
    }
    sort_topologically(graph)
}

/// Gives cut convolutions their slimmed weights and groups (see [`crate::io::onnx::convs`]);
/// `values` are the integer tensors tract computes (split bounds).
fn replay_convs(
    proto: &mut ModelProto,
    replay: &ConvReplay,
    values: &HashMap<String, Vec<i64>>,
) -> EditResult<()> {
    if replay.is_empty() {
        return Ok(());
    }
    apply_conv_replay(proto, replay, values)?;
    let graph = proto.graph.as_mut().ok_or(EditError::NoGraph)?;
    // Shape annotations of intermediate tensors would state the old widths.
    graph.value_info.clear();
    sort_topologically(graph)
}

/// Orders the nodes so that each comes after the producers of its inputs (as ONNX requires),
/// keeping the original order where it already holds.
fn sort_topologically(graph: &mut GraphProto) -> EditResult<()> {
    let mut available: std::collections::HashSet<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .chain(std::iter::once(String::new()))
        .collect();
    let mut pending: std::collections::VecDeque<NodeProto> = std::mem::take(&mut graph.node).into();
    let mut stalled = 0;
    while let Some(node) = pending.pop_front() {
        if node.input.iter().all(|i| available.contains(i)) {
            available.extend(node.output.iter().cloned());
            graph.node.push(node);
            stalled = 0;
        } else {
            pending.push_back(node);
            stalled += 1;
            if stalled > pending.len() {
                return Err(EditError::Cycle);
            }
        }
    }
    Ok(())
}

/// Float parameters held in a model's initializers.
pub fn initializer_params(proto: &ModelProto) -> usize {
    proto
        .graph
        .as_ref()
        .map(|g| {
            g.initializer
                .iter()
                .filter(|t| is_float(t))
                .map(|t| t.dims.iter().product::<i64>() as usize)
                .sum()
        })
        .unwrap_or(0)
}

/// Encodes the edited protobuf (keeping untouched parts of `source_bytes` as they were),
/// imports it again from a file beside `output`, compares it with `check`'s reference and
/// checks that the consumers have the widths `cuts` give; renames it to `output` only if all that passed. A comparison that
/// fails is returned (nothing is written), other failures are errors.
fn write_checked(
    source_bytes: &[u8],
    mut proto: ModelProto,
    external: bool,
    output: &Path,
    import: &ImportOptions,
    check: ArtifactCheck,
    cuts: &[Cut],
) -> IoResult<Verification> {
    let refuse = |e: &dyn std::fmt::Display| IoError::write(output, e);
    let import = &import.with_cut_state(check.cuts);
    let inline_bytes: usize = proto
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .map(|t| t.raw_data.len())
        .sum();
    if !external && inline_bytes < PROTOBUF_LIMIT {
        let bytes = encode_preserving(source_bytes, &proto).map_err(|e| edit_error(output, e))?;
        let scratch = scratch_beside(output).map_err(|e| refuse(&e))?;
        std::fs::write(scratch.path(), &bytes).map_err(|e| refuse(&e))?;
        let reloaded = reload(scratch.path(), output, import)?;
        shrunk_as_planned(&reloaded, cuts).map_err(|e| edit_error(output, e))?;
        let verification = check.compare(reloaded, output)?;
        if !verification.passed {
            return Ok(verification);
        }
        persist(scratch, output).map_err(|e| refuse(&e))?;
        return Ok(verification);
    }
    // The model and its data file are written under their final names in a scratch directory
    // beside the output, checked there, and only then moved into place.
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| refuse(&"the output path has no file name"))?;
    let location = format!("{name}.data");
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".model-slim")
        .tempdir_in(parent)
        .map_err(|e| refuse(&e))?;
    let (model_path, data_path) = (scratch.path().join(name), scratch.path().join(&location));
    {
        let file = std::fs::File::create(&data_path).map_err(|e| refuse(&e))?;
        let mut data = std::io::BufWriter::new(file);
        externalize(&mut proto, &mut data, &location).map_err(|e| refuse(&e))?;
        data.flush().map_err(|e| refuse(&e))?;
    }
    let bytes = encode_preserving(source_bytes, &proto).map_err(|e| edit_error(output, e))?;
    drop(proto);
    std::fs::write(&model_path, &bytes).map_err(|e| refuse(&e))?;
    let reloaded = reload(&model_path, output, import)?;
    shrunk_as_planned(&reloaded, cuts).map_err(|e| edit_error(output, e))?;
    let verification = check.compare(reloaded, output)?;
    if !verification.passed {
        return Ok(verification);
    }
    std::fs::rename(&data_path, parent.join(&location)).map_err(|e| refuse(&e))?;
    std::fs::rename(&model_path, output).map_err(|e| refuse(&e))?;
    Ok(verification)
}

/// Protobuf cannot encode a message of 2 GB or more: past this many bytes of tensors the model
/// is written with external data even when its source had none.
const PROTOBUF_LIMIT: usize = 2_000_000_000;

/// The file written for `output` at `path`, loaded back by tract.
fn reload(path: &Path, output: &Path, import: &ImportOptions) -> IoResult<TypedModel> {
    import_onnx(path, import).map_err(|e| {
        let why = format!("the edited file does not load: {e} ({NNEF_INSTEAD})");
        IoError::write(output, why)
    })
}

fn edit_error(output: &Path, source: EditError) -> IoError {
    IoError::Edit {
        path: output.display().to_string(),
        source,
    }
}

/// Writes the slimmed model as an edit of the ONNX file it came from (see the module docs),
/// after checking that the edited file imports, computes what `check` expects (the original's
/// outputs), and has the slimmed widths. Returns the comparison; when it failed, nothing is
/// written. The models are taken and dropped once the cuts are derived from them, before the
/// source file's tensors are read (a caller that keeps them passes clones, which share the
/// weights).
pub fn write_slimmed_onnx(
    source: &Path,
    output: &Path,
    import: &ImportOptions,
    original: TypedModel,
    slimmed: TypedModel,
    check: ArtifactCheck,
) -> IoResult<Verification> {
    let unmapped = |e: TractError| edit_error(output, EditError::Unmapped(format!("{e:#}")));
    let replay = conv_replay(&original, &slimmed).map_err(unmapped)?;
    let cuts = cuts_between(&original, &slimmed, check.values, output, &replay)?;
    drop((original, slimmed));
    let source_bytes = read_bytes(source)?;
    let mut proto = decode(source, &source_bytes)?;
    let facts = facts_of(&proto, source, import)?;
    let external = internalize(&mut proto, source)?;
    apply_cuts(&mut proto, facts.shapes.clone(), &cuts, check.cuts)
        .map_err(|e| edit_error(output, e))?;
    replay_convs(&mut proto, &replay, &facts.values).map_err(|e| edit_error(output, e))?;
    write_checked(&source_bytes, proto, external, output, import, check, &cuts)
}

/// The cuts that make `slimmed` of `original` (an edit error of `output` when they cannot be
/// derived).
fn cuts_between(
    original: &TypedModel,
    slimmed: &TypedModel,
    values: &SymbolValues,
    output: &Path,
    replay: &ConvReplay,
) -> IoResult<Vec<Cut>> {
    let cuts = derive_cuts(original, slimmed, values, replay)
        .map_err(|e| edit_error(output, EditError::Unmapped(format!("{e:#}"))))?;
    // A slimming that cut zero input channels of which the writer finds none would be written
    // as the unchanged source file, reported slimmed.
    if cuts.is_empty() && replay.is_empty() {
        let zero = |model| zero_inputs(model).iter().map(|z| z.zero).sum::<usize>();
        let removed = zero(original).saturating_sub(zero(slimmed));
        if removed > 0 {
            return Err(edit_error(output, EditError::Unreplayed { removed }));
        }
    }
    Ok(cuts)
}

/// The tensor shapes of `proto` (read from `source`), taken before its external data is read
/// into it: tract's model of it, which holds the weights too, is gone by then.
fn facts_of(proto: &ModelProto, source: &Path, import: &ImportOptions) -> IoResult<TensorFacts> {
    let model_dir = source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tensor_facts(
        proto,
        &source.display().to_string(),
        model_dir.to_str(),
        import,
    )
}

/// Every cut consumer has the planned number of units in the reloaded model.
fn shrunk_as_planned(reloaded: &TypedModel, cuts: &[Cut]) -> EditResult<()> {
    let sizes: HashMap<String, usize> = groups(reloaded)
        .map_err(|e| EditError::Unmapped(format!("{e:#}")))?
        .into_iter()
        .map(|g| (base_name(&g.name).to_string(), g.units))
        .collect();
    for cut in cuts {
        // A block kept as one zeroed unit may be simplified away by tract when reloaded.
        let size = sizes.get(base_name(&cut.consumer));
        let shrunk = size == Some(&cut.kept.len()) || (!cut.zeroed.is_empty() && size.is_none());
        if !shrunk {
            return Err(EditError::NotShrunk {
                node: cut.consumer.clone(),
                found: size.map_or("no".into(), |s| s.to_string()),
                kept: cut.kept.len(),
            });
        }
    }
    Ok(())
}

/// Writes a pruned model as an edit of its source ONNX file: the plan's zeros and compensated
/// biases (`edits`, cuts that keep every unit), and, when `slimmed` is given, the slimming of
/// the pruned model replayed on top. The file must compute what `check`'s reference computes.
pub fn write_pruned_onnx(
    source: &Path,
    output: &Path,
    import: &ImportOptions,
    edits: &[Cut],
    pruned: &TypedModel,
    slimmed: Option<&TypedModel>,
    check: ArtifactCheck,
) -> IoResult<Verification> {
    let source_bytes = read_bytes(source)?;
    let mut proto = decode(source, &source_bytes)?;
    // The edits keep every unit: the shapes hold for the slimming replayed after them.
    let facts = facts_of(&proto, source, import)?;
    let external = internalize(&mut proto, source)?;
    if proto.graph.is_none() {
        return Err(edit_error(output, EditError::NoGraph));
    }
    let mut graph = OnnxGraph::new(&mut proto, facts.shapes.clone());
    for cut in edits {
        find_target(&graph, cut)
            .and_then(|target| edit_consumer(&mut graph, cut, &target))
            .map_err(|e| edit_error(output, e))?;
    }
    let cuts = match slimmed {
        Some(slimmed) => {
            let replay = conv_replay(pruned, slimmed)
                .map_err(|e| edit_error(output, EditError::Unmapped(format!("{e:#}"))))?;
            let cuts = cuts_between(pruned, slimmed, check.values, output, &replay)?;
            apply_cuts(&mut proto, facts.shapes, &cuts, check.cuts)
                .map_err(|e| edit_error(output, e))?;
            replay_convs(&mut proto, &replay, &facts.values).map_err(|e| edit_error(output, e))?;
            cuts
        }
        None => vec![],
    };
    write_checked(&source_bytes, proto, external, output, import, check, &cuts)
}
