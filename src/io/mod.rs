//! Model files: ONNX in (typed and decluttered by tract), NNEF and ONNX out, each written file
//! loaded back and checked before it is kept. Every failure is an [`IoError`] naming the file.

mod error;
pub(crate) mod import;
pub(crate) mod nnef;
pub(crate) mod onnx;

pub use error::{IoError, IoResult};
