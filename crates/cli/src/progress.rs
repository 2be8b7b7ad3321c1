//! indicatif progress bars on stderr; hidden when stderr is not a terminal or with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_core::progress::{Progress, ProgressTask};

/// Progress bars for the CLI.
pub struct Bars {
    visible: bool,
}

impl Bars {
    /// Bars that show only on a terminal and only when not `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self {
            visible: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

struct Bar(ProgressBar);

impl Progress for Bars {
    fn task(&self, label: &str, total: Option<u64>) -> Box<dyn ProgressTask> {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        if !self.visible {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let template = if total.is_some() {
            "{msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})"
        } else {
            "{spinner} {msg} {pos} ({elapsed})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        Box::new(Bar(bar))
    }
}

impl ProgressTask for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
