//! The command line's arguments.

use clap::{Args, Parser, Subcommand};
use model_slim::Limits;
use model_slim::{import_onnx, parse_set, ImportOptions, InputSpec};
use model_slim::{SlimError, StatePair};
use std::path::{Path, PathBuf};
use tract_core::internal::*;

#[derive(Parser)]
#[command(
    name = "model-slim",
    version,
    about = "Cut the all-zero channels of pruned transformer and convolutional models out, exactly.",
    long_about = "Cut the all-zero channels and heads of pruned transformer and convolutional models out of their tract graphs, exactly:\nthe slimmed model computes what the original computes, with smaller weights and fewer FLOPs."
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 user error (bad file, flag, rule or plan), 2 verification failed\n(slimmed outputs differ), 70 internal error (a bug; please report it).\n\nStart with: model-slim demo"
)]
pub struct Cli {
    /// Print only errors (no tables, no progress).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more about what happens (-v: stages, -vv: details).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Slim an ONNX model and write it as NNEF.
    #[command(
        after_help = "Example:\n  model-slim slim bert_pruned.onnx -o bert_slim.nnef.tgz \\\n    -i input_ids:1,128,i64 -i attention_mask:1,128,i64 -i token_type_ids:1,128,i64 \\\n    --verify --report report.json"
    )]
    Slim {
        /// The ONNX model to slim.
        model: PathBuf,
        /// Where to write the slimmed model (.nnef.tgz or .nnef.tar).
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        options: PassOptions,
    },
    /// Choose FFN channels and heads to remove from a dense model, zero them, and slim.
    #[command(
        after_help = "Examples:\n  model-slim prune bert.onnx --ffn-sparsity 0.5 --mha-sparsity 0.3 -o bert_slim.nnef.tgz \\\n    --calibration calib.npz --plan-out plan.json --report report.json\n  model-slim prune bert.onnx --plan plan.json -o bert_slim.nnef.tgz --emit-pruned bert_pruned.onnx\n\nThe calibration file is an .npz with one array per model input, named after it; its first\naxis counts samples."
    )]
    Prune(PruneArgs),
    /// List the groups of channels and heads that can be removed together, changing nothing.
    #[command(
        after_help = "Example:\n  model-slim plan bert.onnx -i input_ids:1,128,i64 -i attention_mask:1,128,i64 -i token_type_ids:1,128,i64"
    )]
    Plan {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
    },
    /// Print the slimmable structure of a model (FFN widths, heads, zero units), changing nothing.
    #[command(
        after_help = "Examples:\n  model-slim show bert_pruned.onnx -i input_ids:1,128,i64 -i attention_mask:1,128,i64 -i token_type_ids:1,128,i64\n  model-slim show gpt2_pruned.onnx --set batch=1 --set sequence=128 --dot gpt2.dot   # then: dot -Tsvg gpt2.dot"
    )]
    Show {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        /// Write the graph before and after slimming as Graphviz DOT.
        #[arg(long, value_name = "FILE")]
        dot: Option<PathBuf>,
    },
    /// Measure original vs slimmed latency on tract's optimized plan, in one process.
    #[command(
        after_help = "Example:\n  model-slim bench bert_pruned.onnx -i input_ids:1,128,i64 -i attention_mask:1,128,i64 -i token_type_ids:1,128,i64 --threads 1\n\nBoth plans run alternately after warm-up; the medians, their ratio and the FLOP ratio (the ideal)\nare printed."
    )]
    Bench {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        /// Timed runs of each model.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Untimed warm-up runs of each model.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Threads for tract's matrix products (default: tract's, one).
        #[arg(long)]
        threads: Option<usize>,
        /// Write the measurements as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Check rules for soundness on random models: every alternative they create must compute
    /// what the original computes.
    #[command(
        after_help = "Examples:\n  model-slim check-rules                 # the default rules\n  model-slim check-rules my-rules --models 300\n\nEach rule of DIR is checked together with the default rules; an unsound one exits with 2."
    )]
    CheckRules {
        /// A directory of *.rules files to check (default: the built-in rules).
        dir: Option<PathBuf>,
        /// Seeds of random models to try (each gives a transformer-shaped model; every second
        /// a convolutional one too).
        #[arg(long, default_value_t = 60)]
        models: usize,
        /// Seed of the first model.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// List the guards rules may call, with the sorts of their arguments (Markdown).
    Guards,
    /// Slim a small transformer built into the binary and verify it.
    #[command(after_help = "Example:\n  model-slim demo --report demo.json")]
    Demo {
        /// Also write the slimmed demo model (.nnef.tgz or .nnef.tar).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write the report as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    /// Input fact NAME:DIM,...,TYPE (e.g. input_ids:1,128,i64); repeat per input.
    #[arg(short, long = "input", value_name = "NAME:DIMS,TYPE")]
    pub inputs: Vec<String>,
    /// Value of a symbolic dimension, SYM=VALUE (e.g. sequence=128); repeatable.
    #[arg(long = "set", value_name = "SYM=VALUE")]
    pub sets: Vec<String>,
    /// An input fed, on the next call, from an output of this one (a KV cache): its slices no
    /// kept computation reads are cut from both. The HF/optimum names (past_key_values.0.key
    /// and present.0.key, ...) pair by themselves; repeatable.
    #[arg(long = "state", value_name = "INPUT=OUTPUT")]
    pub states: Vec<String>,
}

impl ImportArgs {
    pub fn options(&self) -> Result<ImportOptions, SlimError> {
        let inputs = self
            .inputs
            .iter()
            .map(|s| s.parse::<InputSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        let sets = self
            .sets
            .iter()
            .map(|s| parse_set(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImportOptions {
            inputs,
            sets,
            states: self.state_pairs()?,
        })
    }

    /// The `--state` pairs.
    pub fn state_pairs(&self) -> Result<Vec<StatePair>, SlimError> {
        self.states
            .iter()
            .map(|spec| match spec.split_once('=') {
                Some((input, output)) if !input.is_empty() && !output.is_empty() => Ok(StatePair {
                    input: input.to_string(),
                    output: output.to_string(),
                }),
                _ => Err(SlimError::Usage(format!(
                    "--state {spec}: expected INPUT=OUTPUT"
                ))),
            })
            .collect()
    }

    /// Imports `path` with these input facts and symbol values.
    pub fn import(&self, path: &Path) -> Result<(TypedModel, Vec<(String, i64)>), SlimError> {
        let options = self.options()?;
        let model = import_onnx(path, &options)?;
        Ok((model, options.sets))
    }
}

#[derive(Args)]
pub struct PassOptions {
    #[command(flatten)]
    pub import: ImportArgs,
    /// Directory of extra *.rules files, added to the default rules.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Run original and slimmed models on seeded random inputs and compare outputs.
    #[arg(long)]
    pub verify: bool,
    /// Seed of the verification inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the report as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Saturation limit: rule iterations.
    #[arg(long, default_value_t = Limits::default().iterations)]
    pub max_iterations: usize,
    /// Saturation limit: e-nodes.
    #[arg(long, default_value_t = Limits::default().nodes)]
    pub max_nodes: usize,
    /// Saturation limit: seconds.
    #[arg(long, default_value_t = Limits::default().time.as_secs_f64())]
    pub max_seconds: f64,
    /// Write the model even when nothing was cut from it although some layer has whole zero
    /// input channels (else an error naming that layer).
    #[arg(long)]
    pub allow_unchanged: bool,
}

/// Arguments of `prune`.
#[derive(Args)]
pub struct PruneArgs {
    /// The ONNX model to prune.
    pub model: PathBuf,
    /// Where to write the slimmed model (.nnef.tgz or .nnef.tar).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Fraction of FFN channels to remove (per layer, or overall with --global).
    #[arg(long, default_value_t = 0.0)]
    pub ffn_sparsity: f64,
    /// Fraction of attention heads to remove (per layer, or overall with --global).
    #[arg(long, default_value_t = 0.0)]
    pub mha_sparsity: f64,
    /// Spend each sparsity as one budget of weights across layers, where removing costs least
    /// (removal cost by default, normalised scores with another --score or without calibration),
    /// instead of the same fraction in every layer. A layer loses at most twice the fraction.
    #[arg(long)]
    pub global: bool,
    /// With --global: what a removal costs — the layer's own reconstruction error, or the
    /// measured change of the model's outputs (token by token, or as mean-pooled sentence
    /// embeddings) with the layer alone cut (needs --calibration; three runs of the model on
    /// 16 calibration samples per layer). (default: reconstruction)
    #[arg(long, value_enum, value_name = "COST")]
    pub global_cost: Option<GlobalCostArg>,
    /// With --global: the fraction of each layer's channels and heads kept at least.
    /// (default: 0.1)
    #[arg(long, value_name = "FRACTION")]
    pub floor: Option<f64>,
    /// Round each kept FFN width to a multiple of N.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub multiple_of: usize,
    /// Round kept query heads to a multiple of N (per KV group with grouped-query attention).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub heads_multiple_of: usize,
    /// How grouped-query attention loses query heads: as many from every KV group (the layout
    /// every loader accepts), whole KV groups (their query heads and KV head, and in a
    /// generation step the KV head's slice of the cache), or any. (default: equal)
    #[arg(long, value_enum)]
    pub kv_layout: Option<KvLayoutArg>,
    /// Calibration inputs (.npz): activation-aware scores and the consumers' repair, over the
    /// real tokens the model's attention mask marks.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Inputs (.npz) to measure fidelity on, not used for calibration.
    #[arg(long)]
    pub heldout: Option<PathBuf>,
    /// Memory calibration statistics may take at once, in GB (default: the model's weight
    /// bytes, at least 4 GiB). Each layer's statistics hold Gram matrices of its width
    /// squared; when all of them do not fit, layers are calibrated in several passes.
    #[arg(long, value_name = "GB")]
    pub statistics_memory: Option<f64>,
    /// How calibrated data chooses units (default: removal-cost): greedy least-squares removal (each unit removed is the
    /// one whose loss, with the consumer refit on the rest, costs least), the variance of each
    /// unit's contribution (FLAP's fluctuation), or its mean size (|activation| × weight norm for
    /// channels, contribution norm for heads).
    #[arg(long, value_enum)]
    pub score: Option<ScoreArg>,
    /// How the consumers of removed units are repaired with calibration data: a ridge
    /// least-squares refit of their kept weights and bias (the default; an ONNX output holds
    /// the refit weights in place of the file's), their mean contribution added to the bias, or
    /// nothing.
    #[arg(long, value_enum)]
    pub repair: Option<RepairArg>,
    /// Same as --repair none.
    #[arg(long)]
    pub no_compensation: bool,
    /// Apply this saved plan (JSON) instead of choosing.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Write the chosen plan as JSON.
    #[arg(long)]
    pub plan_out: Option<PathBuf>,
    /// Also write the pruned, full-size model as ONNX (zeros and repairs in its initializers).
    #[arg(long)]
    pub emit_pruned: Option<PathBuf>,
    #[command(flatten)]
    pub import: ImportArgs,
    /// Seed of the random inputs fidelity is measured on without calibration data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the report as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// `--score`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreArg {
    /// Mean |activation| times the consumer row's norm (heads: contribution norm).
    Activation,
    /// Variance of the channel's contribution to the consumer's output.
    Fluctuation,
    /// Greedy least-squares removal: each unit removed is the cheapest with the rest refit.
    RemovalCost,
}

/// `--kv-layout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KvLayoutArg {
    /// As many query heads from every KV group.
    Equal,
    /// Whole KV groups.
    Whole,
    /// Any query heads.
    Any,
}

/// `--global-cost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GlobalCostArg {
    /// The layer's own error after its consumer is refit.
    Reconstruction,
    /// The model's outputs (squared relative error), measured with the layer alone cut.
    Outputs,
    /// Mean-pooled sentence embeddings (1 − cosine), measured with the layer alone cut.
    Embeddings,
}

/// `--repair`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RepairArg {
    /// Refit the consumer's kept weights and bias by ridge least squares.
    LeastSquares,
    /// Add the removed units' mean contribution to the consumer's bias.
    Compensation,
    /// Zeros only.
    None,
}
