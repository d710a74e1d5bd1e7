//! The boundary's error: everything a request can fail on, each naming the offending file,
//! node, input or rule. The layers below have their own error types ([`IoError`] for files,
//! [`RuleError`] for rules, [`Mismatch`] for a verification that fails); they convert into
//! [`SlimError`] here, where the pass, auto-slim and the command line meet them.

use crate::io::IoError;
use crate::model::verify::Mismatch;
use crate::rules::parser::RuleError;

/// Every way model-slim can refuse a request. Each displays as one line naming what is wrong;
/// the fields say where (`path`: a file, `spec`: a command-line value, `message`: the cause).
#[derive(Debug, thiserror::Error)]
pub enum SlimError {
    /// A model file cannot be read, understood or written.
    #[error(transparent)]
    Io(#[from] IoError),
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
    /// Nothing was cut from a model some of whose layers have whole zero input channels: the
    /// rules do not reach them, and an unchanged file is not what was asked for.
    #[error("nothing was cut, though `{node}` has {zero} of {channels} input channels all zero (layers with zero input channels: {layers}){stop}; --allow-unchanged writes the model anyway")]
    NothingCut {
        /// Where the restriction of the first layer's inputs stops ("; the restriction stops
        /// at `N`: why"), or nothing.
        stop: String,
        /// The first such layer.
        node: String,
        /// Its zero input channels.
        zero: usize,
        /// Its input channels.
        channels: usize,
        /// How many layers have zero input channels.
        layers: usize,
    },
    /// A plan does not fit the model.
    #[error("{path}: bad plan: {message}")]
    Plan {
        /// The plan file.
        path: String,
        /// What does not fit.
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
    #[error(transparent)]
    Verification(#[from] Mismatch),
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
