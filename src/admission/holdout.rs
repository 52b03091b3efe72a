//! The control group: which pods are held out (decided on, annotated, left as requested).
//!
//! Membership is a pure function of the pod's uid, so a re-invoked webhook (or a replica) puts
//! the same pod in the same group and the share held out is `rate` in expectation. The uid is
//! hashed (SHA-256) rather than used as is: uids are UUIDs whose leading bits may be time-based.

use sha2::{Digest, Sha256};

/// Default share of pods held out: enough to measure the effect, little enough to cost little.
pub const DEFAULT_HOLDOUT_RATE: f64 = 0.05;

/// A uniform number in `[0, 1)` derived from `uid` (the same uid always gives the same number).
pub fn draw(uid: &str) -> f64 {
    let digest = Sha256::digest(format!("inframind-holdout:{uid}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable in an f64.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the pod with `uid` belongs to the control group at `rate` (0 holds none out, 1 all).
pub fn held_out(uid: &str, rate: f64) -> bool {
    rate > 0.0 && draw(uid) < rate
}

/// Checks a configured rate: a share in `[0, 1]`.
pub fn validate_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("holdout rate must be within 0..=1, got {rate}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_deterministic_and_close_to_the_rate() {
        let uids: Vec<String> = (0..20_000)
            .map(|i| {
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &[i as u8, (i >> 8) as u8])
                    .to_string()
            })
            .collect();
        for rate in [0.05, 0.2, 0.5] {
            let n = uids.iter().filter(|u| held_out(u, rate)).count();
            let share = n as f64 / uids.len() as f64;
            // Binomial sd at n=20000 is under 0.0036: 4 sd either side.
            assert!((share - rate).abs() < 0.015, "rate {rate}: share {share}");
        }
        assert!(uids.iter().all(|u| held_out(u, 0.3) == held_out(u, 0.3)));
        assert!(!uids.iter().any(|u| held_out(u, 0.0)));
        assert!(uids.iter().all(|u| held_out(u, 1.0)));
    }

    #[test]
    fn a_larger_rate_keeps_everyone_already_held_out() {
        // Raising the rate adds pods to the control group; it never moves one out.
        for i in 0..2000 {
            let uid = format!("pod-{i}");
            if held_out(&uid, 0.05) {
                assert!(held_out(&uid, 0.1));
            }
        }
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert_eq!(validate_rate(0.05), Ok(0.05));
        for bad in [-0.1, 1.5, f64::NAN] {
            assert!(validate_rate(bad).is_err());
        }
    }
}
