//! Learning-rate schedules as transformers defines them (`get_scheduler`): a linear warmup from 0
//! over `warmup_steps`, then constant, linear decay to 0, or half-cosine decay to 0.

/// `schedule` in the options: `"constant"`, `"linear"` or `"cosine"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

impl Schedule {
    /// The learning-rate multiplier for optimizer step `step` (0-based) of `total`.
    pub fn factor(self, step: usize, warmup: usize, total: usize) -> f64 {
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
        match self {
            Schedule::Constant => 1.0,
            Schedule::Linear => ((total as f64 - step as f64) / total.saturating_sub(warmup).max(1) as f64).max(0.0),
            Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_starts_at_zero_and_reaches_one() {
        for s in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
            assert_eq!(s.factor(0, 4, 20), 0.0);
            assert_eq!(s.factor(2, 4, 20), 0.5);
            assert_eq!(s.factor(4, 4, 20), 1.0);
        }
    }

    #[test]
    fn decays_like_transformers() {
        // transformers: linear = (total - step) / (total - warmup); cosine = 0.5 (1 + cos(pi p)).
        assert!((Schedule::Linear.factor(12, 4, 20) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule::Linear.factor(20, 4, 20), 0.0);
        assert!((Schedule::Cosine.factor(12, 4, 20) - 0.5).abs() < 1e-12);
        assert!(Schedule::Cosine.factor(19, 4, 20) > 0.0);
        assert_eq!(Schedule::Constant.factor(0, 0, 20), 1.0);
    }
}
