//! AdamW with `torch.optim.AdamW` semantics (single-tensor path): decoupled weight decay
//! `p ← p·(1 − lr·wd)`, bias-corrected moments, and `eps` added after dividing `√v` by
//! `√(1 − β₂ᵗ)`:  `p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + eps)`.

use burn::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Optimizer state: first and second moments per parameter and the step count.
#[derive(Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Steps taken so far (torch's `state["step"]`).
    pub t: usize,
    pub m: Vec<Tensor<2>>,
    pub v: Vec<Tensor<2>>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &[Tensor<2>]) -> Self {
        let zeros = || params.iter().map(Tensor::zeros_like).collect();
        AdamW { config, t: 0, m: zeros(), v: zeros() }
    }

    /// One update of every parameter with its gradient at learning rate `lr`.
    pub fn step(&mut self, params: Vec<Tensor<2>>, grads: Vec<Tensor<2>>, lr: f64) -> Vec<Tensor<2>> {
        let c = self.config;
        self.t += 1;
        let bias1 = 1.0 - c.beta1.powi(self.t as i32);
        let bias2_sqrt = (1.0 - c.beta2.powi(self.t as i32)).sqrt();
        let step_size = lr / bias1;
        let mut updated = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.into_iter().zip(grads).enumerate() {
            let p = if c.weight_decay != 0.0 { p * (1.0 - lr * c.weight_decay) } else { p };
            // torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
            let m = self.m[i].clone() + (g.clone() - self.m[i].clone()) * (1.0 - c.beta1);
            let v = self.v[i].clone() * c.beta2 + g.clone() * g * (1.0 - c.beta2);
            let denom = v.clone().sqrt() / bias2_sqrt + c.eps;
            updated.push(p - m.clone() / denom * step_size);
            self.m[i] = m;
            self.v[i] = v;
        }
        updated
    }
}
