//! Progress reporting, implemented by the CLI with indicatif; silent everywhere else.

/// Starts progress tasks.
pub trait Progress: Sync {
    /// A task of `total` steps (`None`: unknown).
    fn task(&self, label: &str, total: Option<u64>) -> Box<dyn ProgressTask>;
}

/// One running task.
pub trait ProgressTask: Send {
    /// Advances by `n` steps.
    fn inc(&self, n: u64);
    /// Ends the task.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn task(&self, _label: &str, _total: Option<u64>) -> Box<dyn ProgressTask> {
        Box::new(Silent)
    }
}

impl ProgressTask for Silent {
    fn inc(&self, _n: u64) {}
    fn finish(&self) {}
}
