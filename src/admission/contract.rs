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
/// How the build container was chosen (annotation, CI system, requests, image or order).
pub const CONTAINER_CHOICE: &str = "inframind.io/container-choice";
/// Which namespace bounds (LimitRange, ResourceQuota) moved the decision, and how.
pub const BOUNDS: &str = "inframind.io/bounds";
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
/// Which policy chose: `argmin`, `thompson`, `epsilon`, or a cold start.
pub const POLICY: &str = "inframind.io/policy";
/// P(the chosen config beats the pod's own request).
pub const CONFIDENCE_VS_REQUEST: &str = "inframind.io/confidence-vs-request";
/// One line saying why.
pub const RATIONALE: &str = "inframind.io/rationale";
/// The cache state the prediction assumed (`warm: last build of main hit 0.92, 40 min ago`).
pub const EXPECTED_CACHE: &str = "inframind.io/expected-cache";
/// The build cache the webhook configured (`claim build-cache, ccache 4G`), when it did.
pub const CACHE: &str = "inframind.io/cache";
/// Pod opt-in (`enabled`) or opt-out (`disabled`) of the shared build cache.
pub const CACHE_OPT: &str = "inframind.io/build-cache";
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
/// Environment variable with the pod's decision tag (downward API of the decision annotation),
/// so the reporter tags the run as the watcher does (applied, holdout, …).
pub const ENV_DECISION: &str = "INFRAMIND_DECISION";
/// The build container's cpu request in millicores (downward API).
pub const ENV_CPU_REQUEST_MILLI: &str = "INFRAMIND_CPU_REQUEST_MILLI";
/// The build container's memory request in MiB (downward API).
pub const ENV_MEM_REQUEST_MIB: &str = "INFRAMIND_MEM_REQUEST_MIB";
/// The chosen concurrency, as a plain number.
pub const ENV_CONCURRENCY: &str = "INFRAMIND_CONCURRENCY";

/// make's flags: merged (`-jN` replaces any job flag) rather than set.
pub const MAKEFLAGS: &str = "MAKEFLAGS";
/// Go's default flags: merged (`-p=N` replaces any `-p`).
pub const GOFLAGS: &str = "GOFLAGS";
/// Go's scheduler threads: set to the cpu request (rounded up), not to the concurrency.
pub const GOMAXPROCS: &str = "GOMAXPROCS";
/// Maven's extra arguments (Maven 3.9+): merged (`-T N` replaces any thread flag).
pub const MAVEN_ARGS: &str = "MAVEN_ARGS";
/// The Gradle client JVM's options: merged (`-Dorg.gradle.workers.max=N` replaces any such).
pub const GRADLE_OPTS: &str = "GRADLE_OPTS";

/// How a concurrency variable carries the job count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The whole value is the number.
    Number,
    /// make flags: `-jN`, `-j N`, `--jobs=N`, `--jobs N`.
    MakeFlags,
    /// Go flags: `-p=N`.
    GoFlags,
    /// Maven arguments: `-T N`, `-TN`, `--threads N`, `--threads=N`.
    MavenArgs,
    /// JVM options: `-Dorg.gradle.workers.max=N`.
    GradleOpts,
    /// A cpu count written from the cpu request; never read back as the concurrency.
    CpuCount,
}

/// One build tool's concurrency variable and the tool's own documentation saying it reads it.
#[derive(Debug, Clone, Copy)]
pub struct ToolVar {
    /// Environment variable.
    pub name: &'static str,
    /// The tool that reads it.
    pub tool: &'static str,
    /// How the number is written.
    pub form: Form,
    /// Where the tool documents it.
    pub evidence: &'static str,
}

/// Every build tool InfraMind tells its concurrency, with evidence. Ninja, Meson and Bazel read
/// no variable for their job count: they get it through CMake (`cmake --build` passes
/// `CMAKE_BUILD_PARALLEL_LEVEL` to Ninja) or from `INFRAMIND_CONCURRENCY` in the build script.
pub const TOOL_VARS: &[ToolVar] = &[
    ToolVar {
        name: MAKEFLAGS,
        tool: "GNU make",
        form: Form::MakeFlags,
        evidence: "https://www.gnu.org/software/make/manual/html_node/Options_002fRecursion.html",
    },
    ToolVar {
        name: "CMAKE_BUILD_PARALLEL_LEVEL",
        tool: "CMake (cmake --build, any generator incl. Ninja); scikit-build",
        form: Form::Number,
        evidence: "https://cmake.org/cmake/help/latest/envvar/CMAKE_BUILD_PARALLEL_LEVEL.html",
    },
    ToolVar {
        name: "CARGO_BUILD_JOBS",
        tool: "Cargo",
        form: Form::Number,
        evidence: "https://doc.rust-lang.org/cargo/reference/config.html#buildjobs",
    },
    ToolVar {
        name: GOFLAGS,
        tool: "Go (go build/test/install -p)",
        form: Form::GoFlags,
        evidence: "https://pkg.go.dev/cmd/go#hdr-Environment_variables",
    },
    ToolVar {
        name: GOMAXPROCS,
        tool: "Go runtime (compiler and test binaries)",
        form: Form::CpuCount,
        evidence: "https://pkg.go.dev/runtime#hdr-Environment_Variables",
    },
    ToolVar {
        name: MAVEN_ARGS,
        tool: "Maven 3.9+ (-T)",
        form: Form::MavenArgs,
        evidence: "https://maven.apache.org/configure.html#maven_args-environment-variable",
    },
    ToolVar {
        name: GRADLE_OPTS,
        tool: "Gradle (org.gradle.workers.max as a -D system property)",
        form: Form::GradleOpts,
        evidence: "https://docs.gradle.org/current/userguide/build_environment.html",
    },
    ToolVar {
        name: "MAX_JOBS",
        tool: "pip builds of native extensions (torch.utils.cpp_extension, ninja-based setup.py)",
        form: Form::Number,
        evidence: "https://pytorch.org/docs/stable/cpp_extension.html",
    },
    ToolVar {
        name: ENV_CONCURRENCY,
        tool: "anything else (ninja -j, meson compile -j, bazel --jobs) from the build script",
        form: Form::Number,
        evidence: "InfraMind's own contract",
    },
];

/// The concurrency variables set by default, in the order they are read back.
pub const DEFAULT_CONCURRENCY_ENV: &[&str] = &[
    MAKEFLAGS,
    "CMAKE_BUILD_PARALLEL_LEVEL",
    "CARGO_BUILD_JOBS",
    GOFLAGS,
    GOMAXPROCS,
    MAVEN_ARGS,
    GRADLE_OPTS,
    "MAX_JOBS",
    ENV_CONCURRENCY,
];

/// How variable `name` carries the count (unknown names: a plain number).
pub fn form_of(name: &str) -> Form {
    TOOL_VARS
        .iter()
        .find(|t| t.name == name)
        .map_or(Form::Number, |t| t.form)
}

const GRADLE_WORKERS: &str = "-Dorg.gradle.workers.max=";

/// Whitespace-separated tokens of `text` with their byte spans.
fn tokens(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// For each token: is it a job-count flag of `form`, and does it take the next token as value?
fn job_flag(form: Form, token: &str) -> Option<(bool, Option<&str>)> {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match form {
        Form::MakeFlags => match token {
            "-j" | "--jobs" => Some((true, None)),
            t if t.starts_with("--jobs=") => Some((false, t.strip_prefix("--jobs="))),
            t if t.starts_with("-j") && digits(&t[2..]) => Some((false, Some(&t[2..]))),
            _ => None,
        },
        Form::GoFlags => token
            .strip_prefix("-p=")
            .or_else(|| token.strip_prefix("--p="))
            .map(|v| (false, Some(v))),
        Form::MavenArgs => match token {
            "-T" | "--threads" => Some((true, None)),
            t if t.starts_with("--threads=") => Some((false, t.strip_prefix("--threads="))),
            t if t.starts_with("-T") && t.len() > 2 => Some((false, Some(&t[2..]))),
            _ => None,
        },
        Form::GradleOpts => token.strip_prefix(GRADLE_WORKERS).map(|v| (false, Some(v))),
        Form::Number | Form::CpuCount => None,
    }
}

/// Whether the token after a value-taking flag is its value (make: digits only, since `-j`
/// alone means unlimited; Maven: anything not a flag, e.g. `1C`).
fn takes_value(form: Form, next: &str) -> bool {
    match form {
        Form::MakeFlags => next.chars().all(|c| c.is_ascii_digit()),
        _ => !next.starts_with('-'),
    }
}

/// The job count a value of `form` sets, if readable (`-T 1C` is per-core: not a count).
pub fn read_jobs(form: Form, value: &str) -> Option<u32> {
    match form {
        Form::Number => value.trim().parse().ok(),
        Form::CpuCount => None,
        _ => {
            let toks = tokens(value);
            toks.iter().enumerate().find_map(|(i, (_, t))| {
                let (separate, inline) = job_flag(form, t)?;
                let v = if separate {
                    toks.get(i + 1).map(|(_, n)| *n)
                } else {
                    inline
                };
                v.and_then(|v| v.parse().ok())
            })
        }
    }
}

/// `current` (or nothing) with every job-count flag of `form` replaced by one for `jobs`; the
/// rest of the string is kept byte for byte (quoted values with spaces survive). `cpu` is the
/// cpu request, for [`Form::CpuCount`].
pub fn write_jobs(form: Form, current: Option<&str>, jobs: u32, cpu: f64) -> String {
    let flag = match form {
        Form::Number => return jobs.to_string(),
        Form::CpuCount => return format!("{}", (cpu.ceil() as u32).max(1)),
        Form::MakeFlags => format!("-j{jobs}"),
        Form::GoFlags => format!("-p={jobs}"),
        Form::MavenArgs => format!("-T {jobs}"),
        Form::GradleOpts => format!("{GRADLE_WORKERS}{jobs}"),
    };
    let text = current.unwrap_or("");
    let toks = tokens(text);
    let mut out = String::new();
    let mut last = 0;
    let mut skip_value = false;
    let skip_ws = |from: usize| {
        from + text[from..]
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(text.len() - from)
    };
    for (start, tok) in &toks {
        let value_of_previous = std::mem::take(&mut skip_value) && takes_value(form, tok);
        let remove = value_of_previous
            || job_flag(form, tok).is_some_and(|(separate, _)| {
                skip_value = separate;
                true
            });
        if remove {
            out.push_str(&text[last..*start]);
            last = skip_ws(start + tok.len());
        }
    }
    out.push_str(&text[last..]);
    let kept = out.trim_end();
    if kept.is_empty() {
        flag
    } else {
        format!("{kept} {flag}")
    }
}

/// `value` within `max` bytes: as is when short enough; else its head, `~`, and the first 16 hex
/// digits of the SHA-256 of the whole, so distinct long values stay distinct, stably. Whatever a
/// pod brings, what InfraMind copies into annotations, env and cache keys stays small.
pub fn cap_bytes(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_string();
    }
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(value.as_bytes())[..8]);
    let mut head = max.saturating_sub(digest.len() + 1);
    while !value.is_char_boundary(head) {
        head -= 1;
    }
    format!("{}~{digest}", &value[..head])
}

/// Concurrency from `-jN`, `-j N`, `--jobs=N` or `--jobs N` in MAKEFLAGS-style text.
pub fn jobs_in_makeflags(flags: &str) -> Option<u32> {
    read_jobs(Form::MakeFlags, flags)
}

/// `flags` with every job-count flag replaced by `-j{jobs}`.
pub fn merge_makeflags(flags: &str, jobs: u32) -> String {
    write_jobs(Form::MakeFlags, Some(flags), jobs, 0.0)
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
        read_jobs(form_of(name), value_of(name)?)
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

    #[test]
    fn every_tool_form_is_merged_without_breaking_the_rest() {
        for (form, before, after) in [
            (
                Form::GoFlags,
                "-mod=mod -p=2 -trimpath",
                "-mod=mod -trimpath -p=6",
            ),
            (Form::GoFlags, "", "-p=6"),
            (Form::MavenArgs, "-B -T 2C -ntp", "-B -ntp -T 6"),
            (Form::MavenArgs, "--threads=4 -U", "-U -T 6"),
            (Form::MavenArgs, "-T4", "-T 6"),
            (
                Form::GradleOpts,
                "-Xmx2g -Dorg.gradle.workers.max=2 -Dx='a  b'",
                "-Xmx2g -Dx='a  b' -Dorg.gradle.workers.max=6",
            ),
            (Form::MakeFlags, "-k -j 2 V=1", "-k V=1 -j6"),
            (Form::MakeFlags, "-j -k", "-k -j6"),
            (Form::Number, "3", "6"),
            (Form::CpuCount, "1", "3"),
        ] {
            let merged = write_jobs(form, Some(before), 6, 2.5);
            assert_eq!(merged, after, "{form:?} {before}");
            if !matches!(form, Form::CpuCount) {
                assert_eq!(read_jobs(form, &merged), Some(6), "{form:?} {merged}");
            }
        }
        assert_eq!(
            read_jobs(Form::MavenArgs, "-T 1C"),
            None,
            "per-core is not a count"
        );
        assert_eq!(read_jobs(Form::CpuCount, "4"), None);
        assert_eq!(form_of("SOMETHING_ELSE"), Form::Number);
    }

    #[test]
    fn gomaxprocs_is_never_read_as_the_concurrency() {
        let env = [("GOMAXPROCS", "8"), ("MAVEN_ARGS", "-B -T 3")];
        let look = |n: &str| env.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(concurrency_in_env(DEFAULT_CONCURRENCY_ENV, look), Some(3));
    }
}
