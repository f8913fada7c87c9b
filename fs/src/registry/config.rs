//! Per-registry settings: `registries.conf` (which registries are insecure, which are searched
//! for short names, mirrors) and the TLS material of `certs.d` directories.
//!
//! `registries.conf` is read from `$CONTAINERS_REGISTRIES_CONF` if set, else
//! `~/.config/containers/registries.conf` if it exists, else
//! `/etc/containers/registries.conf` (as containers/image: the user's file replaces the
//! system's). Only the v2 format is read: `unqualified-search-registries = [...]` and
//! `[[registry]]` tables with `location` (or `prefix`), `insecure`, `blocked` and
//! `[[registry.mirror]]` (`location`, `insecure`). The entry whose prefix is the longest
//! match of `host/repository` applies.
//!
//! TLS: `--cert-dir DIR`, else the first of `~/.config/containers/certs.d/HOST[:PORT]`,
//! `/etc/containers/certs.d/HOST[:PORT]` and `/etc/docker/certs.d/HOST[:PORT]` that exists.
//! In it, every `*.crt` is a CA added to the system's (`/etc/ssl/certs/ca-certificates.crt`,
//! else Mozilla's bundled roots), and `NAME.cert` with `NAME.key` is the client certificate
//! for mutual TLS, as docker and podman read them.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use super::{Error, ImageRef};

/// The system CA bundle on Debian (and most distributions).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `registries.conf`, the parts rfs uses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RegistriesConf {
    /// Registries tried, in order, for a name without a registry.
    #[serde(default, rename = "unqualified-search-registries")]
    pub unqualified_search_registries: Vec<String>,
    /// Per-registry (or per-repository prefix) settings.
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryEntry>,
}

/// One `[[registry]]` table.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RegistryEntry {
    /// The registry (or `host/repository` prefix) the entry is for.
    #[serde(default)]
    pub location: String,
    /// What it matches, if not `location`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Plain HTTP, or TLS without verification, is allowed.
    #[serde(default)]
    pub insecure: bool,
    /// Pulling from it is refused.
    #[serde(default)]
    pub blocked: bool,
    /// Mirrors tried before it when pulling.
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<Mirror>,
}

/// A `[[registry.mirror]]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Mirror {
    /// The mirror's registry (and optional repository prefix).
    pub location: String,
    /// Plain HTTP, or TLS without verification, is allowed for it.
    #[serde(default)]
    pub insecure: bool,
}

impl RegistriesConf {
    /// Reads the file that applies (see the module docs); empty settings when there is none.
    ///
    /// # Errors
    ///
    /// The file exists but cannot be read or parsed.
    pub fn load() -> Result<RegistriesConf, Error> {
        let env = std::env::var_os("CONTAINERS_REGISTRIES_CONF").map(PathBuf::from);
        let user = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".config/containers/registries.conf"));
        let path = match (env, user) {
            (Some(p), _) => p,
            (None, Some(u)) if u.is_file() => u,
            _ => PathBuf::from("/etc/containers/registries.conf"),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => RegistriesConf::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistriesConf::default()),
            Err(e) => Err(Error::io("reading", &path, e)),
        }
    }

    /// Parses `text`, the content of `path`.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] naming `path`, with the line the parser stopped at.
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConf, Error> {
        toml::from_str(text).map_err(|e| Error::BadFile {
            path: path.to_owned(),
            problem: e.to_string().trim().replace('\n', " "),
        })
    }

    /// The entry for `host/repository` with the longest matching prefix.
    pub fn find(&self, registry: &str, repository: Option<&str>) -> Option<&RegistryEntry> {
        let full = match repository {
            Some(r) => format!("{registry}/{r}"),
            None => registry.to_owned(),
        };
        self.registries
            .iter()
            .filter(|e| {
                let p = e.prefix.as_deref().unwrap_or(&e.location);
                !p.is_empty()
                    && (full == p
                        || full.starts_with(&format!("{p}/"))
                        || (p.starts_with("*.") && registry.ends_with(&p[1..])))
            })
            .max_by_key(|e| e.prefix.as_deref().unwrap_or(&e.location).len())
    }

    /// Where to pull `reference` from, in order: the mirrors of the entry that matches it,
    /// then the entry's `location` (the reference itself unless a `prefix` entry rewrites
    /// it), as containers/image tries them. A mirror's (or the location's) text replaces the
    /// part of `registry/repository` that the entry matched.
    pub fn pull_sources(&self, reference: &ImageRef) -> Vec<ImageRef> {
        let mut out = Vec::new();
        let mut primary = reference.clone();
        if let Some(entry) = self.find(&reference.registry, Some(&reference.repository)) {
            let full = format!("{}/{}", reference.registry, reference.repository);
            let matched = entry.prefix.as_deref().unwrap_or(&entry.location);
            let matched = if matched.starts_with("*.") {
                reference.registry.as_str()
            } else {
                matched
            };
            let rest = full.strip_prefix(matched).unwrap_or_default();
            let mut suffix = String::new();
            if let Some(tag) = &reference.tag {
                suffix = format!(":{tag}");
            }
            if let Some(digest) = &reference.digest {
                suffix.push_str(&format!("@{digest}"));
            }
            let rewrite = |location: &str| {
                let text = format!("{}{rest}{suffix}", location.trim_end_matches('/'));
                ImageRef::parse(&text)
                    .map_err(|e| log::warn!("registries.conf location {location}: {e}"))
                    .ok()
            };
            out.extend(entry.mirrors.iter().filter_map(|m| rewrite(&m.location)));
            if entry.prefix.is_some() && !entry.location.is_empty() {
                if let Some(r) = rewrite(&entry.location) {
                    primary = r;
                }
            }
        }
        out.push(primary);
        out
    }

    /// Whether `registry` is marked insecure.
    pub fn insecure(&self, registry: &str) -> bool {
        self.find(registry, None).is_some_and(|e| e.insecure)
            || self
                .registries
                .iter()
                .flat_map(|e| &e.mirrors)
                .any(|m| m.location.split('/').next() == Some(registry) && m.insecure)
    }
}

/// The certs.d directory for `registry`: `cert_dir` if given, else the first that exists.
pub fn cert_dir(registry: &str, cert_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = cert_dir {
        return Some(d.to_owned());
    }
    let mut candidates = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".config/containers/certs.d"));
    }
    candidates.push(PathBuf::from("/etc/containers/certs.d"));
    candidates.push(PathBuf::from("/etc/docker/certs.d"));
    candidates
        .into_iter()
        .map(|c| c.join(registry))
        .find(|d| d.is_dir())
}

/// The TLS configuration for a registry: CAs and client certificate from `dir` (see the
/// module docs), verification off when `verify` is false.
///
/// # Errors
///
/// [`Error::BadFile`] for a certificate or key that does not parse, or a `.cert` without its
/// `.key`.
pub fn tls_config(dir: Option<&Path>, verify: bool) -> Result<TlsConfig, Error> {
    let mut builder = TlsConfig::builder().disable_verification(!verify);
    let Some(dir) = dir else {
        return Ok(builder.build());
    };
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => return Err(Error::io("reading", dir, e)),
    };
    entries.sort();
    let mut cas = Vec::new();
    let mut client = None;
    for path in &entries {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => cas.extend(read_certs(path)?),
            Some("cert") => {
                let key = path.with_extension("key");
                if !key.is_file() {
                    return Err(Error::BadFile {
                        path: path.clone(),
                        problem: format!("client certificate without its key {}", key.display()),
                    });
                }
                let certs = read_certs(path)?;
                let key = read_key(&key)?;
                client = Some(ClientCert::new_with_certs(&certs, key));
            }
            _ => {}
        }
    }
    if !cas.is_empty() {
        let system = Path::new(SYSTEM_CA_BUNDLE);
        if system.is_file() {
            cas.extend(read_certs(system)?);
            builder = builder.root_certs(RootCerts::new_with_certs(&cas));
        } else {
            builder = builder.root_certs(RootCerts::new_with_certs(&cas));
        }
    }
    Ok(builder.client_cert(client).build())
}

fn read_pem(path: &Path) -> Result<Vec<PemItem<'static>>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    ureq::tls::parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadFile {
            path: path.to_owned(),
            problem: format!("not PEM: {e}"),
        })
}

fn read_certs(path: &Path) -> Result<Vec<Certificate<'static>>, Error> {
    let certs: Vec<_> = read_pem(path)?
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::BadFile {
            path: path.to_owned(),
            problem: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKey<'static>, Error> {
    read_pem(path)?
        .into_iter()
        .find_map(|i| match i {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| Error::BadFile {
            path: path.to_owned(),
            problem: "no private key in it".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first_and_prefixes_rewrite() {
        let text = r#"
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000"
[[registry.mirror]]
location = "mirror.example.com/hub"
[[registry]]
prefix = "example.com/team"
location = "internal.example.com/mirrored/team"
"#;
        let conf = RegistriesConf::parse(text, Path::new("r.conf")).expect("parse");
        let names = |r: &str| -> Vec<String> {
            conf.pull_sources(&ImageRef::parse(r).expect("ref"))
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            names("busybox"),
            [
                "127.0.0.1:5000/library/busybox:latest",
                "mirror.example.com/hub/library/busybox:latest",
                "docker.io/library/busybox:latest",
            ]
        );
        assert_eq!(
            names("example.com/team/app:v1"),
            ["internal.example.com/mirrored/team/app:v1"]
        );
        assert_eq!(names("quay.io/a/b:c"), ["quay.io/a/b:c"]);
    }

    #[test]
    fn registries_conf_entries_and_search() {
        let text = r#"
unqualified-search-registries = ["127.0.0.1:5000", "docker.io"]
[[registry]]
location = "127.0.0.1:5000"
insecure = true
[[registry]]
prefix = "example.com/team"
location = "example.com/team"
blocked = true
[[registry.mirror]]
location = "mirror.example.com:443/team"
"#;
        let conf = RegistriesConf::parse(text, Path::new("r.conf")).expect("parse");
        assert_eq!(conf.unqualified_search_registries.len(), 2);
        assert!(conf.insecure("127.0.0.1:5000"));
        assert!(!conf.insecure("example.com"));
        let e = conf.find("example.com", Some("team/x")).expect("entry");
        assert!(e.blocked);
        assert_eq!(e.mirrors[0].location, "mirror.example.com:443/team");
        assert!(conf.find("example.com", Some("other")).is_none());
    }

    #[test]
    fn a_bad_registries_conf_names_the_file() {
        let err = RegistriesConf::parse("[[registry]\nx", Path::new("/etc/r.conf")).unwrap_err();
        assert!(err.to_string().contains("/etc/r.conf"), "{err}");
    }
}
