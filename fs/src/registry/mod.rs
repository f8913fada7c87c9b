//! The registry client: the OCI distribution protocol (Docker Registry HTTP API v2) spoken to
//! Docker Hub, Harbor, GitLab or a private `registry:2`, for `rfs pull`, `rfs push` and
//! `rfs login`.
//!
//! - [`reference`]: names as docker normalises them (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! - [`auth`]: credentials (podman's `auth.json`, docker's `config.json` and credential
//!   helpers) and `WWW-Authenticate` challenges.
//! - [`config`]: `registries.conf` and `certs.d` (CAs, client certificates).
//! - [`client`]: one registry's HTTP endpoint: scheme and TLS, auth (Basic, Bearer tokens
//!   reused until they expire), retries with backoff, and the protocol's requests (manifests,
//!   blobs with `Range` resume, uploads, cross-repository mounts).
//!
//! What the store does with what it fetches is [`crate::store`]'s (`pull`, `push`): the store
//! stays the only writer of rfs's root directory.
//!
//! Why not `oci-client`: it is async (tokio and reqwest), while rfs is synchronous throughout
//! and runs its pool of downloads on plain threads; its pull hands blobs to an `AsyncWrite`,
//! so streaming decompression into the store would need an async/sync bridge, and its
//! manifest types would be a second model next to [`crate::image::model`]. The protocol
//! surface rfs needs is a dozen requests; `ureq` (blocking, rustls, per-agent roots and
//! client certificates) carries them.

pub mod auth;
pub mod client;
pub mod config;
pub mod reference;

use std::path::PathBuf;

pub use auth::{Challenge, Credentials};
pub use client::{Client, ClientOptions};
pub use config::RegistriesConf;
pub use reference::ImageRef;

use crate::digest::Digest;

/// Why talking to a registry failed. Every variant names the registry, and says what to do
/// where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed, after retries. The failure is part of the message, not a
    /// `source`: ureq's errors repeat their own cause, and a chain would print it twice.
    #[error("{registry}: {what}: {cause}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Transport {
        /// The registry.
        registry: String,
        /// What was being done.
        what: String,
        /// The failure.
        cause: Box<ureq::Error>,
        /// What to do about it, for TLS failures.
        hint: Option<&'static str>,
    },
    /// Reading a response body failed, after retries.
    #[error("{registry}: {what}: {source}")]
    Read {
        /// The registry.
        registry: String,
        /// What was being read.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// 401: no credentials, or the registry refused them.
    #[error("{registry}: {what}: authentication required{}; log in with `rfs login {registry}`", if *.had_credentials { " (the stored credentials were refused)" } else { "" })]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What was asked.
        what: String,
        /// Whether credentials were sent.
        had_credentials: bool,
    },
    /// 403.
    #[error("{registry}: {what}: access denied{}", if *.had_credentials { "; the account lacks the permission" } else { "; log in with `rfs login` to an account that has it" })]
    Denied {
        /// The registry.
        registry: String,
        /// What was asked.
        what: String,
        /// Whether credentials were sent.
        had_credentials: bool,
    },
    /// 404 of a manifest.
    #[error("{registry}: {reference}: no such image (the repository or tag does not exist)")]
    NotFound {
        /// The registry.
        registry: String,
        /// What was asked for.
        reference: String,
    },
    /// Any other unexpected status.
    #[error("{registry}: {what}: HTTP {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        /// The registry.
        registry: String,
        /// What was asked.
        what: String,
        /// The status.
        status: u16,
        /// The registry's error text, if it gave one.
        message: Option<String>,
    },
    /// A Docker schema 1 manifest.
    #[error(
        "{registry}: {reference} is a Docker schema 1 manifest, which is deprecated and not supported; push the image again with a current docker, podman or skopeo"
    )]
    Schema1 {
        /// The registry.
        registry: String,
        /// The image.
        reference: String,
    },
    /// A manifest or blob does not hash to its digest.
    #[error(
        "{registry}: {what} has digest {actual}, expected {expected}; the registry served corrupt data, nothing was stored"
    )]
    Mismatch {
        /// The registry.
        registry: String,
        /// What was fetched.
        what: String,
        /// Its digest.
        expected: Digest,
        /// What it hashed to.
        actual: Digest,
    },
    /// A document from the registry is malformed.
    #[error("{registry}: {what}: {problem}")]
    BadDocument {
        /// The registry.
        registry: String,
        /// The document.
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// A local file (auth file, registries.conf, certificate) is malformed.
    #[error("{}: {problem}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A local file cannot be read or written.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A credential helper failed.
    #[error("credential helper {helper}: {problem}")]
    CredentialHelper {
        /// The program.
        helper: String,
        /// What went wrong.
        problem: String,
    },
    /// The registry is blocked in registries.conf.
    #[error("{registry}: blocked in registries.conf")]
    Blocked {
        /// The registry.
        registry: String,
    },
    /// A reference is malformed.
    #[error(transparent)]
    Reference(#[from] crate::store::ReferenceError),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
