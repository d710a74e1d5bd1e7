//! Auto-slim: from a dense model and target sparsities, choose units (with calibration data),
//! write them into the model as zeros, and run the pass.

pub(crate) mod auto;
pub(crate) mod calibrated;
pub(crate) mod calibration;
pub(crate) mod choice;
pub(crate) mod passes;
pub(crate) mod prune;
pub(crate) mod refit;
pub(crate) mod sensitivity;
