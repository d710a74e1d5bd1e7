//! The e-graph language: one e-node kind per family of tract operations that rules reason about.
//!
//! Operation parameters (a tract op, a constant tensor, a set of channel indices, a model input)
//! live outside the e-graph in [`crate::egraph::analysis::Tables`]; the e-graph holds small [`Key`] leaves
//! pointing at them, so a rule can bind an op with `?op` and hand it to a guard.
//!
//! ```text
//! (map op x)            element-wise unary op (GELU, tanh, cast, ...)
//! (bin op a b)          element-wise binary op with NumPy broadcasting (add, mul, max, ...)
//! (einsum op a b)       two-operand EinSum (linear layers, attention products)
//! (along op x)          op acting along its own axes only (softmax, reduce, RMS norm, slice)
//! (axis op x)           axis bookkeeping (reshape, add/remove/move axis)
//! (where op c x y)      element-wise choice: x where c holds, else y (ONNX Where, tract Iff)
//! (bcast op x)          x broadcast to a larger shape (ONNX Expand, tract MultiBroadcastTo)
//! (concat op x y)       two tensors side by side along the op's axis (tract TypedConcat)
//! (conv op x k b)       convolution of x by kernel k plus bias b (tract Conv, float)
//! (keep axis set x)     x restricted to the slices `set` of `axis` (introduced by rules)
//! (opaque op slot x..)  any other op's output `slot`: rules never look through it
//! ```

use crate::model::ops::Family;
use egg::{define_language, Id};
use std::fmt;
use std::str::FromStr;

/// A handle to data kept beside the e-graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A tract operator (index into `Tables::ops`).
    Op(u32),
    /// A constant tensor (index into `Tables::consts`).
    Const(u32),
    /// A sorted set of kept slice indices (index into `Tables::sets`).
    Set(u32),
    /// The model input of this position.
    Input(u32),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Op(k) => write!(f, "op{k}"),
            Key::Const(k) => write!(f, "const{k}"),
            Key::Set(k) => write!(f, "set{k}"),
            Key::Input(k) => write!(f, "input{k}"),
        }
    }
}

impl FromStr for Key {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let split = s
            .find(|c: char| c.is_ascii_digit())
            .ok_or_else(|| format!("not a key: {s}"))?;
        let (kind, index) = s.split_at(split);
        let index: u32 = index.parse().map_err(|_| format!("not a key: {s}"))?;
        match kind {
            "op" => Ok(Key::Op(index)),
            "const" => Ok(Key::Const(index)),
            "set" => Ok(Key::Set(index)),
            "input" => Ok(Key::Input(index)),
            _ => Err(format!("not a key: {s}")),
        }
    }
}

/// What a position of a term holds, so that rules can be checked before they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// A tensor: an operation node, a constant or a model input.
    Tensor,
    /// A tract operator (`Key::Op`).
    Op,
    /// An axis number.
    Axis,
    /// A set of kept slices (`Key::Set`).
    Set,
    /// An integer literal (an operand position, an output slot).
    Int,
}

impl Sort {
    /// The sort's name with its article ("an op", "a tensor"), for messages.
    pub fn a(self) -> &'static str {
        match self {
            Sort::Tensor => "a tensor",
            Sort::Op => "an op",
            Sort::Axis => "an axis",
            Sort::Set => "a set",
            Sort::Int => "an integer",
        }
    }
}

impl fmt::Display for Sort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sort::Tensor => "tensor",
            Sort::Op => "op",
            Sort::Axis => "axis",
            Sort::Set => "set",
            Sort::Int => "integer",
        })
    }
}

define_language! {
    /// The tensor language model-slim's rules are written in; the module docs say what each
    /// term means (egg's macro takes no docs on variants).
    #[allow(missing_docs)]
    pub enum TensorLang {
        "map" = Map([Id; 2]),
        "bin" = Bin([Id; 3]),
        "einsum" = EinSum([Id; 3]),
        "along" = Along([Id; 2]),
        "axis" = Axis([Id; 2]),
        "keep" = Keep([Id; 3]),
        "where" = Where([Id; 4]),
        "bcast" = Bcast([Id; 2]),
        "concat" = Concat([Id; 3]),
        "conv" = Conv([Id; 4]),
        "opaque" = Opaque(Box<[Id]>),
        Num(i64),
        Key(Key),
    }
}

impl TensorLang {
    /// The sort of child `index` of a node with this operator.
    pub fn child_sort(&self, index: usize) -> Sort {
        match (self, index) {
            (TensorLang::Keep(_), 0) => Sort::Axis,
            (TensorLang::Keep(_), 1) => Sort::Set,
            (TensorLang::Opaque(_), 1) => Sort::Int,
            (_, 0) => Sort::Op,
            _ => Sort::Tensor,
        }
    }

    /// The children that are tensors (not op/axis/set parameters), in operand order.
    pub fn operands(&self) -> &[Id] {
        match self {
            TensorLang::Map(c)
            | TensorLang::Along(c)
            | TensorLang::Axis(c)
            | TensorLang::Bcast(c) => &c[1..],
            TensorLang::Bin(c) | TensorLang::EinSum(c) | TensorLang::Concat(c) => &c[1..],
            TensorLang::Where(c) | TensorLang::Conv(c) => &c[1..],
            TensorLang::Keep(c) => &c[2..],
            TensorLang::Opaque(c) => &c[2..],
            TensorLang::Num(_) | TensorLang::Key(_) => &[],
        }
    }

    /// The family of tract ops an operation node stands for (`None`: `keep`, numbers, keys).
    pub fn family(&self) -> Option<Family> {
        Some(match self {
            TensorLang::Map(_) => Family::Map,
            TensorLang::Bin(_) => Family::Bin,
            TensorLang::EinSum(_) => Family::EinSum,
            TensorLang::Along(_) => Family::Along,
            TensorLang::Axis(_) => Family::Axis,
            TensorLang::Where(_) => Family::Where,
            TensorLang::Bcast(_) => Family::Bcast,
            TensorLang::Concat(_) => Family::Concat,
            TensorLang::Conv(_) => Family::Conv,
            TensorLang::Opaque(_) => Family::Opaque,
            TensorLang::Keep(_) | TensorLang::Num(_) | TensorLang::Key(_) => return None,
        })
    }

    /// The op parameter of an operation node.
    pub fn op_child(&self) -> Option<Id> {
        match self {
            TensorLang::Map(c)
            | TensorLang::Along(c)
            | TensorLang::Axis(c)
            | TensorLang::Bcast(c) => Some(c[0]),
            TensorLang::Bin(c) | TensorLang::EinSum(c) | TensorLang::Concat(c) => Some(c[0]),
            TensorLang::Where(c) | TensorLang::Conv(c) => Some(c[0]),
            TensorLang::Opaque(c) => Some(c[0]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_text() {
        for key in [Key::Op(3), Key::Const(0), Key::Set(12), Key::Input(1)] {
            assert_eq!(key.to_string().parse::<Key>().unwrap(), key);
        }
        assert!("weights7".parse::<Key>().is_err());
        assert!("op".parse::<Key>().is_err());
    }

    #[test]
    fn patterns_parse_in_the_language() {
        let pattern: egg::Pattern<TensorLang> = "(keep ?a ?i (map ?f ?x))".parse().unwrap();
        assert_eq!(pattern.vars().len(), 4);
    }
}
