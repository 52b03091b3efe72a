//! Model signatures: the trainer signs every artifact with an Ed25519 key only it holds, and
//! every loader verifies with the public key, so write access to the registry (Redis or the
//! models directory) alone cannot plant a model: a checksum can be recomputed by anyone, a
//! signature cannot.
//!
//! Keys are files: PKCS#8 PEM for the private key and SPKI PEM for the public key (what
//! `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write), or the raw 32 key
//! bytes in base64 on one line. The signature covers the artifact's bytes, which name their
//! version, so a signed artifact cannot be replayed under another version.
//!
//! Policy: with a public key configured (or a signing key, whose public half is then trusted),
//! an unsigned or wrongly signed artifact is refused. With neither (the embedded quickstart and
//! local development), signatures are not checked and unsigned artifacts load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("reading model key {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("model key {path} is not usable: {reason}")]
    Parse {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The signing key's public half is not the configured public key.
    #[error("the model signing key {signing} does not match the public key {public}: replicas would refuse every model this process trains")]
    Mismatch {
        /// The signing key file.
        signing: PathBuf,
        /// The public key file.
        public: PathBuf,
    },
}

/// Why an artifact's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A public key is configured but the artifact carries no signature.
    #[error("artifact is not signed and a model public key is configured")]
    Unsigned,
    /// The signature is not base64 of 64 bytes.
    #[error("artifact signature is malformed: {0}")]
    Malformed(String),
    /// The signature does not verify with the configured public key.
    #[error("artifact signature does not verify with the configured public key (forged, altered, or signed by another key)")]
    Invalid,
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn raw_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("neither PEM nor base64: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("a raw Ed25519 key is 32 bytes, this one is {}", bytes.len()))
}

/// The trainer's private key.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Signer")
            .field("public", &self.public())
            .finish()
    }
}

impl Signer {
    /// A signer from a 32-byte secret seed (tests, key generation).
    pub fn from_seed(seed: [u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Parses a PKCS#8 PEM private key or a base64 raw 32-byte seed.
    pub fn from_text(text: &str) -> Result<Signer, String> {
        let key = if text.contains("-----BEGIN") {
            SigningKey::from_pkcs8_pem(text)
                .map_err(|e| format!("not a PKCS#8 Ed25519 key: {e}"))?
        } else {
            SigningKey::from_bytes(&raw_key(text)?)
        };
        Ok(Signer { key })
    }

    /// Reads a key file (see [`Signer::from_text`]).
    pub fn load(path: &Path) -> Result<Signer, KeyError> {
        Signer::from_text(&read(path)?).map_err(|reason| KeyError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .unwrap_or_default()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// The base64 signature of `artifact`.
    pub fn sign(&self, artifact: &[u8]) -> String {
        B64.encode(self.key.sign(artifact).to_bytes())
    }
}

/// A public key that artifacts are verified with.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", B64.encode(self.0.as_bytes()))
    }
}

impl PublicKey {
    /// Parses an SPKI PEM public key or the base64 raw 32 bytes.
    pub fn from_text(text: &str) -> Result<PublicKey, String> {
        let key = if text.contains("-----BEGIN") {
            VerifyingKey::from_public_key_pem(text)
                .map_err(|e| format!("not an SPKI Ed25519 public key: {e}"))?
        } else {
            VerifyingKey::from_bytes(&raw_key(text)?)
                .map_err(|e| format!("not an Ed25519 public key: {e}"))?
        };
        Ok(PublicKey(key))
    }

    /// Reads a key file (see [`PublicKey::from_text`]).
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        PublicKey::from_text(&read(path)?).map_err(|reason| KeyError::Parse {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The key as SPKI PEM.
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(Default::default())
            .unwrap_or_default()
    }

    /// Checks `signature` (base64) over `artifact`; strict verification refuses malleable forms.
    pub fn verify(&self, artifact: &[u8], signature: &str) -> Result<(), SignatureError> {
        let bytes = B64
            .decode(signature.trim())
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let sig = Signature::from_slice(&bytes)
            .map_err(|_| SignatureError::Malformed(format!("{} bytes, not 64", bytes.len())))?;
        self.0
            .verify_strict(artifact, &sig)
            .map_err(|_| SignatureError::Invalid)
    }
}

/// Which artifacts this process accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// No key configured: signatures are not checked (quickstart, local development).
    #[default]
    Unchecked,
    /// Only artifacts signed by this key.
    Key(PublicKey),
}

impl Trust {
    /// Whether an artifact with `signature` may be loaded.
    pub fn check(&self, artifact: &[u8], signature: Option<&str>) -> Result<(), SignatureError> {
        match self {
            Trust::Unchecked => Ok(()),
            Trust::Key(key) => key.verify(artifact, signature.ok_or(SignatureError::Unsigned)?),
        }
    }
}

/// The keys a process holds: the signer if it trains, and what it trusts.
#[derive(Debug, Clone, Default)]
pub struct ModelKeys {
    /// Signs artifacts this process saves (the trainer only).
    pub signer: Option<Arc<Signer>>,
    /// Verifies artifacts this process loads.
    pub trust: Trust,
}

impl ModelKeys {
    /// Keys that sign with `signer` and trust its public half.
    pub fn signing(signer: Signer) -> ModelKeys {
        ModelKeys {
            trust: Trust::Key(signer.public()),
            signer: Some(Arc::new(signer)),
        }
    }

    /// Keys that only verify with `public`.
    pub fn verifying(public: PublicKey) -> ModelKeys {
        ModelKeys {
            signer: None,
            trust: Trust::Key(public),
        }
    }

    /// Reads the configured key files. A signing key alone also verifies with its public half;
    /// both together must be a pair.
    pub fn load(signing: Option<&Path>, public: Option<&Path>) -> Result<ModelKeys, KeyError> {
        let signer = signing.map(Signer::load).transpose()?;
        let public_key = public.map(PublicKey::load).transpose()?;
        match (signer, public_key) {
            (None, None) => Ok(ModelKeys::default()),
            (None, Some(p)) => Ok(ModelKeys::verifying(p)),
            (Some(s), None) => Ok(ModelKeys::signing(s)),
            (Some(s), Some(p)) => {
                if s.public() != p {
                    return Err(KeyError::Mismatch {
                        signing: signing.map(Path::to_path_buf).unwrap_or_default(),
                        public: public.map(Path::to_path_buf).unwrap_or_default(),
                    });
                }
                Ok(ModelKeys::signing(s))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_bytes_and_key() {
        let signer = Signer::from_seed([7; 32]);
        let other = Signer::from_seed([8; 32]);
        let sig = signer.sign(b"artifact v1");
        let trust = Trust::Key(signer.public());
        assert_eq!(trust.check(b"artifact v1", Some(&sig)), Ok(()));
        assert_eq!(
            trust.check(b"artifact v2", Some(&sig)),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            trust.check(b"artifact v1", Some(&other.sign(b"artifact v1"))),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            trust.check(b"artifact v1", None),
            Err(SignatureError::Unsigned)
        );
        assert!(matches!(
            trust.check(b"artifact v1", Some("not base64!")),
            Err(SignatureError::Malformed(_))
        ));
        // Without a key nothing is checked (quickstart).
        assert_eq!(Trust::Unchecked.check(b"anything", None), Ok(()));
    }

    #[test]
    fn keys_round_trip_through_pem_and_raw_base64() {
        let signer = Signer::from_seed([9; 32]);
        let again = Signer::from_text(&signer.to_pem()).unwrap();
        assert_eq!(again.public(), signer.public());
        let raw = Signer::from_text(&B64.encode([9u8; 32])).unwrap();
        assert_eq!(raw.public(), signer.public());
        let public = PublicKey::from_text(&signer.public().to_pem()).unwrap();
        assert_eq!(public, signer.public());
        assert!(
            Signer::from_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
        assert!(PublicKey::from_text(&B64.encode([1u8; 16])).is_err());
        assert!(!format!("{signer:?}").contains(&B64.encode([9u8; 32])));
    }

    #[test]
    fn a_signing_key_and_a_public_key_must_be_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        let sk = dir.path().join("signing.pem");
        let pk = dir.path().join("public.pem");
        let wrong = dir.path().join("wrong.pem");
        std::fs::write(&sk, Signer::from_seed([1; 32]).to_pem()).unwrap();
        std::fs::write(&pk, Signer::from_seed([1; 32]).public().to_pem()).unwrap();
        std::fs::write(&wrong, Signer::from_seed([2; 32]).public().to_pem()).unwrap();
        let keys = ModelKeys::load(Some(&sk), Some(&pk)).unwrap();
        assert!(keys.signer.is_some());
        assert!(matches!(
            ModelKeys::load(Some(&sk), Some(&wrong)),
            Err(KeyError::Mismatch { .. })
        ));
        let verify_only = ModelKeys::load(None, Some(&pk)).unwrap();
        assert!(verify_only.signer.is_none());
        assert_eq!(verify_only.trust, keys.trust);
        assert_eq!(ModelKeys::load(None, None).unwrap().trust, Trust::Unchecked);
        assert!(matches!(
            ModelKeys::load(Some(&dir.path().join("missing")), None),
            Err(KeyError::Read { .. })
        ));
    }
}
