//! RWKV-4's WKV recurrence over contiguous host `f32` buffers, exactly as HF's CPU path
//! (`rwkv_linear_attention_cpu`) computes it.

/// The running WKV state of one row and channel: numerator, denominator and the running maximum
/// exponent they are scaled by (the real numerator is `num · exp(max)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WkvState {
    pub num: f32,
    pub den: f32,
    pub max: f32,
}

impl WkvState {
    /// The state before the first token (HF's CPU path starts the maximum at `-1e38`).
    pub const FRESH: WkvState = WkvState {
        num: 0.0,
        den: 0.0,
        max: -1e38,
    };
}

/// Runs the recurrence over `k` and `v` (`[batch, tokens, channels]`, row-major) with
/// `w = −exp(time_decay)` and `u = time_first` (`[channels]`), updating `state`
/// (`[batch, channels]`) in place, and returns `wkv` (`[batch, tokens, channels]`). Slots where
/// `real` is false (padding) leave the state untouched and give 0.
///
/// Per token and channel, with the running maximum `p` keeping every exponent `≤ 0`:
/// `q = max(p, u + k)`, `wkv = (e^{p−q}·num + e^{u+k−q}·v) / (e^{p−q}·den + e^{u+k−q})`; then
/// `q' = max(p + w, k)`, `num ← e^{p+w−q'}·num + e^{k−q'}·v`, `den ← e^{p+w−q'}·den + e^{k−q'}`,
/// `p ← q'`. Cost: `O(tokens · channels)` per row.
pub fn wkv(
    (batch, tokens, channels): (usize, usize, usize),
    w: &[f32],
    u: &[f32],
    k: &[f32],
    v: &[f32],
    state: &mut [WkvState],
    real: impl Fn(usize, usize) -> bool,
) -> Vec<f32> {
    let mut out = vec![0.0f32; batch * tokens * channels];
    for row in 0..batch {
        let st = &mut state[row * channels..(row + 1) * channels];
        for t in 0..tokens {
            if !real(row, t) {
                continue;
            }
            let slot = (row * tokens + t) * channels;
            let span = slot..slot + channels;
            let channels_t = k[span.clone()]
                .iter()
                .zip(&v[span.clone()])
                .zip(&mut out[span])
                .zip(st.iter_mut())
                .zip(w.iter().zip(u));
            for ((((&kc, &vc), o), s), (&w, &u)) in channels_t {
                let q = s.max.max(kc + u);
                let e1 = (s.max - q).exp();
                let e2 = (kc + u - q).exp();
                *o = (e1 * s.num + e2 * vc) / (e1 * s.den + e2);
                let q = (s.max + w).max(kc);
                let e1 = (s.max + w - q).exp();
                let e2 = (kc - q).exp();
                s.num = e1 * s.num + e2 * vc;
                s.den = e1 * s.den + e2;
                s.max = q;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{WkvState, wkv};

    /// The unstabilised definition: `wkv_t = (Σ_{i<t} e^{(t−1−i)w + k_i} v_i + e^{u + k_t} v_t)
    /// / (Σ_{i<t} e^{(t−1−i)w + k_i} + e^{u + k_t})`.
    fn naive(w: f64, u: f64, k: &[f64], v: &[f64]) -> Vec<f64> {
        (0..k.len())
            .map(|t| {
                let (mut num, mut den) = ((u + k[t]).exp() * v[t], (u + k[t]).exp());
                for i in 0..t {
                    let e = ((t - 1 - i) as f64 * w + k[i]).exp();
                    num += e * v[i];
                    den += e;
                }
                num / den
            })
            .collect()
    }

    #[test]
    fn matches_the_definition_and_skips_padding() {
        let (w, u) = (-(0.3f64.exp()), 0.7);
        let k = [0.5, -1.0, 2.0, 0.1];
        let v = [1.0, -2.0, 0.5, 3.0];
        let f = |x: &[f64]| x.iter().map(|&a| a as f32).collect::<Vec<_>>();
        let mut state = vec![WkvState::FRESH];
        let got = wkv(
            (1, 4, 1),
            &[w as f32],
            &[u as f32],
            &f(&k),
            &f(&v),
            &mut state,
            |_, _| true,
        );
        for (g, e) in got.iter().zip(naive(w, u, &k, &v)) {
            assert!((*g as f64 - e).abs() < 1e-6, "{g} vs {e}");
        }
        // A pad slot in front changes nothing.
        let mut padded_state = vec![WkvState::FRESH];
        let mut kp = vec![9.0f32];
        kp.extend(f(&k));
        let mut vp = vec![9.0f32];
        vp.extend(f(&v));
        let padded = wkv(
            (1, 5, 1),
            &[w as f32],
            &[u as f32],
            &kp,
            &vp,
            &mut padded_state,
            |_, t| t > 0,
        );
        assert_eq!(padded[0], 0.0);
        assert_eq!(&padded[1..], &got[..]);
        assert_eq!(padded_state, state);
    }
}
