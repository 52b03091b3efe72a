//! The crate-wide error type: one variant per source of failure, each with its cause.

use std::path::PathBuf;

/// Every failure the library reports, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The telemetry store (PostgreSQL or SQLite) failed.
    #[error("telemetry store error while {context}: {source}")]
    Store {
        /// What the store was doing.
        context: String,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// Running the schema migrations failed.
    #[error("migrating the telemetry store failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A model artifact or its metadata could not be read, written or trusted.
    #[error("model artifact {path}: {reason}")]
    Artifact {
        /// The file concerned.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Training could not produce a model.
    #[error("training failed: {0}")]
    Training(#[from] crate::training::TrainingError),
    /// An input file or value was unusable.
    #[error("invalid input: {0}")]
    Input(String),
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Redis (the model registry) failed.
    #[error("model registry (Redis) error while {context}: {source}")]
    Redis {
        /// What the registry was doing.
        context: String,
        /// The Redis error.
        #[source]
        source: redis::RedisError,
    },
    /// An HTTP exchange through [`crate::client`] failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The Kubernetes API failed.
    #[error("Kubernetes API error while {context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The kube error.
        #[source]
        source: kube::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a sqlx error with what the store was doing.
    pub fn store(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
        let context = context.into();
        move |source| Error::Store { context, source }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// An artifact refusal for `path`.
    pub fn artifact(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Artifact {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<crate::model::ModelError> for Error {
    fn from(e: crate::model::ModelError) -> Error {
        match e {
            crate::model::ModelError::Refused { path, reason } => Error::Artifact { path, reason },
            crate::model::ModelError::Io { context, source } => Error::Io { context, source },
        }
    }
}
