//! The comparison helpers every parity test relies on must be able to fail: NaN anywhere fails,
//! and a gradient that is all zeros (or off by a constant factor) fails even when its reference
//! values are far below the absolute tolerance.

// `!(x < tolerance)` is deliberate: it is how a NaN must behave in every check.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::*;

#[test]
fn nan_anywhere_fails_the_absolute_comparison() {
    let reference = [0.5f32, -1.0, 2.0];
    assert!(max_abs_diff(&reference, &reference) == 0.0);
    assert!(!(max_abs_diff(&[0.5, f32::NAN, 2.0], &reference) < 1e-4));
    assert!(!(max_abs_diff(&[f32::NAN; 3], &reference) < 1e-4));
    assert!(!(max_abs_diff(&reference, &[f32::NAN; 3]) < 1e-4));
    assert!(worst_of([1e-6, f32::NAN, 2e-6]).is_nan());
    assert!(worst_of([f32::NAN, 1e-6]).is_nan());
}

#[test]
fn a_zero_gradient_fails_against_a_tiny_reference() {
    // Values of the size of gpt2 prompt tuning's gradients (~1e-4): all below the absolute tolerance.
    let reference: Vec<f32> = (0..64).map(|i| 1e-4 * ((i as f32) * 0.37).sin()).collect();
    assert!(max_abs_diff(&vec![0.0; 64], &reference) < 1e-4, "the absolute check alone would pass");
    let zero = gradient_error(&vec![0.0; 64], &reference);
    assert!(zero.rel_norm > GRAD_REL_NORM_TOLERANCE, "{zero:?}");
    let halved: Vec<f32> = reference.iter().map(|g| g * 0.5).collect();
    assert!(gradient_error(&halved, &reference).rel_norm > GRAD_REL_NORM_TOLERANCE);
    let close: Vec<f32> = reference.iter().map(|g| g * (1.0 + 1e-5)).collect();
    let e = gradient_error(&close, &reference);
    assert!(e.max_abs <= GRAD_ABS_TOLERANCE && e.rel_norm <= GRAD_REL_NORM_TOLERANCE, "{e:?}");
}

#[test]
fn nan_and_large_errors_fail_the_gradient_comparison() {
    let reference = vec![3.0f32, -2.0, 0.5];
    let e = gradient_error(&[3.0, f32::NAN, 0.5], &reference);
    assert!(!(e.max_abs <= GRAD_ABS_TOLERANCE) && !(e.rel_norm <= GRAD_REL_NORM_TOLERANCE));
    // Large gradients are compared relative to their size: 3e-4 off on 3.0 is fine, 1e-2 is not.
    assert!(gradient_error(&[3.0003, -2.0, 0.5], &reference).max_abs <= GRAD_ABS_TOLERANCE);
    assert!(gradient_error(&[3.01, -2.0, 0.5], &reference).max_abs > GRAD_ABS_TOLERANCE);
    // Both exactly zero (LoRA's step-0 A gradients) is a match; anything against zero is not.
    assert_eq!(gradient_error(&[0.0; 3], &[0.0; 3]).rel_norm, 0.0);
    assert!(gradient_error(&[1e-9, 0.0, 0.0], &[0.0; 3]).rel_norm.is_infinite());
}
