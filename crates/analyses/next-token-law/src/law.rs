//! The law itself: an OLS line through `log10 PR` against depth, with the statistics the
//! reference code prints (slope, intercept, R², Pearson r and its two-sided p-value).

use statrs::distribution::{ContinuousCDF, StudentsT};

/// The fitted line `log10 PR ≈ intercept + slope · x` and its quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LawFit {
    pub slope: f64,
    pub intercept: f64,
    /// Coefficient of determination of the line (= r² for one regressor).
    pub r2: f64,
    /// Pearson correlation of `x` and `log10 PR` (negative when PR decays).
    pub pearson_r: f64,
    /// Two-sided p-value of `r` (t-test with n − 2 degrees of freedom, as `scipy.stats.pearsonr`).
    pub pearson_p: f64,
}

impl LawFit {
    /// Fits `y` against `x` (at least two points, `x` not constant). A constant `y` has no
    /// correlation: `r`, `R²` and `p` are NaN then.
    pub fn fit(x: &[f64], y: &[f64]) -> Option<Self> {
        let n = x.len();
        if n < 2 || y.len() != n {
            return None;
        }
        let nf = n as f64;
        let (mx, my) = (x.iter().sum::<f64>() / nf, y.iter().sum::<f64>() / nf);
        let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
        let syy: f64 = y.iter().map(|v| (v - my).powi(2)).sum();
        let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let intercept = my - slope * mx;
        let pearson_r = (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0);
        Some(Self {
            slope,
            intercept,
            r2: pearson_r * pearson_r,
            pearson_r,
            pearson_p: pearson_p_value(pearson_r, n),
        })
    }
}

/// Two-sided p-value of a Pearson correlation `r` over `n` points: `t = r √((n−2)/(1−r²))` on
/// n − 2 degrees of freedom. With two points every line fits (`p = 1`, scipy's convention).
fn pearson_p_value(r: f64, n: usize) -> f64 {
    if r.is_nan() {
        return f64::NAN;
    }
    if n <= 2 {
        return 1.0;
    }
    if r.abs() >= 1.0 {
        return 0.0;
    }
    let df = (n - 2) as f64;
    let t = r * (df / (1.0 - r * r)).sqrt();
    let dist = StudentsT::new(0.0, 1.0, df).expect("df > 0 is a valid Student t");
    (2.0 * dist.cdf(-t.abs())).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_line_has_r_minus_one_and_its_slope() {
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| -0.5 - 0.03 * v).collect();
        let fit = LawFit::fit(&x, &y).unwrap();
        assert!((fit.slope + 0.03).abs() < 1e-14);
        assert!((fit.intercept + 0.5).abs() < 1e-14);
        assert!((fit.pearson_r + 1.0).abs() < 1e-12);
        assert!((fit.r2 - 1.0).abs() < 1e-12);
        assert_eq!(fit.pearson_p, 0.0);
    }

    #[test]
    fn p_value_matches_scipy() {
        // scipy 1.x: pearsonr([0, 1, 2, 3, 4], [1.0, 0.8, 0.9, 0.5, 0.4])
        // = (-0.9162708326722893, 0.02871560840680887).
        let x = [0.0, 1.0, 2.0, 3.0, 4.0];
        let y = [1.0, 0.8, 0.9, 0.5, 0.4];
        let fit = LawFit::fit(&x, &y).unwrap();
        assert!(
            (fit.pearson_r + 0.916_270_832_672_289_3).abs() < 1e-12,
            "{}",
            fit.pearson_r
        );
        assert!(
            (fit.pearson_p - 0.028_715_608_406_808_87).abs() < 1e-10,
            "{}",
            fit.pearson_p
        );
    }

    #[test]
    fn degenerate_series() {
        assert!(LawFit::fit(&[1.0], &[2.0]).is_none());
        assert!(LawFit::fit(&[1.0, 1.0], &[2.0, 3.0]).is_none());
        let flat = LawFit::fit(&[0.0, 1.0, 2.0], &[1.0, 1.0, 1.0]).unwrap();
        assert!(flat.pearson_r.is_nan() && flat.pearson_p.is_nan());
        assert_eq!(
            LawFit::fit(&[0.0, 1.0], &[1.0, 0.0]).unwrap().pearson_p,
            1.0
        );
    }
}
