//! Loop-carried state: a model input whose value the caller takes from an output of the
//! previous call, as a decoder's generation step takes its KV cache (`past_key_values.{i}.key`
//! in, `present.{i}.key` out).

use serde::Serialize;
use tract_core::internal::*;

/// An input that receives, on the next call, what an output gave on this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatePair {
    /// The model input (`past_key_values.0.key`).
    pub input: String,
    /// The model output it is fed from (`present.0.key`).
    pub output: String,
}

/// A state pair cut to some slices along one axis (a KV cache to the heads kept): the slimmed
/// model's input and output hold those slices of the original's, in order. Exact over any
/// number of calls when the original's output slices depend only on the input's, and nothing
/// else the model computes reads the other slices: fed its own state, the slimmed model then
/// computes what the original computes, call after call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateCut {
    /// The pair, by name.
    pub pair: StatePair,
    /// The model input's position.
    pub input: usize,
    /// The model output's position.
    pub output: usize,
    /// The axis cut.
    pub axis: usize,
    /// Its size before.
    pub before: usize,
    /// The slices kept, in order.
    pub kept: Vec<usize>,
}

/// The `pairs` that name an input and an output among `inputs` and `outputs`, with those
/// positions.
pub fn state_positions(
    pairs: &[StatePair],
    inputs: &[String],
    outputs: &[String],
) -> Vec<(StatePair, usize, usize)> {
    pairs
        .iter()
        .filter_map(|pair| {
            let input = inputs.iter().position(|n| *n == pair.input)?;
            let output = outputs.iter().position(|n| *n == pair.output)?;
            Some((pair.clone(), input, output))
        })
        .collect()
}

/// Whether `output` can be fed back as `input` on the next call: the same type and rank, and
/// the same sizes but along at most one axis (the one a cache grows along).
pub fn feeds_back(input: &TypedFact, output: &TypedFact) -> bool {
    let (a, b) = (&input.shape, &output.shape);
    input.datum_type == output.datum_type
        && a.rank() == b.rank()
        && (0..a.rank()).filter(|k| a[*k] != b[*k]).count() <= 1
}

/// Bytes a state pair holds per token (per step of its growing axis, at batch 1): the
/// elements of the input's other axes but batch (axis 0), with `cut`'s axis at its kept size.
/// The growing axis is the one where the output's size differs from the input's (a cache's
/// past + new tokens against its past); `None` when there is not exactly one, or another size
/// is symbolic.
pub fn bytes_per_token(
    input: &TypedFact,
    output: &TypedFact,
    cut: Option<&StateCut>,
) -> Option<usize> {
    let (a, b) = (&input.shape, &output.shape);
    if a.rank() != b.rank() {
        return None;
    }
    let growing: Vec<usize> = (0..a.rank()).filter(|k| a[*k] != b[*k]).collect();
    let [growing] = growing[..] else {
        return None;
    };
    let mut elements = 1;
    for k in (1..a.rank()).filter(|k| *k != growing) {
        elements *= match cut {
            Some(cut) if cut.axis == k => cut.kept.len(),
            _ => a[k].to_usize().ok()?,
        };
    }
    Some(elements * input.datum_type.size_of())
}

/// The prefix of cache inputs in the HF/optimum layout, and that of the matching outputs.
const CACHE_INPUT: &str = "past_key_values.";
const CACHE_OUTPUT: &str = "present.";

/// The state pairs these inputs and outputs form by the HF/optimum names: `past_key_values.X`
/// ↔ `present.X` for any `X` (`0.key`, `0.value`, and seq2seq decoders' `0.decoder.key`,
/// `0.encoder.value`, …), in the order of `inputs`.
pub fn named_state_pairs(inputs: &[String], outputs: &[String]) -> Vec<StatePair> {
    inputs
        .iter()
        .filter_map(|input| {
            let rest = input.strip_prefix(CACHE_INPUT)?;
            let output = outputs
                .iter()
                .find(|o| o.strip_prefix(CACHE_OUTPUT) == Some(rest))?;
            Some(StatePair {
                input: input.clone(),
                output: output.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cache_inputs_pair_with_the_outputs_of_the_same_name() {
        let inputs = names(&[
            "input_ids",
            "past_key_values.0.key",
            "past_key_values.0.value",
            "past_key_values.1.decoder.key",
        ]);
        let outputs = names(&[
            "logits",
            "present.0.value",
            "present.0.key",
            "present.1.decoder.key",
        ]);
        let pairs = named_state_pairs(&inputs, &outputs);
        let found: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| (p.input.as_str(), p.output.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("past_key_values.0.key", "present.0.key"),
                ("past_key_values.0.value", "present.0.value"),
                ("past_key_values.1.decoder.key", "present.1.decoder.key"),
            ]
        );
    }

    #[test]
    fn a_state_feeds_back_what_differs_along_one_axis_only() {
        let fact = |dims: &[usize]| f32::fact(dims);
        assert!(feeds_back(&fact(&[1, 4, 7, 6]), &fact(&[1, 4, 8, 6])));
        assert!(feeds_back(&fact(&[1, 4, 7, 6]), &fact(&[1, 4, 7, 6])));
        assert!(!feeds_back(&fact(&[1, 4, 7, 6]), &fact(&[1, 2, 8, 6])));
        assert!(!feeds_back(&fact(&[1, 4, 7, 6]), &fact(&[1, 1, 40])));
        assert!(!feeds_back(&fact(&[1, 4, 7, 6]), &i64::fact([1, 4, 8, 6])));
    }

    #[test]
    fn an_input_without_its_output_is_no_state() {
        let inputs = names(&["past_key_values.0.key", "past_key_values.0.value"]);
        let outputs = names(&["present.0.key", "present.1.value"]);
        assert_eq!(named_state_pairs(&inputs, &outputs).len(), 1);
    }
}
