//! `strata-plugins`: the one list of built-in plugins.
//!
//! A plugin crate registers itself with `inventory`, but rustc only links a crate that some code
//! *names*. This facade names every built-in plugin once, so a binary or test that calls
//! [`registry`] (or writes `use strata_plugins as _;`) sees them all. Adding a plugin = a new
//! crate + one `extern crate` line here (and one dependency line in Cargo.toml).

extern crate strata_analysis_next_token_law as _;
extern crate strata_model_bert as _;
extern crate strata_model_gemma3 as _;
extern crate strata_model_gpt2 as _;
extern crate strata_model_gpt_neox as _;
extern crate strata_model_llama as _;
extern crate strata_model_mamba as _;
extern crate strata_model_rwkv as _;
extern crate strata_plugin_template as _;

pub use strata_core::registry::*;

/// The sorted ids of every registered architecture and analysis (what `strata list` prints);
/// calling it also guarantees the plugins above are linked.
pub fn registry() -> (Vec<&'static str>, Vec<&'static str>) {
    (
        architectures().iter().map(|r| r.id).collect(),
        analyses().iter().map(|r| r.id).collect(),
    )
}
