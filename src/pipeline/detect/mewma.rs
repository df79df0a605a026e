//! The per-asset multivariate model: a Hotelling T² on exponentially smoothed deviations
//! (MEWMA) of several fields of one machine, learned in a warm-up. Sans-IO and clock-free:
//! one row of field values in, a T² out; the rule's episode machine turns T² into events.
//!
//! - Rate fields (temperatures that drift with ambient and load) enter as the change since
//!   the previous row, the others as levels.
//! - Warm-up (`warmup` rows): the rows are kept, then the mean and the covariance are learned
//!   (10 % shrinkage of the off-diagonals by default), the rows are replayed through the
//!   smoothing to measure each field's real smoothed variance (autocorrelated fields weigh
//!   less), and a materiality floor (`floor` × the field's level, squared) is added to each
//!   level field's variance, so that a change too small to matter on the machine is not
//!   significant however quiet the sensor. The matrix is inverted by Cholesky. After the
//!   warm-up the state is fixed-size: mean, inverse, smoothed deviation, previous rates.
//! - Every later row: e = α·(z − μ) + (1 − α)·e and T² = eᵀ P e. The baseline μ follows slow
//!   drift (span `track_span`) only while T² is below the raise level, so it freezes while a
//!   departure is at alarm level and the alarm holds until the machine is back.
//! - A row with a missing value (NaN) changes nothing and gives no T².
//!
//! The design and its scores on SKAB are in the README (`edgewatch backtest`).

/// The model's parameters (`kind = "multivariate"` rules).
#[derive(Clone, Debug, PartialEq)]
pub struct MewmaParams {
    /// Per field: enters as its change since the previous row instead of its level.
    pub rate: Vec<bool>,
    pub warmup: usize,
    /// Smoothing span in rows: α = 2 / (span + 1).
    pub span: f64,
    /// Shrinkage of the learned covariance toward its diagonal (0..1).
    pub shrink: f64,
    /// Warm-up rows skipped before the smoothed variance is measured.
    pub skip: usize,
    /// Cap of a field's variance inflation by autocorrelation.
    pub max_inflation: f64,
    /// Materiality floor, relative to a level field's warm-up mean.
    pub floor: f64,
    /// T² at or above this freezes the baseline (the rule's raise level).
    pub freeze_at: f64,
    /// Baseline tracking span in rows: β = 2 / (track_span + 1).
    pub track_span: f64,
}

#[derive(Clone, Debug)]
enum Phase {
    WarmUp(Vec<Vec<f64>>),
    Ready(Learned),
}

#[derive(Clone, Debug)]
struct Learned {
    /// The baseline the deviations are measured from (tracked).
    mean: Vec<f64>,
    /// Inverse of the smoothed deviations' covariance, row-major d×d.
    inverse: Vec<f64>,
    /// The smoothed deviation.
    e: Vec<f64>,
}

/// One machine's model.
#[derive(Clone, Debug)]
pub struct Mewma {
    params: MewmaParams,
    phase: Phase,
    /// The previous row's values of the rate fields (NaN before the first row).
    previous: Vec<f64>,
    /// The current row's features (rate fields as changes).
    features: Vec<f64>,
}

impl Mewma {
    pub fn new(params: MewmaParams) -> Mewma {
        let d = params.rate.len();
        Mewma {
            phase: Phase::WarmUp(Vec::with_capacity(params.warmup.min(10_000))),
            previous: vec![f64::NAN; d],
            features: Vec::with_capacity(d),
            params,
        }
    }

    pub fn dims(&self) -> usize {
        self.params.rate.len()
    }

    #[cfg(test)]
    fn is_warm(&self) -> bool {
        matches!(self.phase, Phase::Ready(_))
    }

    /// Feeds one row (one value per field, in the rule's order). Returns T² once warm, and
    /// the index of the field that contributes most to it.
    pub fn push(&mut self, row: &[f64]) -> Option<(f64, usize)> {
        if row.len() != self.dims() || row.iter().any(|v| !v.is_finite()) {
            return None;
        }
        // The features, in a buffer kept across rows (no allocation per row once warm).
        let z = &mut self.features;
        z.clear();
        for (k, &x) in row.iter().enumerate() {
            if self.params.rate[k] {
                let p = std::mem::replace(&mut self.previous[k], x);
                z.push(if p.is_nan() { 0.0 } else { x - p });
            } else {
                z.push(x);
            }
        }
        let z = &self.features;
        match &mut self.phase {
            Phase::WarmUp(rows) => {
                rows.push(z.clone());
                if rows.len() >= self.params.warmup.max(2) {
                    let rows = std::mem::take(rows);
                    self.phase = Phase::Ready(learn(&self.params, &rows));
                }
                None
            }
            Phase::Ready(m) => {
                let alpha = 2.0 / (self.params.span + 1.0);
                for ((e, &z), &mean) in m.e.iter_mut().zip(z).zip(&m.mean) {
                    *e = alpha * (z - mean) + (1.0 - alpha) * *e;
                }
                let (t2, top) = t_squared(&m.inverse, &m.e);
                if t2 < self.params.freeze_at {
                    let beta = 2.0 / (self.params.track_span + 1.0);
                    for (mean, &z) in m.mean.iter_mut().zip(z) {
                        *mean += beta * (z - *mean);
                    }
                }
                Some((t2, top))
            }
        }
    }
}

/// eᵀ P e, and the field with the largest share e_k·(P e)_k.
fn t_squared(p: &[f64], e: &[f64]) -> (f64, usize) {
    let d = e.len();
    let mut total = 0.0;
    let mut top = (f64::NEG_INFINITY, 0);
    for i in 0..d {
        let pe: f64 = (0..d).map(|j| p[i * d + j] * e[j]).sum();
        let share = e[i] * pe;
        total += share;
        if share > top.0 {
            top = (share, i);
        }
    }
    (total, top.1)
}

fn learn(params: &MewmaParams, rows: &[Vec<f64>]) -> Learned {
    let d = params.rate.len();
    let n = rows.len() as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for k in 0..d {
            mean[k] += r[k] / n;
        }
    }
    let mut cov = vec![0.0; d * d];
    for r in rows {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / (n - 1.0);
            }
        }
    }
    let var: Vec<f64> = (0..d)
        .map(|k| cov[k * d + k].max(1e-12 * (1.0 + mean[k] * mean[k])))
        .collect();
    for k in 0..d {
        cov[k * d + k] = var[k];
    }
    for i in 0..d {
        for j in 0..d {
            if i != j {
                cov[i * d + j] *= 1.0 - params.shrink;
            }
        }
    }
    // Replay the warm-up through the smoothing: the smoothed variance each field really has.
    let alpha = 2.0 / (params.span + 1.0);
    let mut e = vec![0.0; d];
    let mut acc = vec![0.0; d];
    let mut m = 0.0;
    for (t, r) in rows.iter().enumerate() {
        for k in 0..d {
            e[k] = alpha * (r[k] - mean[k]) + (1.0 - alpha) * e[k];
        }
        if t >= params.skip {
            for k in 0..d {
                acc[k] += e[k] * e[k];
            }
            m += 1.0;
        }
    }
    let theory = alpha / (2.0 - alpha);
    let scale: Vec<f64> = (0..d)
        .map(|k| {
            let inflation = if m > 0.0 {
                (acc[k] / m) / (theory * var[k])
            } else {
                1.0
            };
            inflation.clamp(1.0, params.max_inflation.max(1.0)).sqrt()
        })
        .collect();
    let mut sigma = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            sigma[i * d + j] = theory * cov[i * d + j] * scale[i] * scale[j];
        }
    }
    for k in 0..d {
        if !params.rate[k] {
            sigma[k * d + k] += (params.floor * mean[k]).powi(2);
        }
    }
    Learned {
        inverse: invert_spd(&sigma, d),
        mean,
        e,
    }
}

/// The inverse of a symmetric positive definite matrix through its Cholesky factor; a small
/// diagonal jitter (growing tenfold) is added until the factorization succeeds.
fn invert_spd(a: &[f64], d: usize) -> Vec<f64> {
    let trace: f64 = (0..d).map(|k| a[k * d + k]).sum();
    let mut jitter = 0.0;
    loop {
        let mut m = a.to_vec();
        for k in 0..d {
            m[k * d + k] += jitter;
        }
        if let Some(l) = cholesky(&m, d) {
            return inverse_from_cholesky(&l, d);
        }
        jitter = if jitter == 0.0 {
            1e-12 * trace.max(1e-300) / d as f64
        } else {
            jitter * 10.0
        };
    }
}

/// Lower-triangular L with L Lᵀ = a, or None when `a` is not positive definite.
fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + j] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹.
fn inverse_from_cholesky(l: &[f64], d: usize) -> Vec<f64> {
    // L⁻¹ by forward substitution, column by column.
    let mut linv = vec![0.0; d * d];
    for c in 0..d {
        for i in c..d {
            let s: f64 = (c..i).map(|k| l[i * d + k] * linv[k * d + c]).sum();
            let rhs = if i == c { 1.0 } else { 0.0 };
            linv[i * d + c] = (rhs - s) / l[i * d + i];
        }
    }
    let mut inv = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            inv[i * d + j] = (i.max(j)..d)
                .map(|k| linv[k * d + i] * linv[k * d + j])
                .sum();
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(d: usize) -> MewmaParams {
        MewmaParams {
            rate: vec![false; d],
            warmup: 200,
            span: 20.0,
            shrink: 0.1,
            skip: 50,
            max_inflation: 100.0,
            floor: 0.0,
            freeze_at: 24.0,
            track_span: 300.0,
        }
    }

    #[test]
    fn the_inverse_of_a_known_matrix() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let inv = invert_spd(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-12, "({i},{j}) = {v}");
            }
        }
        // Singular: jitter makes it invertible instead of failing.
        let singular = invert_spd(&[1.0, 1.0, 1.0, 1.0], 2);
        assert!(singular.iter().all(|v| v.is_finite()));
    }

    /// A deterministic noise in [-1, 1].
    fn noise(i: usize, k: usize) -> f64 {
        let x = ((i * 7919 + k * 104_729) % 1_000) as f64 / 500.0;
        x - 1.0
    }

    #[test]
    fn quiet_during_warm_up_calm_on_normal_rows_and_high_on_a_broken_correlation() {
        let mut m = Mewma::new(params(2));
        // Two correlated fields: b follows a.
        let row = |i: usize| {
            let a = 10.0 + noise(i, 0);
            vec![a, 2.0 * a + 0.1 * noise(i, 1)]
        };
        for i in 0..200 {
            assert_eq!(m.push(&row(i)), None);
        }
        assert!(m.is_warm());
        let normal: Vec<f64> = (200..400).map(|i| m.push(&row(i)).unwrap().0).collect();
        let max_normal = normal.iter().cloned().fold(0.0, f64::max);
        assert!(max_normal < 24.0, "normal rows reached T² {max_normal}");
        // b departs from 2a by 1.0 (ten times its own noise) while both stay in range.
        let mut last = (0.0, 0);
        for i in 400..440 {
            let mut r = row(i);
            r[1] += 1.0;
            last = m.push(&r).unwrap();
        }
        assert!(
            last.0 > 2.0 * 24.0,
            "T² {} is not well above the raise level",
            last.0
        );
        assert_eq!(last.1, 1, "field b contributes most");
    }

    #[test]
    fn a_missing_value_changes_nothing() {
        let mut m = Mewma::new(MewmaParams {
            warmup: 3,
            skip: 0,
            ..params(2)
        });
        for i in 0..3 {
            m.push(&[1.0 + i as f64, 2.0 - i as f64]);
        }
        let before = format!("{m:?}");
        assert_eq!(m.push(&[f64::NAN, 1.0]), None);
        assert_eq!(format!("{m:?}"), before);
        assert_eq!(m.push(&[1.0]), None, "a row of the wrong width");
    }

    #[test]
    fn rate_fields_enter_as_changes_so_a_steady_drift_is_normal() {
        let mut p = params(1);
        p.rate = vec![true];
        let mut m = Mewma::new(p);
        // A level drifting by 0.1 per row plus noise: as a rate it is stationary.
        for i in 0..200 {
            m.push(&[i as f64 * 0.1 + 0.01 * noise(i, 0)]);
        }
        let t2 = (200..600)
            .map(|i| m.push(&[i as f64 * 0.1 + 0.01 * noise(i, 0)]).unwrap().0)
            .fold(0.0, f64::max);
        assert!(t2 < 24.0, "T² {t2}");
    }
}
