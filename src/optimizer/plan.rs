//! A decision before its seeded draw: the exploit decision, and what exploration may try
//! instead. Everything here is the same for every pod of a context, so the cache keeps plans and
//! each admission only draws (`resolve`), which keeps exploration per pod and replayable.

use rand::Rng;

use super::exploration::{explores, rng};
use super::guards::Guard;
use super::{rationale, Action, Decision, Exploration, OptimizerConfig, Policy};
use crate::BuildConfig;

/// A candidate exploration may try, with what the forest says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// The guarded config.
    pub config: BuildConfig,
    /// Guards that moved it.
    pub hits: Vec<Guard>,
    /// Mean predicted duration, seconds.
    pub predicted_duration_s: f64,
    /// P(faster than the baseline).
    pub confidence: f64,
    /// P(better than the request, else the baseline, under the objective).
    pub request_confidence: f64,
}

/// The seed-independent part of a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The decision when this admission does not explore.
    pub exploit: Decision,
    /// Allowed candidates exploration may pick (empty: never explores).
    pub arms: Vec<Arm>,
    /// Thompson: the arm each tree scores best, by tree (empty for epsilon).
    pub tree_choice: Vec<u16>,
}

impl Plan {
    /// A plan that never explores.
    pub fn fixed(exploit: Decision) -> Plan {
        Plan {
            exploit,
            arms: Vec::new(),
            tree_choice: Vec::new(),
        }
    }

    /// Approximate heap and inline size, bytes (what the cache charges for it).
    pub fn size_bytes(&self) -> usize {
        let d = &self.exploit;
        let strings = d.rationale.len()
            + d.objective.len()
            + d.reason.as_ref().map_or(0, String::len)
            + d.model_version.as_ref().map_or(0, String::len);
        std::mem::size_of::<Plan>()
            + strings
            + d.guards.len()
            + self.arms.len() * std::mem::size_of::<Arm>()
            + self.arms.iter().map(|a| a.hits.len()).sum::<usize>()
            + self.tree_choice.len() * 2
    }

    /// Whether a decision with `seed` explores, and which arm, under `config`'s policy.
    fn draw(&self, config: &OptimizerConfig, seed: u64) -> Option<(usize, Policy)> {
        if self.arms.is_empty() {
            return None;
        }
        let mut rng = rng(seed);
        if !explores(&mut rng, config.exploration_rate) {
            return None;
        }
        match config.exploration {
            Exploration::Off => None,
            Exploration::Epsilon => Some((rng.random_range(0..self.arms.len()), Policy::Epsilon)),
            Exploration::Thompson if self.tree_choice.is_empty() => None,
            Exploration::Thompson => {
                let t = rng.random_range(0..self.tree_choice.len());
                Some((self.tree_choice[t] as usize, Policy::Thompson))
            }
        }
    }

    /// The decision for the admission seeded `seed`: the exploit decision, unless this one
    /// explores an arm other than what the exploit decision runs.
    pub fn resolve(&self, config: &OptimizerConfig, seed: u64) -> Decision {
        let Some((i, policy)) = self.draw(config, seed) else {
            return self.exploit.clone();
        };
        let a = &self.arms[i];
        // Drawing what the exploit decision runs or proposes is no exploration: for Thompson,
        // the drawn tree agrees with the forest, which is how exploration fades.
        if a.config == self.exploit.config || Some(a.config) == self.exploit.proposal {
            return self.exploit.clone();
        }
        let mut d = self.exploit.clone();
        d.action = Action::Apply;
        d.config = a.config;
        d.proposal = Some(a.config);
        d.predicted_duration_s = Some(a.predicted_duration_s);
        d.confidence = a.confidence;
        d.request_confidence = Some(a.request_confidence);
        d.explored = true;
        d.policy = policy;
        d.guards = a.hits.clone();
        d.guards.sort();
        d.guards.dedup();
        d.reason = None;
        d.rationale = rationale(&d, &format!("explored ({})", policy.name()));
        d
    }
}
