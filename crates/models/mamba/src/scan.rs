//! The selective scan of Mamba-1, over contiguous host `f32` buffers.

/// Sizes of one scan: `batch` rows of `tokens` slots, `d_inner` channels, `d_state` states.
#[derive(Debug, Clone, Copy)]
pub struct ScanDims {
    pub batch: usize,
    pub tokens: usize,
    pub d_inner: usize,
    pub d_state: usize,
}

/// The inputs of one scan, row-major: `dt` and `x` are `[batch, tokens, d_inner]`, `b` and `c`
/// `[batch, tokens, d_state]`, `a` is `A = −exp(A_log)`, `[d_inner, d_state]`.
pub struct ScanInputs<'a> {
    pub a: &'a [f32],
    pub dt: &'a [f32],
    pub x: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
}

/// Runs `h_t = exp(A·dt_t)·h_{t−1} + (dt_t·B_t)·x_t` and `y_t = C_t·h_t` in HF's sequential
/// order (`MambaMixer.slow_forward`), updating `h` (`[batch, d_inner, d_state]`, the state before
/// the first slot) in place, and returns `y` (`[batch, tokens, d_inner]`, without the `D·x`
/// skip term). Slots where `real` is false (padding) leave the state untouched and give `y = 0`.
///
/// Cost: `tokens · d_inner · d_state` multiply-adds and exponentials per row, one pass over
/// the inputs; no allocation besides `y`.
pub fn selective_scan(
    dims: ScanDims,
    inputs: &ScanInputs<'_>,
    h: &mut [f32],
    real: impl Fn(usize, usize) -> bool,
) -> Vec<f32> {
    let ScanDims {
        batch,
        tokens,
        d_inner,
        d_state,
    } = dims;
    let mut y = vec![0.0f32; batch * tokens * d_inner];
    for row in 0..batch {
        let h_row = &mut h[row * d_inner * d_state..(row + 1) * d_inner * d_state];
        for t in 0..tokens {
            if !real(row, t) {
                continue;
            }
            let slot = row * tokens + t;
            let b_t = &inputs.b[slot * d_state..(slot + 1) * d_state];
            let c_t = &inputs.c[slot * d_state..(slot + 1) * d_state];
            let dt_t = &inputs.dt[slot * d_inner..(slot + 1) * d_inner];
            let x_t = &inputs.x[slot * d_inner..(slot + 1) * d_inner];
            let y_t = &mut y[slot * d_inner..(slot + 1) * d_inner];
            let channels = dt_t
                .iter()
                .zip(x_t)
                .zip(y_t.iter_mut())
                .zip(inputs.a.chunks_exact(d_state))
                .zip(h_row.chunks_exact_mut(d_state));
            for ((((&dt, &x), y), a), state) in channels {
                let mut acc = 0.0f32;
                for (((s, &a), &b), &c) in state.iter_mut().zip(a).zip(b_t).zip(c_t) {
                    *s = (a * dt).exp() * *s + (dt * b) * x;
                    acc += *s * c;
                }
                *y = acc;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::{ScanDims, ScanInputs, selective_scan};

    #[test]
    fn one_channel_by_hand_and_padding_is_skipped() {
        // One channel, one state: h_t = exp(a·dt)·h + dt·b·x, y = c·h.
        let dims = ScanDims {
            batch: 1,
            tokens: 3,
            d_inner: 1,
            d_state: 1,
        };
        let inputs = ScanInputs {
            a: &[-1.0],
            dt: &[0.5, 9.0, 0.25],
            x: &[2.0, 7.0, -1.0],
            b: &[1.5, 3.0, 2.0],
            c: &[0.5, 4.0, 3.0],
        };
        let mut h = vec![0.2f32];
        // Slot 1 is padding: skipped.
        let y = selective_scan(dims, &inputs, &mut h, |_, t| t != 1);
        let h0 = (-0.5f32).exp() * 0.2 + 0.5 * 1.5 * 2.0;
        // dt·B·x = 0.25 · 2 · (−1).
        let h2 = (-0.25f32).exp() * h0 - 0.25 * 2.0;
        assert_eq!(y, [0.5 * h0, 0.0, 3.0 * h2]);
        assert_eq!(h, [h2]);
    }
}
