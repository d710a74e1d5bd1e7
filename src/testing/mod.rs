//! Test tooling, not part of the documented API: random models in the family the pass targets,
//! the rule checker, and the e-graph internals the soundness tests build terms with.

pub mod check;
pub mod random;
pub mod random_conv;

pub use crate::egraph::analysis::{op_of, SlimAnalysis, SlimGraph, Tables};
pub use crate::egraph::extract::extract;
pub use crate::egraph::lang::{Key, TensorLang};
pub use crate::egraph::lower::lower;
pub use crate::egraph::raise::{raise, Interface};
pub use crate::rules::saturate::saturate;

/// The checkout the running test or example belongs to, as cargo sets it when it runs them.
///
/// Read when running, not baked in with `env!` when compiling: cargo judges a compiled binary
/// fresh by file times, so a target directory shared by several checkouts may run a binary
/// compiled in another checkout, which would then read that checkout's files.
pub fn checkout() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("CARGO_MANIFEST_DIR (set by `cargo test` and `cargo run`)")
        .into()
}
