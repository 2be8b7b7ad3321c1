//! `strata-core`: the vocabulary of Strata.
//!
//! Invariant: this crate knows no architecture and no analysis. Models implement
//! [`LanguageModel`], analyses implement [`Analysis`], both register through [`registry`], and
//! everything between them speaks in canonical capture [`Site`]s.

pub mod analysis;
pub mod backend;
pub mod batch;
pub mod bench;
pub mod capture;
pub mod data;
pub mod error;
pub mod experiment;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod intervention;
pub mod manifest;
pub mod model;
pub mod output;
pub mod packed;
pub mod progress;
pub mod registry;
pub mod render;
pub mod report;
pub mod run;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use analysis::{Analysis, Context, ParamDoc, ParamsInput};
pub use backend::Backend;
pub use batch::{PadSide, TokenBatch};
pub use capture::{Activation, CapturePlan, Captures, Positions, Recorder, Site, SiteKind};
pub use error::{Error, Result};
pub use experiment::{AnalysisSpec, DataSpec, Experiment, ModelSpec, RunSettings};
pub use generate::{Finish, GenerateOptions, Generation, Sampling, generate};
pub use intervention::{AttentionBlock, Edit, Intervention, Layers};
pub use manifest::{AnalysisStatus, Manifest};
pub use model::{DecodeCache, DecodeState, HiddenStatesLayout, LanguageModel, ModelInfo, NormKind};
pub use output::write_atomic;
pub use progress::{Progress, ProgressTask, Silent};
pub use registry::{AnalysisRegistration, ArchitectureRegistration, LoadedModel};
pub use render::render_report;
pub use report::Report;
pub use run::{RunOptions, RunSummary, run_experiment};
pub use source::{ModelFiles, ModelSource};
pub use tokenizer::Tokenizer;

/// Re-exported so plugin crates name one burn.
pub use burn;
/// Re-exported so plugin crates register without their own `inventory` dependency.
pub use inventory;
