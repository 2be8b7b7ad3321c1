//! Streaming ordinary least squares with an intercept, in f64.
//!
//! Rows `x ∈ R^d` arrive chunk by chunk with their targets; only sufficient statistics are kept:
//! `N`, `Σx`, `Σxxᵀ` and, per target column, `Σxy`, `Σy`, `Σy²` — shifted by the first chunk's
//! means (the "shifted data" algorithm), so the centring `C = Σxxᵀ − N x̄x̄ᵀ` does not cancel
//! catastrophically when the features have a large common offset. Memory is `O(d²)` for a scalar
//! target and `O(d²+ d·V)` for a one-hot target over `V` observed classes; it never grows with
//! the number of rows.
//!
//! The solve never inverts `C` directly: after a LayerNorm the centred Gram matrix is rank
//! deficient (every feature vector has zero mean, so `C·1 = 0`). It uses the symmetric
//! eigendecomposition `C = U Λ Uᵀ` and the pseudo-inverse that drops eigenvalues below
//! `rcond² · λ_max` — the same cutoff as a least-squares SVD solve of the centred design matrix
//! with relative singular-value cutoff `rcond` (LAPACK `gelsd`'s `rcond`).

use std::collections::BTreeMap;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

/// Relative singular-value cutoff of the pseudo-inverse (eigenvalues below `RCOND² · λ_max` of
/// the centred Gram matrix are treated as zero). The f32 features' rounding puts a LayerNorm's
/// null direction near `1e-7` relative; real directions of trained models sit far above `1e-6`.
pub const RCOND: f64 = 1e-6;

/// What a fit explains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Residual sum of squares of the in-sample OLS fit with intercept.
    pub sse: f64,
    /// Total sum of squares about the mean.
    pub sst: f64,
    /// Rows.
    pub n: u64,
    /// Numerical rank of the centred Gram matrix (directions the pseudo-inverse kept).
    pub rank: usize,
}

impl Fit {
    /// The prediction residual `PR = SSE / SST = 1 − R²`.
    pub fn pr(&self) -> f64 {
        self.sse / self.sst
    }
}

/// Why a fit has no value.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    /// Fewer than two rows.
    TooFewRows(u64),
    /// The target does not vary (SST = 0): PR is undefined.
    ConstantTarget,
    /// The eigendecomposition did not converge (non-finite statistics).
    Eigen(String),
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::TooFewRows(n) => write!(f, "{n} example(s): a fit needs at least 2"),
            FitError::ConstantTarget => f.write_str(
                "the target is the same for every example, so PR = SSE/SST is undefined",
            ),
            FitError::Eigen(e) => write!(f, "eigendecomposition failed: {e}"),
        }
    }
}

/// Target statistics.
#[derive(Debug, Clone)]
enum Targets {
    /// One real-valued target: `Σ(x−s)(y−t)`, `Σ(y−t)`, `Σ(y−t)²`.
    Scalar { sxy: Vec<f64>, sy: f64, syy: f64 },
    /// One-hot classes: per class, its count and `Σ(x−s)` over its rows.
    OneHot {
        classes: BTreeMap<u32, (u64, Vec<f64>)>,
    },
}

/// Sufficient statistics of one OLS problem (one layer).
#[derive(Debug, Clone)]
pub struct Accumulator {
    d: usize,
    n: u64,
    /// The shift `s` (first chunk's feature means) and `t` (its target mean).
    shift: Option<(Vec<f64>, f64)>,
    sx: Vec<f64>,
    sxx: Mat<f64>,
    targets: Targets,
}

impl Accumulator {
    /// A scalar-target problem over `d` features.
    pub fn scalar(d: usize) -> Self {
        Self::with_targets(
            d,
            Targets::Scalar {
                sxy: vec![0.0; d],
                sy: 0.0,
                syy: 0.0,
            },
        )
    }

    /// A one-hot (multi-output) problem over `d` features: one output per observed class.
    pub fn one_hot(d: usize) -> Self {
        Self::with_targets(
            d,
            Targets::OneHot {
                classes: BTreeMap::new(),
            },
        )
    }

    fn with_targets(d: usize, targets: Targets) -> Self {
        Self {
            d,
            n: 0,
            shift: None,
            sx: vec![0.0; d],
            sxx: Mat::zeros(d, d),
            targets,
        }
    }

    /// Feature width.
    pub fn width(&self) -> usize {
        self.d
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.n
    }

    /// Adds `y.len()` rows: `x` is row-major `[y.len(), d]`. For a one-hot problem `y` holds
    /// class ids (exact small integers as f64).
    pub fn add(&mut self, x: &[f64], y: &[f64]) {
        let (n, d) = (y.len(), self.d);
        assert_eq!(x.len(), n * d, "x must be [rows, d] row-major");
        if n == 0 {
            return;
        }
        let (shift, shift_y) = self.shift.get_or_insert_with(|| {
            let mut s = vec![0.0; d];
            for row in x.chunks_exact(d) {
                s.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            s.iter_mut().for_each(|a| *a /= n as f64);
            (s, y.iter().sum::<f64>() / n as f64)
        });
        let xc = Mat::from_fn(n, d, |i, j| x[i * d + j] - shift[j]);
        matmul(
            self.sxx.as_mut(),
            Accum::Add,
            xc.transpose(),
            xc.as_ref(),
            1.0,
            Par::rayon(0),
        );
        for i in 0..n {
            for j in 0..d {
                self.sx[j] += xc[(i, j)];
            }
        }
        match &mut self.targets {
            Targets::Scalar { sxy, sy, syy } => {
                for (i, &yi) in y.iter().enumerate() {
                    let yc = yi - *shift_y;
                    *sy += yc;
                    *syy += yc * yc;
                    for j in 0..d {
                        sxy[j] += xc[(i, j)] * yc;
                    }
                }
            }
            Targets::OneHot { classes } => {
                for (i, &yi) in y.iter().enumerate() {
                    let (count, sums) = classes
                        .entry(yi as u32)
                        .or_insert_with(|| (0, vec![0.0; d]));
                    *count += 1;
                    for (j, s) in sums.iter_mut().enumerate() {
                        *s += xc[(i, j)];
                    }
                }
            }
        }
        self.n += n as u64;
    }

    /// The in-sample OLS fit with intercept, with pseudo-inverse cutoff `rcond` (see the module
    /// documentation; [`RCOND`] is the analysis' default).
    pub fn solve(&self, rcond: f64) -> Result<Fit, FitError> {
        if self.n < 2 {
            return Err(FitError::TooFewRows(self.n));
        }
        let (n, d) = (self.n as f64, self.d);
        let mean: Vec<f64> = self.sx.iter().map(|s| s / n).collect();
        // C = Σ(x−s)(x−s)ᵀ − N m mᵀ, m = x̄ − s.
        let c = Mat::from_fn(d, d, |i, j| self.sxx[(i, j)] - n * mean[i] * mean[j]);
        // Cross terms c_v = Σ(x−x̄)(y_v−ȳ_v), one column per output, and SST.
        let (cross, sst) = match &self.targets {
            Targets::Scalar { sxy, sy, syy } => {
                let ybar = sy / n;
                let col = Mat::from_fn(d, 1, |i, _| sxy[i] - n * mean[i] * ybar);
                (col, syy - n * ybar * ybar)
            }
            Targets::OneHot { classes } => {
                let counts: Vec<f64> = classes.values().map(|(k, _)| *k as f64).collect();
                let sums: Vec<&Vec<f64>> = classes.values().map(|(_, s)| s).collect();
                let cols = Mat::from_fn(d, classes.len(), |i, v| sums[v][i] - counts[v] * mean[i]);
                let sst = n - counts.iter().map(|k| k * k).sum::<f64>() / n;
                (cols, sst)
            }
        };
        if sst <= 0.0 || !sst.is_finite() {
            return Err(FitError::ConstantTarget);
        }
        let (explained, rank) = explained(c.as_ref(), cross.as_ref(), rcond)?;
        Ok(Fit {
            sse: (sst - explained).max(0.0),
            sst,
            n: self.n,
            rank,
        })
    }
}

/// `Σ_v c_vᵀ C⁺ c_v` with the eigen pseudo-inverse of `C` (cutoff `rcond² · λ_max`), and the
/// number of eigenvalues kept.
fn explained(
    c: MatRef<'_, f64>,
    cross: MatRef<'_, f64>,
    rcond: f64,
) -> Result<(f64, usize), FitError> {
    if c.nrows() == 0 {
        return Ok((0.0, 0));
    }
    let eig = c
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| FitError::Eigen(format!("{e:?}")))?;
    let lambdas = eig.S().column_vector();
    let lambda_max = (0..lambdas.nrows())
        .map(|i| lambdas[i])
        .fold(0.0_f64, f64::max);
    let cutoff = rcond * rcond * lambda_max;
    // Projections of every cross column on every eigenvector: P = Uᵀ c.
    let projected = eig.U().transpose() * cross;
    let mut total = 0.0;
    let mut rank = 0;
    for i in 0..lambdas.nrows() {
        let lambda = lambdas[i];
        if lambda > cutoff && lambda > 0.0 {
            rank += 1;
            let row: f64 = (0..projected.ncols())
                .map(|v| projected[(i, v)].powi(2))
                .sum();
            total += row / lambda;
        }
    }
    Ok((total, rank))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Standard normal draws (Box–Muller), so the tests need no distribution crate.
    fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let u1: f64 = rng.random::<f64>().max(1e-300);
                let u2: f64 = rng.random();
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect()
    }

    /// An independent reference: the centred design matrix stored whole, solved by a thin SVD
    /// least-squares with the same relative cutoff; returns (SSE, SST) for one target column.
    fn svd_lstsq(x: &[f64], y: &[f64], d: usize, rcond: f64) -> (f64, f64) {
        let n = y.len();
        let xbar: Vec<f64> = (0..d)
            .map(|j| (0..n).map(|i| x[i * d + j]).sum::<f64>() / n as f64)
            .collect();
        let ybar = y.iter().sum::<f64>() / n as f64;
        let xc = Mat::from_fn(n, d, |i, j| x[i * d + j] - xbar[j]);
        let yc: Vec<f64> = y.iter().map(|v| v - ybar).collect();
        let svd = xc.thin_svd().unwrap();
        let s = svd.S().column_vector();
        let smax = (0..s.nrows()).map(|i| s[i]).fold(0.0_f64, f64::max);
        // Fitted values ŷ = Σ_{s_i > cut} u_i (u_iᵀ y).
        let u = svd.U();
        let mut fitted = vec![0.0; n];
        for k in 0..s.nrows() {
            if s[k] > rcond * smax {
                let dot: f64 = (0..n).map(|i| u[(i, k)] * yc[i]).sum();
                for i in 0..n {
                    fitted[i] += u[(i, k)] * dot;
                }
            }
        }
        let sse = yc.iter().zip(&fitted).map(|(a, b)| (a - b).powi(2)).sum();
        let sst = yc.iter().map(|v| v * v).sum();
        (sse, sst)
    }

    #[test]
    fn residual_orthogonal_to_the_design_gives_pr_in_closed_form() {
        // y = b + Xw + e with e exactly orthogonal to [1, X] (Gram–Schmidt by hand): the OLS
        // residual is e itself, so PR = |e|² / |y − ȳ|² exactly.
        let (n, d) = (400, 6);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = normals(&mut rng, n * d);
        let mut basis: Vec<Vec<f64>> = vec![vec![1.0; n]];
        basis.extend((0..d).map(|j| (0..n).map(|i| x[i * d + j]).collect()));
        let mut e = normals(&mut rng, n);
        let mut ortho: Vec<Vec<f64>> = Vec::new();
        for mut b in basis {
            for q in &ortho {
                let dot: f64 = b.iter().zip(q).map(|(a, c)| a * c).sum();
                b.iter_mut().zip(q).for_each(|(a, c)| *a -= dot * c);
            }
            let norm = b.iter().map(|v| v * v).sum::<f64>().sqrt();
            b.iter_mut().for_each(|v| *v /= norm);
            ortho.push(b);
        }
        for q in &ortho {
            let dot: f64 = e.iter().zip(q).map(|(a, c)| a * c).sum();
            e.iter_mut().zip(q).for_each(|(a, c)| *a -= dot * c);
        }
        let w = [0.5, -1.0, 2.0, 0.0, 0.25, 1.5];
        let y: Vec<f64> = (0..n)
            .map(|i| 3.0 + (0..d).map(|j| w[j] * x[i * d + j]).sum::<f64>() + e[i])
            .collect();
        let ybar = y.iter().sum::<f64>() / n as f64;
        let want = e.iter().map(|v| v * v).sum::<f64>()
            / y.iter().map(|v| (v - ybar).powi(2)).sum::<f64>();
        let mut acc = Accumulator::scalar(d);
        acc.add(&x, &y);
        let fit = acc.solve(RCOND).unwrap();
        assert_eq!(fit.rank, d);
        assert!(
            (fit.pr() - want).abs() < 1e-10 * want,
            "{} vs {want}",
            fit.pr()
        );
    }

    #[test]
    fn noise_of_known_variance_gives_the_population_pr() {
        // x ~ N(0, I_d), y = wᵀx + ε, ε ~ N(0, σ²): PR → σ² / (|w|² + σ²); the in-sample
        // estimate is biased low by about d/N, far below the sampling tolerance used here.
        let (n, d, sigma) = (200_000, 4, 0.8);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let x = normals(&mut rng, n * d);
        let noise = normals(&mut rng, n);
        let w = [1.0, -0.5, 0.25, 0.75];
        let y: Vec<f64> = (0..n)
            .map(|i| (0..d).map(|j| w[j] * x[i * d + j]).sum::<f64>() + sigma * noise[i])
            .collect();
        let w2: f64 = w.iter().map(|v| v * v).sum();
        let want = sigma * sigma / (w2 + sigma * sigma);
        let mut acc = Accumulator::scalar(d);
        for (xs, ys) in x.chunks(1000 * d).zip(y.chunks(1000)) {
            acc.add(xs, ys);
        }
        let pr = acc.solve(RCOND).unwrap().pr();
        assert!((pr - want).abs() < 0.01, "PR {pr} vs population {want}");
    }

    /// LayerNorm-style rows (zero mean, unit variance across features, then an offset): the
    /// centred Gram matrix has rank d − 1.
    fn layer_normed(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f64> {
        let raw = normals(rng, n * d);
        let mut out = Vec::with_capacity(n * d);
        for row in raw.chunks_exact(d) {
            // Correlated features: mix with a fixed pattern, as trained models' features are.
            let mixed: Vec<f64> = (0..d)
                .map(|j| row[j] + 0.5 * row[(j + 1) % d] * (j as f64 / d as f64))
                .collect();
            let mu = mixed.iter().sum::<f64>() / d as f64;
            let var = mixed.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / d as f64;
            out.extend(mixed.iter().map(|v| (v - mu) / (var + 1e-5).sqrt() + 100.0));
        }
        out
    }

    #[test]
    fn rank_deficient_layer_norm_features_match_an_svd_solve() {
        let (n, d) = (3000, 24);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = layer_normed(&mut rng, n, d);
        let y: Vec<f64> = (0..n).map(|_| rng.random_range(0..500) as f64).collect();
        let mut acc = Accumulator::scalar(d);
        for (xs, ys) in x.chunks(97 * d).zip(y.chunks(97)) {
            acc.add(xs, ys);
        }
        let fit = acc.solve(RCOND).unwrap();
        assert_eq!(fit.rank, d - 1, "the LayerNorm null direction is dropped");
        let (sse, sst) = svd_lstsq(&x, &y, d, RCOND);
        let want = sse / sst;
        assert!(
            (fit.pr() - want).abs() < 1e-8 * want,
            "streaming eigen PR {} vs SVD least squares {want}",
            fit.pr()
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let (n, d) = (1234, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let x: Vec<f64> = normals(&mut rng, n * d).iter().map(|v| 1e3 + v).collect();
        let y: Vec<f64> = (0..n).map(|_| rng.random_range(0..50) as f64).collect();
        for make in [Accumulator::scalar, Accumulator::one_hot] {
            let mut whole = make(d);
            whole.add(&x, &y);
            let mut streamed = make(d);
            let mut start = 0;
            for size in [1, 7, 100, 3, 500].iter().cycle() {
                if start >= n {
                    break;
                }
                let end = (start + size).min(n);
                streamed.add(&x[start * d..end * d], &y[start..end]);
                start = end;
            }
            let (a, b) = (whole.solve(RCOND).unwrap(), streamed.solve(RCOND).unwrap());
            assert_eq!(a.n, b.n);
            assert!((a.pr() - b.pr()).abs() < 1e-10, "{} vs {}", a.pr(), b.pr());
        }
    }

    #[test]
    fn one_hot_equals_the_sum_of_per_class_indicator_fits() {
        // Multi-output OLS decomposes: SSE = Σ_v SSE_v of the indicator regressions.
        let (n, d) = (800, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x = normals(&mut rng, n * d);
        let y: Vec<f64> = (0..n)
            .map(|i| f64::from(u8::from(x[i * d] > 0.3) + u8::from(x[i * d + 1] > 0.0) * 2))
            .collect();
        let mut acc = Accumulator::one_hot(d);
        acc.add(&x, &y);
        let fit = acc.solve(RCOND).unwrap();
        let (mut sse, mut sst) = (0.0, 0.0);
        for class in 0..4 {
            let indicator: Vec<f64> = y.iter().map(|&v| f64::from(v == class as f64)).collect();
            let (e, t) = svd_lstsq(&x, &indicator, d, RCOND);
            sse += e;
            sst += t;
        }
        assert!((fit.sst - sst).abs() < 1e-9 * sst);
        assert!(
            (fit.pr() - sse / sst).abs() < 1e-10,
            "{} vs {}",
            fit.pr(),
            sse / sst
        );
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        let mut acc = Accumulator::scalar(2);
        acc.add(&[1.0, 2.0], &[3.0]);
        assert_eq!(acc.solve(RCOND), Err(FitError::TooFewRows(1)));
        acc.add(&[0.0, 1.0, 5.0, 4.0], &[3.0, 3.0]);
        assert_eq!(acc.solve(RCOND), Err(FitError::ConstantTarget));
    }
}
