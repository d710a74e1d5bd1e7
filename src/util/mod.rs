//! The bottom layer: slices of tensors along an axis, and files written atomically.

pub(crate) mod files;
pub(crate) mod slices;
