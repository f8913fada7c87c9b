//! Image references: `NAME[:TAG]`, as `docker tag` and `docker images` use them.
//!
//! A name is slash-separated lowercase components (`[a-z0-9]` with `.`, `_`, `-` between
//! characters), optionally led by a registry host (`localhost`, or a component with a `.` or
//! a `:port`). A missing tag means `latest`. Names are kept in Docker's *familiar* form, so
//! `docker.io/library/busybox` and `busybox` are one name, and `docker.io/rfs/busybox` (what
//! skopeo writes into a docker archive) is `rfs/busybox`. Digest references (`name@sha256:…`)
//! name registry manifests, which a local store does not keep; they are refused.

use std::fmt;

/// The tag a reference without one gets.
pub const DEFAULT_TAG: &str = "latest";

/// The longest tag Docker accepts.
const MAX_TAG_LEN: usize = 128;

/// The longest name Docker accepts.
const MAX_NAME_LEN: usize = 255;

/// A parsed `NAME:TAG`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// The repository name, familiar form (`rfs/busybox`, `busybox`, `localhost:5000/x`).
    pub name: String,
    /// The tag (`latest` when none was given).
    pub tag: String,
}

/// Why a reference was rejected.
#[derive(Debug, thiserror::Error)]
#[error("invalid reference `{reference}`: {problem}")]
pub struct ReferenceError {
    /// The text given (possibly shortened).
    pub reference: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Reference {
    /// Parses `NAME[:TAG]`.
    ///
    /// # Errors
    ///
    /// [`ReferenceError`] for an empty or over-long name, uppercase or other characters a
    /// repository name cannot hold, an invalid tag, or a digest reference.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let error = |problem| ReferenceError {
            reference: text.chars().take(300).collect(),
            problem,
        };
        if text.contains('@') {
            return Err(error(
                "digest references are not supported (use the image ID)",
            ));
        }
        // The tag is after the last `:` that follows the last `/` (a `:` before it is a port).
        let last_slash = text.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match text[last_slash..].rfind(':') {
            Some(i) => (&text[..last_slash + i], &text[last_slash + i + 1..]),
            None => (text, DEFAULT_TAG),
        };
        if name.is_empty() {
            return Err(error("empty name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(error("name longer than 255 characters"));
        }
        if !valid_tag(tag) {
            return Err(error(
                "a tag is up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`",
            ));
        }
        let components: Vec<&str> = name.split('/').collect();
        for (i, component) in components.iter().enumerate() {
            let is_host = i == 0 && components.len() > 1 && looks_like_host(component);
            let ok = if is_host {
                valid_host(component)
            } else {
                valid_path_component(component)
            };
            if !ok {
                return Err(error(
                    "a name is lowercase letters, digits and separators (`.`, `_`, `-`, `/`)",
                ));
            }
        }
        Ok(Reference {
            name: familiar(name),
            tag: tag.to_owned(),
        })
    }

    /// Parses an annotation or `RepoTags` value found in an archive: like [`parse`], but
    /// `None` for a bare tag (`latest`, which is how skopeo names an OCI layout entry) or
    /// anything invalid.
    ///
    /// [`parse`]: Reference::parse
    pub fn from_archive(text: &str) -> Option<Reference> {
        if !text.contains(':') && !text.contains('/') {
            return None;
        }
        Reference::parse(text).ok()
    }

    /// The name of an OCI layout entry whose `org.opencontainers.image.ref.name` is a bare
    /// tag (`latest`, as `skopeo copy … oci:DIR:latest` writes it): the tag of a local
    /// repository named after the layout, `localhost/<layout>:<tag>`. `layout` is the
    /// layout's directory or archive name without `.tar`; it is lowercased and every
    /// character a repository name cannot hold becomes `-`. `None` if `tag` is no valid tag
    /// or nothing of `layout` is left.
    pub fn for_layout_tag(layout: &str, tag: &str) -> Option<Reference> {
        if !valid_tag(tag) {
            return None;
        }
        let mut name: String = layout
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
                _ => '-',
            })
            .collect();
        // A component starts and ends with a letter or digit.
        name = name
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_owned();
        Reference::parse(&format!("{LOCAL_REGISTRY}/{name}:{tag}")).ok()
    }
}

/// The registry part podman gives names that have none of their own.
const LOCAL_REGISTRY: &str = "localhost";

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// Whether the first component of a name is a registry host rather than a path.
fn looks_like_host(component: &str) -> bool {
    component == "localhost" || component.contains('.') || component.contains(':')
}

/// A registry host: letters (any case), digits, `.` and `-`, and an optional `:port`.
fn valid_host(component: &str) -> bool {
    let (host, port) = match component.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (component, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// A path component: `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn valid_path_component(component: &str) -> bool {
    let b = component.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Docker's familiar form: the default registry and the `library/` namespace are implied.
fn familiar(name: &str) -> String {
    let without_registry = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name);
    if without_registry.len() != name.len() {
        if let Some(rest) = without_registry.strip_prefix("library/") {
            if !rest.contains('/') {
                return rest.to_owned();
            }
        }
    }
    without_registry.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (String, String) {
        let r = Reference::parse(text).expect(text);
        (r.name, r.tag)
    }

    #[test]
    fn names_tags_and_defaults() {
        assert_eq!(parsed("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            parsed("rfs/busybox:v1.2"),
            ("rfs/busybox".into(), "v1.2".into())
        );
        assert_eq!(
            parsed("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            parsed("my.registry:443/x_y__z-w:t_1"),
            ("my.registry:443/x_y__z-w".into(), "t_1".into())
        );
        assert_eq!(
            Reference::parse("a/b:c").expect("valid").to_string(),
            "a/b:c"
        );
    }

    #[test]
    fn familiar_form_drops_the_default_registry() {
        assert_eq!(parsed("docker.io/library/busybox").0, "busybox");
        assert_eq!(parsed("docker.io/rfs/busybox:latest").0, "rfs/busybox");
        assert_eq!(parsed("index.docker.io/library/a/b").0, "library/a/b");
        assert_eq!(parsed("library/busybox").0, "library/busybox");
        assert_eq!(parsed("quay.io/x/y").0, "quay.io/x/y");
    }

    #[test]
    fn invalid_references_are_refused() {
        for bad in [
            "",
            ":tag",
            "Upper",
            "a//b",
            "a/",
            "-a",
            "a:",
            "a:.x",
            "a b",
            "busybox@sha256:0000",
            "a:b:c/d",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
        assert!(Reference::parse(&"a".repeat(256)).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn archive_names_ignore_bare_tags() {
        assert_eq!(Reference::from_archive("latest"), None);
        assert_eq!(
            Reference::from_archive("rfs/busybox:latest").map(|r| r.name),
            Some("rfs/busybox".into())
        );
        assert_eq!(Reference::from_archive("bad name:x"), None);
    }

    #[test]
    fn a_bare_layout_tag_names_a_local_repository_after_the_layout() {
        let named =
            |layout: &str, tag: &str| Reference::for_layout_tag(layout, tag).map(|r| r.to_string());
        assert_eq!(
            named("busybox-oci", "latest").as_deref(),
            Some("localhost/busybox-oci:latest")
        );
        assert_eq!(
            named("My Image (2)", "v1.0").as_deref(),
            Some("localhost/my-image--2:v1.0")
        );
        assert_eq!(named("busybox-oci", "not a tag"), None);
        assert_eq!(named("--", "latest"), None);
        // Separators a name cannot repeat leave no valid name rather than a wrong one.
        assert_eq!(named("a..b", "latest"), None);
    }
}
