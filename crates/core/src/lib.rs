//! `strata-core`: the vocabulary of Strata.
//!
//! Invariant: this crate knows no architecture and no analysis. Models implement
//! [`LanguageModel`], analyses implement [`Analysis`], both register through [`registry`], and
//! everything between them speaks in canonical capture [`Site`]s.

pub mod analysis;
pub mod backend;
pub mod batch;
pub mod capture;
pub mod data;
pub mod error;
pub mod intervention;
pub mod model;
pub mod progress;
pub mod registry;
pub mod report;
pub mod source;
pub mod tokenizer;
pub mod weights;

pub use analysis::{Analysis, Context, ParamDoc, ParamsInput};
pub use backend::Backend;
pub use batch::{PadSide, TokenBatch};
pub use capture::{Activation, CapturePlan, Captures, Positions, Recorder, Site, SiteKind};
pub use error::{Error, Result};
pub use intervention::{AttentionBlock, Edit, Intervention, Layers};
pub use model::{DecodeCache, HiddenStatesLayout, LanguageModel, ModelInfo, NormKind};
pub use registry::{AnalysisRegistration, ArchitectureRegistration, LoadedModel};
pub use report::Report;
pub use source::{ModelFiles, ModelSource};
pub use tokenizer::Tokenizer;

/// Re-exported so plugin crates register without their own `inventory` dependency.
pub use inventory;
/// Re-exported so plugin crates name one burn.
pub use burn;
