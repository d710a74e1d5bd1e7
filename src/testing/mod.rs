//! Test tooling, not part of the documented API: random models in the family the pass targets,
//! the rule checker, and the e-graph internals the soundness tests build terms with.

pub mod check;
pub mod random;

pub use crate::egraph::analysis::{op_of, SlimAnalysis, SlimGraph, Tables};
pub use crate::egraph::extract::extract;
pub use crate::egraph::lang::{Key, TensorLang};
pub use crate::egraph::lower::lower;
pub use crate::egraph::raise::{raise, Interface};
pub use crate::rules::saturate::saturate;
