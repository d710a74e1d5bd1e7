//! Errors a user can cause, each naming the offending file, node, input or rule.

use crate::rules::parser::RuleError;

/// Every way model-slim can refuse a request. Each displays as one line naming what is wrong;
/// the fields say where (`path`: a file, `spec`: a command-line value, `message`: the cause).
#[derive(Debug, thiserror::Error)]
pub enum SlimError {
    /// A file cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A file is not a valid ONNX model (or does not fit the edit asked of it).
    #[error("{path} is not a valid ONNX model: {message}")]
    NotOnnx {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A malformed `--input`.
    #[error(
        "bad --input `{spec}`: {message} (expected NAME:DIM,...,TYPE such as input_ids:1,128,i64)"
    )]
    InputSpec {
        /// The value given.
        spec: String,
        /// What is wrong with it.
        message: String,
    },
    /// A malformed `--set`.
    #[error("bad --set `{spec}`: expected SYMBOL=INTEGER such as sequence=128")]
    SetSpec {
        /// The value given.
        spec: String,
    },
    /// An `--input` names no input of the model.
    #[error("{path}: no model input named `{name}` (the inputs are: {known})")]
    UnknownInput {
        /// The model file.
        path: String,
        /// The name given.
        name: String,
        /// The model's input names.
        known: String,
    },
    /// tract cannot type the model.
    #[error("{path}: tract cannot analyse the model: {message}{hint}")]
    Analysis {
        /// The model file.
        path: String,
        /// tract's reason.
        message: String,
        /// What to try (e.g. the `-i` flags to give), or empty.
        hint: String,
    },
    /// A rules file is wrong.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// A stage of the pass failed (an internal limit or a tract error).
    #[error("{stage} failed: {message}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// The cause, on one line.
        message: String,
    },
    /// Command-line values that do not make sense together or alone.
    #[error("{0}")]
    Usage(String),
    /// A calibration file does not fit the model.
    #[error("{path}: bad calibration data: {message}")]
    Calibration {
        /// The file.
        path: String,
        /// What does not fit.
        message: String,
    },
    /// A sparsity was asked of a kind of unit the model has no group of.
    #[error("{what} asks to prune what is not there: {reason}")]
    NothingToPrune {
        /// The request.
        what: String,
        /// What was found instead.
        reason: String,
    },
    /// A plan does not fit the model.
    #[error("{path}: bad plan: {message}")]
    Plan {
        /// The plan file.
        path: String,
        /// What does not fit.
        message: String,
    },
    /// An output cannot be written (nothing is left at `path` then).
    #[error("cannot write {path}: {message}")]
    Write {
        /// The output file.
        path: String,
        /// Why.
        message: String,
    },
    /// A rule rewrites to something that computes differently (found by `check-rules`).
    #[error("rule `{rule}` is unsound: {failure}")]
    Unsound {
        /// The rule.
        rule: String,
        /// The first alternative it made that computes differently.
        failure: String,
    },
    /// The slimmed model's outputs differ from the original's beyond float rounding.
    #[error("verification failed: output `{output}` differs by {diff:e}, over the tolerance {tolerance:e}")]
    Verification {
        /// The first output that differs.
        output: String,
        /// Its largest absolute difference.
        diff: f32,
        /// The tolerance (relative to the output's magnitude).
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

/// A result whose error is a [`SlimError`].
pub type Result<T> = std::result::Result<T, SlimError>;
