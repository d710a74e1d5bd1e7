//! Why an ONNX file cannot be edited the way a slimming asks, naming the node or tensor.

/// A slimming that cannot be replayed on an ONNX file. Each names the ONNX node or tensor
/// (initializer) concerned.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The model has no graph.
    #[error("the model has no graph")]
    NoGraph,
    /// The protobuf is malformed where it is re-encoded.
    #[error("malformed protobuf: {0}")]
    Protobuf(&'static str),
    /// The protobuf does not decode as an ONNX message.
    #[error("malformed protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A tensor that must be a constant is computed.
    #[error("`{0}` is not an initializer")]
    NotInitializer(String),
    /// A `Constant` node without a tensor value.
    #[error("Constant `{0}` has no tensor value")]
    ConstantWithoutValue(String),
    /// A float tensor is expected.
    #[error("`{0}` is not a float tensor (float32, float16 or float64)")]
    NotFloat(String),
    /// An integer tensor is expected.
    #[error("`{0}` is not an integer tensor")]
    NotInteger(String),
    /// A tensor whose element type has no fixed size.
    #[error("`{0}` has an element type without a fixed size")]
    UnsupportedType(String),
    /// A refit weight's values are not in the layout of the file's weight.
    #[error("`{0}` does not hold the weights its least-squares refit started from in a layout the writer knows, so the refit cannot be written into it (use --repair compensation)")]
    RefitLayout(String),
    /// A tensor keeps its data in an external file.
    #[error("`{0}` keeps its data outside the file")]
    ExternalData(String),
    /// An axis past a tensor's rank.
    #[error("`{tensor}`: axis {axis} out of rank {rank}")]
    AxisOutOfRank {
        /// The tensor.
        tensor: String,
        /// The axis asked.
        axis: usize,
        /// The tensor's rank.
        rank: usize,
    },
    /// A slice past an axis's size.
    #[error("`{tensor}`: slice out of range {size}")]
    SliceOutOfRange {
        /// The tensor.
        tensor: String,
        /// The axis's size.
        size: usize,
    },
    /// An entry past the end of a shape vector.
    #[error("`{tensor}`: entry {position} out of range")]
    EntryOutOfRange {
        /// The tensor.
        tensor: String,
        /// The entry asked.
        position: usize,
    },
    /// A bias whose length differs from the constants folded into it.
    #[error("bias `{bias}` has {has} values, the folded constants {folded}")]
    BiasLength {
        /// The bias.
        bias: String,
        /// Its length.
        has: usize,
        /// The folded constants' length.
        folded: usize,
    },
    /// Constants would be folded into a bias added after a model output.
    #[error("`{0}` is a model output and has no bias to fold constants into")]
    OutputWithoutBias(String),
    /// A shape input (reshape target, expand shape, split sizes) that cannot be read.
    #[error("`{0}`: cannot read its shape input")]
    UnreadableShape(String),
    /// A tensor whose shape tract's analysis of the file does not give.
    #[error("`{0}`: the shape of its input is unknown")]
    UnknownShape(String),
    /// No ONNX node behind a tract node.
    #[error("no ONNX node behind `{0}`")]
    NoOnnxNode(String),
    /// A linear node whose weight cannot be found.
    #[error("cannot find the weight of ONNX node `{0}`")]
    NoWeight(String),
    /// A consumer's weight rows are not a whole number per unit.
    #[error("`{node}`: {units} units do not divide {rows} rows")]
    UnitRows {
        /// The consumer node.
        node: String,
        /// Its units.
        units: usize,
        /// Its weight rows.
        rows: usize,
    },
    /// Edits left nodes whose inputs nothing computes.
    #[error("the edited graph has a cycle or a missing input")]
    Cycle,
    /// The edited file, reloaded, does not have the slimmed widths.
    #[error("`{node}` did not shrink as slimming did: it has {found} units, slimming kept {kept}")]
    NotShrunk {
        /// The consumer.
        node: String,
        /// Its units in the edited file (as discovered there; none when no group is found).
        found: String,
        /// Its units slimming kept.
        kept: usize,
    },
    /// A state input or output slimming cut (a KV cache) whose cut the edits of the ONNX graph
    /// around it do not meet.
    #[error("the state `{0}` cannot be cut in the ONNX graph as slimming cut it")]
    StateNotCut(String),
    /// Slimming cut weights the writer cannot replay on the ONNX file (it replays FFN channels,
    /// attention heads and convolutions): the file would be written unchanged.
    #[error("slimming cut {removed} zero input channels the ONNX writer cannot replay (it replays FFN channels, attention heads and convolutions; here no such cut was found)")]
    Unreplayed {
        /// Zero input channels of consumers slimming removed.
        removed: usize,
    },
    /// The slimming cannot be read off the tract models (a tract error).
    #[error("cannot map the slimming back to ONNX: {0}")]
    Unmapped(String),
}

/// A result whose error is an [`EditError`].
pub type EditResult<T> = std::result::Result<T, EditError>;
