//! Credentials and authentication: where credentials come from (podman's `auth.json`,
//! docker's `config.json` and its credential helpers), how `rfs login` stores them, and the
//! `WWW-Authenticate` challenges of the distribution protocol (Basic, and the Bearer token
//! flow of the Docker token spec).
//!
//! Files, in the order they are read (the first that has an entry for the registry wins), as
//! containers/image reads them:
//! 1. `$REGISTRY_AUTH_FILE`, if set;
//! 2. `$XDG_RUNTIME_DIR/containers/auth.json` (without `XDG_RUNTIME_DIR`:
//!    `/run/containers/<uid>/auth.json`), which `rfs login` writes, mode 0600;
//! 3. `~/.config/containers/auth.json`;
//! 4. `~/.docker/config.json`, whose `credHelpers` / `credsStore` name a
//!    `docker-credential-<name>` program that is asked with `get` (the server on stdin, the
//!    secret on its stdout: never in any process's arguments).
//!
//! A credential is a user and password, or an identity token (docker's `identitytoken`, a
//! helper's user `<token>`) that the token server exchanges with `grant_type=refresh_token`.
//! Secrets are never logged: [`Credentials`] prints as the user name only.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use super::Error;
use crate::durable::write_atomic;

/// A registry credential. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user and password (Basic auth, or the token server's Basic auth).
    Password {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// An identity (refresh) token.
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { username, .. } => write!(f, "Password({username}, ***)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

impl Credentials {
    /// The `Authorization: Basic` value of a user and password.
    pub(crate) fn basic(&self) -> Option<String> {
        match self {
            Credentials::Password { username, password } => Some(format!(
                "Basic {}",
                BASE64.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken(_) => None,
        }
    }
}

/// The auth file `rfs login` writes and `rfs logout` edits: `$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`, else (as podman) `/run/containers/<uid>/auth.json`
/// when that directory exists or rfs runs as root, else `~/.config/containers/auth.json`.
pub fn default_auth_file() -> PathBuf {
    if let Some(p) = env_path("REGISTRY_AUTH_FILE") {
        return p;
    }
    if let Some(run) = env_path("XDG_RUNTIME_DIR") {
        return run.join("containers/auth.json");
    }
    let uid = nix::unistd::geteuid().as_raw();
    let per_uid = PathBuf::from(format!("/run/containers/{uid}"));
    if uid == 0 || per_uid.is_dir() {
        return per_uid.join("auth.json");
    }
    home().join(".config/containers/auth.json")
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

/// The files credentials are read from, in order (see the module docs).
fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = env_path("REGISTRY_AUTH_FILE") {
        files.push(p);
    }
    let login = default_auth_file();
    if !files.contains(&login) {
        files.push(login);
    }
    files.push(home().join(".config/containers/auth.json"));
    files.push(home().join(".docker/config.json"));
    files.dedup();
    files
}

/// The keys an auth file may use for `registry`: the bare host, and the URL forms docker
/// writes (Docker Hub's is `https://index.docker.io/v1/`).
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![registry.to_owned()];
    if registry == super::reference::DOCKER_HUB {
        keys.extend(
            [
                "https://index.docker.io/v1/",
                "index.docker.io",
                "registry-1.docker.io",
            ]
            .map(str::to_owned),
        );
    }
    keys.push(format!("https://{registry}"));
    keys.push(format!("http://{registry}"));
    keys
}

/// The credential for `registry` (a host, or `host/repository` for a repository-scoped entry,
/// which podman allows), from the first file or helper that has one; `None` if none does.
///
/// # Errors
///
/// A file exists but is not valid JSON, or a credential helper fails.
pub fn lookup(registry: &str, repository: Option<&str>) -> Result<Option<Credentials>, Error> {
    for file in auth_files() {
        let Some(doc) = read_auth_file(&file)? else {
            continue;
        };
        // Most specific first: host/repo/path, host/repo, …, host.
        let mut candidates = Vec::new();
        if let Some(repo) = repository {
            let mut path = format!("{registry}/{repo}");
            loop {
                candidates.push(path.clone());
                match path.rfind('/') {
                    Some(i) if i > registry.len() => path.truncate(i),
                    _ => break,
                }
            }
        }
        candidates.extend(keys_for(registry));
        if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
            for key in &candidates {
                if let Some(entry) = auths.get(key) {
                    if let Some(c) = decode_entry(entry, &file, key)? {
                        return Ok(Some(c));
                    }
                }
            }
        }
        let helper = doc
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|h| keys_for(registry).iter().find_map(|k| h.get(k)?.as_str()))
            .or_else(|| doc.get("credsStore").and_then(Value::as_str));
        if let Some(helper) = helper {
            if let Some(c) = from_helper(helper, registry)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Reads an auth file; `None` if it does not exist.
fn read_auth_file(path: &Path) -> Result<Option<Value>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Value::Object(Default::default())));
    }
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
        path: path.to_owned(),
        problem: format!("not valid JSON: {e}"),
    })?;
    if !doc.is_object() {
        return Err(Error::BadFile {
            path: path.to_owned(),
            problem: "not a JSON object".into(),
        });
    }
    Ok(Some(doc))
}

/// An `auths` entry: `auth` (base64 `user:password`) and/or `identitytoken`.
fn decode_entry(entry: &Value, file: &Path, key: &str) -> Result<Option<Credentials>, Error> {
    if let Some(token) = entry.get("identitytoken").and_then(Value::as_str) {
        if !token.is_empty() {
            return Ok(Some(Credentials::IdentityToken(token.to_owned())));
        }
    }
    let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
        return Ok(None);
    };
    if auth.is_empty() {
        return Ok(None);
    }
    let bad = || Error::BadFile {
        path: file.to_owned(),
        problem: format!("the `auth` of {key} is not base64 of `user:password`"),
    };
    let decoded = BASE64.decode(auth.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (username, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials::Password {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

/// Asks `docker-credential-<helper> get` for `registry`'s credential. A helper that knows
/// nothing of the registry (non-zero exit with "credentials not found") gives `None`.
fn from_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, Error> {
    let program = format!("docker-credential-{helper}");
    let server = if registry == super::reference::DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    };
    let failed = |problem: String| Error::CredentialHelper {
        helper: program.clone(),
        problem,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| failed(format!("writing to it: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_lowercase()
            + &String::from_utf8_lossy(&out.stderr).to_lowercase();
        if said.contains("not found") {
            return Ok(None);
        }
        return Err(failed(format!("it exited with {}", out.status)));
    }
    let doc: Value =
        serde_json::from_slice(&out.stdout).map_err(|_| failed("its answer is not JSON".into()))?;
    let user = doc.get("Username").and_then(Value::as_str).unwrap_or("");
    let secret = doc.get("Secret").and_then(Value::as_str).unwrap_or("");
    Ok(match (user, secret) {
        (_, "") => None,
        ("<token>", token) => Some(Credentials::IdentityToken(token.to_owned())),
        (user, secret) => Some(Credentials::Password {
            username: user.to_owned(),
            password: secret.to_owned(),
        }),
    })
}

/// Stores `credentials` for `registry` in the auth file `file` (mode 0600, written
/// atomically; other entries are kept).
///
/// # Errors
///
/// The file is not valid JSON, or cannot be written.
pub fn store(file: &Path, registry: &str, credentials: &Credentials) -> Result<(), Error> {
    let mut doc = read_auth_file(file)?.unwrap_or_else(|| Value::Object(Default::default()));
    let entry = match credentials {
        Credentials::Password { username, password } => serde_json::json!({
            "auth": BASE64.encode(format!("{username}:{password}"))
        }),
        Credentials::IdentityToken(token) => serde_json::json!({ "identitytoken": token }),
    };
    let auths = doc
        .as_object_mut()
        .map(|o| {
            o.entry("auths")
                .or_insert_with(|| Value::Object(Default::default()))
        })
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::BadFile {
            path: file.to_owned(),
            problem: "`auths` is not an object".into(),
        })?;
    auths.insert(registry.to_owned(), entry);
    write_auth_file(file, &doc)
}

/// Removes the entries of `registry` (or all, for `None`) from `file`; returns how many went.
///
/// # Errors
///
/// The file is not valid JSON, or cannot be written.
pub fn remove(file: &Path, registry: Option<&str>) -> Result<usize, Error> {
    let Some(mut doc) = read_auth_file(file)? else {
        return Ok(0);
    };
    let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
        return Ok(0);
    };
    let before = auths.len();
    match registry {
        None => auths.clear(),
        Some(registry) => {
            let keys = keys_for(registry);
            auths.retain(|k, _| !(keys.contains(k) || k.starts_with(&format!("{registry}/"))));
        }
    }
    let removed = before - auths.len();
    if removed > 0 {
        write_auth_file(file, &doc)?;
    }
    Ok(removed)
}

fn write_auth_file(file: &Path, doc: &Value) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::BadFile {
        path: file.to_owned(),
        problem: e.to_string(),
    })?;
    bytes.push(b'\n');
    if let Some(dir) = file.parent() {
        // podman makes the per-user directory private too.
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("creating", dir, e))?;
        }
    }
    write_atomic(file, &bytes, 0o600).map_err(|e| Error::io(e.op, e.path, e.source))
}

use std::os::unix::fs::DirBuilderExt as _;

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic.
    Basic,
    /// The Docker token flow: ask `realm` for a token for `service` and `scope`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value; `None` for a scheme rfs does not speak.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `key="value", key=value` pairs (RFC 7235 auth-params), keys lowercased.
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        out.insert(key, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="http://127.0.0.1:5001/token",service="rfs-test-registry",scope="repository:rfs/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5001/token".into(),
                service: Some("rfs-test-registry".into()),
                scope: Some("repository:rfs/busybox:pull".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm=https://x/t, service = "a,b""#),
            Some(Challenge::Bearer {
                realm: "https://x/t".into(),
                service: Some("a,b".into()),
                scope: None,
            })
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn auth_files_round_trip_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("containers/auth.json");
        let creds = Credentials::Password {
            username: "rfs".into(),
            password: "p:ss".into(),
        };
        store(&file, "127.0.0.1:5000", &creds).expect("store");
        store(&file, "quay.io", &Credentials::IdentityToken("tok".into())).expect("store");
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let doc = read_auth_file(&file).expect("read").expect("exists");
        let entry = &doc["auths"]["127.0.0.1:5000"];
        assert_eq!(
            decode_entry(entry, &file, "k").expect("decode"),
            Some(creds.clone())
        );
        assert_eq!(format!("{creds:?}"), "Password(rfs, ***)");
        assert_eq!(remove(&file, Some("127.0.0.1:5000")).expect("remove"), 1);
        assert_eq!(remove(&file, Some("127.0.0.1:5000")).expect("remove"), 0);
        assert_eq!(remove(&file, None).expect("remove all"), 1);
    }

    #[test]
    fn a_bad_auth_entry_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("auth.json");
        let err = decode_entry(&serde_json::json!({"auth": "!!"}), &file, "h").unwrap_err();
        assert!(err.to_string().contains("auth.json"), "{err}");
        std::fs::write(&file, "{nope").expect("write");
        let err = read_auth_file(&file).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }
}
