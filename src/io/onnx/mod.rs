//! ONNX output: the user's own file edited. [`proto`] reads and re-encodes the protobuf keeping
//! what it does not know, [`restrict`] carries restrictions back through the ONNX graph,
//! [`convs`] gives cut convolutions the weights and groups of the slimmed model ([`parts`]:
//! those tract split over a concatenation's and a split's parts), and
//! [`writeback`] derives the cuts from the slimmed tract model and writes the checked file.
//! [`external`] reads tensors kept in external data files and writes them out again.
//! Whatever cannot be edited is an [`EditError`] naming the node or tensor.

pub(crate) mod convs;
mod error;
pub(crate) mod external;
pub(crate) mod parts;
pub(crate) mod proto;
pub(crate) mod restrict;
pub(crate) mod writeback;

pub use error::EditError;
