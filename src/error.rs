//! Errors a user can cause, each naming the offending file, node, input or rule.

use crate::rules::RuleError;

/// Every way model-slim can refuse a request.
#[derive(Debug, thiserror::Error)]
pub enum SlimError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} is not a valid ONNX model: {message}")]
    NotOnnx { path: String, message: String },
    #[error(
        "bad --input `{spec}`: {message} (expected NAME:DIM,...,TYPE such as input_ids:1,128,i64)"
    )]
    InputSpec { spec: String, message: String },
    #[error("bad --set `{spec}`: expected SYMBOL=INTEGER such as sequence=128")]
    SetSpec { spec: String },
    #[error("{path}: no model input named `{name}` (the inputs are: {known})")]
    UnknownInput {
        path: String,
        name: String,
        known: String,
    },
    #[error("{path}: tract cannot analyse the model: {message}{hint}")]
    Analysis {
        path: String,
        message: String,
        hint: String,
    },
    #[error(transparent)]
    Rules(#[from] RuleError),
    #[error("{stage} failed: {message}")]
    Stage {
        stage: &'static str,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{path}: bad calibration data: {message}")]
    Calibration { path: String, message: String },
    #[error("{path}: bad plan: {message}")]
    Plan { path: String, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: String, message: String },
    #[error("verification failed: output `{output}` differs by {diff:e}, over the tolerance {tolerance:e}")]
    Verification {
        output: String,
        diff: f32,
        tolerance: f32,
    },
}

impl SlimError {
    /// Wraps a tract error raised in a pipeline stage, keeping its whole chain on one line.
    pub fn stage(stage: &'static str, error: impl std::fmt::Display) -> SlimError {
        SlimError::Stage {
            stage,
            message: format!("{error:#}"),
        }
    }
}

pub type Result<T> = std::result::Result<T, SlimError>;
