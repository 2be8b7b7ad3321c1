//! `strata`: layer-wise measurements of language models from the command line.
//!
//! Library crates return typed `strata_core::Error`s; this is the only place `anyhow` is used.
//! Exit codes: 0 ok, 1 runtime failure, 2 bad input (a file, a field, an argument).

mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let input = err
                .chain()
                .find_map(|e| e.downcast_ref::<strata_core::Error>())
                .is_some_and(strata_core::Error::is_input_error);
            ExitCode::from(if input { 2 } else { 1 })
        }
    }
}
