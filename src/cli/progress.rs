//! What the command line tells the user besides results: progress spinners on a terminal, and
//! log lines (through `tracing`) at the chosen verbosity.

use indicatif::{ProgressBar, ProgressStyle};
use model_slim::{AutoObserver, AutoStage, Observer, Stage};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// Sets up logging to standard error: errors only with `-q`, warnings by default, more with
/// each `-v`.
pub fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, 2) => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
}

/// Starts a new peak-memory measurement (Linux: `/proc/self/clear_refs`; elsewhere nothing).
fn reset_peak_memory() {
    // Where the kernel refuses, the peak counts from the start of the process instead.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident memory since the last reset, in MB (Linux only).
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Spinners for long stages; silent unless standard output is a terminal and not `-q`.
#[derive(Clone)]
pub struct Progress {
    shown: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            shown: !quiet && std::io::stdout().is_terminal(),
        }
    }

    /// Runs `work` under a spinner showing `message` (cleared when done), and logs (at `-v`)
    /// how long it took and the peak memory while it ran.
    pub fn during<T>(&self, message: &str, work: impl FnOnce(&ProgressBar) -> T) -> T {
        let started = std::time::Instant::now();
        reset_peak_memory();
        let result = self.spinning(message, work);
        let peak = peak_memory_mb().map_or(String::new(), |mb| format!(", peak memory {mb:.0} MB"));
        tracing::info!("{message}: {:.2} s{peak}", started.elapsed().as_secs_f64());
        result
    }

    fn spinning<T>(&self, message: &str, work: impl FnOnce(&ProgressBar) -> T) -> T {
        let bar = if self.shown {
            let bar = ProgressBar::new_spinner().with_message(message.to_string());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        let result = work(&bar);
        bar.finish_and_clear();
        result
    }

    /// An observer naming the pass's current stage on `bar`.
    pub fn stages(bar: &ProgressBar) -> Observer {
        let bar = bar.clone();
        Arc::new(move |stage: Stage, done: usize, total: usize| {
            let name = match stage {
                Stage::Lower => "lowering to the e-graph, scanning weights for zeros",
                Stage::Saturate => "running the rules",
                Stage::Extract => "extracting the cheapest graph",
                Stage::Raise => "rebuilding the tract model, copying kept weights",
                Stage::Verify => "verifying outputs",
            };
            bar.set_message(format!("slimming: {name}{}", count(done, total, "node")));
        })
    }

    /// An observer showing auto-slim's stage on `bar`, with a count where it has one.
    pub fn auto_stages(bar: &ProgressBar) -> AutoObserver {
        let bar = bar.clone();
        Arc::new(move |stage: AutoStage, done: usize, total: usize| {
            let name = match stage {
                AutoStage::Calibrate => "calibrating: running the model",
                AutoStage::Choose => "choosing units",
                AutoStage::Measure => "measuring each group's effect on the outputs",
                AutoStage::Repair => "repairing the consumers",
                AutoStage::Slim => "slimming",
                AutoStage::Fidelity => "measuring fidelity",
            };
            let unit = if stage == AutoStage::Calibrate {
                "sample"
            } else {
                "group"
            };
            // Auto-slim tells the sample or group it is at, counted from 0.
            bar.set_message(format!("{name}{}", count(done + 1, total, unit)));
        })
    }
}

/// ` (unit n of total)`, or nothing for a stage that does not count.
fn count(n: usize, total: usize, unit: &str) -> String {
    if total > 0 {
        format!(" ({unit} {} of {total})", n.min(total))
    } else {
        String::new()
    }
}
