//! `rfs commit`: a container's upper directory becomes one more layer of its image, with a
//! new config (diff_id appended, a history entry, `--change` instructions applied).
//!
//! The layer is written by `changes::write_layer` into a temporary blob while it is hashed;
//! the same upper always gives the same bytes, hence the same diff_id. The config records the
//! commit time (`SOURCE_DATE_EPOCH` if set, for reproducible image IDs) and drops the base's
//! `docker_version`, and the store notes the base image as the new image's parent.

use std::fs;
use std::io::{self, BufWriter};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::blobs::HashingWriter;
use super::changes::{self, UpperOwners};
use super::{Error, ImageMeta, Reference, Store, StoredImage, Timestamp, cached_index, layer_size};
use crate::digest::Digest;
use crate::durable::TempFile;
use crate::lower::{LayerInput, LowerTree};
use crate::progress::{Progress, ProgressWriter};

/// How to commit.
#[derive(Default)]
pub struct CommitOptions<'a> {
    /// The name to give the new image.
    pub reference: Option<Reference>,
    /// The commit message (`comment` of the config and of the history entry).
    pub message: Option<String>,
    /// The author.
    pub author: Option<String>,
    /// Dockerfile instructions to apply to the config.
    pub changes: Vec<String>,
    /// What the history entry says created the layer (the container's command).
    pub created_by: Option<String>,
    /// The container committed (`container` of the config).
    pub container: Option<String>,
    /// The container's init layer (see [`crate::init_layer`]): between the image and the
    /// upper, so what it holds is not part of the new layer.
    pub init_layer: Option<LayerInput>,
    /// How to read ownership the upper does not record.
    pub upper_owners: UpperOwners,
    /// Progress reports.
    pub progress: Option<&'a Progress<'a>>,
}

/// The result of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The new image's ID.
    pub id: Digest,
    /// The new layer's diff_id.
    pub layer: Digest,
    /// The new layer's size as Docker counts it.
    pub layer_size: u64,
}

impl Store {
    /// Writes the layer that `upper` (its unrecorded ownership read as `owners` says) adds to
    /// `lower` into the store; returns its diff_id, blob size and Docker size. Writing and
    /// indexing the layer report to `progress`.
    ///
    /// # Errors
    ///
    /// The upper or a lower file cannot be read, or the store cannot be written.
    pub fn store_layer(
        &self,
        lower: &LowerTree,
        upper: &Path,
        owners: UpperOwners,
        progress: Option<&Progress<'_>>,
    ) -> Result<(Digest, u64, u64), Error> {
        let mut tmp = TempFile::create(&self.blobs_dir(), 0o444)?;
        let tmp_path = tmp.path().to_owned();
        let writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.file()));
        // The size is known only at the end: the layer is written in one walk of `upper`.
        let writer = ProgressWriter::new(writer, "writing the layer", progress);
        let writer = changes::write_layer(lower, upper, owners, writer)?.finish();
        let (inner, diff_id, size) = writer.finish();
        inner
            .into_inner()
            .map_err(|e| Error::io("writing", &tmp_path, e.into_error()))?;
        let dest = self.blob_path(&diff_id);
        if dest.is_file() {
            drop(tmp);
        } else {
            tmp.persist(&dest)?;
        }
        let index = cached_index(&self.root, &diff_id, &dest, "indexing the layer", progress)?;
        Ok((diff_id, size, layer_size(&index)))
    }

    /// Commits `upper` (a writable layer over `base`) as a new image.
    ///
    /// # Errors
    ///
    /// A `--change` is invalid, the base's layers are missing, the upper cannot be read, or
    /// the store cannot be written.
    pub fn commit(
        &self,
        base: &StoredImage,
        upper: &Path,
        opts: &CommitOptions<'_>,
    ) -> Result<Committed, Error> {
        let _lock = self.lock_shared()?;
        let mut layers = self.layer_inputs(base)?;
        layers.extend(opts.init_layer.clone());
        let lower = LowerTree::build(layers)?;
        // The new config is the base's JSON object, edited: every field rfs does not
        // deliberately change stays as it was, whether the typed model knows it or not.
        let base_bytes = self.read_blob(&base.id, "config")?;
        let mut object: Map<String, Value> =
            serde_json::from_slice(&base_bytes).map_err(|source| Error::Json {
                path: self.blob_path(&base.id),
                what: "image config",
                source,
            })?;
        apply_changes(
            object.entry("config").or_insert_with(|| json!({})),
            &opts.changes,
        )?;
        let (diff_id, blob_size, docker_size) =
            self.store_layer(&lower, upper, opts.upper_owners, opts.progress)?;

        let created = Timestamp::now_or_source_date_epoch().to_rfc3339_nano();
        let base_created = object.get("created").cloned();
        object.insert("created".into(), json!(created));
        set_or_remove(&mut object, "comment", opts.message.as_deref());
        set_or_remove(&mut object, "author", opts.author.as_deref());
        set_or_remove(&mut object, "container", opts.container.as_deref());
        // The base's `docker_version` names the docker that built the base; rfs is not docker,
        // so the new image claims no version (podman and buildah commit leave it out too).
        object.remove("docker_version");
        let rootfs = object
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
            Some(ids) => ids.push(json!(diff_id.to_string())),
            None => rootfs["diff_ids"] = json!([diff_id.to_string()]),
        }
        let history = object.entry("history").or_insert_with(|| {
            // Without history, give each base layer an entry so the counts agree.
            let entry = match &base_created {
                Some(c) => json!({"created": c}),
                None => json!({}),
            };
            Value::Array(vec![entry; base.diff_ids.len()])
        });
        let mut entry = Map::new();
        entry.insert("created".into(), json!(created));
        if let Some(a) = &opts.author {
            entry.insert("author".into(), json!(a));
        }
        if let Some(c) = &opts.created_by {
            entry.insert("created_by".into(), json!(c));
        }
        if let Some(m) = &opts.message {
            entry.insert("comment".into(), json!(m));
        }
        match history.as_array_mut() {
            Some(list) => list.push(Value::Object(entry)),
            None => *history = json!([entry]),
        }
        let config_bytes = serde_json::to_vec(&object)
            .map_err(|e| Error::io("encoding", "image config", io::Error::other(e)))?;

        let mut layers = Vec::with_capacity(base.diff_ids.len() + 1);
        for d in &base.diff_ids {
            let path = self.blob_path(d);
            let size = fs::metadata(&path)
                .map_err(|e| Error::io("reading", &path, e))?
                .len();
            layers.push((*d, size));
        }
        layers.push((diff_id, blob_size));
        let mut sizes = base.meta.layer_sizes.clone();
        sizes.push(docker_size);
        let tags: Vec<Reference> = opts.reference.iter().cloned().collect();
        let record = self.add_image(
            &config_bytes,
            &layers,
            &tags,
            ImageMeta {
                parent: Some(base.id),
                layer_sizes: sizes,
                last_tag_time: None,
                pulled: Vec::new(),
            },
            opts.progress,
        )?;
        Ok(Committed {
            id: record.id,
            layer: diff_id,
            layer_size: docker_size,
        })
    }
}

impl Store {
    /// Adds an image whose layers are already in the store (written by
    /// [`store_layer`](Self::store_layer)): `rfs build`'s result. `config_bytes` is the
    /// complete image config, its `rootfs.diff_ids` equal to `diff_ids`; an image with the
    /// same config is the same image, so a rebuild that changed nothing adds nothing.
    ///
    /// # Errors
    ///
    /// A layer is missing from the store, or the store cannot be written.
    pub fn add_built_image(
        &self,
        config_bytes: &[u8],
        diff_ids: &[Digest],
        tags: &[Reference],
        parent: Option<Digest>,
    ) -> Result<Digest, Error> {
        let _lock = self.lock_shared()?;
        let mut layers = Vec::with_capacity(diff_ids.len());
        let mut sizes = Vec::with_capacity(diff_ids.len());
        for d in diff_ids {
            let path = self.blob_path(d);
            let size = fs::metadata(&path)
                .map_err(|e| Error::io("reading", &path, e))?
                .len();
            layers.push((*d, size));
            sizes.push(layer_size(&self.layer_index(d)?));
        }
        let record = self.add_image(
            config_bytes,
            &layers,
            tags,
            ImageMeta {
                parent,
                layer_sizes: sizes,
                last_tag_time: None,
                pulled: Vec::new(),
            },
            None,
        )?;
        Ok(record.id)
    }
}

fn set_or_remove(object: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    match value {
        Some(v) => {
            object.insert(key.into(), json!(v));
        }
        None => {
            object.remove(key);
        }
    }
}

/// Applies Dockerfile instructions to the `config` section of an image config, as
/// `docker commit --change` and `docker import --change` do: `CMD`, `ENTRYPOINT`, `ENV`,
/// `LABEL`, `EXPOSE`, `VOLUME`, `WORKDIR`, `USER`, `STOPSIGNAL`.
///
/// # Errors
///
/// [`Error::BadChange`] for an unknown instruction or a malformed argument.
pub fn apply_changes(section: &mut Value, changes: &[String]) -> Result<(), Error> {
    if !section.is_object() {
        *section = json!({});
    }
    for change in changes {
        let bad = |problem: &str| Error::BadChange {
            change: change.clone(),
            problem: problem.to_owned(),
        };
        let text = change.trim();
        let (word, rest) = match text.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (text, ""),
        };
        let Some(obj) = section.as_object_mut() else {
            return Err(bad("the config is not an object"));
        };
        match word.to_ascii_uppercase().as_str() {
            "CMD" => {
                obj.insert("Cmd".into(), command(rest));
            }
            "ENTRYPOINT" => {
                obj.insert("Entrypoint".into(), command(rest));
            }
            "ENV" => {
                let pairs = key_values(rest).ok_or_else(|| bad("expected KEY=VALUE"))?;
                let env = obj.entry("Env").or_insert_with(|| json!([]));
                if !env.is_array() {
                    *env = json!([]);
                }
                if let Some(list) = env.as_array_mut() {
                    for (k, v) in pairs {
                        let prefix = format!("{k}=");
                        list.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
                        list.push(json!(format!("{k}={v}")));
                    }
                }
            }
            "LABEL" => {
                let pairs = key_values(rest).ok_or_else(|| bad("expected KEY=VALUE"))?;
                let labels = obj.entry("Labels").or_insert_with(|| json!({}));
                if !labels.is_object() {
                    *labels = json!({});
                }
                if let Some(map) = labels.as_object_mut() {
                    for (k, v) in pairs {
                        map.insert(k, json!(v));
                    }
                }
            }
            "EXPOSE" => {
                let ports = obj.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !ports.is_object() {
                    *ports = json!({});
                }
                for port in rest.split_whitespace() {
                    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                    if number.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(bad("expected PORT[/tcp|udp|sctp]"));
                    }
                    if let Some(map) = ports.as_object_mut() {
                        map.insert(format!("{number}/{proto}"), json!({}));
                    }
                }
            }
            "VOLUME" => {
                let paths: Vec<String> = match serde_json::from_str::<Vec<String>>(rest) {
                    Ok(list) => list,
                    Err(_) => rest.split_whitespace().map(str::to_owned).collect(),
                };
                if paths.is_empty() {
                    return Err(bad("expected a path"));
                }
                let volumes = obj.entry("Volumes").or_insert_with(|| json!({}));
                if !volumes.is_object() {
                    *volumes = json!({});
                }
                if let Some(map) = volumes.as_object_mut() {
                    for p in paths {
                        map.insert(p, json!({}));
                    }
                }
            }
            "WORKDIR" => {
                if rest.is_empty() {
                    return Err(bad("expected a directory"));
                }
                let dir = if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    let current = obj.get("WorkingDir").and_then(Value::as_str).unwrap_or("/");
                    format!("{}/{rest}", current.trim_end_matches('/'))
                };
                obj.insert("WorkingDir".into(), json!(dir));
            }
            "USER" => {
                obj.insert("User".into(), json!(rest));
            }
            "STOPSIGNAL" => {
                obj.insert("StopSignal".into(), json!(rest));
            }
            _ => {
                return Err(bad(
                    "supported: CMD, ENTRYPOINT, ENV, LABEL, EXPOSE, VOLUME, WORKDIR, USER, STOPSIGNAL",
                ));
            }
        }
    }
    Ok(())
}

/// `["a", "b"]` (exec form), or a shell command run by `/bin/sh -c`.
fn command(rest: &str) -> Value {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(list) => json!(list),
        Err(_) if rest.is_empty() => Value::Null,
        Err(_) => json!(["/bin/sh", "-c", rest]),
    }
}

/// `K=V K2="v 2"` or the legacy `K V` form.
fn key_values(rest: &str) -> Option<Vec<(String, String)>> {
    let first = rest.split_whitespace().next()?;
    if !first.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_owned(), v.trim().to_owned())]);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        let mut value = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    chars.next();
                    if let Some(&n) = chars.peek() {
                        value.push(n);
                    }
                }
                _ => value.push(c),
            }
            chars.next();
        }
        if key.is_empty() || quote.is_some() {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_edit_the_config() {
        let mut c = json!({"Env": ["PATH=/bin", "A=1"], "WorkingDir": "/srv"});
        let changes = [
            r#"CMD ["cat", "/x"]"#,
            "ENTRYPOINT /bin/sh",
            r#"ENV A=2 B="two words""#,
            "env C three",
            "LABEL a=b",
            "EXPOSE 80 53/udp",
            "VOLUME /data",
            "WORKDIR sub",
            "USER app",
        ]
        .map(str::to_owned);
        apply_changes(&mut c, &changes).expect("valid changes");
        assert_eq!(c["Cmd"], json!(["cat", "/x"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/sh"]));
        assert_eq!(
            c["Env"],
            json!(["PATH=/bin", "A=2", "B=two words", "C=three"])
        );
        assert_eq!(c["Labels"], json!({"a": "b"}));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
        assert_eq!(c["WorkingDir"], json!("/srv/sub"));
        assert_eq!(c["User"], json!("app"));
    }

    #[test]
    fn bad_changes_are_named() {
        for bad in ["RUN ls", "EXPOSE eighty", "ENV", "ENV A=\"open"] {
            let mut c = json!({});
            match apply_changes(&mut c, &[bad.to_owned()]) {
                Err(Error::BadChange { change, .. }) => assert_eq!(change, bad),
                other => panic!("{bad}: expected BadChange, got {other:?}"),
            }
        }
    }
}
