//! Tools around the pass: latency comparison, Graphviz output, tract's model transform, and a
//! demo encoder built with tract's API.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod dot;
pub(crate) mod transform;
