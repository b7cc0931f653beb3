//! AdamW with decoupled weight decay, as PyTorch implements it.
//!
//! A step written as candle tensor ops takes about fifteen ops per variable, each a dispatch and
//! a fresh buffer: for SEAL's 60 LoRA matrices on the CPU that was 6-9 ms a step, a tenth of a
//! step over a short self-edit line. f32 variables on the CPU take one pass over their values
//! instead, with the moments in plain vectors. That pass repeats the tensor ops' arithmetic
//! operation for operation (candle's `x * c` and `x + c` are `x * c + 0` and `x * 1 + c` in
//! f32), so both paths give the same bits; a test holds them to that.

use super::ops::with_cpu_f32;
use anyhow::{anyhow, Result};
use candle_core::{DType, Tensor, Var};

pub(super) struct AdamW {
    vars: Vec<Var>,
    moments: Moments,
    t: i32,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

/// The first and second moments of each variable.
enum Moments {
    /// Any device and type.
    Tensors { m: Vec<Tensor>, v: Vec<Tensor> },
    /// f32 variables on the CPU.
    Host { m: Vec<Vec<f32>>, v: Vec<Vec<f32>> },
}

impl AdamW {
    pub(super) fn new(vars: Vec<Var>, weight_decay: f64) -> Result<AdamW> {
        let host = vars
            .iter()
            .all(|v| v.device().is_cpu() && v.dtype() == DType::F32);
        AdamW::with_moments(vars, weight_decay, host)
    }

    fn with_moments(vars: Vec<Var>, weight_decay: f64, host: bool) -> Result<AdamW> {
        let moments = if host {
            let zeros = || vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
            Moments::Host {
                m: zeros(),
                v: zeros(),
            }
        } else {
            let zeros = || -> candle_core::Result<Vec<Tensor>> {
                vars.iter().map(|v| v.zeros_like()).collect()
            };
            Moments::Tensors {
                m: zeros()?,
                v: zeros()?,
            }
        };
        Ok(AdamW {
            vars,
            moments,
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// One step at learning rate `lr` on `grads`, each first multiplied by `scale` when
    /// clipping asks for it.
    pub(super) fn step(&mut self, grads: &[Tensor], scale: Option<f64>, lr: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t);
        let bc2 = 1.0 - self.beta2.powi(self.t);
        match &mut self.moments {
            Moments::Tensors { m, v } => {
                for (i, var) in self.vars.iter().enumerate() {
                    let g = match scale {
                        Some(s) => (&grads[i] * s)?,
                        None => grads[i].clone(),
                    };
                    let m_new = ((&m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
                    let v_new = ((&v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
                    let update = ((&m_new / bc1)? / ((&v_new / bc2)?.sqrt()? + self.eps)?)?;
                    let theta = var.as_tensor();
                    let decayed = if self.weight_decay > 0.0 {
                        (theta * (1.0 - lr * self.weight_decay))?
                    } else {
                        theta.clone()
                    };
                    var.set(&(decayed - (update * lr)?)?)?;
                    m[i] = m_new;
                    v[i] = v_new;
                }
            }
            Moments::Host { m, v } => {
                // candle turns each f64 constant into the tensor's type the same way.
                let c = Constants {
                    // Without clipping, a multiply by one: that changes no gradient value that
                    // matters (only -0 becomes +0, and a zero enters the moments as +0 anyway).
                    scale: scale.map_or(1.0, |s| s as f32),
                    beta1: self.beta1 as f32,
                    rest1: (1.0 - self.beta1) as f32,
                    beta2: self.beta2 as f32,
                    rest2: (1.0 - self.beta2) as f32,
                    unbias1: (1.0 / bc1) as f32,
                    unbias2: (1.0 / bc2) as f32,
                    eps: self.eps as f32,
                    lr: lr as f32,
                    decay: (self.weight_decay > 0.0)
                        .then_some((1.0 - lr * self.weight_decay) as f32),
                };
                for (i, var) in self.vars.iter().enumerate() {
                    let g = grads[i].contiguous()?;
                    // The new values are made while the variable is read, and set after.
                    let theta = with_cpu_f32(&[Some(&g), Some(var.as_tensor())], |values| {
                        let (g, theta) = (values[0]?, values[1]?);
                        Some(host_step(&c, g, theta, &mut m[i], &mut v[i]))
                    })
                    .ok_or_else(|| anyhow!("AdamW: a gradient is not an f32 CPU tensor"))?;
                    var.set(&Tensor::from_vec(theta, var.shape(), var.device())?)?;
                }
            }
        }
        Ok(())
    }
}

/// A step's constants, in f32.
struct Constants {
    scale: f32,
    beta1: f32,
    rest1: f32,
    beta2: f32,
    rest2: f32,
    unbias1: f32,
    unbias2: f32,
    eps: f32,
    lr: f32,
    decay: Option<f32>,
}

/// candle's `affine`: what `x * c`, `x / c` and `x + c` compute on an f32 tensor.
fn affine(x: f32, mul: f32, add: f32) -> f32 {
    x * mul + add
}

/// The tensor path's ops on one variable's values: updates the moments, returns the new values.
/// Written as one loop over equal-length slices with no branch inside, so that it vectorises.
fn host_step(c: &Constants, g: &[f32], theta: &[f32], m: &mut [f32], v: &mut [f32]) -> Vec<f32> {
    let n = theta.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let mut out = theta.to_vec();
    match c.decay {
        Some(d) => {
            for i in 0..n {
                let th = affine(out[i], d, 0.0);
                out[i] = update(c, g[i], &mut m[i], &mut v[i], th);
            }
        }
        None => {
            for i in 0..n {
                out[i] = update(c, g[i], &mut m[i], &mut v[i], out[i]);
            }
        }
    }
    out
}

/// One value's step: the moments `m` and `v` updated, `theta`'s new value returned.
#[inline(always)]
fn update(c: &Constants, g: f32, m: &mut f32, v: &mut f32, theta: f32) -> f32 {
    let g = affine(g, c.scale, 0.0);
    *m = affine(*m, c.beta1, 0.0) + affine(g, c.rest1, 0.0);
    *v = affine(*v, c.beta2, 0.0) + affine(g * g, c.rest2, 0.0);
    let denominator = affine(affine(*v, c.unbias2, 0.0).sqrt(), 1.0, c.eps);
    theta - affine(affine(*m, c.unbias1, 0.0) / denominator, c.lr, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::SplitMix64;
    use candle_core::Device;

    fn vars(seed: u64) -> Vec<Var> {
        let mut rng = SplitMix64::new(seed);
        [(3, 5), (7, 2), (1, 9)]
            .iter()
            .map(|&(r, c)| {
                let values: Vec<f32> = (0..r * c).map(|_| rng.next_f64() as f32 - 0.5).collect();
                Var::from_tensor(&Tensor::from_vec(values, (r, c), &Device::Cpu).unwrap()).unwrap()
            })
            .collect()
    }

    /// The one-pass host step and the tensor ops give the same bits, with and without weight
    /// decay and clipping, including gradients with zeros (where `x * c + 0` matters for -0).
    #[test]
    fn the_host_step_matches_the_tensor_ops_bit_for_bit() {
        for weight_decay in [0.0, 0.01] {
            let (a, b) = (vars(1), vars(1));
            let mut host = AdamW::with_moments(a.clone(), weight_decay, true).unwrap();
            let mut tensors = AdamW::with_moments(b.clone(), weight_decay, false).unwrap();
            let mut rng = SplitMix64::new(2);
            for step in 0..5 {
                let grads: Vec<Tensor> = a
                    .iter()
                    .map(|v| {
                        let g: Vec<f32> = (0..v.elem_count())
                            .map(|i| {
                                if i % 4 == 0 {
                                    -0.0
                                } else {
                                    rng.next_f64() as f32 - 0.5
                                }
                            })
                            .collect();
                        Tensor::from_vec(g, v.shape(), &Device::Cpu).unwrap()
                    })
                    .collect();
                let scale = (step % 2 == 1).then_some(0.37);
                let lr = 1e-3 * (step + 1) as f64;
                host.step(&grads, scale, lr).unwrap();
                tensors.step(&grads, scale, lr).unwrap();
                for (x, y) in a.iter().zip(&b) {
                    let bits = |v: &Var| -> Vec<u32> {
                        let values = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                        values.iter().map(|v| v.to_bits()).collect()
                    };
                    assert_eq!(bits(x), bits(y), "step {step}, decay {weight_decay}");
                }
            }
        }
    }

    #[test]
    fn f32_cpu_variables_take_the_host_step() {
        let opt = AdamW::new(vars(3), 0.0).unwrap();
        assert!(matches!(opt.moments, Moments::Host { .. }));
    }
}
