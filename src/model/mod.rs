//! Facts about tract models that every layer above needs: the cost model, the groups of units
//! slimming removes together (FFN channels, heads), and running models to compare them.

pub(crate) mod cost;
pub(crate) mod discover;
pub(crate) mod ops;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod verify;
