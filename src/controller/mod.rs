//! The TrainingJob custom resource and its controller: retrain, gate, promote, report status.
//!
//! (Being written: the entry points below are what the command line calls.)

use crate::cli::Global;

/// `inframind controller` arguments.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// Address for /healthz, /readyz and /metrics (plain HTTP).
    #[arg(long, env = "INFRAMIND_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: std::net::SocketAddr,
}

/// Runs the controller until shutdown.
pub async fn run(_global: &Global, _args: ControllerArgs) -> anyhow::Result<()> {
    anyhow::bail!("the TrainingJob controller is not built yet")
}

/// The CRD as YAML (what `inframind crd` prints and `crds/` holds).
pub fn crd_yaml() -> anyhow::Result<String> {
    anyhow::bail!("the TrainingJob CRD is not built yet")
}

/// Runs one TrainingJob to completion in this process (`inframind train --training-job NS/NAME`).
pub async fn run_training_job(_global: &Global, _namespaced_name: &str) -> anyhow::Result<()> {
    anyhow::bail!("running a TrainingJob is not built yet")
}
