//! The rule engine: `*.rules` files parsed into rules, the guard library they call, the applier
//! that adds their right-hand sides, and saturation under limits.

pub(crate) mod apply;
pub(crate) mod guards;
pub(crate) mod parser;
pub(crate) mod saturate;
