//! One registry's endpoint: how to reach it (HTTPS with the user's CAs, or plain HTTP where
//! that is allowed), how to authenticate, and the protocol's requests.
//!
//! Scheme: HTTPS first. A registry on loopback (`localhost`, `127.0.0.0/8`, `::1`), one marked
//! `insecure` in registries.conf, or any with `--tls-verify=false` may fall back to plain HTTP
//! when HTTPS does not answer, as podman does; any other must speak verified TLS.
//!
//! Auth: requests go anonymously until the registry answers 401 with a `WWW-Authenticate`
//! challenge; then Basic sends the stored credential, and Bearer asks the token server named
//! by the challenge for a token for the request's scopes (`repository:NAME:pull`, or
//! `pull,push` to push), sending the credential, if any, as Basic auth (or an identity token
//! as a `refresh_token` grant). Tokens are kept per scope set until shortly before they
//! expire, so a pull asks once, not once per blob.
//!
//! Retries: a connection failure, a timeout or a 5xx answer is retried up to [`RETRIES`]
//! times with exponential backoff; 401 (after one re-authentication), 403 and 404 are not.
//! Blob downloads resume: when a connection drops mid-blob, the next request asks for
//! `Range: bytes=<received>-` and the bytes continue into the same hasher and decompressor;
//! a registry that ignores the range (200) has the bytes already received skipped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::Agent;
use ureq::http::{Response, StatusCode};

use super::Error;
use super::auth::{self, Challenge, Credentials};
use super::config::{self, RegistriesConf};
use super::reference::{api_host, is_loopback};
use crate::digest::Digest;
use crate::image::MAX_METADATA_BYTES;
use crate::image::model::{INDEX_TYPES, MANIFEST_TYPES};

/// How many times a failed request is retried.
pub const RETRIES: u32 = 4;
/// The first backoff; it doubles at every retry.
const BACKOFF: Duration = Duration::from_millis(250);
/// A token is renewed this long before its announced expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// Docker schema 1 media types (refused, but asked for so that the refusal is clear).
pub const SCHEMA1_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
];

/// How many bytes of a blob one `PATCH` of an upload carries.
pub const UPLOAD_CHUNK: u64 = 16 << 20;

/// The bytes an upload holds, from its status's `Range: 0-N` (`bytes=0-N` also seen).
fn parse_upload_range(range: &str) -> Option<u64> {
    let range = range.trim().trim_start_matches("bytes=");
    let (start, end) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse::<u64>().ok().map(|n| n + 1)
}

/// What to do about a TLS failure, from its text (rustls names the problem).
fn tls_hint(text: &str) -> Option<&'static str> {
    if text.contains("invalid peer certificate") {
        Some(
            "the registry's certificate is not trusted: put its CA in /etc/containers/certs.d/HOST[:PORT]/ca.crt or give --cert-dir DIR, or use --tls-verify=false",
        )
    } else if text.contains("BadCertificate") || text.contains("CertificateRequired") {
        Some(
            "the registry refused the client certificate: put client.cert and client.key in the registry's certs.d directory or --cert-dir DIR",
        )
    } else {
        None
    }
}

/// Whether a manifest is Docker schema 1, by its media type or its `schemaVersion`.
pub(crate) fn is_schema1(media_type: &str, bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Version {
        schema_version: Option<u64>,
    }
    SCHEMA1_TYPES.contains(&media_type)
        || serde_json::from_slice::<Version>(bytes).is_ok_and(|v| v.schema_version == Some(1))
}

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// `Some(false)`: TLS without verification, and plain HTTP allowed (`--tls-verify=false`).
    pub tls_verify: Option<bool>,
    /// A certs.d-style directory to use instead of the default ones (`--cert-dir`).
    pub cert_dir: Option<PathBuf>,
    /// A credential to use instead of the stored ones (`rfs login`).
    pub credentials: Option<Credentials>,
    /// registries.conf.
    pub conf: RegistriesConf,
}

/// A connection to one registry, shared by the threads of a pull (it is `Sync`).
pub struct Client {
    registry: String,
    base: String,
    agent: Agent,
    credentials: Option<Credentials>,
    state: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    tokens: HashMap<String, (String, Instant)>,
}

/// A request body.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`.
    FileRange(&'a Path, u64, u64),
}

/// What a cross-repository mount did.
pub enum Mounted {
    /// The blob is now in the repository.
    Yes,
    /// The registry started an upload instead (at this URL).
    Upload(String),
}

impl Client {
    /// Connects to `registry` (as references name it) for `repository`'s credentials: finds
    /// the credential, builds the TLS configuration, and pings `/v2/` to settle the scheme.
    ///
    /// # Errors
    ///
    /// The registry is blocked, a credential or TLS file is bad, or the registry does not
    /// answer (over HTTPS, or HTTP where allowed).
    pub fn connect(
        registry: &str,
        repository: Option<&str>,
        opts: &ClientOptions,
    ) -> Result<Client, Error> {
        if opts
            .conf
            .find(registry, repository)
            .is_some_and(|e| e.blocked)
        {
            return Err(Error::Blocked {
                registry: registry.to_owned(),
            });
        }
        let credentials = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => auth::lookup(registry, repository)?,
        };
        let insecure_conf = opts.conf.insecure(registry);
        let verify = opts.tls_verify.unwrap_or(!insecure_conf);
        let http_allowed = !verify || is_loopback(registry) || insecure_conf;
        let host = api_host(registry);
        let dir = config::cert_dir(host, opts.cert_dir.as_deref());
        let tls = config::tls_config(dir.as_deref(), verify)?;
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("rfs/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(8)
            .build()
            .into();
        let mut client = Client {
            registry: registry.to_owned(),
            base: format!("https://{host}"),
            agent,
            credentials,
            state: Mutex::new(AuthState::default()),
        };
        let https = client.ping();
        match https {
            Ok(()) => Ok(client),
            Err(e)
                if http_allowed && matches!(e, Error::Transport { .. } | Error::Status { .. }) =>
            {
                log::debug!("{registry}: HTTPS failed ({e}); trying plain HTTP");
                client.base = format!("http://{host}");
                match client.ping() {
                    Ok(()) => Ok(client),
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The registry as references name it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Whether a credential is known for the registry.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `GET /v2/`: 200, or 401 with a challenge, means a registry answers.
    fn ping(&self) -> Result<(), Error> {
        let url = format!("{}/v2/", self.base);
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.transport("contacting the registry", e))?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 => {
                self.learn_challenge(&resp);
                Ok(())
            }
            status => Err(Error::Status {
                registry: self.registry.clone(),
                what: format!("GET {url}"),
                status,
                message: None,
            }),
        }
    }

    /// Checks the credential against the registry, as `rfs login` does: the registry (Basic)
    /// or its token server (Bearer) must accept it.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] if refused, or any transport error.
    pub fn check_login(&self) -> Result<(), Error> {
        let challenge = self.lock().challenge.clone();
        match challenge {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let resp = self.send("GET", "/v2/".into(), &[], &[], Body::Empty, "logging in")?;
                match resp.status().as_u16() {
                    200 => Ok(()),
                    _ => Err(self.status_error(resp, "logging in")),
                }
            }
            Some(Challenge::Bearer { realm, service, .. }) => self
                .fetch_token(&realm, service.as_deref(), &[])
                .map(|_| ()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn learn_challenge(&self, resp: &Response<ureq::Body>) {
        let challenge = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            // Bearer is preferred when a registry offers both.
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        if let Some(c) = challenge {
            self.lock().challenge = Some(c);
        }
    }

    fn transport(&self, what: &str, e: ureq::Error) -> Error {
        Error::Transport {
            registry: self.registry.clone(),
            what: what.to_owned(),
            hint: tls_hint(&e.to_string()),
            cause: Box::new(e),
        }
    }

    /// The `Authorization` value for `scopes`, fetching a token if needed.
    fn authorization(&self, scopes: &[String]) -> Result<Option<String>, Error> {
        let challenge = self.lock().challenge.clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials.as_ref().and_then(Credentials::basic)),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = scopes.join(" ");
                if let Some((token, until)) = self.lock().tokens.get(&key) {
                    if Instant::now() < *until {
                        return Ok(Some(format!("Bearer {token}")));
                    }
                }
                let (token, until) = self.fetch_token(&realm, service.as_deref(), scopes)?;
                self.lock().tokens.insert(key, (token.clone(), until));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Asks the token server `realm` for a token.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<(String, Instant), Error> {
        let what = format!("getting a token from {realm}");
        let mut attempt = 0;
        let resp = loop {
            let result = match &self.credentials {
                Some(Credentials::IdentityToken(token)) => {
                    let mut form: Vec<(&str, &str)> = vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", token),
                        ("client_id", "rfs"),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    let scope = scopes.join(" ");
                    if !scope.is_empty() {
                        form.push(("scope", &scope));
                    }
                    self.agent.post(realm).send_form(form)
                }
                creds => {
                    let mut req = self.agent.get(realm);
                    if let Some(s) = service {
                        req = req.query("service", s);
                    }
                    for scope in scopes {
                        req = req.query("scope", scope);
                    }
                    if let Some(basic) = creds.as_ref().and_then(Credentials::basic) {
                        if let Some(Credentials::Password { username, .. }) = creds {
                            req = req.query("account", username);
                        }
                        req = req.header("Authorization", basic);
                    }
                    req.call()
                }
            };
            match result {
                Ok(resp) if resp.status().is_server_error() && attempt < RETRIES => {}
                Ok(resp) => break resp,
                Err(e) if attempt >= RETRIES => return Err(self.transport(&what, e)),
                Err(e) => log::debug!("{what}: {e}; retrying"),
            }
            std::thread::sleep(BACKOFF * 2u32.pow(attempt));
            attempt += 1;
        };
        if !resp.status().is_success() {
            return Err(self.status_error(resp, &what));
        }
        let mut resp = resp;
        let doc: serde_json::Value = resp
            .body_mut()
            .with_config()
            .limit(MAX_METADATA_BYTES)
            .read_to_vec()
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| Error::BadDocument {
                registry: self.registry.clone(),
                what: what.clone(),
                problem: format!("not a token response: {e}"),
            })?;
        let token = doc
            .get("token")
            .or_else(|| doc.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::BadDocument {
                registry: self.registry.clone(),
                what: what.clone(),
                problem: "the answer has no token".into(),
            })?;
        // The spec's default lifetime is 60 s.
        let lifetime = doc
            .get("expires_in")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(60);
        let until = Instant::now() + Duration::from_secs(lifetime).saturating_sub(TOKEN_MARGIN);
        Ok((token.to_owned(), until))
    }

    /// Sends a request to `path` (under the base URL, or an absolute URL), authenticating
    /// for `scopes` and retrying as the module docs say. Returns any answer but those retried.
    fn send(
        &self,
        method: &str,
        path: String,
        scopes: &[String],
        headers: &[(&str, String)],
        body: Body<'_>,
        what: &str,
    ) -> Result<Response<ureq::Body>, Error> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path
        } else {
            format!("{}{path}", self.base)
        };
        // A chunk of an upload is not replayed here: the registry may have taken part of it,
        // so its caller asks where the upload stands.
        let replayable = !matches!(body, Body::FileRange(..));
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let mut builder = ureq::http::Request::builder().method(method).uri(&url);
            for (k, v) in headers {
                builder = builder.header(*k, v);
            }
            if let Some(auth) = self.authorization(scopes)? {
                builder = builder.header("Authorization", auth);
            }
            let result = match &body {
                Body::Empty => builder.body(()).map(|r| self.agent.run(r)),
                Body::Bytes(b) => builder.body(*b).map(|r| self.agent.run(r)),
                Body::FileRange(p, offset, len) => {
                    let mut file = File::open(p).map_err(|e| Error::io("opening", *p, e))?;
                    io::Seek::seek(&mut file, io::SeekFrom::Start(*offset))
                        .map_err(|e| Error::io("reading", *p, e))?;
                    builder
                        .body(ureq::SendBody::from_owned_reader(file.take(*len)))
                        .map(|r| self.agent.run(r))
                }
            }
            .map_err(|e| Error::BadDocument {
                registry: self.registry.clone(),
                what: what.to_owned(),
                problem: format!("cannot build the request for {url}: {e}"),
            })?;
            match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !reauthenticated => {
                    let before = self.lock().challenge.clone();
                    self.learn_challenge(&resp);
                    reauthenticated = true;
                    let mut state = self.lock();
                    let had_token = state.tokens.remove(&scopes.join(" ")).is_some();
                    // Nothing new to try: anonymous with no challenge, or Basic already sent.
                    if state.challenge.is_none()
                        || (state.challenge == before && !had_token && before.is_some())
                    {
                        drop(state);
                        return Ok(resp);
                    }
                    continue;
                }
                Ok(resp) if replayable && resp.status().is_server_error() && attempt < RETRIES => {
                    log::debug!("{what}: HTTP {}; retrying", resp.status());
                }
                Ok(resp) => return Ok(resp),
                Err(e) if !replayable || attempt >= RETRIES => {
                    return Err(self.transport(what, e));
                }
                Err(e) => log::debug!("{what}: {e}; retrying"),
            }
            std::thread::sleep(BACKOFF * 2u32.pow(attempt));
            attempt += 1;
        }
    }

    /// The error for an answer that was not the expected one.
    fn status_error(&self, mut resp: Response<ureq::Body>, what: &str) -> Error {
        let status = resp.status().as_u16();
        let had_credentials = self.credentials.is_some();
        match status {
            401 => {
                return Error::Unauthorized {
                    registry: self.registry.clone(),
                    what: what.to_owned(),
                    had_credentials,
                };
            }
            403 => {
                return Error::Denied {
                    registry: self.registry.clone(),
                    what: what.to_owned(),
                    had_credentials,
                };
            }
            _ => {}
        }
        let message = resp
            .body_mut()
            .with_config()
            .limit(16 << 10)
            .read_to_vec()
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|doc| {
                let errors = doc.get("errors")?.as_array()?;
                let texts: Vec<String> = errors
                    .iter()
                    .map(|e| {
                        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                        let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                        format!("{code} {msg}").trim().to_owned()
                    })
                    .collect();
                (!texts.is_empty()).then(|| texts.join("; "))
            });
        Error::Status {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status,
            message,
        }
    }

    fn pull_scope(repository: &str) -> Vec<String> {
        vec![format!("repository:{repository}:pull")]
    }

    fn push_scope(repository: &str) -> Vec<String> {
        vec![format!("repository:{repository}:pull,push")]
    }

    /// Fetches a manifest or index by tag or digest: its bytes, media type and digest. The
    /// bytes are checked against the digest asked for, or the one the registry announces.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Unauthorized`], [`Error::Mismatch`], transport errors,
    /// or a document larger than image metadata can be.
    pub fn manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String, Digest), Error> {
        let what = format!("{repository}:{reference}");
        let accept: Vec<&str> = MANIFEST_TYPES
            .iter()
            .chain(INDEX_TYPES)
            .chain(SCHEMA1_TYPES)
            .copied()
            .collect();
        let resp = self.send(
            "GET",
            format!("/v2/{repository}/manifests/{reference}"),
            &Self::pull_scope(repository),
            &[("Accept", accept.join(", "))],
            Body::Empty,
            &format!("fetching manifest {what}"),
        )?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(Error::NotFound {
                    registry: self.registry.clone(),
                    reference: what,
                });
            }
            _ => return Err(self.status_error(resp, &format!("fetching manifest {what}"))),
        }
        let media_type = header(&resp, "content-type")
            .map(|t| t.split(';').next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let announced = header(&resp, "docker-content-digest").and_then(|d| Digest::parse(&d).ok());
        let mut resp = resp;
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_METADATA_BYTES)
            .read_to_vec()
            .map_err(|e| Error::BadDocument {
                registry: self.registry.clone(),
                what: format!("manifest {what}"),
                problem: format!("cannot be read (more than {MAX_METADATA_BYTES} bytes?): {e}"),
            })?;
        // A signed schema 1 manifest's digest is that of its payload without the signatures,
        // so it would fail the check below: say what it is instead.
        if is_schema1(&media_type, &bytes) {
            return Err(Error::Schema1 {
                registry: self.registry.clone(),
                reference: what,
            });
        }
        let actual = Digest::of_bytes(&bytes);
        let expected = Digest::parse(reference).ok().or(announced);
        if let Some(expected) = expected {
            if expected != actual {
                return Err(Error::Mismatch {
                    registry: self.registry.clone(),
                    what: format!("manifest {what}"),
                    expected,
                    actual,
                });
            }
        }
        Ok((bytes, media_type, actual))
    }

    /// A small blob (a config), read whole and verified.
    ///
    /// # Errors
    ///
    /// As [`Client::blob`], and [`Error::Mismatch`].
    pub fn blob_bytes(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        if size > MAX_METADATA_BYTES {
            return Err(Error::BadDocument {
                registry: self.registry.clone(),
                what: what.to_owned(),
                problem: format!("{size} bytes, more than image metadata can be"),
            });
        }
        let mut reader = self.blob(repository, digest, size, what);
        let mut bytes = Vec::new();
        reader
            .by_ref()
            .take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| reader.into_error(e))?;
        let actual = Digest::of_bytes(&bytes);
        if actual != *digest {
            return Err(Error::Mismatch {
                registry: self.registry.clone(),
                what: what.to_owned(),
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// A reader of blob `digest` of `size` bytes that resumes dropped connections (see the
    /// module docs). Verifying the digest is the reader's caller's job: it hashes on the way.
    pub fn blob<'c>(
        &'c self,
        repository: &str,
        digest: &Digest,
        size: u64,
        what: &str,
    ) -> BlobReader<'c> {
        self.blob_from(repository, digest, size, 0, what)
    }

    /// [`Client::blob`] from byte `start` on (`Range: bytes=<start>-`), for a download whose
    /// first bytes an earlier process kept.
    pub fn blob_from<'c>(
        &'c self,
        repository: &str,
        digest: &Digest,
        size: u64,
        start: u64,
        what: &str,
    ) -> BlobReader<'c> {
        BlobReader {
            client: self,
            repository: repository.to_owned(),
            digest: *digest,
            size,
            what: what.to_owned(),
            pos: start,
            body: None,
            failures: 0,
            error: None,
            finished: start >= size,
        }
    }

    /// Whether `repository` has blob `digest` (`HEAD`).
    ///
    /// # Errors
    ///
    /// Any answer but 200 and 404.
    pub fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<bool, Error> {
        let what = format!("checking blob {digest}");
        let resp = self.send(
            "HEAD",
            format!("/v2/{repository}/blobs/{digest}"),
            &Self::push_scope(repository),
            &[],
            Body::Empty,
            &what,
        )?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    /// Asks the registry to mount blob `digest` from repository `from` into `repository`.
    ///
    /// # Errors
    ///
    /// Any answer but 201 and 202.
    pub fn mount_blob(
        &self,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mounted, Error> {
        let what = format!("mounting blob {digest} from {from}");
        let mut scopes = Self::push_scope(repository);
        scopes.push(format!("repository:{from}:pull"));
        let resp = self.send(
            "POST",
            format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}"),
            &scopes,
            &[("Content-Length", "0".into())],
            Body::Empty,
            &what,
        )?;
        match resp.status().as_u16() {
            201 => Ok(Mounted::Yes),
            202 => Ok(Mounted::Upload(self.location(&resp, &what)?)),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    fn location(&self, resp: &Response<ureq::Body>, what: &str) -> Result<String, Error> {
        let location = header(resp, "location").ok_or_else(|| Error::BadDocument {
            registry: self.registry.clone(),
            what: what.to_owned(),
            problem: "the upload answer has no Location".into(),
        })?;
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location
            } else {
                format!("{}{location}", self.base)
            },
        )
    }

    /// Uploads the file `path` as blob `digest`: `POST` (unless `started` is an upload the
    /// registry already opened), `PATCH`es of [`UPLOAD_CHUNK`] bytes with `Content-Range`,
    /// then `PUT ?digest=`. A chunk that fails (network, 5xx, 416) is not sent again blindly:
    /// the upload's status (`GET` of its URL, `Range: 0-N`) says where the registry stands,
    /// and the upload continues from there, so a dropped connection costs at most a chunk.
    /// If the status cannot be had, the whole upload starts again; both are bounded by
    /// [`RETRIES`]. A registry that refuses the first chunk with another 4xx (chunked uploads
    /// are optional in the protocol) gets the blob in one `PATCH` without `Content-Range`.
    ///
    /// # Errors
    ///
    /// The registry refuses the upload, after retries.
    pub fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        path: &Path,
        mut started: Option<String>,
    ) -> Result<(), Error> {
        let what = format!("uploading blob {digest}");
        let scopes = Self::push_scope(repository);
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io("reading", path, e))?
            .len();
        let mut attempt = 0;
        loop {
            let result = (|| {
                let mut location = match started.take() {
                    Some(l) => l,
                    None => self.start_upload(repository, &scopes, &what)?,
                };
                let mut offset = 0;
                let mut failures = 0;
                let mut chunked = true;
                while offset < size {
                    let len = if chunked {
                        UPLOAD_CHUNK.min(size - offset)
                    } else {
                        size
                    };
                    let mut headers = vec![
                        ("Content-Type", "application/octet-stream".into()),
                        ("Content-Length", len.to_string()),
                    ];
                    if chunked {
                        headers.push(("Content-Range", format!("{offset}-{}", offset + len - 1)));
                    }
                    let sent = self.send(
                        "PATCH",
                        location.clone(),
                        &scopes,
                        &headers,
                        Body::FileRange(path, offset, len),
                        &what,
                    );
                    let failure = match sent {
                        Ok(resp) if resp.status().as_u16() == 202 => {
                            location = self.location(&resp, &what)?;
                            offset += len;
                            failures = 0;
                            continue;
                        }
                        Ok(resp) if resp.status().is_server_error() || resp.status() == 416 => {
                            self.status_error(resp, &what)
                        }
                        Ok(resp)
                            if chunked
                                && offset == 0
                                && resp.status().is_client_error()
                                && ![401, 403, 404].contains(&resp.status().as_u16()) =>
                        {
                            log::info!(
                                "{what}: HTTP {} for a chunk; sending the blob whole",
                                resp.status()
                            );
                            chunked = false;
                            continue;
                        }
                        Ok(resp) => return Err(self.status_error(resp, &what)),
                        Err(e @ Error::Transport { .. }) => e,
                        Err(e) => return Err(e),
                    };
                    failures += 1;
                    if failures > RETRIES {
                        return Err(failure);
                    }
                    log::info!("{what}: {failure}; asking where the upload stands");
                    std::thread::sleep(BACKOFF * 2u32.pow(failures - 1));
                    (location, offset) = self.upload_status(&location, &scopes, &what)?;
                }
                let sep = if location.contains('?') { '&' } else { '?' };
                let resp = self.send(
                    "PUT",
                    format!("{location}{sep}digest={digest}"),
                    &scopes,
                    &[("Content-Length", "0".into())],
                    Body::Empty,
                    &what,
                )?;
                match resp.status().as_u16() {
                    201 | 204 => Ok(()),
                    _ => Err(self.status_error(resp, &what)),
                }
            })();
            match result {
                Ok(()) => return Ok(()),
                Err(e @ (Error::Transport { .. } | Error::Status { status: 500.., .. }))
                    if attempt < RETRIES =>
                {
                    log::debug!("{what}: {e}; starting the upload again");
                }
                Err(e) => return Err(e),
            }
            std::thread::sleep(BACKOFF * 2u32.pow(attempt));
            attempt += 1;
        }
    }

    /// Where an upload stands: `GET` of its URL answers 204 with `Range: 0-N` (N+1 bytes
    /// taken; no `Range` when none) and the URL to continue at.
    fn upload_status(
        &self,
        location: &str,
        scopes: &[String],
        what: &str,
    ) -> Result<(String, u64), Error> {
        let resp = self.send("GET", location.to_owned(), scopes, &[], Body::Empty, what)?;
        if resp.status().as_u16() != 204 {
            return Err(self.status_error(resp, what));
        }
        let taken = match header(&resp, "range") {
            None => 0,
            Some(range) => parse_upload_range(&range).ok_or_else(|| Error::BadDocument {
                registry: self.registry.clone(),
                what: what.to_owned(),
                problem: format!("the upload's status has a bad Range `{range}`"),
            })?,
        };
        let location = match header(&resp, "location") {
            Some(_) => self.location(&resp, what)?,
            None => location.to_owned(),
        };
        Ok((location, taken))
    }

    /// Opens an upload session in `repository` (`POST /v2/…/blobs/uploads/`); returns where
    /// its data goes.
    fn start_upload(
        &self,
        repository: &str,
        scopes: &[String],
        what: &str,
    ) -> Result<String, Error> {
        let resp = self.send(
            "POST",
            format!("/v2/{repository}/blobs/uploads/"),
            scopes,
            &[("Content-Length", "0".into())],
            Body::Empty,
            what,
        )?;
        if resp.status().as_u16() != 202 {
            return Err(self.status_error(resp, what));
        }
        self.location(&resp, what)
    }

    /// Uploads a small blob (a config) from memory with one monolithic `POST` + `PUT`.
    ///
    /// # Errors
    ///
    /// The registry refuses it.
    pub fn upload_bytes(
        &self,
        repository: &str,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let what = format!("uploading blob {digest}");
        let scopes = Self::push_scope(repository);
        let location = self.start_upload(repository, &scopes, &what)?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self.send(
            "PUT",
            format!("{location}{sep}digest={digest}"),
            &scopes,
            &[("Content-Type", "application/octet-stream".into())],
            Body::Bytes(bytes),
            &what,
        )?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(self.status_error(resp, &what)),
        }
    }

    /// Puts a manifest under `reference` (a tag or its digest); returns its digest.
    ///
    /// # Errors
    ///
    /// The registry refuses it (a missing blob, a bad manifest, no permission).
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, Error> {
        let what = format!("putting manifest {repository}:{reference}");
        let resp = self.send(
            "PUT",
            format!("/v2/{repository}/manifests/{reference}"),
            &Self::push_scope(repository),
            &[("Content-Type", media_type.to_owned())],
            Body::Bytes(bytes),
            &what,
        )?;
        match resp.status().as_u16() {
            200..=202 => Ok(Digest::of_bytes(bytes)),
            _ => Err(self.status_error(resp, &what)),
        }
    }
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A blob download that resumes with `Range` requests when the connection drops (see the
/// module docs). It stops with an error after [`RETRIES`] failures in a row without progress,
/// or when the registry sends more bytes than the descriptor's size.
pub struct BlobReader<'c> {
    client: &'c Client,
    repository: String,
    digest: Digest,
    size: u64,
    what: String,
    pos: u64,
    body: Option<ureq::BodyReader<'static>>,
    failures: u32,
    error: Option<Error>,
    finished: bool,
}

impl BlobReader<'_> {
    /// Bytes received so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The registry error behind an `io::Error` this reader returned, if it was one.
    pub fn into_error(mut self, e: io::Error) -> Error {
        self.error.take().unwrap_or_else(|| Error::Read {
            registry: self.client.registry.clone(),
            what: self.what.clone(),
            source: e,
        })
    }

    fn open(&mut self) -> Result<ureq::BodyReader<'static>, Error> {
        let mut headers = Vec::new();
        if self.pos > 0 {
            headers.push(("Range", format!("bytes={}-", self.pos)));
        }
        let resp = self.client.send(
            "GET",
            format!("/v2/{}/blobs/{}", self.repository, self.digest),
            &Client::pull_scope(&self.repository),
            &headers,
            Body::Empty,
            &self.what,
        )?;
        let status = resp.status().as_u16();
        match status {
            200 | 206 => {}
            404 => {
                return Err(Error::Status {
                    registry: self.client.registry.clone(),
                    what: format!(
                        "{}: blob {} is not in {}",
                        self.what, self.digest, self.repository
                    ),
                    status,
                    message: None,
                });
            }
            _ => return Err(self.client.status_error(resp, &self.what)),
        }
        let mut reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        if status == 200 && self.pos > 0 {
            // The registry ignored the range: skip what was received already.
            let skipped =
                io::copy(&mut (&mut reader).take(self.pos), &mut io::sink()).map_err(|e| {
                    Error::Read {
                        registry: self.client.registry.clone(),
                        what: self.what.clone(),
                        source: e,
                    }
                })?;
            if skipped < self.pos {
                return Err(Error::Read {
                    registry: self.client.registry.clone(),
                    what: self.what.clone(),
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter on retry"),
                });
            }
        }
        Ok(reader)
    }

    fn fail(&mut self, e: Error) -> io::Error {
        let text = e.to_string();
        self.error = Some(e);
        io::Error::other(text)
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.finished {
            return Ok(0);
        }
        loop {
            let mut body = match self.body.take() {
                Some(b) => b,
                None => match self.open() {
                    Ok(b) => b,
                    Err(e) => return Err(self.fail(e)),
                },
            };
            let result = body.read(buf);
            match result {
                Ok(0) if self.pos >= self.size => {
                    self.finished = true;
                    return Ok(0);
                }
                Ok(n) if n > 0 => {
                    self.pos += n as u64;
                    self.failures = 0;
                    if self.pos > self.size {
                        let e = Error::BadDocument {
                            registry: self.client.registry.clone(),
                            what: self.what.clone(),
                            problem: format!(
                                "blob {} is longer than its descriptor's {} bytes",
                                self.digest, self.size
                            ),
                        };
                        return Err(self.fail(e));
                    }
                    self.body = Some(body);
                    return Ok(n);
                }
                // A short body or a dropped connection: ask for the rest.
                Ok(_) | Err(_) => {
                    let cause = match result {
                        Err(e) => e.to_string(),
                        _ => format!("connection closed at byte {} of {}", self.pos, self.size),
                    };
                    self.failures += 1;
                    if self.failures > RETRIES {
                        let e = Error::Read {
                            registry: self.client.registry.clone(),
                            what: self.what.clone(),
                            source: io::Error::other(format!(
                                "{cause} (gave up after {RETRIES} retries)"
                            )),
                        };
                        return Err(self.fail(e));
                    }
                    log::info!("{}: {cause}; resuming at byte {}", self.what, self.pos);
                    std::thread::sleep(BACKOFF * 2u32.pow(self.failures - 1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges_are_read() {
        assert_eq!(parse_upload_range("0-1023"), Some(1024));
        assert_eq!(parse_upload_range("bytes=0-0"), Some(1));
        assert_eq!(parse_upload_range("5-9"), None);
        assert_eq!(parse_upload_range("junk"), None);
    }

    #[test]
    fn tls_failures_say_what_to_do() {
        let hint = tls_hint("io: invalid peer certificate: UnknownIssuer").expect("hint");
        assert!(hint.contains("--cert-dir") && hint.contains("--tls-verify=false"));
        let hint = tls_hint("io: received fatal alert: BadCertificate").expect("hint");
        assert!(hint.contains("client.cert"));
        assert_eq!(tls_hint("Connection refused"), None);
    }

    #[test]
    fn schema1_is_recognised_by_type_or_body() {
        let signed = br#"{"schemaVersion":1,"name":"a","fsLayers":[],"signatures":[]}"#;
        assert!(is_schema1(SCHEMA1_TYPES[0], b"{}"));
        assert!(is_schema1("application/json", signed));
        assert!(is_schema1("", signed));
        let v2 = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert!(!is_schema1(MANIFEST_TYPES[0], v2));
        assert!(!is_schema1("", b"not json"));
    }
}
