//! `strata`: layer-wise measurements of language models from the command line.
//!
//! Library crates return typed `strata_core::Error`s; this is the only place `anyhow` is used.
//! Exit codes: 0 ok, 1 runtime failure, 2 bad input (a file, a field, an argument).

mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    keep_freed_memory();
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

/// Tells glibc's allocator to keep freed memory for reuse instead of handing it back to the
/// system. By default every block above its mmap threshold (at most 32 MiB) is mapped afresh and
/// unmapped when freed, so each forward pass page-faults through its largest buffers and the
/// kernel zeroes them again: the logits of a 1 × 512 SmolLM2 pass are 100 MB, 25,000 faults.
/// With no mmapped blocks, no trimming below 2 GiB and one arena for all threads (a buffer is
/// often allocated on one thread and freed on another, and a thread's own arena unmaps a whole
/// heap of it once it is free), a pass reuses the previous pass's freed memory. The threads
/// allocate a few large buffers per op, so sharing the arena's lock costs nothing measurable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: `mallopt` only sets allocator parameters; it is called before any other thread
    // exists. A refused setting (return value 0) leaves glibc's default, which is also correct.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Other allocators keep their own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
