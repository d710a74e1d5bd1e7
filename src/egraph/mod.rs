//! The e-graph: its language, the analysis that types every tensor and knows its zero and
//! constant slices, the constants behind it, and the passes between tract and e-graph form
//! (lower, extract, raise).

pub(crate) mod analysis;
pub(crate) mod consts;
pub(crate) mod extract;
pub(crate) mod known;
pub(crate) mod lang;
pub(crate) mod lower;
pub(crate) mod raise;
pub(crate) mod state;
pub(crate) mod zeros;
