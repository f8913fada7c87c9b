//! Unit tests of the store: synthetic docker archives built here, loaded into a temporary
//! root, and the store's documents, blobs and answers checked directly.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::lower::FileKind;

/// A layer member for [`layer`].
enum M<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

/// An uncompressed layer tar.
fn layer(members: &[M<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        match m {
            M::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).expect("dir");
            }
            M::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).expect("file");
            }
            M::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).expect("link");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// A config for `layers` with one history entry per layer (plus `extra` empty ones).
fn config(layers: &[&[u8]], history: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::of_bytes(l).to_string())
        .collect();
    let history: Vec<serde_json::Value> = history
        .iter()
        .map(|h| match h.strip_prefix("empty:") {
            Some(c) => {
                json!({"created": "2024-01-01T00:00:00Z", "created_by": c, "empty_layer": true})
            }
            None => json!({"created": "2024-01-01T00:00:00Z", "created_by": h}),
        })
        .collect();
    serde_json::to_vec(&json!({
        "architecture": crate::image::Platform::host().architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .expect("json")
}

/// A docker archive at `path` with `layers`, `config` and `tags`.
fn docker_archive(path: &Path, layers: &[&[u8]], config: &[u8], tags: &[&str]) {
    docker_archive_with(path, layers, config, json!({"RepoTags": tags}));
}

/// A docker archive at `path` with `layers` and `config`, whose `manifest.json` entry also
/// has the fields of `entry` (`RepoTags`, `Parent` …).
fn docker_archive_with(path: &Path, layers: &[&[u8]], config: &[u8], entry: serde_json::Value) {
    let mut b = tar::Builder::new(fs::File::create(path).expect("create"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("member");
    };
    let mut names = Vec::new();
    for l in layers {
        let name = format!("{}.tar", Digest::of_bytes(l).hex());
        add(&name, l);
        names.push(name);
    }
    let config_name = format!("{}.json", Digest::of_bytes(config).hex());
    add(&config_name, config);
    let mut manifest = json!([{"Config": config_name, "Layers": names}]);
    if let (Some(fields), Some(target)) = (entry.as_object(), manifest[0].as_object_mut()) {
        target.extend(fields.clone());
    }
    add("manifest.json", manifest.to_string().as_bytes());
    b.into_inner().expect("finish").flush().expect("flush");
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("root")).expect("open store");
        Fixture { dir, store }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a docker archive and loads it.
    fn load(&self, name: &str, layers: &[&[u8]], history: &[&str], tags: &[&str]) -> Loaded {
        let path = self.path(name);
        docker_archive(&path, layers, &config(layers, history), tags);
        self.store
            .load(&path, &LoadOptions::default())
            .expect("load")
    }

    fn blob_count(&self) -> usize {
        fs::read_dir(self.store.blobs_dir()).expect("list").count()
    }
}

fn base_layer() -> Vec<u8> {
    layer(&[
        M::Dir("etc"),
        M::File("etc/motd", b"hello\n"),
        M::Dir("data"),
        M::File("data/a", b"aaaa"),
        M::Dir("data/sub"),
        M::File("data/sub/b", b"bb"),
        M::Link("etc/link", "motd"),
    ])
}

fn top_layer() -> Vec<u8> {
    layer(&[M::Dir("app"), M::File("app/run", b"#!/bin/sh\n")])
}

#[test]
fn a_fresh_store_is_an_oci_layout() {
    let f = Fixture::new();
    let root = f.store.root();
    assert_eq!(
        fs::read(root.join("oci-layout")).expect("oci-layout"),
        crate::image::model::OCI_LAYOUT
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("index.json")).expect("index")).expect("json");
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], json!([]));
}

#[test]
fn loading_stores_shared_layers_once_and_names_images() {
    let f = Fixture::new();
    let (base, top) = (base_layer(), top_layer());
    let a = f.load("a.tar", &[&base], &["base"], &["docker.io/library/base:1"]);
    assert_eq!(a.tags, [Reference::parse("base:1").expect("ref")]);
    let after_a = f.blob_count();
    assert_eq!(after_a, 3, "layer, config, manifest");
    let b = f.load("b.tar", &[&base, &top], &["base", "top"], &["app:latest"]);
    assert_eq!(
        f.blob_count(),
        after_a + 3,
        "only the new layer, config, manifest"
    );
    assert_eq!(b.new_layers, 1);

    let images = f.store.images().expect("images");
    assert_eq!(images.len(), 2);
    assert_eq!(f.store.resolve("base:1").expect("by name").id, a.id);
    assert_eq!(f.store.resolve("app").expect("default tag").id, b.id);
    assert_eq!(f.store.resolve(&b.id.hex()[..10]).expect("prefix").id, b.id);
    assert_eq!(f.store.resolve(&b.id.to_string()).expect("full").id, b.id);
    assert!(matches!(
        f.store.resolve("nothing"),
        Err(Error::NoSuchImage { .. })
    ));

    let image = f.store.find("app").expect("find");
    assert_eq!(image.diff_ids.len(), 2);
    // Docker's size: file data plus symlink targets.
    assert_eq!(image.meta.layer_sizes, [6 + 4 + 2 + 4, 10]);
    let tree = f.store.lower_tree(&image).expect("tree");
    let run = tree.lookup_path(b"app/run").expect("merged");
    assert_eq!(tree.node(run).kind, FileKind::File);

    // The manifest is a plain OCI manifest over uncompressed layers named by diff_id.
    let manifest = f
        .store
        .manifest(&image.manifest)
        .expect("read")
        .expect("manifest");
    assert_eq!(
        manifest.layers[0].media_type.as_deref(),
        Some(crate::image::model::MEDIA_LAYER_TAR)
    );
    assert_eq!(manifest.layers[0].digest, image.diff_ids[0].to_string());
    assert_eq!(manifest.config.digest, image.id.to_string());
}

#[test]
fn a_corrupt_layer_is_refused_and_nothing_is_named() {
    let f = Fixture::new();
    let good = base_layer();
    let mut bad = good.clone();
    bad[600] ^= 1;
    // The config names the good layer's digest; the archive holds the damaged bytes.
    let path = f.path("bad.tar");
    let config = config(&[&good], &["base"]);
    let mut b = tar::Builder::new(fs::File::create(&path).expect("create"));
    for (name, data) in [
        ("layer.tar".to_owned(), bad.as_slice()),
        ("config.json".to_owned(), config.as_slice()),
        (
            "manifest.json".to_owned(),
            br#"[{"Config":"config.json","RepoTags":["bad:1"],"Layers":["layer.tar"]}]"#.as_slice(),
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).expect("member");
    }
    b.finish().expect("finish");
    drop(b);
    let err = f
        .store
        .load(&path, &LoadOptions::default())
        .expect_err("corrupt layer");
    assert!(err.to_string().contains("digest"), "{err}");
    assert!(f.store.images().expect("images").is_empty());
    assert!(f.store.read_index().expect("index").manifests.is_empty());
}

#[test]
fn concurrent_loads_of_one_image_all_succeed() {
    let f = Fixture::new();
    let base = base_layer();
    let path = f.path("a.tar");
    docker_archive(&path, &[&base], &config(&[&base], &["base"]), &["same:1"]);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let store = Store::open(f.store.root()).expect("open");
                let path = path.clone();
                s.spawn(move || store.load(&path, &LoadOptions::default()))
            })
            .collect();
        for h in handles {
            h.join().expect("thread").expect("load");
        }
    });
    let index = f.store.read_index().expect("index");
    assert_eq!(index.manifests.len(), 1);
    let leftovers: Vec<_> = fs::read_dir(f.store.blobs_dir())
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(crate::durable::TMP_PREFIX)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn tags_move_and_leave_untagged_images() {
    let f = Fixture::new();
    let (base, top) = (base_layer(), top_layer());
    let a = f.load("a.tar", &[&base], &["base"], &["x:1"]);
    let b = f.load("b.tar", &[&base, &top], &["base", "top"], &["x:1"]);
    let images = f.store.images().expect("images");
    let old = images.iter().find(|i| i.id == a.id).expect("kept");
    assert!(old.tags.is_empty(), "the tag moved to the new image");
    assert_eq!(f.store.resolve("x:1").expect("x").id, b.id);
    f.store
        .tag(old, &Reference::parse("y").expect("ref"))
        .expect("tag");
    let index = f.store.read_index().expect("index");
    assert_eq!(index.manifests.len(), 2, "no untagged entry is left");
    assert_eq!(f.store.resolve("y:latest").expect("y").id, a.id);
}

#[test]
fn rmi_and_prune_keep_what_leases_and_containers_use() {
    let f = Fixture::new();
    let (base, top) = (base_layer(), top_layer());
    let a = f.load("a.tar", &[&base], &["base"], &["a:1"]);
    let b = f.load("b.tar", &[&base, &top], &["base", "top"], &["b:1"]);
    let top_blob = f.store.blob_path(&Digest::of_bytes(&top));

    // A container made from b: rmi refuses, and prune keeps its blobs even after rmi -f.
    let cdir = f.store.root().join("containers/c1");
    fs::create_dir_all(&cdir).expect("mkdir");
    fs::write(
        cdir.join("state.json"),
        br#"{"id":"c1","name":"web","image":"b:1"}"#,
    )
    .expect("state");
    match f.store.remove("b:1", false) {
        Err(Error::InUse { users, .. }) => assert!(users.contains("web"), "{users}"),
        other => panic!("expected InUse, got {other:?}"),
    }
    fs::write(
        cdir.join("state.json"),
        format!(
            r#"{{"id":"c1","name":"web","image":"gone","image_id":"{}"}}"#,
            b.id
        ),
    )
    .expect("state");
    let removed = f.store.remove("b:1", true).expect("forced");
    assert_eq!(removed.deleted, Some(b.id));
    assert!(top_blob.is_file(), "the container's layer stays");
    assert!(
        f.store
            .prune()
            .expect("prune")
            .blobs
            .iter()
            .all(|(d, _)| *d != Digest::of_bytes(&top))
    );
    assert!(top_blob.is_file());
    fs::remove_dir_all(&cdir).expect("rm container");

    // A lease (a running mount) keeps blobs too, until it is dropped.
    let lease = f
        .store
        .lease("test", &[Digest::of_bytes(&top)])
        .expect("lease");
    let report = f.store.prune().expect("prune");
    assert!(top_blob.is_file(), "leased");
    assert!(
        report.blobs.iter().any(|(d, _)| *d == b.id),
        "its config was not leased"
    );
    drop(lease);
    let report = f.store.prune().expect("prune");
    assert!(!top_blob.is_file(), "no longer used");
    assert!(
        report
            .blobs
            .iter()
            .any(|(d, _)| *d == Digest::of_bytes(&top))
    );

    // Removing the last name deletes the image and its blobs.
    let removed = f.store.remove("a:1", false).expect("rmi");
    assert_eq!(removed.deleted, Some(a.id));
    assert!(!f.store.blob_path(&Digest::of_bytes(&base)).exists());
    assert_eq!(f.blob_count(), 0);
}

#[test]
fn a_stale_lease_is_removed_by_prune() {
    let f = Fixture::new();
    let dir = f.store.root().join(LEASES_DIR);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(
        dir.join("1-2-3.json"),
        br#"{"pid":1,"what":"x","blobs":[]}"#,
    )
    .expect("lease");
    let report = f.store.prune().expect("prune");
    assert!(report.other_files >= 1);
    assert!(!dir.join("1-2-3.json").exists());
}

/// Sets an xattr on `path` (root may set `trusted.*`, anyone `user.*` on ext4/tmpfs).
/// The member names of a tar, in order.
fn member_names(tar_bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(tar_bytes)
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let file = fs::File::open(path).expect("open");
    let c = CString::new(name).expect("name");
    crate::sys::set_xattr(file.as_fd(), &c, value, 0).expect("setxattr");
}

/// An upper over the base layer (`.wh.` whiteouts, `user.` markers: no privileges needed).
fn make_upper(dir: &Path) -> PathBuf {
    let up = dir.join("upper");
    fs::create_dir_all(up.join("etc")).expect("mkdir");
    fs::write(up.join("etc/motd"), b"changed\n").expect("motd");
    fs::write(up.join("etc/.wh.link"), b"").expect("whiteout");
    fs::write(up.join("new"), b"new file\n").expect("new");
    fs::hard_link(up.join("new"), up.join("new-link")).expect("hard link");
    // data renamed to moved (a redirect), and a file added inside it.
    fs::create_dir_all(up.join("moved")).expect("mkdir");
    set_xattr(&up.join("moved"), "user.overlay.redirect", b"/data");
    fs::write(up.join("moved/extra"), b"x").expect("extra");
    fs::write(up.join(".wh.data"), b"").expect("whiteout");
    // An opaque directory replacing /etc's content would hide motd; use a new one instead.
    fs::create_dir_all(up.join("opq")).expect("mkdir");
    set_xattr(&up.join("opq"), "user.overlay.opaque", b"y");
    fs::write(up.join("opq/inside"), b"i").expect("inside");
    set_xattr(&up.join("new"), "user.rfs.origin", b"42");
    set_xattr(&up.join("new"), "user.note", b"kept");
    set_xattr(
        &up.join("etc/motd"),
        "user.containers.override_stat",
        b"1000:1000:0600",
    );
    up
}

#[test]
fn diff_lists_changes_as_docker_does() {
    let f = Fixture::new();
    let base = base_layer();
    f.load("a.tar", &[&base], &["base"], &["base:1"]);
    let image = f.store.find("base:1").expect("image");
    let tree = f.store.lower_tree(&image).expect("tree");
    let up = make_upper(f.dir.path());
    let lines: Vec<String> = diff(&tree, &up, UpperOwners::default())
        .expect("diff")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "D /data",
            "C /etc",
            "D /etc/link",
            "C /etc/motd",
            "A /moved",
            "A /moved/a",
            "A /moved/extra",
            "A /moved/sub",
            "A /moved/sub/b",
            "A /new",
            "A /new-link",
            "A /opq",
            "A /opq/inside",
        ]
    );
}

#[test]
fn commit_is_deterministic_and_gives_the_merged_view() {
    let f = Fixture::new();
    let base = base_layer();
    f.load("a.tar", &[&base], &["base"], &["base:1"]);
    let image = f.store.find("base:1").expect("image");
    let up = make_upper(f.dir.path());
    let opts = CommitOptions {
        reference: Some(Reference::parse("committed:1").expect("ref")),
        message: Some("msg".into()),
        changes: vec!["ENV X=1".into()],
        ..CommitOptions::default()
    };
    let one = f.store.commit(&image, &up, &opts).expect("commit");
    let two = f.store.commit(&image, &up, &opts).expect("again");
    assert_eq!(one.layer, two.layer, "same upper, same layer");

    let committed = f.store.find("committed:1").expect("committed");
    assert_eq!(committed.meta.parent, Some(image.id));
    assert_eq!(committed.diff_ids.len(), 2);
    assert_eq!(
        committed.config.config.as_ref().and_then(|c| c.env.clone()),
        Some(vec!["PATH=/bin".to_owned(), "X=1".to_owned()])
    );
    let history = &committed.config.history;
    assert_eq!(
        history.last().expect("entry").comment.as_deref(),
        Some("msg")
    );

    let tree = f.store.lower_tree(&committed).expect("tree");
    let node = |p: &str| tree.lookup_path(p.as_bytes());
    let content = |p: &str| {
        let n = node(p).unwrap_or_else(|| panic!("{p} missing"));
        let file = tree.open(n).expect("open");
        let mut buf = vec![0u8; tree.node(n).meta().size as usize];
        file.read_at(&mut buf, 0).expect("read");
        buf
    };
    assert_eq!(content("etc/motd"), b"changed\n");
    let motd = tree.node(node("etc/motd").expect("motd"));
    assert_eq!(
        (motd.meta().uid, motd.meta().gid, motd.meta().perm),
        (1000, 1000, 0o600)
    );
    assert!(node("etc/link").is_none(), "whited out");
    assert!(node("data").is_none(), "renamed away");
    assert_eq!(content("moved/a"), b"aaaa");
    assert_eq!(content("moved/sub/b"), b"bb");
    assert_eq!(content("moved/extra"), b"x");
    assert_eq!(content("opq/inside"), b"i");
    let new = node("new").expect("new");
    let link = node("new-link").expect("link");
    assert_eq!(
        tree.node(new).ino_node,
        tree.node(link).ino_node,
        "one inode"
    );
    let xattrs = tree.xattrs(new).expect("xattrs");
    assert_eq!(
        xattrs,
        [(b"user.note".to_vec(), b"kept".to_vec())],
        "no private xattrs"
    );

    // The layer is what OCI tools expect: .wh. names, no overlay markers.
    let names = member_names(&fs::read(f.store.blob_path(&one.layer)).expect("layer"));
    assert!(names.contains(&".wh.data".to_owned()), "{names:?}");
    assert!(names.contains(&"etc/.wh.link".to_owned()), "{names:?}");
    assert!(names.contains(&"opq".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("opq/.wh..wh..opq")),
        "opq is new: no marker needed"
    );
}

/// An export is the merged view flat: the same entries as the committed image, each with its
/// data, owners and links, and no whiteout or marker.
#[test]
fn an_export_is_the_merged_view_without_markers() {
    let f = Fixture::new();
    let base = base_layer();
    f.load("a.tar", &[&base], &["base"], &["base:1"]);
    let image = f.store.find("base:1").expect("image");
    let tree = f.store.lower_tree(&image).expect("tree");
    let up = make_upper(f.dir.path());
    let out = write_merged_tree(&tree, &up, UpperOwners::default(), Vec::new()).expect("export");
    let mut entries: BTreeMap<String, (tar::EntryType, u64, Vec<u8>, Option<String>)> =
        BTreeMap::new();
    for e in tar::Archive::new(out.as_slice())
        .entries()
        .expect("entries")
    {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").display().to_string();
        let h = e.header().clone();
        let link = e
            .link_name()
            .expect("link name")
            .map(|l| l.display().to_string());
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).expect("data");
        let old = entries.insert(
            path.clone(),
            (h.entry_type(), h.uid().expect("uid"), data, link),
        );
        assert!(old.is_none(), "{path} written twice");
    }
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "etc",
            "etc/motd",
            "moved",
            "moved/a",
            "moved/extra",
            "moved/sub",
            "moved/sub/b",
            "new",
            "new-link",
            "opq",
            "opq/inside",
        ],
        "the merged view: no /data (renamed), no /etc/link (deleted), no .wh. names"
    );
    let data = |p: &str| entries[p].2.clone();
    assert_eq!(data("etc/motd"), b"changed\n");
    assert_eq!(entries["etc/motd"].1, 1000, "owner from override_stat");
    assert_eq!(
        data("moved/a"),
        b"aaaa",
        "a renamed dir keeps its lower children"
    );
    assert_eq!(data("moved/sub/b"), b"bb");
    assert_eq!(entries["moved/sub"].0, tar::EntryType::Directory);
    assert_eq!(data("new"), b"new file\n");
    assert_eq!(
        (entries["new-link"].0, entries["new-link"].3.as_deref()),
        (tar::EntryType::Link, Some("new")),
        "hard links stay links"
    );

    // The same view as the image a commit of this upper makes.
    let committed = f
        .store
        .commit(&image, &up, &CommitOptions::default())
        .expect("commit");
    let committed = f.store.find(&committed.id.to_string()).expect("committed");
    let tree = f.store.lower_tree(&committed).expect("tree");
    for name in &names {
        assert!(
            tree.lookup_path(name.as_bytes()).is_some(),
            "{name} is exported but not in the committed image"
        );
    }
}

/// A rootless container's root owns its files without a record: they are the user's on the
/// host. Read with the user's ids as root's, they are root's in the layer, and a copied-up
/// directory whose owner is all that differs is not changed.
#[test]
fn unrecorded_ownership_is_read_as_the_container_saw_it() {
    let f = Fixture::new();
    let base = base_layer();
    f.load("a.tar", &[&base], &["base"], &["base:1"]);
    let image = f.store.find("base:1").expect("image");
    let tree = f.store.lower_tree(&image).expect("tree");
    let up = f.path("upper");
    fs::create_dir_all(up.join("etc")).expect("mkdir");
    fs::write(up.join("etc/motd"), b"changed\n").expect("file");
    // The ids that stand for the container's root: ours, or (as root, whose ids are root's
    // anyway) others the files are given.
    let host = if nix::unistd::geteuid().is_root() {
        for p in ["etc", "etc/motd"] {
            std::os::unix::fs::lchown(up.join(p), Some(4242), Some(4243)).expect("chown");
        }
        (4242, 4243)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    // /etc as a copy-up leaves it: the image's mode and time.
    let etc = tree.node(tree.lookup_path(b"etc").expect("etc")).meta();
    fs::set_permissions(up.join("etc"), fs::Permissions::from_mode(etc.perm)).expect("chmod");
    let time = std::time::UNIX_EPOCH
        + std::time::Duration::new(u64::try_from(etc.mtime).expect("mtime"), etc.mtime_nsec);
    fs::File::open(up.join("etc"))
        .and_then(|d| d.set_modified(time))
        .expect("utimes");
    let owners_of = |owners| -> Vec<(String, u64, u64)> {
        let out = write_layer(&tree, &up, owners, Vec::new()).expect("layer");
        tar::Archive::new(out.as_slice())
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                let path = e.path().expect("path").display().to_string();
                (path, h.uid().expect("uid"), h.gid().expect("gid"))
            })
            .collect()
    };
    let changes = |owners| -> Vec<String> {
        diff(&tree, &up, owners)
            .expect("diff")
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let (hu, hg) = (u64::from(host.0), u64::from(host.1));
    let as_stored = UpperOwners::default();
    assert_eq!(
        owners_of(as_stored),
        [("etc".to_owned(), hu, hg), ("etc/motd".to_owned(), hu, hg)]
    );
    assert_eq!(changes(as_stored), ["C /etc", "C /etc/motd"]);
    let rootless = UpperOwners { root: Some(host) };
    assert_eq!(
        owners_of(rootless),
        [("etc".to_owned(), 0, 0), ("etc/motd".to_owned(), 0, 0)]
    );
    assert_eq!(changes(rootless), ["C /etc/motd"]);
}

#[test]
fn an_opaque_directory_over_an_image_directory_gets_a_marker() {
    let f = Fixture::new();
    let base = base_layer();
    f.load("a.tar", &[&base], &["base"], &["base:1"]);
    let image = f.store.find("base:1").expect("image");
    let up = f.path("upper");
    fs::create_dir_all(up.join("data")).expect("mkdir");
    set_xattr(&up.join("data"), "user.overlay.opaque", b"y");
    fs::write(up.join("data/only"), b"1").expect("file");
    let out = write_layer(
        &f.store.lower_tree(&image).expect("tree"),
        &up,
        UpperOwners::default(),
        Vec::new(),
    )
    .expect("layer");
    let names = member_names(&out);
    assert_eq!(names, ["data", "data/.wh..wh..opq", "data/only"]);
    let changes: Vec<String> = diff(
        &f.store.lower_tree(&image).expect("tree"),
        &up,
        UpperOwners::default(),
    )
    .expect("diff")
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        changes,
        ["C /data", "D /data/a", "A /data/only", "D /data/sub"]
    );
}

#[test]
fn save_then_load_gives_the_same_digests() {
    let f = Fixture::new();
    let (base, top) = (base_layer(), top_layer());
    f.load("b.tar", &[&base, &top], &["base", "top"], &["app:1"]);
    let image = f.store.find("app:1").expect("image");
    for (format, name) in [
        (ArchiveFormat::Docker, "d.tar"),
        (ArchiveFormat::Oci, "o.tar"),
    ] {
        let path = f.path(name);
        let file = fs::File::create(&path).expect("create");
        f.store
            .save(&[(image.clone(), image.tags.clone())], format, file, None)
            .expect("save");
        let other = Store::open(&f.path(&format!("root-{name}"))).expect("open");
        let loaded = other.load(&path, &LoadOptions::default()).expect("load");
        assert_eq!(loaded.id, image.id, "{format:?}");
        assert_eq!(loaded.tags, image.tags, "{format:?}");
        let back = other.find("app:1").expect("find");
        assert_eq!(back.manifest, image.manifest, "{format:?}");
        assert_eq!(back.diff_ids, image.diff_ids, "{format:?}");
    }
}

#[test]
fn history_puts_ancestor_ids_on_their_rows() {
    let f = Fixture::new();
    let (base, top) = (base_layer(), top_layer());
    let a = f.load("a.tar", &[&base], &["base", "empty:ENV A=1"], &["a:1"]);
    let b = f.load(
        "b.tar",
        &[&base, &top],
        &["base", "empty:ENV A=1", "empty:USER x", "top"],
        &["b:1"],
    );
    let image = f.store.find("b:1").expect("image");
    let rows = f.store.history(&image).expect("history");
    let ids: Vec<Option<Digest>> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [Some(b.id), None, Some(a.id), None]);
    let sizes: Vec<u64> = rows.iter().map(|r| r.size).collect();
    assert_eq!(sizes, [10, 0, 0, 16]);
    assert_eq!(rows[0].created_by, "top");
    assert!(rows[1].empty_layer);
}

#[test]
fn import_makes_a_one_layer_image_from_a_compressed_tar() {
    let f = Fixture::new();
    let rootfs = base_layer();
    let path = f.path("rootfs.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).expect("create"),
        flate2::Compression::fast(),
    );
    gz.write_all(&rootfs).expect("write");
    gz.finish().expect("finish");
    let opts = ImportOptions {
        reference: Some(Reference::parse("imported").expect("ref")),
        changes: vec![r#"CMD ["/bin/sh"]"#.into()],
        ..ImportOptions::default()
    };
    let loaded = f.store.import(&path, &opts).expect("import");
    let image = f.store.find("imported").expect("find");
    assert_eq!(image.id, loaded.id);
    assert_eq!(image.diff_ids, [Digest::of_bytes(&rootfs)]);
    assert_eq!(
        image.config.config.as_ref().and_then(|c| c.cmd.clone()),
        Some(vec!["/bin/sh".to_owned()])
    );
    let comment = image.config.history[0].comment.as_deref().expect("comment");
    assert!(comment.starts_with("Imported from "), "{comment}");

    // zstd and plain tars give the same layer: the sniffed first bytes go back in front.
    let zst = f.path("rootfs.tar.zst");
    fs::write(&zst, zstd::encode_all(&rootfs[..], 3).expect("zstd")).expect("write");
    let plain = f.path("rootfs.tar");
    fs::write(&plain, &rootfs).expect("write");
    for source in [&zst, &plain] {
        let again = f
            .store
            .import(source, &ImportOptions::default())
            .expect("import");
        let image = f.store.find(&again.id.to_string()).expect("find");
        assert_eq!(image.diff_ids, [Digest::of_bytes(&rootfs)], "{source:?}");
    }

    let not_tar = f.path("junk");
    fs::write(&not_tar, vec![7u8; 2000]).expect("junk");
    assert!(matches!(
        f.store.import(&not_tar, &ImportOptions::default()),
        Err(Error::BadLayer { .. })
    ));
}

#[test]
fn a_docker_archive_hands_its_names_and_parent_to_the_store() {
    let f = Fixture::new();
    let base = base_layer();
    let parent = Digest::of_bytes(b"the image it was built from");
    let path = f.path("named.tar");
    docker_archive_with(
        &path,
        &[&base],
        &config(&[&base], &["base"]),
        json!({"RepoTags": ["named:1", "other/named:2"], "Parent": parent.to_string()}),
    );
    let loaded = f.store.load(&path, &LoadOptions::default()).expect("load");
    let names: Vec<String> = loaded.tags.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["named:1", "other/named:2"]);
    let image = f.store.find("other/named:2").expect("find");
    assert_eq!(image.id, loaded.id);
    assert_eq!(image.meta.parent, Some(parent));
}

#[test]
fn a_commit_keeps_the_fields_of_its_base_config_it_does_not_change() {
    let f = Fixture::new();
    let base = base_layer();
    let mut original: serde_json::Value =
        serde_json::from_slice(&config(&[&base], &["base"])).expect("json");
    original["docker_version"] = json!("20.10.24+dfsg1");
    original["container"] = json!("1558876261ac");
    original["container_config"] = json!({
        "Hostname": "1558876261ac", "Cmd": ["/bin/sh", "-c", "make"],
        "Volumes": null, "OnBuild": null, "Labels": {"a": "b"},
    });
    original["config"]["Healthcheck"] =
        json!({"Test": ["CMD", "true"], "Interval": 5_000_000_000_u64, "Retries": 3});
    original["config"]["OnBuild"] = serde_json::Value::Null;
    original["config"]["StopTimeout"] = json!(7);
    original["x-vendor"] = json!({"nested": [1, "two", null]});
    let path = f.path("rich.tar");
    docker_archive(
        &path,
        &[&base],
        &serde_json::to_vec(&original).expect("json"),
        &["rich:1"],
    );
    f.store.load(&path, &LoadOptions::default()).expect("load");
    let image = f.store.find("rich:1").expect("find");
    let opts = CommitOptions {
        message: Some("msg".into()),
        changes: vec!["ENV X=1".into()],
        ..CommitOptions::default()
    };
    let up = make_upper(f.dir.path());
    let committed = f.store.commit(&image, &up, &opts).expect("commit");
    let bytes = fs::read(f.store.blob_path(&committed.id)).expect("config blob");
    let new: serde_json::Value = serde_json::from_slice(&bytes).expect("json");

    // What a commit deliberately changes.
    assert!(new.get("docker_version").is_none(), "{new}");
    assert!(
        new.get("container").is_none(),
        "no container was named: {new}"
    );
    assert_eq!(new["comment"], "msg");
    assert_eq!(new["rootfs"]["diff_ids"][1], committed.layer.to_string());
    assert_eq!(new["history"].as_array().map(Vec::len), Some(2));
    assert_eq!(new["config"]["Env"], json!(["PATH=/bin", "X=1"]));
    // Everything else is as it was, known to the typed model or not, nulls included.
    for key in ["container_config", "x-vendor", "architecture", "os"] {
        assert_eq!(new[key], original[key], "{key}");
    }
    for key in ["Healthcheck", "OnBuild", "StopTimeout", "Cmd"] {
        assert_eq!(new["config"].get(key), original["config"].get(key), "{key}");
    }
    assert_eq!(new["history"][0], original["history"][0]);
    // And the typed view reads the Docker fields back.
    let stored = f.store.find(&committed.id.to_string()).expect("committed");
    let section = stored.config.config.as_ref().expect("config");
    assert_eq!(section.stop_timeout, Some(7));
    assert_eq!(
        section.healthcheck.as_ref().and_then(|h| h.retries),
        Some(3)
    );
    assert_eq!(
        stored
            .config
            .container_config
            .as_ref()
            .and_then(|c| c.hostname.as_deref()),
        Some("1558876261ac")
    );
}
