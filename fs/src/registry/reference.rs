//! Registry references as docker normalises them: `busybox` is
//! `docker.io/library/busybox:latest`, `host:port/a/b:tag` names a repository on `host:port`,
//! and `…@sha256:<hex>` pins a manifest by digest (a tag next to a digest is kept for the
//! store's name, but the digest is what is fetched).
//!
//! The first component is a registry when it contains a `.` or a `:`, or is `localhost`
//! (docker's rule, `distribution/reference`'s `splitDockerDomain`); otherwise the registry is
//! `docker.io` and a one-component name gets the `library/` namespace. `index.docker.io` is
//! `docker.io`. The name and tag obey the same grammar as the store's names
//! ([`crate::store::Reference`]); digests are sha256 only ([`crate::digest`]).

use std::fmt;

use crate::digest::Digest;
use crate::store::{Reference, ReferenceError};

/// Docker Hub as references name it.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API answers.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A fully qualified registry reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry as written in references (`docker.io`, `127.0.0.1:5000`, `quay.io`).
    pub registry: String,
    /// The repository path on it (`library/busybox`, `rfs/busybox`).
    pub repository: String,
    /// The tag, if any (`latest` is filled in when neither a tag nor a digest is given).
    pub tag: Option<String>,
    /// The manifest digest, if pinned.
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `text`.
    ///
    /// # Errors
    ///
    /// [`ReferenceError`] for a malformed name, tag or digest.
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        let error = |problem| ReferenceError {
            reference: text.chars().take(300).collect(),
            problem,
        };
        let (name_tag, digest) = match text.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    Digest::parse(d)
                        .map_err(|_| error("a digest is `sha256:` and 64 lowercase hex digits"))?,
                ),
            ),
            None => (text, None),
        };
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first == "localhost" || first.contains('.') || first.contains(':') =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if repository.is_empty() {
            return Err(error("empty repository name"));
        }
        // The store's grammar checks the name and the tag (it refuses digests, gone by now).
        let checked = format!("{registry}/{repository}:{}", tag.unwrap_or("latest"));
        Reference::parse(&checked).map_err(|e| ReferenceError {
            reference: text.chars().take(300).collect(),
            problem: e.problem,
        })?;
        let tag = match (tag, digest) {
            (None, None) => Some(crate::store::reference::DEFAULT_TAG.to_owned()),
            (t, _) => t.map(str::to_owned),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Whether `text` names a registry explicitly (`host/…`), rather than a short name that
    /// search registries or a local image could satisfy.
    pub fn is_qualified(text: &str) -> bool {
        text.split_once('/').is_some_and(|(first, _)| {
            first == "localhost" || first.contains('.') || first.contains(':')
        })
    }

    /// What the manifest URL names: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => crate::store::reference::DEFAULT_TAG.to_owned(),
        }
    }

    /// The host and port the registry's API answers on (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// `registry/repository`, as credentials and `RepoDigests` name it.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The store name of the image (familiar form: `busybox:latest`,
    /// `127.0.0.1:5000/rfs/busybox:v1`), or `None` when only a digest was given.
    pub fn store_reference(&self) -> Option<Reference> {
        let tag = self.tag.as_ref()?;
        Reference::parse(&format!("{}/{}:{tag}", self.registry, self.repository)).ok()
    }

    /// The same repository with another tag or digest.
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

/// The host and port a registry's API answers on.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// The registry named by `text` as `rfs login` takes it (`host[:port]`, possibly with a
/// scheme or a path, as `docker login` accepts), normalised; `docker.io` for Docker Hub's
/// other names.
pub fn normalize_registry(text: &str) -> String {
    let text = text
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = text.split('/').next().unwrap_or(text);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => DOCKER_HUB.to_owned(),
        h => h.to_owned(),
    }
}

/// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `::1`), where plain
/// HTTP is allowed as podman allows it.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        ImageRef::parse(text).expect(text).to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("rfs/busybox"), "docker.io/rfs/busybox:latest");
        assert_eq!(
            norm("index.docker.io/library/debian:12"),
            "docker.io/library/debian:12"
        );
        assert_eq!(norm("docker.io/debian"), "docker.io/library/debian:latest");
        assert_eq!(norm("quay.io/a/b/c:v1"), "quay.io/a/b/c:v1");
        assert_eq!(
            norm("localhost/busybox"),
            "localhost/busybox:latest",
            "localhost is a registry"
        );
        assert_eq!(
            norm("127.0.0.1:5000/rfs/busybox"),
            "127.0.0.1:5000/rfs/busybox:latest"
        );
        assert_eq!(norm("myhost:5000/x:t"), "myhost:5000/x:t");
        // Without a dot, colon or `localhost`, the first component is a path.
        assert_eq!(norm("myhost/x"), "docker.io/myhost/x:latest");
    }

    #[test]
    fn digests_pin_the_manifest() {
        let d = Digest::of_bytes(b"m");
        let r = ImageRef::parse(&format!("127.0.0.1:5000/a@{d}")).expect("parse");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some(d));
        assert_eq!(r.manifest_reference(), d.to_string());
        assert_eq!(r.store_reference(), None);
        let both = ImageRef::parse(&format!("busybox:1@{d}")).expect("parse");
        assert_eq!(both.tag.as_deref(), Some("1"));
        assert_eq!(both.manifest_reference(), d.to_string());
        assert_eq!(both.to_string(), format!("docker.io/library/busybox:1@{d}"));
    }

    #[test]
    fn store_names_are_familiar() {
        let r = ImageRef::parse("busybox").expect("parse");
        assert_eq!(
            r.store_reference().map(|r| r.to_string()).as_deref(),
            Some("busybox:latest")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = ImageRef::parse("127.0.0.1:5000/rfs/busybox:v1").expect("parse");
        assert_eq!(
            r.store_reference().map(|r| r.to_string()).as_deref(),
            Some("127.0.0.1:5000/rfs/busybox:v1")
        );
        assert_eq!(r.repository_path(), "127.0.0.1:5000/rfs/busybox");
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "a@sha256:123",
            "a@md5:00",
            "host:5000/",
            "a:b:c",
            "a/:t",
            "a:-x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_and_login_names() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("127.0.0.1:5000"), "127.0.0.1:5000");
        assert!(ImageRef::is_qualified("localhost/x"));
        assert!(!ImageRef::is_qualified("busybox"));
        assert!(!ImageRef::is_qualified("rfs/busybox"));
    }
}
