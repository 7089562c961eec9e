//! A seeded train / eval split that comes out the same natively and in the browser.

use super::Example;

/// Splits off `round(fraction · n)` examples for evaluation (at least one when `fraction > 0`
/// and there are two or more), chosen by `seed`. Returns `(train, eval)`, both in file order.
pub fn split_eval(examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let mut eval_count = (fraction.clamp(0.0, 1.0) * n as f64).round() as usize;
    if fraction > 0.0 && n >= 2 {
        eval_count = eval_count.max(1);
    }
    // The first `eval_count` positions of a seeded Fisher–Yates shuffle.
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in 0..eval_count {
        let j = i + rng.below(n - i);
        order.swap(i, j);
    }
    let mut in_eval = vec![false; n];
    for &index in &order[..eval_count] {
        in_eval[index] = true;
    }
    let (eval, train): (Vec<_>, Vec<_>) = examples.into_iter().zip(in_eval).partition(|(_, eval)| *eval);
    (train.into_iter().map(|(e, _)| e).collect(), eval.into_iter().map(|(e, _)| e).collect())
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, and the same sequence on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (multiply-shift; the bias is negligible for dataset sizes).
    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next()) * bound as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs for seed 1234567 from the reference C implementation.
        let mut rng = SplitMix64(1_234_567);
        assert_eq!(
            [rng.next(), rng.next(), rng.next()],
            [6_457_827_717_110_365_317, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423]
        );
    }

    fn examples(n: usize) -> Vec<Example> {
        (1..=n).map(|line| Example { input_ids: vec![line as u32], labels: vec![line as i64], line }).collect()
    }

    fn lines(examples: &[Example]) -> Vec<usize> {
        examples.iter().map(|e| e.line).collect()
    }

    #[test]
    fn eval_count_rounds_and_is_at_least_one() {
        let count = |n, fraction| split_eval(examples(n), fraction, 7).1.len();
        assert_eq!(count(10, 0.25), 3);
        assert_eq!(count(10, 0.01), 1);
        assert_eq!(count(10, 0.0), 0);
        assert_eq!(count(1, 0.5), 1);
        assert_eq!(count(1, 0.4), 0);
        assert_eq!(count(10, 1.0), 10);
    }

    #[test]
    fn both_parts_keep_file_order_and_cover_every_example() {
        let (train, eval) = split_eval(examples(20), 0.3, 42);
        assert!(lines(&train).is_sorted() && lines(&eval).is_sorted());
        let mut all = [lines(&train), lines(&eval)].concat();
        all.sort();
        assert_eq!(all, (1..=20).collect::<Vec<_>>());
    }
}
