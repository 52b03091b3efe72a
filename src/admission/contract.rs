//! The pod contract: every label, annotation and environment variable InfraMind writes on a pod
//! and reads back, and the one parser of build concurrency. Admission writes these; the outcome
//! watcher and the in-pod reporter read them, so a key or a rule lives here once.

/// Prefix of every InfraMind label and annotation.
pub const PREFIX: &str = "inframind.io/";

/// Label on every pod the webhook decided on; the outcome watcher selects on it.
pub const MANAGED_LABEL: &str = "inframind.io/managed";
/// Annotation that opts a pod out.
pub const SKIP_ANNOTATION: &str = "inframind.io/skip";
/// Annotation that asks for a dry run (annotate only).
pub const DRY_RUN_ANNOTATION: &str = "inframind.io/dry-run";
/// What InfraMind did (`applied`, `holdout`, `dry-run`, `unchanged`); its presence makes
/// re-invocation a no-op.
pub const DECISION_ANNOTATION: &str = "inframind.io/decision";
/// Decision value: the recommendation was applied.
pub const DECISION_APPLIED: &str = "applied";
/// Decision value: the control group — decided and annotated, left as requested.
pub const DECISION_HOLDOUT: &str = "holdout";
/// Decision value: annotated with what would change, left as requested.
pub const DECISION_DRY_RUN: &str = "dry-run";
/// Decision value: left as requested (cold start).
pub const DECISION_UNCHANGED: &str = "unchanged";
/// The recognised pipeline (label or annotation on input; annotation on output).
pub const PIPELINE: &str = "inframind.io/pipeline";
/// The recognised branch.
pub const BRANCH: &str = "inframind.io/branch";
/// The recognised build image.
pub const IMAGE: &str = "inframind.io/image";
/// The recognised node type.
pub const NODE_TYPE: &str = "inframind.io/node-type";
/// The build container's name (input: which container builds; output: which one was chosen).
pub const CONTAINER: &str = "inframind.io/container";
/// The recommended config, `cpu=… memory=… concurrency=…`.
pub const RECOMMENDATION: &str = "inframind.io/recommendation";
/// The model version that decided (`none` on cold start).
pub const MODEL_VERSION: &str = "inframind.io/model-version";
/// The predicted build duration of the chosen config, seconds.
pub const PREDICTED_DURATION: &str = "inframind.io/predicted-duration-seconds";
/// The decision's confidence.
pub const CONFIDENCE: &str = "inframind.io/confidence";
/// Whether the decision explored.
pub const EXPLORED: &str = "inframind.io/explored";
/// One line saying why.
pub const RATIONALE: &str = "inframind.io/rationale";
/// The build container's requests, limits and concurrency before the change (JSON).
pub const ORIGINAL: &str = "inframind.io/original";
/// Why a pod was left as requested.
pub const REASON: &str = "inframind.io/reason";

/// The pod's uid (downward API), read by the reporter.
pub const ENV_POD_UID: &str = "INFRAMIND_POD_UID";
/// The pod's name (downward API).
pub const ENV_POD_NAME: &str = "INFRAMIND_POD_NAME";
/// The pod's namespace (downward API).
pub const ENV_POD_NAMESPACE: &str = "INFRAMIND_POD_NAMESPACE";
/// The recognised pipeline.
pub const ENV_PIPELINE: &str = "INFRAMIND_PIPELINE";
/// The recognised branch.
pub const ENV_BRANCH: &str = "INFRAMIND_BRANCH";
/// The recognised image.
pub const ENV_IMAGE: &str = "INFRAMIND_IMAGE";
/// The recognised node type.
pub const ENV_NODE_TYPE: &str = "INFRAMIND_NODE_TYPE";
/// The build container's cpu request in millicores (downward API).
pub const ENV_CPU_REQUEST_MILLI: &str = "INFRAMIND_CPU_REQUEST_MILLI";
/// The build container's memory request in MiB (downward API).
pub const ENV_MEM_REQUEST_MIB: &str = "INFRAMIND_MEM_REQUEST_MIB";
/// The chosen concurrency, as a plain number.
pub const ENV_CONCURRENCY: &str = "INFRAMIND_CONCURRENCY";

/// make's flags: merged (`-jN` replaces any job flag) rather than set.
pub const MAKEFLAGS: &str = "MAKEFLAGS";

/// The concurrency variables set by default, in the order they are read back.
pub const DEFAULT_CONCURRENCY_ENV: &[&str] = &[
    MAKEFLAGS,
    "CMAKE_BUILD_PARALLEL_LEVEL",
    "CARGO_BUILD_JOBS",
    ENV_CONCURRENCY,
];

/// Concurrency from `-jN`, `-j N`, `--jobs=N` or `--jobs N` in MAKEFLAGS-style text.
pub fn jobs_in_makeflags(flags: &str) -> Option<u32> {
    let tokens: Vec<&str> = flags.split_whitespace().collect();
    tokens.iter().enumerate().find_map(|(i, t)| {
        let next = || tokens.get(i + 1).and_then(|n| n.parse().ok());
        match *t {
            "-j" | "--jobs" => next(),
            _ => t
                .strip_prefix("--jobs=")
                .or_else(|| t.strip_prefix("-j"))
                .and_then(|n| n.parse().ok()),
        }
    })
}

/// `flags` with every job-count flag replaced by `-j{jobs}`.
pub fn merge_makeflags(flags: &str, jobs: u32) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut tokens = flags.split_whitespace().peekable();
    while let Some(t) = tokens.next() {
        let is_jobs = t == "-j"
            || t == "--jobs"
            || t.starts_with("--jobs=")
            || (t.starts_with("-j") && t[2..].chars().all(|c| c.is_ascii_digit()));
        if is_jobs {
            if (t == "-j" || t == "--jobs")
                && tokens
                    .peek()
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            {
                tokens.next();
            }
            continue;
        }
        out.push(t.to_string());
    }
    out.push(format!("-j{jobs}"));
    out.join(" ")
}

/// The build concurrency a container's environment sets: the first of `names` with a readable
/// value (`value_of` gives a variable's literal value). The one rule admission, the outcome
/// watcher and the reporter share.
pub fn concurrency_in_env<'a, S: AsRef<str>>(
    names: &[S],
    value_of: impl Fn(&str) -> Option<&'a str>,
) -> Option<u32> {
    names.iter().find_map(|name| {
        let name = name.as_ref();
        let value = value_of(name)?;
        if name == MAKEFLAGS {
            jobs_in_makeflags(value)
        } else {
            value.trim().parse().ok()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_makeflags_form_is_read() {
        for (flags, jobs) in [
            ("-j4", Some(4)),
            ("-j 4", Some(4)),
            ("--jobs=4", Some(4)),
            ("--jobs 4", Some(4)),
            ("-k -j12 V=1", Some(12)),
            ("-k", None),
            ("-j", None),
        ] {
            assert_eq!(jobs_in_makeflags(flags), jobs, "{flags}");
        }
    }

    #[test]
    fn merged_flags_read_back_as_the_new_jobs() {
        for flags in ["", "-j 4", "--jobs=4 -k", "-k --jobs 9 V=1", "-j2 -j3"] {
            let merged = merge_makeflags(flags, 7);
            assert_eq!(jobs_in_makeflags(&merged), Some(7), "{flags} -> {merged}");
        }
        assert_eq!(merge_makeflags("-k -j 2 V=1", 6), "-k V=1 -j6");
    }

    #[test]
    fn the_first_readable_variable_wins() {
        let env = [("MAKEFLAGS", "-k"), ("CMAKE_BUILD_PARALLEL_LEVEL", " 5 ")];
        let look = |n: &str| env.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(concurrency_in_env(DEFAULT_CONCURRENCY_ENV, look), Some(5));
    }
}
