//! A seeded train / eval split that comes out the same natively and in the browser.

use super::Example;
use crate::rng::{Rng, Stream};

/// Splits off `round(fraction · n)` examples for evaluation (at least one when `fraction > 0`
/// and there are two or more), chosen by `seed`. Returns `(train, eval)`, both in file order.
pub fn split_eval(examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let n = examples.len();
    let mut eval_count = (fraction.clamp(0.0, 1.0) * n as f64).round() as usize;
    if fraction > 0.0 && n >= 2 {
        eval_count = eval_count.max(1);
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::stream(seed, Stream::EvalSplit).shuffle(&mut order);
    let mut in_eval = vec![false; n];
    for &index in &order[..eval_count] {
        in_eval[index] = true;
    }
    let (eval, train): (Vec<_>, Vec<_>) = examples.into_iter().zip(in_eval).partition(|(_, eval)| *eval);
    (train.into_iter().map(|(e, _)| e).collect(), eval.into_iter().map(|(e, _)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
