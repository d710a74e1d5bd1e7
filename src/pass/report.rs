//! The report: per FFN layer, channels, parameters and FLOPs before and after slimming; per
//! attention layer, heads before and after.
//!
//! Layers are found on the tract models themselves, by [`crate::model::discover`]: FFN layers are its
//! FFN groups; an attention layer is a softmax · V EinSum and its heads. Before and after are
//! matched by node name: slimming keeps names, adding `.kept`/`.slim` to nodes it rebuilds.

use crate::egraph::extract::GraphCost;
use crate::error::SlimError;
use crate::model::cost::Nominal;
use crate::model::discover::{attention_blocks, base_name, groups, Group, Kind};
use crate::model::state::StateCut;
use crate::model::verify::Verification;
use crate::rules::saturate::SaturationReport;
use serde::Serialize;
use std::collections::HashSet;
use tract_core::internal::*;
use tract_core::ops::konst::Const;

/// One FFN layer of the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FfnLayer {
    /// Position among the model's FFN layers, in evaluation order.
    pub layer: usize,
    /// The consumer linear layer's node name.
    pub name: String,
    /// Width of the FFN before.
    pub channels_before: usize,
    /// Width after.
    pub channels_after: usize,
    /// Parameters of the group's layers before.
    pub params_before: usize,
    /// Parameters after.
    pub params_after: usize,
    /// FLOPs of the group's linear layers before.
    pub flops_before: f64,
    /// FLOPs after.
    pub flops_after: f64,
}

/// One attention layer of the report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AttentionLayer {
    /// Position among the model's attention layers, in evaluation order.
    pub layer: usize,
    /// The softmax · V product's node name.
    pub name: String,
    /// Query heads before.
    pub heads_before: usize,
    /// Query heads after (0 when the block collapsed to its bias).
    pub heads_after: usize,
    /// KV heads before (as many as the query heads without grouped-query attention).
    pub kv_heads_before: usize,
    /// KV heads after.
    pub kv_heads_after: usize,
}

/// Wall-clock time of each stage, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StageTimes {
    /// Lowering to the e-graph.
    pub lower_ms: f64,
    /// Running the rules.
    pub saturate_ms: f64,
    /// Extracting the cheapest graph.
    pub extract_ms: f64,
    /// Rebuilding the tract model.
    pub raise_ms: f64,
}

/// Everything a slimming run found and did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// State pairs cut (a KV cache to the heads kept): the slimmed model's interface differs
    /// from the original's there, and it is to be fed its own state.
    pub state_cuts: Vec<StateCut>,
    /// State pairs the model has (0 without state).
    pub state_pairs: usize,
    /// Bytes of state per token, all pairs together, before (a KV cache's size per token at
    /// batch 1; 0 without state or when sizes are symbolic).
    pub state_bytes_per_token_before: usize,
    /// After.
    pub state_bytes_per_token_after: usize,
    /// Per FFN layer: channels, parameters and FLOPs.
    pub ffn_layers: Vec<FfnLayer>,
    /// Per attention layer: heads.
    pub attention_layers: Vec<AttentionLayer>,
    /// Parameters (constant elements) of the whole model before.
    pub params_before: usize,
    /// Parameters after.
    pub params_after: usize,
    /// FLOPs of the whole model before (symbols at nominal values).
    pub flops_before: f64,
    /// FLOPs after.
    pub flops_after: f64,
    /// The extraction cost model's view (FLOPs plus weight bytes) of the graph before and after.
    pub cost_before: GraphCost,
    /// The cost model's view of the result.
    pub cost_after: GraphCost,
    /// True when extraction found nothing cheaper and the original graph was kept.
    pub kept_original: bool,
    /// How saturation went.
    pub saturation: SaturationReport,
    /// Time per stage.
    pub times: StageTimes,
    /// Output comparison, when verification ran.
    pub verification: Option<Verification>,
}

/// Elements of a floating-point constant: a weight (not an index table a gather keeps slices
/// with, nor a shape).
fn const_len(model: &TypedModel, id: usize) -> usize {
    model
        .node(id)
        .op_as::<Const>()
        .filter(|c| c.val().datum_type().is_float())
        .map(|c| c.val().len())
        .unwrap_or(0)
}

fn node_flops(model: &TypedModel, nominal: &Nominal, id: usize) -> f64 {
    let node = model.node(id);
    let Ok(inputs) = model.node_input_facts(id) else {
        return 0.0;
    };
    nominal.op_flops(node.op.as_ref(), &inputs, &node.outputs[0].fact)
}

/// Parameters (floating-point constant elements) of a model.
pub fn params(model: &TypedModel) -> usize {
    model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Const>())
        .map(|n| const_len(model, n.id))
        .sum()
}

/// FLOPs of a model at nominal shapes.
pub fn flops(model: &TypedModel, nominal: &Nominal) -> f64 {
    model
        .nodes()
        .iter()
        .filter(|n| !n.op_is::<Const>() && !n.outputs.is_empty())
        .map(|n| node_flops(model, nominal, n.id))
        .sum()
}

struct GroupSize {
    channels: usize,
    params: usize,
    flops: f64,
}

fn group_size(model: &TypedModel, nominal: &Nominal, g: &Group) -> GroupSize {
    let consts: HashSet<usize> = g.consts.iter().copied().collect();
    GroupSize {
        channels: g.units,
        params: consts.iter().map(|&c| const_len(model, c)).sum(),
        flops: g
            .linears
            .iter()
            .map(|&l| node_flops(model, nominal, l))
            .sum(),
    }
}

/// The FFN layers of `before`, with their sizes in `before` and `after`.
pub fn ffn_layers(
    before: &TypedModel,
    after: &TypedModel,
    nominal: &Nominal,
) -> TractResult<Vec<FfnLayer>> {
    let ffn_groups = |model: &TypedModel| -> TractResult<Vec<Group>> {
        Ok(groups(model)?
            .into_iter()
            .filter(|g| g.kind == Kind::Ffn)
            .collect())
    };
    let after_groups = ffn_groups(after)?;
    let mut layers = vec![];
    for (layer, g) in ffn_groups(before)?.iter().enumerate() {
        let name = before.node(g.consumer).name.clone();
        let b = group_size(before, nominal, g);
        // A layer whose every channel went has no group any more: it costs nothing. Believed
        // only when its consumer is gone too.
        let a = match after_groups
            .iter()
            .find(|h| base_name(&after.node(h.consumer).name) == base_name(&name))
        {
            Some(h) => group_size(after, nominal, h),
            None if still_there(after, &name) => {
                bail!("FFN layer {layer} (`{name}`) is in the slimmed model, but its channels cannot be read there")
            }
            None => GroupSize {
                channels: 0,
                params: 0,
                flops: 0.0,
            },
        };
        layers.push(FfnLayer {
            layer,
            name,
            channels_before: b.channels,
            channels_after: a.channels,
            params_before: b.params,
            params_after: a.params,
            flops_before: b.flops,
            flops_after: a.flops,
        });
    }
    Ok(layers)
}

/// Whether a node derived from `name` (the same base name) still computes in `model` (a layer
/// whose every unit was constant may remain as a constant of that name).
fn still_there(model: &TypedModel, name: &str) -> bool {
    model
        .nodes()
        .iter()
        .any(|n| !n.op_is::<Const>() && base_name(&n.name) == base_name(name))
}

/// The attention layers of `before`, with their head counts in `before` and `after`, matched
/// by their output projection (slimming keeps its node; the softmax · V product may be rebuilt
/// under another name). A layer missing from `after` has lost every head, which is only
/// believed when its projection is gone too: one still there that discovery cannot read is an
/// error, not 0 heads.
pub fn attention_layers(
    before: &TypedModel,
    after: &TypedModel,
) -> TractResult<Vec<AttentionLayer>> {
    let after_blocks = attention_blocks(after)?;
    attention_blocks(before)?
        .into_iter()
        .enumerate()
        .map(|(layer, block)| {
            let name = before.node(block.product).name.clone();
            let consumer = &before.node(block.consumer).name;
            let slimmed = after_blocks
                .iter()
                .find(|b| base_name(&after.node(b.consumer).name) == base_name(consumer))
                .map(|b| (b.heads, b.kv_heads));
            let (heads_after, kv_heads_after) = match slimmed {
                Some(counts) => counts,
                None if still_there(after, consumer) => {
                    bail!("attention layer {layer} (`{name}`) is in the slimmed model, but its heads cannot be read there")
                }
                None => (0, 0),
            };
            Ok(AttentionLayer {
                layer,
                name,
                heads_before: block.heads,
                heads_after,
                kv_heads_before: block.kv_heads,
                kv_heads_after,
            })
        })
        .collect()
}

fn human(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

impl Report {
    /// The error of a failed verification: the first output over the tolerance.
    pub fn verification_error(&self) -> Option<SlimError> {
        Some(self.verification.as_ref()?.failure()?.into())
    }

    /// The human-readable summary printed by the CLI.
    pub fn table(&self) -> String {
        let mut out = self.attention_table();
        out += &self.ffn_table();
        out += &self.state_table();
        out += &format!(
            "model: params {} → {} ({:.1}% removed), FLOPs {} → {} ({:.1}% removed)\n",
            human(self.params_before as f64),
            human(self.params_after as f64),
            percent_removed(self.params_before as f64, self.params_after as f64),
            human(self.flops_before),
            human(self.flops_after),
            percent_removed(self.flops_before, self.flops_after),
        );
        let s = &self.saturation;
        out += &format!(
            "e-graph: {} ({} iterations, {} e-nodes); pass time {:.0} ms (lower {:.0}, saturate {:.0}, extract {:.0}, raise {:.0})\n",
            s.stop_reason,
            s.iterations,
            s.enodes,
            self.times.lower_ms + self.times.saturate_ms + self.times.extract_ms + self.times.raise_ms,
            self.times.lower_ms,
            self.times.saturate_ms,
            self.times.extract_ms,
            self.times.raise_ms
        );
        if let Some(v) = &self.verification {
            out += &verification_lines(v, self.state_pairs > 0);
        }
        out
    }

    fn attention_table(&self) -> String {
        if self.attention_layers.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "{:<6} {:<48} {:>16}\n",
            "layer", "attention (softmax · V node)", "heads"
        );
        for l in &self.attention_layers {
            let kv = if l.kv_heads_before == l.heads_before {
                String::new()
            } else {
                format!(" (KV {} → {})", l.kv_heads_before, l.kv_heads_after)
            };
            out += &format!(
                "{:<6} {:<48} {:>16}{kv}\n",
                l.layer,
                shorten(&l.name),
                format!("{} → {}", l.heads_before, l.heads_after)
            );
        }
        out
    }

    /// The state pairs cut, one line each, and a summary line (nothing without state).
    pub fn state_table(&self) -> String {
        if self.state_pairs == 0 {
            return String::new();
        }
        let mut out = String::new();
        for cut in &self.state_cuts {
            out += &format!(
                "state  {} → {}: axis {} keeps {} of {}\n",
                cut.pair.input,
                cut.pair.output,
                cut.axis,
                cut.kept.len(),
                cut.before
            );
        }
        out += &format!(
            "state: {} of {} pairs cut, {} → {} bytes per token; the slimmed model's cut inputs and outputs hold the kept slices only: feed it its own state\n",
            self.state_cuts.len(),
            self.state_pairs,
            self.state_bytes_per_token_before,
            self.state_bytes_per_token_after
        );
        out
    }

    fn ffn_table(&self) -> String {
        let mut out = format!(
            "{:<6} {:<48} {:>16} {:>20} {:>20}\n",
            "layer", "FFN (consumer node)", "channels", "params", "FLOPs"
        );
        for l in &self.ffn_layers {
            out += &format!(
                "{:<6} {:<48} {:>16} {:>20} {:>20}\n",
                l.layer,
                shorten(&l.name),
                format!("{} → {}", l.channels_before, l.channels_after),
                format!(
                    "{} → {}",
                    human(l.params_before as f64),
                    human(l.params_after as f64)
                ),
                format!("{} → {}", human(l.flops_before), human(l.flops_after)),
            );
        }
        out
    }
}

/// What the verification compared, and how each output came out.
/// The verification's lines; a model with state says whether it was checked over a loop.
fn verification_lines(v: &Verification, state: bool) -> String {
    let calls = match (v.calls, state) {
        (1, false) => String::new(),
        (1, true) => " once: the state's length is fixed by the given shapes, so no call can take the previous one's (give it a symbolic length to check a loop)".into(),
        (n, _) => format!(" in a loop of {n} calls, each fed its own state"),
    };
    let mut out = match &v.artifact {
        Some(file) => format!(
            "verify: {file} as written, loaded back and run on seed {}{calls}\n",
            v.seed
        ),
        None => format!(
            "verify: the slimmed model in memory, run on seed {}{calls}\n",
            v.seed
        ),
    };
    for o in &v.outputs {
        out += &format!(
            "verify {}: max |diff| {:.3e} (output magnitude {:.3e}) {}\n",
            o.name,
            o.max_abs_diff,
            o.max_magnitude,
            if o.passed { "ok" } else { "FAILED" }
        );
    }
    out
}

/// A node name cut to the table's column width (keeping its end, the informative part).
fn shorten(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() > 48 {
        format!("…{}", chars[chars.len() - 47..].iter().collect::<String>())
    } else {
        name.to_string()
    }
}

fn percent_removed(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        0.0
    } else {
        100.0 * (before - after) / before
    }
}
