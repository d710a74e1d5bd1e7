//! model-slim: cut the all-zero channels and heads of structurally pruned transformer models out
//! of their tract graphs, exactly — the slimmed model computes what the original computes (up to
//! float rounding), with smaller weights and fewer FLOPs.
//!
//! ## Use
//!
//! - [`Slimmer`]: the pass, configured by a builder, on any typed tract model (ONNX or not).
//! - [`auto`]: auto-slim — choose units to remove from a dense model for target sparsities.
//! - [`transform`]: the pass as tract's `model-slim` transform, for tract deployments.
//!
//! ```
//! use model_slim::import::{import_onnx, ImportOptions};
//! use model_slim::Slimmer;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = import_onnx("tests/fixtures/bert_mixed_dynamo.onnx".as_ref(), &ImportOptions::default())?;
//! let slimmed = Slimmer::new()?.with_verification(Some(0)).slim(&model)?;
//! print!("{}", slimmed.report.table());
//! assert!(slimmed.report.flops_after < slimmed.report.flops_before);
//! # Ok(()) }
//! ```
//!
//! ## Stages
//!
//! One module each, data flowing one way: [`import`] (ONNX → typed tract) → [`lower`] (tract →
//! e-graph, typed by [`analysis`]) → [`saturate`] (the rules of `rules/`, parsed by [`rules`],
//! computed by [`guards`], applied by [`apply`]) → [`extract`] (cheapest equivalent graph under
//! [`cost`]) → [`raise`] (e-graph → tract) → [`mod@write`] / [`verify`]. Auto-slim runs
//! [`discover`] → [`calibration`] → [`prune`] in front of them.

#![warn(missing_docs)]

pub mod analysis;
pub mod apply;
pub mod auto;
pub mod bench;
pub mod calibration;
pub mod check;
pub mod consts;
pub mod cost;
pub mod demo;
pub mod discover;
pub mod dot;
pub mod error;
pub mod extract;
pub mod guards;
pub mod import;
pub mod known;
pub mod lang;
pub mod lower;
pub mod onnx;
pub mod onnx_restrict;
pub mod prune;
pub mod raise;
pub mod random;
pub mod report;
pub mod rules;
pub mod saturate;
pub mod transform;
pub mod verify;
pub mod write;
pub mod writeback;

mod pipeline;

pub use error::{Result, SlimError};
pub use pipeline::{Observer, Slimmed, Slimmer, Stage};
