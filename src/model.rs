//! The versioned model artifact: a compact forest with its encodings, plus metrics JSON.
//!
//! Files: `model_vYYYYMMDD_HHMMSS.imf` (the forest, binary) and `model_vYYYYMMDD_HHMMSS.json`
//! (metrics, hyperparameters, feature schema, encodings, training window, row counts and the
//! artifact's SHA-256 and, when the trainer holds a key, its Ed25519 signature). The binary
//! carries its own copy of everything prediction needs, so checksum and signature cover it;
//! loading verifies checksum, signature (see `signing.rs`), format and feature schema before
//! anything is used, so a truncated, altered or forged file is refused whole.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::evaluation::{Metrics, Split};
use crate::features::{Encodings, FEATURE_NAMES, FEATURE_SCHEMA_VERSION, N_FEATURES};
use crate::forest::{CompactForest, ForestParams, Node, TreeInfo};
use crate::signing::{ModelKeys, Trust};

/// Why an artifact or its metadata could not be read, written or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file exists but is refused (truncated, altered, wrong format or schema).
    #[error("model artifact {path}: {reason}")]
    Refused {
        /// The file concerned.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Results of artifact operations.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// A refusal of `path`.
    pub fn refused(path: impl Into<PathBuf>, reason: impl Into<String>) -> ModelError {
        ModelError::Refused {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ModelError {
        let context = context.into();
        move |source| ModelError::Io { context, source }
    }
}

/// Version of the artifact format (the binary layout and this metadata).
pub const ARTIFACT_FORMAT_VERSION: u32 = 1;
/// File extension of the binary artifact.
pub const ARTIFACT_EXT: &str = "imf";
const MAGIC: &[u8; 8] = b"IMFOREST";
const TRAILER: &[u8; 8] = b"IMFEND\0\0";

/// What the artifact binary carries besides the trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    version: String,
    feature_schema_version: u32,
    feature_names: Vec<String>,
    encodings: Encodings,
    n_trees: usize,
    n_nodes: usize,
}

/// The training window a model was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingWindow {
    /// Pipeline trained on, or all.
    pub pipeline: Option<String>,
    /// Oldest run's start.
    pub from: Option<DateTime<Utc>>,
    /// Newest run's start.
    pub to: Option<DateTime<Utc>>,
    /// Rows used (train + holdout).
    pub rows: usize,
}

/// The artifact's metadata: everything in `model_v….json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// `model_vYYYYMMDD_HHMMSS`.
    pub version: String,
    /// Artifact format version.
    pub format_version: u32,
    /// Feature schema version.
    pub feature_schema_version: u32,
    /// Feature names in column order.
    pub feature_names: Vec<String>,
    /// When it was trained.
    pub created_at: DateTime<Utc>,
    /// Hyperparameters.
    pub hyperparameters: ForestParams,
    /// The split the served model was fitted on.
    pub split: Split,
    /// Scores on the random 80/20 holdout.
    pub random_holdout: Metrics,
    /// Scores on the temporal holdout (newest 20 %).
    pub temporal_holdout: Metrics,
    /// The optimizer's confidence against reality on the temporal holdout (absent in models
    /// trained before it was measured).
    #[serde(default)]
    pub calibration: Option<crate::optimizer::calibration::Calibration>,
    /// Impurity-based importance per feature, highest first.
    pub importances: Vec<(String, f64)>,
    /// Data window.
    pub window: TrainingWindow,
    /// Category encodings (a copy of the artifact's, for people).
    pub encodings: Encodings,
    /// Artifact file name.
    pub artifact: String,
    /// Artifact SHA-256, hex.
    pub sha256: String,
    /// Artifact size in bytes.
    pub bytes: u64,
    /// Ed25519 signature of the artifact bytes by the trainer's key, base64 (absent when the
    /// trainer had no key: such an artifact loads only where no public key is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl ModelMeta {
    /// The headline metrics: those of the split the served model was fitted on.
    pub fn metrics(&self) -> &Metrics {
        match self.split {
            Split::Random => &self.random_holdout,
            Split::Temporal => &self.temporal_holdout,
        }
    }
}

/// A loaded, verified model ready to predict.
#[derive(Debug, Clone)]
pub struct Model {
    /// Version string.
    pub version: String,
    /// The forest.
    pub forest: CompactForest,
    /// The category encodings used in training.
    pub encodings: Encodings,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Version name for a model trained at `t`.
pub fn version_at(t: DateTime<Utc>) -> String {
    format!("model_v{}", t.format("%Y%m%d_%H%M%S"))
}

/// When a model was trained, read back from its version name (`None` for a name
/// [`version_at`] did not make, such as a test's `model_vtest`).
pub fn trained_at(version: &str) -> Option<DateTime<Utc>> {
    let stamp = version.strip_prefix("model_v")?.get(..15)?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

impl Model {
    /// Serialises the model into the binary artifact format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            version: self.version.clone(),
            feature_schema_version: FEATURE_SCHEMA_VERSION,
            feature_names: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            encodings: self.encodings.clone(),
            n_trees: self.forest.n_trees(),
            n_nodes: self.forest.nodes().len(),
        };
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let mut out = Vec::with_capacity(
            32 + header.len() + self.forest.n_trees() * 8 + self.forest.nodes().len() * 16,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&ARTIFACT_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        for t in self.forest.trees() {
            out.extend_from_slice(&t.root.to_le_bytes());
            out.extend_from_slice(&(t.depth as u32).to_le_bytes());
        }
        for n in self.forest.nodes() {
            out.extend_from_slice(&n.threshold.to_le_bytes());
            out.extend_from_slice(&n.feature.to_le_bytes());
            out.extend_from_slice(&n.left.to_le_bytes());
        }
        out.extend_from_slice(TRAILER);
        out
    }

    /// Parses and validates an artifact; `expected_sha256` is checked first when given.
    pub fn from_bytes(
        bytes: &[u8],
        expected_sha256: Option<&str>,
    ) -> std::result::Result<Model, String> {
        if let Some(expected) = expected_sha256 {
            let actual = sha256_hex(bytes);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(format!(
                    "checksum mismatch: expected sha256 {expected}, file has {actual}"
                ));
            }
        }
        let mut r = Reader { bytes, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err("not an InfraMind model artifact (bad magic)".into());
        }
        let format = r.u32()?;
        if format != ARTIFACT_FORMAT_VERSION {
            return Err(format!("artifact format {format} is not supported (this build reads {ARTIFACT_FORMAT_VERSION})"));
        }
        let header_len = r.u32()? as usize;
        let header: Header = serde_json::from_slice(r.take(header_len)?)
            .map_err(|e| format!("artifact header is corrupt: {e}"))?;
        if header.feature_schema_version != FEATURE_SCHEMA_VERSION
            || header.feature_names.len() != N_FEATURES
            || header
                .feature_names
                .iter()
                .zip(FEATURE_NAMES)
                .any(|(a, b)| a != b)
        {
            return Err(format!(
                "model uses feature schema {} ({} features); this build computes schema {FEATURE_SCHEMA_VERSION} ({N_FEATURES} features): retrain",
                header.feature_schema_version,
                header.feature_names.len()
            ));
        }
        let expected_len = 16
            + header_len
            + header
                .n_trees
                .checked_mul(8)
                .ok_or("tree count overflows")?
            + header
                .n_nodes
                .checked_mul(16)
                .ok_or("node count overflows")?
            + TRAILER.len();
        if bytes.len() != expected_len {
            return Err(format!(
                "artifact is {} bytes, its header promises {expected_len}: truncated or padded",
                bytes.len()
            ));
        }
        let mut trees = Vec::with_capacity(header.n_trees);
        for _ in 0..header.n_trees {
            let root = r.u32()?;
            let depth = r.u32()?;
            let depth =
                u16::try_from(depth).map_err(|_| format!("tree depth {depth} is absurd"))?;
            trees.push(TreeInfo { root, depth });
        }
        let mut nodes = Vec::with_capacity(header.n_nodes);
        for _ in 0..header.n_nodes {
            let threshold = f64::from_le_bytes(r.array()?);
            let feature = r.u32()?;
            let left = r.u32()?;
            nodes.push(Node {
                threshold,
                feature,
                left,
            });
        }
        if r.take(8)? != TRAILER {
            return Err("artifact trailer is missing".into());
        }
        let forest = CompactForest::from_parts(N_FEATURES, trees, nodes)?;
        Ok(Model {
            version: header.version,
            forest,
            encodings: header.encodings,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or("artifact is truncated")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
}

/// A directory of versioned artifacts (`models/`), with the keys that sign what is saved in
/// it and verify what is loaded from it.
#[derive(Debug, Clone)]
pub struct ModelDir {
    dir: PathBuf,
    keys: ModelKeys,
}

impl ModelDir {
    /// The directory at `dir` (created on first save), without keys: saves unsigned and loads
    /// without checking signatures (quickstart and local use).
    pub fn new(dir: impl Into<PathBuf>) -> ModelDir {
        ModelDir {
            dir: dir.into(),
            keys: ModelKeys::default(),
        }
    }

    /// The same directory, signing and verifying with `keys`.
    pub fn with_keys(self, keys: ModelKeys) -> ModelDir {
        ModelDir { keys, ..self }
    }

    /// The signing and verifying keys.
    pub fn keys(&self) -> &ModelKeys {
        &self.keys
    }

    /// The directory path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn meta_path(&self, version: &str) -> PathBuf {
        self.dir.join(format!("{version}.json"))
    }

    fn artifact_path(&self, version: &str) -> PathBuf {
        self.dir.join(format!("{version}.{ARTIFACT_EXT}"))
    }

    /// A version name for `t` not yet used in this directory.
    pub fn next_version(&self, t: DateTime<Utc>) -> String {
        let base = version_at(t);
        let mut v = base.clone();
        let mut k = 1;
        while self.meta_path(&v).exists() || self.artifact_path(&v).exists() {
            v = format!("{base}_{k}");
            k += 1;
        }
        v
    }

    /// Serialises `model`, fills in checksum, size and (with a signing key) signature, and
    /// writes artifact and metadata.
    pub fn save(&self, model: &Model, meta: &mut ModelMeta) -> Result<PathBuf> {
        let bytes = model.to_bytes();
        meta.artifact = format!("{}.{ARTIFACT_EXT}", model.version);
        meta.sha256 = sha256_hex(&bytes);
        meta.bytes = bytes.len() as u64;
        meta.signature = self.keys.signer.as_ref().map(|s| s.sign(&bytes));
        self.store(&bytes, meta)
    }

    /// Writes an artifact's bytes and metadata as they are (artifact first, each via a temp
    /// file and rename): a replica's copy of what it fetched keeps the trainer's signature.
    pub fn store(&self, bytes: &[u8], meta: &ModelMeta) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(ModelError::io(format!(
            "creating model directory {}",
            self.dir.display()
        )))?;
        write_atomic(&self.artifact_path(&meta.version), bytes)?;
        let json = serde_json::to_vec_pretty(meta)
            .map_err(|e| ModelError::refused(self.meta_path(&meta.version), e.to_string()))?;
        write_atomic(&self.meta_path(&meta.version), &json)?;
        Ok(self.meta_path(&meta.version))
    }

    /// Reads one version's metadata.
    pub fn meta(&self, version: &str) -> Result<ModelMeta> {
        let path = self.meta_path(version);
        let text =
            std::fs::read(&path).map_err(ModelError::io(format!("reading {}", path.display())))?;
        let meta: ModelMeta = serde_json::from_slice(&text)
            .map_err(|e| ModelError::refused(&path, format!("metadata is not valid: {e}")))?;
        if meta.format_version != ARTIFACT_FORMAT_VERSION {
            return Err(ModelError::refused(
                &path,
                format!("format version {} is not supported", meta.format_version),
            ));
        }
        Ok(meta)
    }

    /// Loads and verifies one version (checksum, signature, format, feature schema).
    pub fn load(&self, version: &str) -> Result<(Model, ModelMeta)> {
        let meta = self.meta(version)?;
        let path = self.dir.join(&meta.artifact);
        let bytes =
            std::fs::read(&path).map_err(ModelError::io(format!("reading {}", path.display())))?;
        let model = verify(&bytes, &meta, &self.keys.trust)
            .map_err(|reason| ModelError::refused(&path, reason))?;
        Ok((model, meta))
    }

    /// Pins `version` as the one this directory serves (the local registry's pointer, and a
    /// replica's record of the last active version it was given).
    pub fn pin(&self, version: &str) -> Result<()> {
        write_atomic(&self.dir.join(Self::ACTIVE_FILE), version.as_bytes())
    }

    /// All versions with readable metadata, oldest first.
    pub fn list(&self) -> Result<Vec<ModelMeta>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ModelError::io(format!("listing {}", self.dir.display()))(e)),
        };
        let mut metas = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(v) = name
                .strip_prefix("model_v")
                .and_then(|_| name.strip_suffix(".json"))
            {
                match self.meta(v) {
                    Ok(m) => metas.push(m),
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "skipping unreadable model metadata")
                    }
                }
            }
        }
        metas.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.version.cmp(&b.version))
        });
        Ok(metas)
    }

    /// File naming the version promoted in this directory (when no registry is used).
    pub const ACTIVE_FILE: &'static str = "ACTIVE";

    /// The version pinned as active in this directory, if any.
    pub fn pinned(&self) -> Result<Option<String>> {
        let path = self.dir.join(Self::ACTIVE_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ModelError::io(format!("reading {}", path.display()))(e)),
        }
    }

    /// The active model: the pinned version if one is pinned, else the newest valid one.
    pub fn active(&self) -> Result<Option<(Model, ModelMeta)>> {
        match self.pinned()? {
            Some(v) => self.load(&v).map(Some),
            None => self.latest_valid(),
        }
    }

    /// The newest version that loads and verifies, if any.
    pub fn latest_valid(&self) -> Result<Option<(Model, ModelMeta)>> {
        for meta in self.list()?.into_iter().rev() {
            match self.load(&meta.version) {
                Ok(m) => return Ok(Some(m)),
                Err(e) => {
                    tracing::warn!(version = %meta.version, error = %e, "skipping invalid model")
                }
            }
        }
        Ok(None)
    }
}

/// Checks `bytes` against `meta` and `trust` (checksum, then signature, before parsing anything)
/// and parses them; the artifact must name the version its metadata names.
pub fn verify(bytes: &[u8], meta: &ModelMeta, trust: &Trust) -> std::result::Result<Model, String> {
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(&meta.sha256) {
        return Err(format!(
            "checksum mismatch: expected sha256 {}, file has {actual}",
            meta.sha256
        ));
    }
    trust
        .check(bytes, meta.signature.as_deref())
        .map_err(|e| e.to_string())?;
    let model = Model::from_bytes(bytes, None)?;
    if model.version != meta.version {
        return Err(format!(
            "artifact says version {}, metadata says {}",
            model.version, meta.version
        ));
    }
    Ok(model)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(ModelError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(ModelError::io(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))
}
