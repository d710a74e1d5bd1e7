//! The bottom layer: slices of tensors along an axis, files written atomically, work spread
//! over the cores.

pub(crate) mod files;
pub(crate) mod parallel;
pub(crate) mod slices;
