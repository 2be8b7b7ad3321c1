//! Rotary position embeddings in Hugging Face's `rotate_half` convention.
//!
//! For a head vector `x` whose first `rot_dim` dims rotate (partial rotary leaves the rest
//! untouched), with `h = rot_dim / 2` and `inv_freq[i] = theta^(-2i/rot_dim)`:
//!
//! ```text
//! angle_i = position · inv_freq[i]
//! out[i]     = x[i]     · cos(angle_i) − x[i + h] · sin(angle_i)      (i < h)
//! out[i + h] = x[i + h] · cos(angle_i) + x[i]     · sin(angle_i)
//! ```
//!
//! i.e. `x · cos + rotate_half(x) · sin` with cos/sin duplicated over both halves. Like HF, the
//! frequencies and angles are f32 (`inv_freq` rounded to f32, `angle = f32(inv_freq) · f32(pos)`).
//! Cos/sin are computed on the host per forward call from each row's own position ids, so
//! left-padded rows and incremental decoding need no table of `max_position` entries.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::Value;
use strata_core::{Error, Result};

/// How the base frequencies are rescaled (HF `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `default`: unscaled.
    None,
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The interpolation factor.
        factor: f64,
    },
    /// `llama3`: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 {
        /// Scale for the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
}

/// Rotary settings of one attention kind, as read from an HF config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// Base `theta` (`rope_theta`).
    pub theta: f64,
    /// Fraction of each head's dims that rotate (`partial_rotary_factor`, NeoX `rotary_pct`).
    pub partial_rotary_factor: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

impl Default for RopeConfig {
    /// HF's defaults: theta 10000, full rotary, no scaling.
    fn default() -> Self {
        Self {
            theta: 10_000.0,
            partial_rotary_factor: 1.0,
            scaling: RopeScaling::None,
        }
    }
}

impl RopeConfig {
    /// Reads the rotary settings of an HF `config.json` (errors name `path`).
    ///
    /// Accepts the transformers-5 form (`rope_parameters: {"rope_type": …, "rope_theta": …,
    /// "partial_rotary_factor": …, "factor": …}`) and the older top-level form (`rope_theta`,
    /// `rope_scaling: {"type" | "rope_type": …}`, `partial_rotary_factor`, or NeoX's
    /// `rotary_emb_base` / `rotary_pct`). A `rope_parameters` holding one entry per layer type
    /// (Gemma 3) is an error here: use [`RopeConfig::from_hf_config_entry`].
    pub fn from_hf_config(config: &Value, path: &Path) -> Result<Self> {
        match config.get("rope_parameters") {
            Some(Value::Object(params)) if is_per_layer_type(params) => {
                let keys: Vec<&str> = params.keys().map(String::as_str).collect();
                Err(Error::model(
                    path,
                    format!(
                        "field `rope_parameters` has one entry per layer type ({}); the model must \
                         pick one",
                        keys.join(", ")
                    ),
                ))
            }
            Some(Value::Object(params)) => parse(config, params, "rope_parameters", path),
            Some(Value::Null) | None => parse_legacy(config, path),
            Some(_) => Err(Error::model(
                path,
                "field `rope_parameters`: expected an object",
            )),
        }
    }

    /// Like [`RopeConfig::from_hf_config`], picking the `layer_type` entry (e.g.
    /// `"sliding_attention"`) when `rope_parameters` has one entry per layer type. A config with
    /// a single rotary setting returns it for every layer type (older Gemma configs keep a
    /// separate `rope_local_base_freq`, which the Gemma crate applies itself).
    pub fn from_hf_config_entry(config: &Value, path: &Path, layer_type: &str) -> Result<Self> {
        match config.get("rope_parameters") {
            Some(Value::Object(params)) if is_per_layer_type(params) => {
                let field = format!("rope_parameters.{layer_type}");
                match params.get(layer_type) {
                    Some(Value::Object(entry)) => parse(config, entry, &field, path),
                    _ => Err(Error::model(
                        path,
                        format!(
                            "field `{field}`: missing (expected an object for this layer type)"
                        ),
                    )),
                }
            }
            _ => Self::from_hf_config(config, path),
        }
    }

    /// Number of rotated dims of a `head_dim`-wide head (HF: `int(head_dim · factor)`).
    pub fn rotary_dim(&self, head_dim: usize) -> usize {
        (head_dim as f64 * self.partial_rotary_factor) as usize
    }
}

/// True when every value is an object and no rotary key sits at the top (Gemma 3's per-layer-type
/// form).
fn is_per_layer_type(params: &serde_json::Map<String, Value>) -> bool {
    !params.is_empty()
        && params.values().all(Value::is_object)
        && !params.contains_key("rope_type")
        && !params.contains_key("rope_theta")
}

/// An optional number at `obj[key]`; errors name `field.key`.
fn number(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    field: &str,
    path: &Path,
) -> Result<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            Error::model(
                path,
                format!("field `{field}{key}`: expected a number, found {v}"),
            )
        }),
    }
}

/// A required number for a scaling type.
fn required(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    field: &str,
    rope_type: &str,
    path: &Path,
) -> Result<f64> {
    number(obj, key, field, path)?.ok_or_else(|| {
        Error::model(
            path,
            format!("field `{field}{key}`: required by rope type `{rope_type}`"),
        )
    })
}

/// Reads the scaling from an object carrying `rope_type` (or the legacy `type`).
fn scaling(obj: &serde_json::Map<String, Value>, field: &str, path: &Path) -> Result<RopeScaling> {
    let prefix = format!("{field}.");
    let rope_type = match obj.get("rope_type").or_else(|| obj.get("type")) {
        None | Some(Value::Null) => "default",
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(Error::model(
                path,
                format!("field `{prefix}rope_type`: expected a string, found {v}"),
            ));
        }
    };
    match rope_type {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: required(obj, "factor", &prefix, rope_type, path)?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: required(obj, "factor", &prefix, rope_type, path)?,
            low_freq_factor: required(obj, "low_freq_factor", &prefix, rope_type, path)?,
            high_freq_factor: required(obj, "high_freq_factor", &prefix, rope_type, path)?,
            original_max_position_embeddings: required(
                obj,
                "original_max_position_embeddings",
                &prefix,
                rope_type,
                path,
            )?,
        }),
        other => Err(Error::Unsupported(format!(
            "{}: field `{prefix}rope_type`: rotary scaling `{other}` is not supported \
             (supported: default, linear, llama3)",
            path.display()
        ))),
    }
}

/// The transformers-5 form: one object with type, theta, factor and scaling parameters.
fn parse(
    config: &Value,
    params: &serde_json::Map<String, Value>,
    field: &str,
    path: &Path,
) -> Result<RopeConfig> {
    let top = config.as_object().cloned().unwrap_or_default();
    let prefix = format!("{field}.");
    let theta = match number(params, "rope_theta", &prefix, path)? {
        Some(t) => t,
        None => number(&top, "rope_theta", "", path)?.unwrap_or(RopeConfig::default().theta),
    };
    let partial = match number(params, "partial_rotary_factor", &prefix, path)? {
        Some(p) => p,
        None => number(&top, "partial_rotary_factor", "", path)?.unwrap_or(1.0),
    };
    finish(theta, partial, scaling(params, field, path)?, path)
}

/// The older form: top-level `rope_theta` (NeoX: `rotary_emb_base`), `partial_rotary_factor`
/// (NeoX: `rotary_pct`) and an optional `rope_scaling` object.
fn parse_legacy(config: &Value, path: &Path) -> Result<RopeConfig> {
    let top = config.as_object().cloned().unwrap_or_default();
    let theta = match number(&top, "rope_theta", "", path)? {
        Some(t) => t,
        None => number(&top, "rotary_emb_base", "", path)?.unwrap_or(RopeConfig::default().theta),
    };
    let partial = match number(&top, "partial_rotary_factor", "", path)? {
        Some(p) => p,
        None => number(&top, "rotary_pct", "", path)?.unwrap_or(1.0),
    };
    let scaling = match top.get("rope_scaling") {
        None | Some(Value::Null) => RopeScaling::None,
        Some(Value::Object(obj)) => scaling(obj, "rope_scaling", path)?,
        Some(v) => {
            return Err(Error::model(
                path,
                format!("field `rope_scaling`: expected an object or null, found {v}"),
            ));
        }
    };
    finish(theta, partial, scaling, path)
}

fn finish(theta: f64, partial: f64, scaling: RopeScaling, path: &Path) -> Result<RopeConfig> {
    if !(theta > 0.0 && theta.is_finite()) {
        return Err(Error::model(
            path,
            format!("rotary base `rope_theta` = {theta}: expected a positive number"),
        ));
    }
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(Error::model(
            path,
            format!("`partial_rotary_factor` = {partial}: expected a fraction in (0, 1]"),
        ));
    }
    Ok(RopeConfig {
        theta,
        partial_rotary_factor: partial,
        scaling,
    })
}

/// Rotary frequencies for heads of one width.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `rot_dim / 2` frequencies, f32 as in HF.
    inv_freq: Vec<f32>,
    rot_dim: usize,
}

impl Rope {
    /// The frequencies of `config` for `head_dim`-wide heads. Errors when the rotated width is
    /// zero or odd.
    pub fn new(config: &RopeConfig, head_dim: usize) -> Result<Self> {
        let rot_dim = config.rotary_dim(head_dim);
        if rot_dim == 0 || !rot_dim.is_multiple_of(2) || rot_dim > head_dim {
            return Err(Error::Unsupported(format!(
                "rotary embedding over {rot_dim} of {head_dim} head dims: the rotated width must \
                 be even and positive"
            )));
        }
        let inv_freq = (0..rot_dim / 2)
            .map(|i| {
                // HF: 1 / theta ** (arange(0, dim, 2).float() / dim), in f32.
                let exponent = (2 * i) as f32 / rot_dim as f32;
                let f = 1.0 / (config.theta as f32).powf(exponent);
                scale_frequency(f, &config.scaling)
            })
            .collect();
        Ok(Self { inv_freq, rot_dim })
    }

    /// Number of rotated dims per head.
    pub fn rotary_dim(&self) -> usize {
        self.rot_dim
    }

    /// The frequencies (`rot_dim / 2` of them).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Cos/sin tables for these per-row position ids (`[batch][tokens]`, rectangular).
    pub fn tables(&self, positions: &[Vec<usize>], device: &Device) -> RopeTables {
        let b = positions.len();
        let t = positions.first().map_or(0, Vec::len);
        let (half, rot) = (self.rot_dim / 2, self.rot_dim);
        let mut cos = Vec::with_capacity(b * t * rot);
        let mut sin = Vec::with_capacity(b * t * rot);
        for row in positions {
            assert_eq!(
                row.len(),
                t,
                "Rope::tables: position rows must have equal length"
            );
            for &p in row {
                let p = p as f32;
                let start = cos.len();
                for &f in &self.inv_freq {
                    let angle = f * p;
                    cos.push(angle.cos());
                    sin.push(-angle.sin());
                }
                // cos duplicated; sin negated on the first half, as `rotate_half` puts `-x2` there.
                cos.extend_from_within(start..start + half);
                for i in 0..half {
                    let s = -sin[start + i];
                    sin.push(s);
                }
            }
        }
        let shape = [b, 1, t, rot];
        RopeTables {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            rot_dim: rot,
        }
    }
}

/// Applies the scaling of `rope_type` to one default frequency (HF `_compute_*_parameters`).
fn scale_frequency(f: f32, scaling: &RopeScaling) -> f32 {
    match *scaling {
        RopeScaling::None => f,
        RopeScaling::Linear { factor } => f / factor as f32,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let f64f = f as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f64f;
            let low_freq_wavelen = old / low_freq_factor;
            let high_freq_wavelen = old / high_freq_factor;
            if wavelen > low_freq_wavelen {
                (f64f / factor) as f32
            } else if wavelen < high_freq_wavelen {
                f
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                ((1.0 - smooth) * f64f / factor + smooth * f64f) as f32
            }
        }
    }
}

/// Cos/sin of one forward call, `[batch, 1, tokens, rot_dim]`, shared by every layer with the same
/// rotary settings. `sin` carries `rotate_half`'s sign (negated on the first half).
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
    rot_dim: usize,
}

impl RopeTables {
    /// Rotates the first `rot_dim` dims of every head of `x` (`[batch, heads, tokens, head_dim]`);
    /// the remaining dims pass through.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        if crate::cpu::flex_f32(&x) {
            return crate::cpu::rope(x, &self.cos, &self.sin, self.rot_dim);
        }
        let [b, h, t, d] = x.dims();
        let (rot, half) = (self.rot_dim, self.rot_dim / 2);
        let x_rot = if rot == d {
            x.clone()
        } else {
            x.clone().narrow(3, 0, rot)
        };
        let x1 = x_rot.clone().narrow(3, 0, half);
        let x2 = x_rot.clone().narrow(3, half, half);
        let swapped = Tensor::cat(vec![x2, x1], 3);
        let cos = self.cos.clone().expand([b, h, t, rot]);
        let sin = self.sin.clone().expand([b, h, t, rot]);
        let rotated = x_rot * cos + swapped * sin;
        if rot == d {
            rotated
        } else {
            Tensor::cat(vec![rotated, x.narrow(3, rot, d - rot)], 3)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use burn::tensor::{Device, Tensor, TensorData};
    use serde_json::json;
    use strata_core::Error;

    use super::{Rope, RopeConfig, RopeScaling};

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.try_into_vec_as::<f32>().unwrap()
    }

    /// The rotation written out for one head vector, in f64.
    fn rotate(x: &[f64], pos: f64, theta: f64, rot: usize) -> Vec<f64> {
        let half = rot / 2;
        let mut out = x.to_vec();
        for i in 0..half {
            let angle = pos * theta.powf(-((2 * i) as f64) / rot as f64);
            let (c, s) = (angle.cos(), angle.sin());
            out[i] = x[i] * c - x[i + half] * s;
            out[i + half] = x[i + half] * c + x[i] * s;
        }
        out
    }

    #[test]
    fn one_pair_rotates_by_the_position() {
        // head_dim 2: (1, 0) at position 1 rotates by 1 radian; at position 0 it stays.
        let device = Device::flex();
        let rope = Rope::new(&RopeConfig::default(), 2).unwrap();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 0.0, 1.0, 0.0], [1, 1, 2, 2]),
            &device,
        );
        let out = values(rope.tables(&[vec![1, 0]], &device).apply(x));
        let expected = [0.540_302_3_f32, 0.841_470_96, 1.0, 0.0];
        for (a, e) in out.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn full_and_partial_rotary_match_the_hand_formula() {
        let device = Device::flex();
        for (head_dim, partial) in [(4usize, 1.0), (8, 0.5), (16, 0.25)] {
            let config = RopeConfig {
                theta: 100.0,
                partial_rotary_factor: partial,
                scaling: RopeScaling::None,
            };
            let rope = Rope::new(&config, head_dim).unwrap();
            let rot = rope.rotary_dim();
            assert_eq!(rot, 4);
            // Two rows with their own positions (the second as if left-padded), two heads.
            let positions = vec![vec![0, 1, 2], vec![0, 0, 7]];
            let (b, h, t) = (2, 2, 3);
            let x: Vec<f64> = (0..b * h * t * head_dim)
                .map(|i| ((i * 37 % 11) as f64 - 5.0) / 4.0)
                .collect();
            let input = Tensor::<4>::from_data(
                TensorData::new(
                    x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    [b, h, t, head_dim],
                ),
                &device,
            );
            let out = values(rope.tables(&positions, &device).apply(input));
            for (row, row_positions) in positions.iter().enumerate() {
                for head in 0..h {
                    for (tok, &pos) in row_positions.iter().enumerate() {
                        let at = ((row * h + head) * t + tok) * head_dim;
                        let want = rotate(&x[at..at + head_dim], pos as f64, 100.0, rot);
                        for (j, w) in want.iter().enumerate() {
                            let got = out[at + j] as f64;
                            assert!(
                                (got - w).abs() < 1e-5,
                                "row {row} head {head} token {tok} dim {j}: {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scaled_frequencies_follow_hf() {
        let base = RopeConfig {
            theta: 10_000.0,
            partial_rotary_factor: 1.0,
            scaling: RopeScaling::None,
        };
        let plain = Rope::new(&base, 64).unwrap();
        let linear = Rope::new(
            &RopeConfig {
                scaling: RopeScaling::Linear { factor: 4.0 },
                ..base
            },
            64,
        )
        .unwrap();
        for (p, l) in plain.inv_freq().iter().zip(linear.inv_freq()) {
            assert_eq!(*l, p / 4.0);
        }
        let (factor, low, high, old) = (8.0, 1.0, 4.0, 8192.0);
        let llama3 = Rope::new(
            &RopeConfig {
                scaling: RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: old,
                },
                ..base
            },
            64,
        )
        .unwrap();
        let mut kinds = [0usize; 3];
        for (&f, &g) in plain.inv_freq().iter().zip(llama3.inv_freq()) {
            let wavelen = 2.0 * std::f64::consts::PI / f as f64;
            let want = if wavelen < old / high {
                kinds[0] += 1;
                f as f64
            } else if wavelen > old / low {
                kinds[1] += 1;
                f as f64 / factor
            } else {
                kinds[2] += 1;
                let s = (old / wavelen - low) / (high - low);
                (1.0 - s) * f as f64 / factor + s * f as f64
            };
            assert!((g as f64 - want).abs() <= 1e-7 * want, "{g} vs {want}");
        }
        assert!(
            kinds.iter().all(|&k| k > 0),
            "every regime is exercised: {kinds:?}"
        );
    }

    #[test]
    fn both_config_forms_parse() {
        let path = Path::new("config.json");
        let new = json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}});
        assert_eq!(RopeConfig::from_hf_config(&new, path).unwrap().theta, 1e6);
        let neox = json!({"rope_parameters": {"rope_type": "default", "rope_theta": 10000, "partial_rotary_factor": 0.25}});
        assert_eq!(
            RopeConfig::from_hf_config(&neox, path)
                .unwrap()
                .rotary_dim(16),
            4
        );
        let old = json!({"rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let c = RopeConfig::from_hf_config(&old, path).unwrap();
        assert_eq!(c.theta, 5e5);
        assert!(matches!(c.scaling, RopeScaling::Llama3 { factor: 8.0, .. }));
        let legacy_linear = json!({"rope_scaling": {"type": "linear", "factor": 2.0}});
        let c = RopeConfig::from_hf_config(&legacy_linear, path).unwrap();
        assert_eq!(
            (c.theta, c.scaling),
            (10_000.0, RopeScaling::Linear { factor: 2.0 })
        );
        let old_neox = json!({"rotary_emb_base": 10000, "rotary_pct": 0.25});
        assert_eq!(
            RopeConfig::from_hf_config(&old_neox, path)
                .unwrap()
                .partial_rotary_factor,
            0.25
        );

        let gemma = json!({"rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}});
        assert!(matches!(
            RopeConfig::from_hf_config(&gemma, path),
            Err(Error::Model { .. })
        ));
        assert_eq!(
            RopeConfig::from_hf_config_entry(&gemma, path, "full_attention")
                .unwrap()
                .theta,
            1e6
        );
        assert_eq!(
            RopeConfig::from_hf_config_entry(&gemma, path, "sliding_attention")
                .unwrap()
                .theta,
            1e4
        );
        assert!(RopeConfig::from_hf_config_entry(&gemma, path, "chunked_attention").is_err());
        assert_eq!(
            RopeConfig::from_hf_config_entry(&new, path, "full_attention")
                .unwrap()
                .theta,
            1e6
        );
    }

    #[test]
    fn unsupported_and_malformed_configs_are_errors() {
        let path = Path::new("config.json");
        for rope_type in ["yarn", "dynamic", "longrope"] {
            let c = json!({"rope_parameters": {"rope_type": rope_type, "rope_theta": 1e4, "factor": 2.0}});
            match RopeConfig::from_hf_config(&c, path) {
                Err(Error::Unsupported(msg)) => assert!(
                    msg.contains(rope_type) && msg.contains("config.json"),
                    "{msg}"
                ),
                other => panic!("{rope_type}: {other:?}"),
            }
        }
        let missing = json!({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}});
        let err = RopeConfig::from_hf_config(&missing, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rope_parameters.factor"), "{err}");
        let bad = json!({"rope_theta": "ten thousand"});
        let err = RopeConfig::from_hf_config(&bad, path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rope_theta"), "{err}");
        assert!(
            Rope::new(
                &RopeConfig {
                    partial_rotary_factor: 0.1,
                    ..RopeConfig::default()
                },
                10
            )
            .is_err()
        );
    }
}
