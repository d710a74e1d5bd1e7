//! Errors of reading and writing model files, each naming the file (or command-line value).

use crate::io::onnx::EditError;

/// What every ONNX output that cannot be written says to do instead: NNEF needs no edit of the
/// source file.
pub(crate) const NNEF_INSTEAD: &str =
    "the ONNX writer cannot express this slimming: write NNEF, .nnef.tgz";

/// Why a model file cannot be read, understood or written. Each displays as one line naming the
/// offending file or command-line value.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A file cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A file is not a valid ONNX model.
    #[error("{path} is not a valid ONNX model: {message}")]
    NotOnnx {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The model holds tensors of a type tract cannot run.
    #[error("{path}: {what} is {onnx_type}, which tract cannot run (it has no such type); convert the model to float16 or float32 first, e.g. `model.half()` before exporting")]
    UnsupportedType {
        /// The file.
        path: String,
        /// The first tensor of that type.
        what: String,
        /// The ONNX type's name.
        onnx_type: String,
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
    /// tract fails on a model it typed (declutter, symbol substitution).
    #[error("import failed: {message}")]
    Import {
        /// tract's reason, on one line.
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
    /// The ONNX file cannot be edited as the slimming asks (nothing is left at `path` then).
    #[error("cannot write {path}: {source} ({})", NNEF_INSTEAD)]
    Edit {
        /// The output file.
        path: String,
        /// The edit that failed.
        source: EditError,
    },
}

impl IoError {
    /// A read failure of `path`.
    pub fn read(path: &std::path::Path, error: impl std::fmt::Display) -> IoError {
        IoError::Read {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }

    /// A write failure of `path`; tract errors keep their whole chain on one line.
    pub fn write(path: &std::path::Path, error: impl std::fmt::Display) -> IoError {
        IoError::Write {
            path: path.display().to_string(),
            message: format!("{error:#}"),
        }
    }
}

/// A result whose error is an [`IoError`].
pub type IoResult<T> = std::result::Result<T, IoError>;
