//! model-slim: cut the all-zero channels and heads of structurally pruned transformer models out
//! of their tract graphs, exactly — the slimmed model computes what the original computes (up to
//! float rounding), with smaller weights and fewer FLOPs.
//!
//! ## Use
//!
//! - [`Slimmer`]: the pass, configured by a builder, on any typed tract model (ONNX or not).
//! - [`auto_slim`]: choose units to remove from a dense model for target sparsities.
//! - [`SlimTransform`]: the pass as tract's `model-slim` transform, for tract deployments.
//! - [`write_model`], [`write_slimmed_onnx`]: write the result, checked on the written file.
//!
//! ```
//! use model_slim::{import_onnx, ImportOptions, Slimmer};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = import_onnx("tests/fixtures/bert_mixed_dynamo.onnx".as_ref(), &ImportOptions::default())?;
//! let slimmed = Slimmer::new()?.with_verification(Some(0)).slim(&model)?;
//! print!("{}", slimmed.report.table());
//! assert!(slimmed.report.flops_after < slimmed.report.flops_before);
//! # Ok(()) }
//! ```
//!
//! ## Layers
//!
//! The crate is built in layers, each using only those before it in [`LAYERS`]:
//! `util` (slicing, strided copies, atomic files) → `model` (tract-level facts: op families,
//! cost, groups of units, running and comparing models) → `io` (ONNX in; NNEF and ONNX out,
//! checked on the written file) → `egraph` (language, analysis, constants, lower / extract /
//! raise) → `rules` (parser with sort checks, guard registry, applier, saturation) → `error`
//! (every layer's typed error converted into [`SlimError`]) → `pass` ([`Slimmer`], [`Report`])
//! → `autoslim` ([`auto_slim`]) → `tools` (bench, dot, transform, demo); `testing` (random
//! models, the rule checker) uses any of them. The modules are private; everything a tract
//! deployment, a rule author or the command line needs is re-exported below, and the command
//! line uses nothing else.

#![warn(missing_docs)]

/// The crate's top-level modules in layer order: each may use only those before it
/// (`tests/layers.rs` checks every `crate::` path against this list).
pub const LAYERS: &[&str] = &[
    "util", "model", "io", "egraph", "rules", "error", "pass", "autoslim", "tools", "testing",
];

mod autoslim;
mod egraph;
mod error;
mod io;
mod model;
mod pass;
mod rules;
mod tools;
mod util;

#[doc(hidden)]
pub mod testing;

// The pass, for tract deployments.
pub use egraph::extract::GraphCost;
pub use error::{Result, SlimError};
pub use pass::report::{flops, params, AttentionLayer, FfnLayer, Report, StageTimes};
pub use pass::slimmer::{Observer, Slimmed, Slimmer, Stage};
pub use rules::saturate::{Limits, SaturationReport, StopReason};
pub use tools::transform::{ensure_linked, SlimTransform};

// Model files.
pub use io::import::{import_onnx, parse_set, symbol_values, ImportOptions, InputSpec};
pub use io::nnef::{write_model, ArtifactCheck, Format};
pub use io::onnx::proto::read_proto;
pub use io::onnx::writeback::{
    initializer_params, write_pruned_onnx, write_slimmed_onnx, Cut, Refit,
};
pub use io::onnx::EditError;
pub use io::{IoError, IoResult};
pub use util::files::write_atomically;

// What the pass knows about models: groups of units, and running them.
pub use model::cost::{Nominal, NOMINAL_DIM};
pub use model::discover::{
    attention_blocks, channel_groups, groups, layer_input_channels, restriction_stop, zero_inputs,
    AttentionBlock, ChannelGroup, Group, Kind, RestrictionStop, Units, ZeroInputs,
};
pub use model::state::{feeds_back, named_state_pairs, state_positions, StateCut, StatePair};
pub use model::verify::{
    compare_output, fidelity, input_names, max_abs_diff, output_names, random_inputs,
    relative_tolerance, run, verify, verify_cut, Expected, Mismatch, OutputDiff, OutputFidelity,
    Verification, HALF_RELATIVE_TOLERANCE, LOOP_CALLS, RELATIVE_TOLERANCE,
};

// Auto-slim.
pub use autoslim::auto::{
    auto_slim, AutoObserver, AutoOptions, AutoReport, AutoSlimmed, AutoStage, FidelityInputs,
    GroupOutcome, Scoring, StageTime,
};
pub use autoslim::calibrated::Criterion;
pub use autoslim::calibration::{load_npz, Calibration};
pub use autoslim::choice::{choose, KvLayout};
pub use autoslim::prune::{magnitude_scores, Plan, PlanGroup, Repair, Targets};
pub use autoslim::sensitivity::{GlobalCost, PROBE_SAMPLES};
pub use model::stats::zero_units;

// Rules, for rule authors.
pub use egraph::lang::Sort;
pub use rules::guards::guards_markdown;
pub use rules::parser::{default_rules, load_dir, parse, Rule, RuleError};
pub use testing::check::{check_rules, CheckReport};

// Tools.
pub use tools::bench::{compare_latency, Latency};
pub use tools::demo::EncoderSpec;
pub use tools::dot::to_dot;
