//! model-slim: cut the all-zero channels of structurally pruned transformer models out of their
//! tract graphs, exactly.
//!
//! The pass runs in stages, one module each, data flowing one way:
//! [`import`] (ONNX → typed tract) → [`lower`] (tract → e-graph) → [`saturate`] (rules from
//! `rules/`) → [`extract`] (cheapest equivalent graph) → [`raise`] (e-graph → tract) →
//! [`write`] / [`verify`].
//!
//! ```no_run
//! use model_slim::Slimmer;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = model_slim::import::import_onnx("bert_pruned.onnx".as_ref(), &Default::default())?;
//! let slimmed = Slimmer::new()?.slim(&model)?;
//! println!("{} FLOPs before, {} after", slimmed.report.cost_before.flops, slimmed.report.cost_after.flops);
//! # Ok(()) }
//! ```

pub mod analysis;
pub mod apply;
pub mod auto;
pub mod bench;
pub mod calibration;
pub mod consts;
pub mod cost;
pub mod demo;
pub mod discover;
pub mod error;
pub mod extract;
pub mod guards;
pub mod import;
pub mod known;
pub mod lang;
pub mod lower;
pub mod onnx;
pub mod prune;
pub mod raise;
pub mod report;
pub mod rules;
pub mod saturate;
pub mod verify;
pub mod write;

mod pipeline;

pub use error::{Result, SlimError};
pub use pipeline::{Slimmed, Slimmer};
