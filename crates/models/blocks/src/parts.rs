//! A full forward pass over a batch, split into row groups that run side by side on the CPU.
//!
//! On flex every op of a forward pass splits its own work across the thread pool and waits for
//! all of it: a few hundred barriers per pass, at each of which a core idles while the other
//! finishes its share (more so on a shared machine, where one core is often slower). Rows of a
//! batch do not interact, so a batch of several rows runs as one forward pass per row group
//! instead, the groups on different threads (`rayon::join`, recursively), and the captures are
//! joined along the batch axis. Each op inside a group still offers its work to the pool, so a
//! thread whose group is done helps the other. The values are those of one pass over the whole
//! batch: the same kernels, row by row (gemm may block a product of fewer rows differently,
//! which changes only the order of a sum; the tests allow 1e-6).

use burn::tensor::Device;
use strata_core::{CapturePlan, Captures, Result, TokenBatch};

/// `run(batch)` (on flex, [`on_the_pool`]), or, on flex with more than one thread, `run` over
/// consecutive row groups of `batch` on the threads side by side, joined with
/// [`Captures::concat_rows`].
///
/// Groups are split only when the plan has no interventions (they may name rows of the whole
/// batch) and every group keeps the batch's padded length (so their captures have the same
/// shape).
pub fn forward_in_row_groups(
    device: &Device,
    batch: &TokenBatch,
    plan: &CapturePlan,
    run: impl Fn(&TokenBatch) -> Result<Captures> + Sync,
) -> Result<Captures> {
    let groups = if crate::on_flex(device) && plan.interventions().is_empty() {
        row_groups(&batch.lengths(), rayon::current_num_threads())
    } else {
        Vec::new()
    };
    if groups.len() < 2 {
        return on_the_pool(device, || run(batch));
    }
    let parts = in_parallel(batch, &groups, &run)?;
    Captures::concat_rows(parts)
}

/// `run()` on a thread of rayon's pool when `device` is flex (on the calling thread when that
/// already is one, or on other backends).
///
/// Every op of a pass on flex splits its work across the pool. Called from a thread outside it
/// (the program's main thread), each split hands its work to the pool and puts the caller to
/// sleep until it is done: a few hundred sleeps and wake-ups per forward pass or decoding step,
/// and a third thread contending for the cores. From a thread of the pool, a split goes onto
/// that thread's own queue, it works on it itself and the others steal from it; the pass is
/// handed over once.
pub fn on_the_pool<R: Send>(device: &Device, run: impl FnOnce() -> R + Send) -> R {
    if crate::on_flex(device) {
        rayon::scope(|_| run())
    } else {
        run()
    }
}

/// Runs `run` over each row group, the halves of the list on two threads, recursively.
fn in_parallel(
    batch: &TokenBatch,
    groups: &[std::ops::Range<usize>],
    run: &(impl Fn(&TokenBatch) -> Result<Captures> + Sync),
) -> Result<Vec<Captures>> {
    if let [rows] = groups {
        return Ok(vec![run(&batch.slice_rows(rows.clone())?)?]);
    }
    let (left, right) = groups.split_at(groups.len() / 2);
    let (a, b) = rayon::join(
        || in_parallel(batch, left, run),
        || in_parallel(batch, right, run),
    );
    let mut parts = a?;
    parts.extend(b?);
    Ok(parts)
}

/// Consecutive row groups for `threads` threads: as many as the threads (at most one per row),
/// of sizes differing by at most one, each holding a row of the longest length; fewer groups
/// when that is not possible, and none (one pass over the batch) when no two groups are.
fn row_groups(lengths: &[usize], threads: usize) -> Vec<std::ops::Range<usize>> {
    let longest = lengths.iter().copied().max().unwrap_or(0);
    for n in (2..=threads.min(lengths.len())).rev() {
        let (base, extra) = (lengths.len() / n, lengths.len() % n);
        let mut start = 0;
        let groups: Vec<_> = (0..n)
            .map(|g| {
                let end = start + base + usize::from(g < extra);
                let rows = start..end;
                start = end;
                rows
            })
            .collect();
        if groups.iter().all(|g| lengths[g.clone()].contains(&longest)) {
            return groups;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Tensor, TensorData};
    use strata_core::{Positions, Recorder, Site};

    #[test]
    fn groups_are_balanced_and_keep_the_padded_length() {
        assert_eq!(row_groups(&[4; 8], 2), vec![0..4, 4..8]);
        assert_eq!(row_groups(&[4; 5], 2), vec![0..3, 3..5]);
        assert_eq!(row_groups(&[4; 5], 3), vec![0..2, 2..4, 4..5]);
        assert_eq!(row_groups(&[4, 4], 8), vec![0..1, 1..2]);
        // The second half has no row of length 4 when split in two or three.
        assert_eq!(
            row_groups(&[4, 4, 3, 2], 2),
            Vec::<std::ops::Range<usize>>::new()
        );
        assert_eq!(row_groups(&[4, 3, 4, 2], 3), vec![0..2, 2..4]);
        assert!(row_groups(&[7], 2).is_empty());
        assert!(row_groups(&[3; 6], 1).is_empty());
    }

    /// A stand-in forward pass whose captures depend on each row's ids and on the whole row
    /// group only through its padded length: the joined captures of the groups must equal
    /// those of one pass.
    fn toy_forward(batch: &TokenBatch, plan: &CapturePlan) -> Result<Captures> {
        let device = Device::flex();
        let t = batch.max_len();
        let ids: Vec<f32> = batch
            .rows()
            .iter()
            .flat_map(|r| {
                (0..t).flat_map(move |j| [r.get(j).map_or(-1.0, |&v| v as f32), j as f32])
            })
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(ids, [batch.batch_size(), t, 2]), &device);
        let mut rec = Recorder::new(plan, batch);
        let x = rec.point(Site::Embed, x)?;
        rec.point(Site::FinalNorm, x * 2.0)?;
        Ok(rec.finish())
    }

    #[test]
    fn issue_7_a_pass_on_flex_runs_on_a_thread_of_the_pool() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test thread is not one"
        );
        let on_flex = on_the_pool(&Device::flex(), rayon::current_thread_index);
        assert!(on_flex.is_some(), "flex: moved onto the pool");
        // A whole forward pass (one row: no row groups) runs there too, and keeps its values.
        let device = Device::flex();
        let plan = CapturePlan::new().with(Site::FinalNorm, Positions::All);
        let batch = TokenBatch::new(vec![vec![5, 6, 7]]).expect("batch");
        let through = forward_in_row_groups(&device, &batch, &plan, |b| {
            assert!(rayon::current_thread_index().is_some(), "on the pool");
            toy_forward(b, &plan)
        })
        .expect("forward");
        let direct = toy_forward(&batch, &plan).expect("direct");
        assert_eq!(
            through.get(Site::FinalNorm).unwrap().to_vec().unwrap(),
            direct.get(Site::FinalNorm).unwrap().to_vec().unwrap()
        );
    }

    #[test]
    fn row_groups_join_to_the_captures_of_one_pass() {
        let device = Device::flex();
        let plan = CapturePlan::new()
            .with(Site::Embed, Positions::All)
            .with(Site::FinalNorm, Positions::Last);
        let batch = TokenBatch::new(vec![vec![5, 6, 7], vec![8], vec![9, 10, 11], vec![1, 2]])
            .expect("batch");
        let whole = toy_forward(&batch, &plan).expect("whole");
        for threads in [2, 4] {
            let groups = row_groups(&batch.lengths(), threads);
            assert_eq!(groups.len(), 2, "rows 0 and 2 are the longest");
            let parts = in_parallel(&batch, &groups, &|b: &TokenBatch| toy_forward(b, &plan))
                .expect("parts");
            let joined = Captures::concat_rows(parts).expect("join");
            assert_eq!(joined.len(), whole.len());
            for (site, act) in whole.iter() {
                let got = joined.get(*site).expect("site");
                assert_eq!(got.dims(), act.dims(), "{site}");
                assert_eq!(got.to_vec().unwrap(), act.to_vec().unwrap(), "{site}");
            }
        }
        let through = forward_in_row_groups(&device, &batch, &plan, |b| toy_forward(b, &plan))
            .expect("forward");
        assert_eq!(
            through.hidden(Site::Embed).unwrap().dims(),
            [4, 3, 2],
            "joined along the batch"
        );
    }
}
