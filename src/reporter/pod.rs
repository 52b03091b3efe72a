//! Who is reporting: the pod's identity and the resources it was admitted with, as the webhook
//! injects them into the build container (downward API environment, each overridable by a flag).

/// One identity input: its flag, its environment variable and the raw value, if any.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The command-line flag, e.g. `--pod-uid`.
    pub flag: &'static str,
    /// The environment variable the flag also reads, e.g. `INFRAMIND_POD_UID`.
    pub env: &'static str,
    /// What was given (flag or environment), untrimmed.
    pub value: Option<&'a str>,
}

impl Input<'_> {
    fn name(&self) -> String {
        format!("{} ({})", self.env, self.flag)
    }

    /// The trimmed value; an empty value counts as not given.
    pub fn text(&self) -> Option<String> {
        self.value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// The value as a finite number, if given.
    pub fn number(&self) -> Result<Option<f64>, String> {
        let Some(text) = self.text() else {
            return Ok(None);
        };
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(format!("{} is `{text}`, not a number", self.name())),
        }
    }
}

/// The raw identity inputs, in the order they are reported when missing.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `metadata.uid`: the run is `pod-<uid>`.
    pub uid: Input<'a>,
    /// `metadata.name` (for messages only).
    pub name: Input<'a>,
    /// `metadata.namespace` (for messages only).
    pub namespace: Input<'a>,
    /// The pipeline the webhook recognised.
    pub pipeline: Input<'a>,
    /// The branch, when known.
    pub branch: Input<'a>,
    /// The build image, when known.
    pub image: Input<'a>,
    /// The node type, when known.
    pub node_type: Input<'a>,
    /// `requests.cpu` with divisor `1m`: millicores.
    pub cpu_request_milli: Input<'a>,
    /// `requests.memory` with divisor `1Mi`: MiB.
    pub mem_request_mib: Input<'a>,
    /// The build tool's job count.
    pub concurrency: Input<'a>,
    /// The decision tag the webhook annotated (`applied`, `holdout`, …), when known.
    pub decision: Input<'a>,
}

/// The pod's identity and requests, parsed. Numbers are kept as given; the run row's validation
/// judges their range.
#[derive(Debug, Clone, PartialEq)]
pub struct PodIdentity {
    /// The pod's uid.
    pub uid: String,
    /// `namespace/name`, when known (for messages).
    pub display_name: Option<String>,
    /// The pipeline.
    pub pipeline: String,
    /// The branch.
    pub branch: Option<String>,
    /// The build image.
    pub image: Option<String>,
    /// The node type.
    pub node_type: Option<String>,
    /// Requested CPU, millicores.
    pub cpu_request_milli: f64,
    /// Requested memory, MiB.
    pub mem_request_mib: f64,
    /// Build tool jobs.
    pub concurrency: f64,
    /// The decision tag, when it is one the record knows.
    pub decision: Option<crate::record::DecisionTag>,
}

impl PodIdentity {
    /// The run's idempotency key, shared with the pod watcher's row for the same pod.
    pub fn run_id(&self) -> String {
        format!("pod-{}", self.uid)
    }
}

/// Parses the identity; names every missing required input at once, or the first bad number.
pub fn parse(inputs: &Inputs<'_>) -> Result<PodIdentity, String> {
    let required = [
        inputs.uid,
        inputs.pipeline,
        inputs.cpu_request_milli,
        inputs.mem_request_mib,
        inputs.concurrency,
    ];
    let missing: Vec<String> = required
        .iter()
        .filter(|i| i.text().is_none())
        .map(Input::name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the pod identity is incomplete: {} not set (the InfraMind webhook injects them into \
             mutated build pods; set them or pass the flags)",
            missing.join(", ")
        ));
    }
    let need = |i: Input<'_>| -> Result<f64, String> {
        i.number()?
            .ok_or_else(|| format!("{} is not set", i.name()))
    };
    let display_name = match (inputs.namespace.text(), inputs.name.text()) {
        (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
        (None, Some(n)) => Some(n),
        _ => None,
    };
    Ok(PodIdentity {
        uid: inputs.uid.text().unwrap_or_default(),
        display_name,
        pipeline: inputs.pipeline.text().unwrap_or_default(),
        branch: inputs.branch.text(),
        image: inputs.image.text(),
        node_type: inputs.node_type.text(),
        cpu_request_milli: need(inputs.cpu_request_milli)?,
        mem_request_mib: need(inputs.mem_request_mib)?,
        concurrency: need(inputs.concurrency)?,
        decision: inputs
            .decision
            .text()
            .and_then(|t| crate::record::DecisionTag::parse(&t)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(flag: &'static str, env: &'static str, value: Option<&'static str>) -> Input<'static> {
        Input { flag, env, value }
    }

    fn inputs(uid: Option<&'static str>, cpu: Option<&'static str>) -> Inputs<'static> {
        Inputs {
            uid: input("--pod-uid", "INFRAMIND_POD_UID", uid),
            name: input("--pod-name", "INFRAMIND_POD_NAME", Some("build-7x2")),
            namespace: input("--pod-namespace", "INFRAMIND_POD_NAMESPACE", Some("ci")),
            pipeline: input("--pipeline", "INFRAMIND_PIPELINE", Some(" acme/api ")),
            branch: input("--branch", "INFRAMIND_BRANCH", Some("")),
            image: input("--image", "INFRAMIND_IMAGE", Some("rust:1.89")),
            node_type: input("--node-type", "INFRAMIND_NODE_TYPE", None),
            cpu_request_milli: input("--cpu-request-milli", "INFRAMIND_CPU_REQUEST_MILLI", cpu),
            mem_request_mib: input(
                "--mem-request-mib",
                "INFRAMIND_MEM_REQUEST_MIB",
                Some("8192"),
            ),
            concurrency: input("--concurrency", "INFRAMIND_CONCURRENCY", Some("6")),
            decision: input("--decision", "INFRAMIND_DECISION", Some("holdout")),
        }
    }

    #[test]
    fn parses_the_downward_api_values() {
        let id = parse(&inputs(Some("6f1c-22"), Some("2500"))).unwrap();
        assert_eq!(
            id,
            PodIdentity {
                uid: "6f1c-22".into(),
                display_name: Some("ci/build-7x2".into()),
                pipeline: "acme/api".into(),
                branch: None,
                image: Some("rust:1.89".into()),
                node_type: None,
                cpu_request_milli: 2500.0,
                mem_request_mib: 8192.0,
                concurrency: 6.0,
                decision: Some(crate::record::DecisionTag::Holdout),
            }
        );
        assert_eq!(id.run_id(), "pod-6f1c-22");
    }

    #[test]
    fn names_every_missing_input_and_bad_numbers() {
        let e = parse(&inputs(None, Some(" "))).unwrap_err();
        assert!(
            e.contains("INFRAMIND_POD_UID (--pod-uid), INFRAMIND_CPU_REQUEST_MILLI (--cpu-request-milli) not set"),
            "{e}"
        );
        let e = parse(&inputs(Some("u"), Some("2 cores"))).unwrap_err();
        assert_eq!(
            e,
            "INFRAMIND_CPU_REQUEST_MILLI (--cpu-request-milli) is `2 cores`, not a number"
        );
        let e = parse(&inputs(Some("u"), Some("inf"))).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
    }
}
