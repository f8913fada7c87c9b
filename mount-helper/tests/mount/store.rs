//! The image store through the real `rfs` binary (`--root <tempdir>`), with the real test
//! images and real tools as oracles: skopeo and umoci read the store's OCI layout, podman and
//! skopeo read `rfs save` archives, `docker history` / `docker image inspect` output saved by
//! `make-test-images.sh` is what `rfs history` / `rfs inspect` must match, and a committed
//! image must mount to exactly the container's merged view.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{MountGuard, Scratch, images_dir, rfs_bin};
use crate::images::tree_listing;

/// A scratch directory with an rfs root in it.
struct Env {
    s: Scratch,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let s = Scratch::new();
        let root = s.mkdir("root");
        Env { s, root }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(rfs_bin());
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// Runs `rfs --root ROOT ARGS`.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running rfs")
    }

    /// Runs `rfs --root ROOT ARGS`, which must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn load(&self, path: &Path) -> String {
        self.ok(&["load", "-i", path.to_str().expect("utf-8 path")])
    }

    /// Mounts `args` (ending with the source) on a fresh directory `name`.
    fn mount(&self, name: &str, args: &[&str]) -> (MountGuard, PathBuf) {
        let mnt = self.s.mkdir(name);
        let mut all: Vec<&OsStr> = vec![
            OsStr::new("mount"),
            OsStr::new("--root"),
            self.root.as_os_str(),
        ];
        all.extend(args.iter().map(OsStr::new));
        let guard =
            MountGuard::rfs(&all, &mnt).unwrap_or_else(|e| panic!("rfs mount {args:?}: {e}"));
        (guard, mnt)
    }

    fn blobs(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|d| {
                d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn inspect(&self, what: &str) -> serde_json::Value {
        let text = self.ok(&["inspect", what]);
        let mut list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("inspect JSON");
        assert_eq!(list.len(), 1, "{text}");
        list.remove(0)
    }
}

/// Bytes of the files under `dir` (apparent sizes).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        let md = entry.metadata().expect("stat");
        total += if md.is_dir() {
            du(&entry.path())
        } else {
            md.len()
        };
    }
    total
}

fn tool(program: &str, args: &[&OsStr]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (install it, see scripts/test.sh)"))
}

fn tool_ok(program: &str, args: &[&OsStr]) -> String {
    let out = tool(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The ids the image build recorded. `docker build` and `docker commit` stamp the current time
/// into the image config, so every build of the test images gives `rfs/busybox-committed` a
/// new id: tests take ids from what `make-test-images.sh` saved (`docker image inspect`, the
/// OCI layout), never from a constant that only one machine's images match.
struct Recorded {
    /// `rfs/busybox-committed` (docker commit), `sha256:<hex>`.
    committed: String,
    /// `rfs/busybox` (buildah), `sha256:<hex>`.
    busybox: String,
    /// The uncompressed layer digests of `rfs/busybox`, bottom first.
    busybox_diff_ids: Vec<String>,
}

impl Recorded {
    fn read(images: &Path) -> Recorded {
        let json = |p: PathBuf| -> serde_json::Value {
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e} (rebuild the test images)", p.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let string = |v: &serde_json::Value, what: &str| -> String {
            v.as_str()
                .unwrap_or_else(|| panic!("{what} missing from the recorded files"))
                .to_owned()
        };
        let committed = string(
            &json(images.join("docker/image-inspect.json"))[0]["Id"],
            "docker image inspect's Id",
        );
        // The OCI layout of rfs/busybox holds the config that skopeo also wrote into the
        // docker archive, and an image's id is its config's digest.
        let layout = images.join("busybox-oci");
        let blob = |digest: &str| {
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let index = json(layout.join("index.json"));
        let manifest = json(blob(&string(
            &index["manifests"][0]["digest"],
            "the manifest digest",
        )));
        let busybox = string(&manifest["config"]["digest"], "the config digest");
        let busybox_diff_ids = json(blob(&busybox))["rootfs"]["diff_ids"]
            .as_array()
            .expect("rootfs.diff_ids in busybox's config")
            .iter()
            .map(|d| string(d, "a diff_id"))
            .collect();
        Recorded {
            committed,
            busybox,
            busybox_diff_ids,
        }
    }
}

/// The 12-digit id docker prints for `sha256:<hex>`.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").expect("a sha256: digest");
    &hex[..12]
}

#[test]
fn load_stores_shared_layers_once_and_lists_images() {
    let test = "load_stores_shared_layers_once_and_lists_images";
    let Some(images) = images_dir(test) else {
        return;
    };
    let ids = Recorded::read(&images);
    let e = Env::new();
    let out = e.load(&images.join("busybox-docker-archive.tar"));
    assert_eq!(out, "Loaded image: rfs/busybox:latest\n");
    let first = du(&e.root.join("blobs"));
    let blobs_first = e.blobs();
    // The docker-built image shares busybox's three layers and adds three small ones.
    let out = e.load(&images.join("docker/busybox-docker-save.tar"));
    assert_eq!(out, "Loaded image: rfs/busybox-committed:latest\n");
    let added = du(&e.root.join("blobs")) - first;
    let new_blobs: Vec<String> = e.blobs().difference(&blobs_first).cloned().collect();
    assert_eq!(
        new_blobs.len(),
        5,
        "3 layers, a config, a manifest: {new_blobs:?}"
    );
    assert!(
        added < 20_000,
        "only the new layers were added ({added} bytes)"
    );
    assert!(first > 7_000_000, "{first}");
    // The gzip OCI layout of the same image decompresses into the very same layer blobs.
    // Its index names only the tag `latest`: the layout's name stands for the repository.
    let before = e.blobs();
    let out = e.ok(&[
        "load",
        "-i",
        images.join("busybox-oci").to_str().unwrap(),
        "-t",
        "bb:oci",
    ]);
    assert_eq!(
        out,
        "Loaded image: localhost/busybox-oci:latest\nLoaded image: bb:oci\n"
    );
    assert_eq!(
        e.blobs(),
        before,
        "same layers, config and manifest: nothing new"
    );

    let listing = e.ok(&["images"]);
    let rows = crate::common::table_rows(&listing);
    assert_eq!(
        rows[0],
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{listing}"
    );
    assert_eq!(
        rows[1][..3],
        ["rfs/busybox-committed", "latest", short_id(&ids.committed)],
        "{listing}"
    );
    assert_eq!(rows[1][4], "7.11MB", "{listing}");
    let names: BTreeSet<(&str, &str)> = rows[1..].iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            ("rfs/busybox-committed", "latest"),
            ("rfs/busybox", "latest"),
            ("localhost/busybox-oci", "latest"),
            ("bb", "oci")
        ])
    );
    assert_eq!(
        e.ok(&["images", "-q", "rfs/busybox"]),
        format!("{}\n", short_id(&ids.busybox))
    );
}

#[test]
fn the_store_is_an_oci_layout_for_skopeo_and_umoci() {
    let test = "the_store_is_an_oci_layout_for_skopeo_and_umoci";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    e.load(&images.join("docker/busybox-docker-save.tar"));
    let layout = format!("oci:{}:rfs/busybox-committed:latest", e.root.display());
    let info: serde_json::Value =
        serde_json::from_str(&tool_ok("skopeo", &[os("inspect"), os(&layout)])).expect("json");
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(6));
    assert_eq!(info["Env"][1], "FOO=bar");
    let refs = tool_ok("umoci", &[os("ls"), os("--layout"), e.root.as_os_str()]);
    assert_eq!(refs, "rfs/busybox-committed:latest\n");
    // umoci unpacks the store's image to the tree rfs mounts from the store.
    let bundle = e.s.dir.path().join("bundle");
    let image = format!("{}:rfs/busybox-committed:latest", e.root.display());
    tool_ok(
        "umoci",
        &[os("unpack"), os("--image"), os(&image), bundle.as_os_str()],
    );
    let (guard, mnt) = e.mount("mnt", &["--read-only", "rfs/busybox-committed"]);
    let mut want = tree_listing(&bundle.join("rootfs"));
    let mut got = tree_listing(&mnt);
    want.remove(".");
    got.remove(".");
    assert_eq!(got, want);
    guard.unmount().unwrap();
}

#[test]
fn mount_from_the_store_by_name_and_id() {
    let test = "mount_from_the_store_by_name_and_id";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    let archive = images.join("busybox-docker-archive.tar");
    e.load(&archive);
    let (g1, direct) = e.mount("direct", &["--read-only", archive.to_str().unwrap()]);
    let (g2, by_name) = e.mount("by-name", &["--read-only", "rfs/busybox"]);
    let busybox = Recorded::read(&images).busybox;
    let (g3, by_id) = e.mount("by-id", &["--read-only", &short_id(&busybox)[..6]]);
    let want = tree_listing(&direct);
    assert_eq!(tree_listing(&by_name), want);
    assert_eq!(tree_listing(&by_id), want);
    for g in [g1, g2, g3] {
        g.unmount().unwrap();
    }
    let mnt = e.s.mkdir("nothing");
    let out = e.run(&["mount", "no/such:image", mnt.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no image of that name"), "{err}");
}

/// `history.tsv`: `docker history --no-trunc --format '{{.ID}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}'`.
fn docker_history(images: &Path) -> Vec<[String; 4]> {
    std::fs::read_to_string(images.join("docker/history.tsv"))
        .expect("history.tsv (rebuild the test images with Docker)")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            [0, 1, 2, 3].map(|i| f.get(i).copied().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn history_matches_docker_history() {
    let test = "history_matches_docker_history";
    let Some(images) = images_dir(test) else {
        return;
    };
    let want = docker_history(&images);
    let ids = Recorded::read(&images);
    let e = Env::new();
    e.load(&images.join("busybox-docker-archive.tar"));
    e.load(&images.join("docker/busybox-docker-save.tar"));
    let text = e.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "json",
        "rfs/busybox-committed",
    ]);
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), want.len(), "{text}");
    // Docker names the image and the parents it built locally; the store holds the image
    // and rfs/busybox, whose rows carry their IDs; the others are <missing>.
    let known = [ids.committed.as_str(), ids.busybox.as_str()];
    assert!(
        want[0][0] == ids.committed,
        "docker history starts at the image"
    );
    assert!(
        want.iter().any(|row| row[0] == ids.busybox),
        "docker history passes through rfs/busybox"
    );
    for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
        let want_id = if known.contains(&want[0].as_str()) {
            want[0].as_str()
        } else {
            "<missing>"
        };
        assert_eq!(got["ID"], want_id, "row {i}");
        assert_eq!(got["CreatedBy"], want[1], "row {i}");
        assert_eq!(got["Size"], want[2], "row {i}");
        assert_eq!(got["Comment"], want[3], "row {i}");
    }
    // The default table: short IDs, CREATED BY cut to 45 characters, sizes with units.
    let table = e.ok(&["history", "rfs/busybox-committed"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IMAGE          CREATED"), "{table}");
    assert!(
        lines[0].contains("CREATED BY") && lines[0].contains("COMMENT"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&format!("{}   ", short_id(&ids.committed))),
        "{table}"
    );
    assert!(
        lines[1].contains("echo committed > /home/app/committed.txt; rm…   10B"),
        "{table}"
    );
    assert!(
        lines[7].starts_with(&format!("{}   ", short_id(&ids.busybox))),
        "{table}"
    );
    assert!(
        lines[15].starts_with("<missing>") && lines[15].contains("7.11MB"),
        "{table}"
    );
    assert_eq!(lines.len(), 16);
}

/// Every key path of a JSON document (values of `Labels` and `Data` maps are not keys).
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Some(map) = v.as_object() {
        for (k, child) in map {
            let path = format!("{prefix}{k}");
            out.insert(path.clone());
            if k != "Labels" && k != "Data" {
                key_paths(child, &format!("{path}."), out);
            }
        }
    }
}

#[test]
fn inspect_has_docker_field_names_and_values() {
    let test = "inspect_has_docker_field_names_and_values";
    let Some(images) = images_dir(test) else {
        return;
    };
    let docker: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(images.join("docker/image-inspect.json")).expect("inspect"),
    )
    .expect("json");
    let docker = &docker[0];
    let e = Env::new();
    e.load(&images.join("docker/busybox-docker-save.tar"));
    let ours = e.inspect("rfs/busybox-committed");
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    key_paths(docker, "", &mut want);
    key_paths(&ours, "", &mut got);
    assert_eq!(got, want, "field names");
    for key in [
        "Id",
        "RepoTags",
        "Comment",
        "Created",
        "Container",
        "ContainerConfig",
        "DockerVersion",
        "Author",
        "Config",
        "Architecture",
        "Os",
        "Size",
        "RootFS",
    ] {
        assert_eq!(ours[key], docker[key], "{key}");
    }
    assert_eq!(ours["GraphDriver"]["Name"], "rfs");
    let lower = ours["GraphDriver"]["Data"]["LowerDir"]
        .as_str()
        .expect("LowerDir");
    let layers: Vec<String> = lower
        .split(':')
        .map(|p| {
            format!(
                "sha256:{}",
                Path::new(p).file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    let mut want_layers: Vec<String> = docker["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    want_layers.reverse();
    assert_eq!(layers, want_layers, "LowerDir is the layers, top to bottom");
    // Docker's key order too.
    let order: Vec<&String> = ours.as_object().unwrap().keys().collect();
    let docker_order: Vec<&String> = docker.as_object().unwrap().keys().collect();
    assert_eq!(order.len(), docker_order.len());
}

/// What must be equal between two views of one tree: types, modes, owners, sizes, data,
/// symlink targets, times (of everything but the root), xattrs, and hard-link groups.
fn full_view(root: &Path) -> (BTreeMap<String, String>, Vec<String>, BTreeSet<Vec<String>>) {
    let mut listing = tree_listing(root);
    listing.remove(".");
    let mut extra = Vec::new();
    let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for path in listing.keys() {
        let full = root.join(path);
        let md = std::fs::symlink_metadata(&full).unwrap();
        extra.push(format!(
            "{path} mtime {}.{:09}",
            md.mtime(),
            md.mtime_nsec()
        ));
        if md.is_file() && md.nlink() > 1 {
            groups.entry(md.ino()).or_default().push(path.clone());
        }
    }
    let out = Command::new("getfattr")
        .args(["-R", "-h", "-d", "-m", "-", "-e", "hex", "."])
        .current_dir(root)
        .output()
        .expect("getfattr (package attr)");
    let mut file = String::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(f) = l.strip_prefix("# file: ") {
            file = f.to_owned();
        } else if !l.is_empty() {
            extra.push(format!("{file} xattr {l}"));
        }
    }
    extra.sort();
    (listing, extra, groups.into_values().collect())
}

/// Changes a container might make, through the mount at `m`.
fn change_things(m: &Path) {
    let sh = |script: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(m)
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    sh("echo new > newfile && echo more >> etc/motd && rm bin/ls");
    sh("rm -rf home/app && mkdir home/app && echo fresh > home/app/only");
    sh("ln opt/data/hl1 opt/data/hl3 && mv opt/data opt/data2 && echo x > opt/data2/added");
    sh("ln newfile newlink && chown 1000:1000 newfile && setfattr -n user.test -v hi newfile");
    sh("mkfifo fifo1 && mkdir -p deep/a/b && ln -s /etc/motd sym1 && chmod 700 deep");
    sh("touch -d '2001-02-03 04:05:06.123456789' etc/passwd && chmod 4711 etc/group");
    sh("mv etc/hosts etc/hosts.moved && mkdir opt/new && rm opt/opq/c && touch -d @1000000000 opt");
}

#[test]
fn a_committed_image_mounts_to_the_containers_merged_view() {
    let test = "a_committed_image_mounts_to_the_containers_merged_view";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    e.load(&images.join("busybox-docker-archive.tar"));
    let upper = e.s.mkdir("upper");
    let work = e.s.mkdir("work");
    let (u, w) = (upper.to_str().unwrap(), work.to_str().unwrap());
    let (guard, m) = e.mount("container", &["--upper", u, "--work", w, "rfs/busybox"]);
    change_things(&m);
    guard.unmount().unwrap();

    let diff = e.ok(&["diff", u, "--image", "rfs/busybox"]);
    for line in [
        "C /bin",
        "D /bin/ls",
        "A /deep",
        "A /deep/a/b",
        "C /etc/motd",
        "C /etc/passwd",
        "D /etc/hosts",
        "A /etc/hosts.moved",
        "A /fifo1",
        "C /home/app",
        "D /home/app/file",
        "A /home/app/only",
        "A /newfile",
        "D /opt/data",
        "A /opt/data2",
        "A /opt/data2/hl3",
        "A /opt/data2/keep",
        "A /sym1",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "{line} missing from:\n{diff}"
        );
    }

    let commit = |tag: &str| {
        let out = e
            .command(&[
                "commit",
                "--upper",
                u,
                "--image",
                "rfs/busybox",
                tag,
                "-m",
                "test",
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let one = commit("test/committed:1");
    let two = commit("test/committed:2");
    assert_eq!(one, two, "same upper, same time: same image ID");
    let layers = e.inspect("test/committed:1")["RootFS"]["Layers"].clone();
    assert_eq!(layers.as_array().map(Vec::len), Some(4));

    let (g1, merged) = e.mount("merged", &["--upper", u, "--work", w, "rfs/busybox"]);
    let (g2, committed) = e.mount("committed", &["--read-only", "test/committed:1"]);
    let (want, got) = (full_view(&merged), full_view(&committed));
    assert_eq!(got.0, want.0, "files");
    assert_eq!(got.1, want.1, "times and xattrs");
    assert_eq!(got.2, want.2, "hard links");
    assert!(
        want.2.iter().any(|g| g.len() == 3),
        "hl1, hl2, hl3: {:?}",
        want.2
    );
    g1.unmount().unwrap();
    g2.unmount().unwrap();

    // The layer is plain OCI: whiteouts as .wh. names, an opaque marker, no overlay xattrs.
    let top = layers[3]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let names = tool_ok(
        "tar",
        &[
            os("-tf"),
            e.root.join("blobs/sha256").join(&top).as_os_str(),
        ],
    );
    for want in [
        "bin/.wh.ls",
        "opt/.wh.data",
        "home/app/.wh..wh..opq",
        "etc/.wh.hosts",
    ] {
        assert!(
            names.lines().any(|l| l == want),
            "{want} missing from:\n{names}"
        );
    }
    let verbose = tool_ok(
        "tar",
        &[
            os("--xattrs"),
            os("--xattrs-include=*"),
            os("-tvvf"),
            e.root.join("blobs/sha256").join(&top).as_os_str(),
        ],
    );
    assert!(!verbose.contains("overlay"), "{verbose}");
}

#[test]
fn save_is_read_by_skopeo_podman_and_rfs_load() {
    let test = "save_is_read_by_skopeo_podman_and_rfs_load";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    e.load(&images.join("docker/busybox-docker-save.tar"));
    let id = Recorded::read(&images).committed;
    let id = id.as_str();
    let layout = format!("oci:{}:rfs/busybox-committed:latest", e.root.display());
    let manifest = serde_json::from_str::<serde_json::Value>(&tool_ok(
        "skopeo",
        &[os("inspect"), os(&layout)],
    ))
    .unwrap()["Digest"]
        .clone();
    for (format, transport) in [("docker", "docker-archive"), ("oci", "oci-archive")] {
        let file = e.s.dir.path().join(format!("saved-{format}.tar"));
        let f = file.to_str().unwrap();
        e.ok(&["save", "--format", format, "-o", f, "rfs/busybox-committed"]);
        // skopeo reads it.
        let info: serde_json::Value = serde_json::from_str(&tool_ok(
            "skopeo",
            &[os("inspect"), os(&format!("{transport}:{f}"))],
        ))
        .unwrap();
        assert_eq!(info["Layers"].as_array().map(Vec::len), Some(6), "{format}");
        // podman loads it (into a private storage).
        let storage = e.s.mkdir(&format!("podman-{format}"));
        let podman = |args: &[&str]| {
            let mut all = vec![
                os("--root"),
                storage.as_os_str(),
                os("--runroot"),
                os(storage.to_str().unwrap()),
                os("--storage-driver"),
                os("vfs"),
            ];
            let run = storage.join("run");
            all[3] = run.as_os_str();
            all.extend(args.iter().map(|a| os(a)));
            tool_ok("podman", &all)
        };
        let loaded = podman(&["load", "-q", "-i", f]);
        assert!(
            loaded.contains("rfs/busybox-committed"),
            "{format}: {loaded}"
        );
        let ids = podman(&["images", "--no-trunc", "--format", "{{.ID}}"]);
        assert!(ids.contains(&id[7..]), "{format}: {ids}");
        // rfs loads it back to the same image and manifest.
        let back = Env::new();
        assert_eq!(
            back.load(&file),
            "Loaded image: rfs/busybox-committed:latest\n"
        );
        assert_eq!(back.inspect("rfs/busybox-committed")["Id"], id, "{format}");
        let layout = format!("oci:{}:rfs/busybox-committed:latest", back.root.display());
        let again: serde_json::Value =
            serde_json::from_str(&tool_ok("skopeo", &[os("inspect"), os(&layout)])).unwrap();
        assert_eq!(again["Digest"], manifest, "{format}: same manifest digest");
    }
}

/// Issue 13: an OCI layout whose index names only a tag (`latest`, as skopeo writes
/// `oci:DIR:latest`) loaded as an image without a name (`<none>` in `rfs images`).
#[test]
fn a_layout_that_names_only_a_tag_loads_as_localhost_layout_name() {
    let test = "a_layout_that_names_only_a_tag_loads_as_localhost_layout_name";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    for layout in ["busybox-oci", "busybox-oci.tar"] {
        let index = std::fs::read_to_string(images.join("busybox-oci/index.json")).unwrap();
        assert!(
            index.contains(r#""org.opencontainers.image.ref.name":"latest""#),
            "the test image names only the tag: {index}"
        );
        assert_eq!(
            e.load(&images.join(layout)),
            "Loaded image: localhost/busybox-oci:latest\n",
            "{layout}"
        );
    }
    // Another layout of the same image adds its own name, and prints only that.
    assert_eq!(
        e.load(&images.join("busybox-multiarch-oci")),
        "Loaded image: localhost/busybox-multiarch-oci:latest\n"
    );
    // A file name that is no repository name is lowercased, with `-` for what cannot stay.
    let renamed = e.s.dir.path().join("My Layout.tar");
    std::fs::copy(images.join("busybox-oci.tar"), &renamed).unwrap();
    assert_eq!(
        e.load(&renamed),
        "Loaded image: localhost/my-layout:latest\n"
    );
    let listing = e.ok(&["images"]);
    assert!(!listing.contains("<none>"), "{listing}");
    for name in [
        "localhost/busybox-oci",
        "localhost/busybox-multiarch-oci",
        "localhost/my-layout",
    ] {
        assert_eq!(
            e.ok(&["images", "-q", &format!("{name}:latest")]).trim(),
            short_id(&Recorded::read(&images).busybox),
            "{name}:\n{listing}"
        );
    }
    // A full name in the index is kept as it is (`rfs save --format oci` writes one).
    let saved = e.s.dir.path().join("saved-oci.tar");
    e.ok(&["tag", "localhost/busybox-oci", "rfs/named:1"]);
    e.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        saved.to_str().unwrap(),
        "rfs/named:1",
    ]);
    let other = Env::new();
    assert_eq!(other.load(&saved), "Loaded image: rfs/named:1\n");
}

impl Env {
    /// Runs `rfs --root ROOT ARGS` (a shell word list, so it may end with `< FILE`) with a
    /// pseudo-terminal as stdin, stdout and stderr (`script` of util-linux), as a person at
    /// a terminal runs it; returns whether it succeeded and everything it printed.
    fn on_a_terminal(&self, args: &str) -> (bool, String) {
        let command = format!(
            "'{}' --root '{}' {args}",
            rfs_bin().display(),
            self.root.display()
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .output()
            .expect("running script (util-linux)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// The progress lines of `text` as they end up on the screen: each redraw (`\r`, then
/// erase to the end of the line) replaces the line before it.
fn final_lines(text: &str) -> Vec<String> {
    text.split('\n')
        .map(|l| {
            let shown = l.trim_end_matches('\r').rsplit('\r').next().unwrap_or("");
            shown.replace("\x1b[K", "")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// Issue 13: a 5 GB `rfs import` was silent for 20 s. Import, load, save and commit draw
/// progress on a terminal (stderr a TTY), and print nothing of it otherwise.
#[test]
fn long_store_commands_show_progress_only_on_a_terminal() {
    let test = "long_store_commands_show_progress_only_on_a_terminal";
    let Some(images) = images_dir(test) else {
        return;
    };
    let export = images.join("busybox-podman-export.tar");
    let archive = images.join("busybox-docker-archive.tar");
    let e = Env::new();
    let upper = e.s.mkdir("upper");
    std::fs::write(upper.join("two-mib"), vec![7u8; 2 << 20]).unwrap();
    // A compressed tar: its percentage counts the bytes read from it, not those
    // decompressed (which would pass 100% long before the end).
    let gz = e.s.dir.path().join("export.tar.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -1 -c '{}' > '{}'",
            export.display(),
            gz.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let gz_mib = std::fs::metadata(&gz).unwrap().len() >> 20;
    let saved = e.s.dir.path().join("saved.tar");
    let steps: [(&str, &[&str]); 6] = [
        (
            &format!("import '{}' flat:1", export.display()),
            &["importing: 100% (6 / 6 MiB)", "indexing: 100% (6 / 6 MiB)"],
        ),
        (
            &format!("import '{}' flat:gz", gz.display()),
            &[&format!("importing: 100% ({gz_mib} / {gz_mib} MiB)")],
        ),
        // From a pipe the size is known only at the end.
        (
            &format!("import - flat:stdin < '{}'", export.display()),
            &["importing: 100% (6 / 6 MiB)"],
        ),
        (
            &format!("load -i '{}'", archive.display()),
            &[
                "copying layer 1/3: 100% (6 / 6 MiB)",
                "indexing layer 1/3: 100% (6 / 6 MiB)",
            ],
        ),
        (
            &format!("save -o '{}' rfs/busybox", saved.display()),
            &["saving layer 1/3: 100% (6 / 6 MiB)"],
        ),
        (
            &format!(
                "commit --upper '{}' --image rfs/busybox bb:c",
                upper.display()
            ),
            &[
                "writing the layer: 100% (2 / 2 MiB)",
                "indexing the layer: 100% (2 / 2 MiB)",
            ],
        ),
    ];
    for (args, wanted) in steps {
        let (ok, text) = e.on_a_terminal(args);
        assert!(ok, "rfs {args}:\n{text}");
        let lines = final_lines(&text);
        for want in wanted {
            assert!(
                lines.iter().any(|l| l == want),
                "rfs {args}: no line {want:?} in {lines:#?}"
            );
        }
        // No step ever shows more done than its total.
        for l in &lines {
            let Some((_, counts)) = l.split_once("% (") else {
                continue;
            };
            let mib: Vec<u64> = counts
                .trim_end_matches(" MiB)")
                .split(" / ")
                .map(|n| n.parse().expect("MiB counts"))
                .collect();
            assert!(mib[0] <= mib[1], "rfs {args}: {l}");
        }
    }
    // Without a terminal: stdout has the command's answer, stderr nothing at all.
    let quiet = Env::new();
    let runs: [&[&str]; 4] = [
        &["import", export.to_str().unwrap(), "flat:1"],
        &["load", "-i", archive.to_str().unwrap()],
        &["save", "-o", saved.to_str().unwrap(), "rfs/busybox"],
        &[
            "commit",
            "--upper",
            upper.to_str().unwrap(),
            "--image",
            "rfs/busybox",
            "bb:c",
        ],
    ];
    for args in runs {
        let out = quiet.run(args);
        assert!(out.status.success(), "rfs {args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "rfs {args:?} printed to a stderr that is no terminal"
        );
    }
}

#[test]
fn import_makes_a_one_layer_image_of_a_flat_export() {
    let test = "import_makes_a_one_layer_image_of_a_flat_export";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    let export = images.join("busybox-podman-export.tar");
    let id = e.ok(&[
        "import",
        export.to_str().unwrap(),
        "flat/busybox:1",
        "-c",
        r#"CMD ["/bin/sh"]"#,
        "-m",
        "from podman",
    ]);
    assert!(id.starts_with("sha256:"), "{id}");
    let inspect = e.inspect("flat/busybox:1");
    assert_eq!(inspect["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(
        inspect["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1)
    );
    let history = e.ok(&["history", "--format", "json", "flat/busybox:1"]);
    assert!(history.contains(r#""Comment":"from podman""#), "{history}");
    let (g1, direct) = e.mount("direct", &["--read-only", export.to_str().unwrap()]);
    let (g2, imported) = e.mount("imported", &["--read-only", "flat/busybox:1"]);
    let (mut want, mut got) = (tree_listing(&direct), tree_listing(&imported));
    want.remove(".");
    got.remove(".");
    assert_eq!(got, want);
    g1.unmount().unwrap();
    g2.unmount().unwrap();
}

#[test]
fn prune_never_removes_what_a_mount_uses() {
    let test = "prune_never_removes_what_a_mount_uses";
    let Some(images) = images_dir(test) else {
        return;
    };
    let ids = Recorded::read(&images);
    let e = Env::new();
    e.load(&images.join("busybox-docker-archive.tar"));
    let (guard, m) = e.mount("mnt", &["--read-only", "rfs/busybox"]);
    let out = e.ok(&["rmi", "rfs/busybox"]);
    assert!(
        out.starts_with(&format!(
            "Untagged: rfs/busybox:latest\nDeleted: {}",
            ids.busybox
        )),
        "{out}"
    );
    e.ok(&["prune"]);
    let base_layer = ids.busybox_diff_ids[0].trim_start_matches("sha256:");
    assert!(
        e.blobs().contains(base_layer),
        "the mounted image's layer stays: {:?}",
        e.blobs()
    );
    assert_eq!(
        std::fs::read(m.join("etc/motd")).unwrap(),
        b"modified motd\n"
    );
    guard.unmount().unwrap();
    // The lease goes when the mount's process exits, a moment after the unmount.
    let start = Instant::now();
    let mut reclaimed = String::new();
    while !e.blobs().is_empty() && start.elapsed() < Duration::from_secs(10) {
        reclaimed.push_str(&e.ok(&["prune"]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        reclaimed.contains("Total reclaimed space: 7.1"),
        "{reclaimed}"
    );
    assert!(e.blobs().is_empty(), "{:?}", e.blobs());
}

#[test]
fn concurrent_loads_succeed_and_sigkill_leaves_a_valid_store() {
    let test = "concurrent_loads_succeed_and_sigkill_leaves_a_valid_store";
    let Some(images) = images_dir(test) else {
        return;
    };
    let debian = images.join("debian-oci.tar");
    let e = Env::new();
    let children: Vec<_> = (0..2)
        .map(|_| {
            e.command(&[
                "load",
                "-q",
                "-t",
                "rfs/debian:12",
                "-i",
                debian.to_str().unwrap(),
            ])
            .spawn()
            .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "both loads succeed");
    }
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 1);

    // Kill a load at several points; the store stays readable and loadable.
    let k = Env::new();
    for delay in [50, 250, 600] {
        let mut child = k
            .command(&["load", "-q", "-i", debian.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        child.wait().unwrap();
        // Killed before the store was first set up, there is no index.json yet; otherwise it
        // is a whole document (the old or the new one).
        if let Ok(index) = std::fs::read(k.root.join("index.json")) {
            serde_json::from_slice::<serde_json::Value>(&index).expect("index.json is whole");
        }
        k.ok(&["images"]);
    }
    k.ok(&[
        "load",
        "-q",
        "-t",
        "rfs/debian:12",
        "-i",
        debian.to_str().unwrap(),
    ]);
    k.ok(&["prune"]);
    let leftovers: Vec<String> = k
        .blobs()
        .into_iter()
        .filter(|b| b.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        k.blobs(),
        e.blobs(),
        "the same blobs as an uninterrupted load"
    );
}

#[test]
fn a_remount_from_the_store_reads_the_cached_index() {
    let test = "a_remount_from_the_store_reads_the_cached_index";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    e.ok(&[
        "load",
        "-q",
        "-t",
        "rfs/debian:12",
        "-i",
        images.join("debian-oci.tar").to_str().unwrap(),
    ]);
    let mnt = e.s.mkdir("mnt");
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let guard = MountGuard::rfs(
            &[
                os("mount"),
                os("--root"),
                e.root.as_os_str(),
                os("--read-only"),
                os("rfs/debian:12"),
            ],
            &mnt,
        )
        .unwrap();
        best = best.min(start.elapsed());
        assert!(mnt.join("usr/bin").is_dir());
        guard.unmount().unwrap();
    }
    eprintln!("remount of the Debian image from the store: {best:?}");
    // An optimised build is ready in well under 50 ms; a debug build is several times slower.
    let limit = if cfg!(debug_assertions) { 1000 } else { 50 };
    assert!(best < Duration::from_millis(limit), "{best:?}");
}

/// Removes a container when dropped (also when the test fails).
struct ContainerGuard<'a> {
    env: &'a Env,
    name: &'a str,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let _ = self.env.run(&["rm", "-f", self.name]);
    }
}

#[test]
fn a_containers_changes_are_diffed_committed_and_inspected() {
    let test = "a_containers_changes_are_diffed_committed_and_inspected";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    let archive = images.join("busybox-docker-archive.tar");
    let _guard = ContainerGuard {
        env: &e,
        name: "c1",
    };
    // The image runs as `app` in /home/app, with ENTRYPOINT ["/bin/sh", "-c"].
    e.ok(&[
        "run",
        "--name",
        "c1",
        archive.to_str().unwrap(),
        "echo hi > /home/app/x; rm /home/app/file",
    ]);
    let diff = e.ok(&["diff", "c1"]);
    // As docker: the parent of an added or deleted entry is changed; /home is only
    // copied up (same owner, mode, and times), so it is not.
    assert_eq!(diff, "C /home/app\nD /home/app/file\nA /home/app/x\n");

    let id = e.ok(&[
        "commit",
        "c1",
        "test/c1:v1",
        "-m",
        "from c1",
        "-c",
        "USER root",
    ]);
    let image = e.inspect("test/c1:v1");
    assert_eq!(image["Id"], id.trim());
    assert_eq!(image["Config"]["User"], "root");
    assert_eq!(image["Comment"], "from c1");
    let history = e.ok(&["history", "--no-trunc", "--format", "json", "test/c1:v1"]);
    let top: serde_json::Value = serde_json::from_str(history.lines().next().unwrap()).unwrap();
    assert_eq!(top["ID"], id.trim());
    assert_eq!(top["Size"], "3B");
    assert!(
        top["CreatedBy"]
            .as_str()
            .unwrap()
            .contains("echo hi > /home/app/x"),
        "{top}"
    );
    let (g, m) = e.mount("committed", &["--read-only", "test/c1:v1"]);
    assert_eq!(std::fs::read(m.join("home/app/x")).unwrap(), b"hi\n");
    assert!(!m.join("home/app/file").exists());
    g.unmount().unwrap();

    let docker: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(images.join("docker/container-inspect.json")).unwrap(),
    )
    .unwrap();
    let ours = e.inspect("c1");
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    let top_level = |v: &serde_json::Value, out: &mut BTreeSet<String>| {
        for (k, child) in v.as_object().unwrap() {
            out.insert(k.clone());
            if matches!(k.as_str(), "State" | "GraphDriver") {
                key_paths(child, &format!("{k}."), out);
            }
        }
    };
    top_level(&docker[0], &mut want);
    top_level(&ours, &mut got);
    assert_eq!(got, want, "container field names");
    assert_eq!(ours["Name"], "/c1");
    assert_eq!(ours["State"]["Status"], "exited");
    let upper = ours["GraphDriver"]["Data"]["UpperDir"].as_str().unwrap();
    assert!(Path::new(upper).join("home/app/x").is_file(), "{upper}");
}

/// Issue 13: a commit is made by rfs, not by docker, so the new image does not claim the
/// docker version that built its base (`podman commit` and `buildah commit` leave it out too);
/// the rest of the base's config carries over.
#[test]
fn a_commit_does_not_claim_the_docker_version_of_its_base() {
    let test = "a_commit_does_not_claim_the_docker_version_of_its_base";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    e.load(&images.join("docker/busybox-docker-save.tar"));
    let base = e.inspect("rfs/busybox-committed");
    assert_eq!(base["DockerVersion"], "20.10.24+dfsg1", "built by docker");
    let upper = e.s.mkdir("upper");
    std::fs::write(upper.join("added"), "by the commit\n").unwrap();
    let id = e.ok(&[
        "commit",
        "--upper",
        upper.to_str().unwrap(),
        "--image",
        "rfs/busybox-committed",
        "test/next:1",
    ]);
    let ours = e.inspect("test/next:1");
    assert_eq!(ours["DockerVersion"], "");
    assert_eq!(ours["Config"], base["Config"]);
    // The config blob itself has no such key (its digest is the image ID).
    let hex = id.trim().strip_prefix("sha256:").expect("an image ID");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.root.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    assert!(config.get("docker_version").is_none(), "{config}");
    assert_eq!(config["config"]["Env"], base["Config"]["Env"]);
}

#[test]
fn sigkill_during_commit_leaves_a_valid_store() {
    let test = "sigkill_during_commit_leaves_a_valid_store";
    let Some(images) = images_dir(test) else {
        return;
    };
    let debian = images.join("debian-oci.tar");
    let e = Env::new();
    e.ok(&[
        "load",
        "-q",
        "-t",
        "rfs/debian:12",
        "-i",
        debian.to_str().unwrap(),
    ]);
    // An upper with a lot to commit: a copy of part of the image's /usr, plus a whiteout.
    let scratch = tempfile::tempdir().unwrap();
    let upper = scratch.path().join("upper");
    std::fs::create_dir_all(upper.join("usr")).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/x86_64-linux-gnu")
        .arg(upper.join("usr/lib64-copy"))
        .status()
        .unwrap();
    assert!(st.success());
    for delay in [20, 100, 300] {
        let mut child = e
            .command(&[
                "commit",
                "--upper",
                upper.to_str().unwrap(),
                "--image",
                "rfs/debian:12",
                "rfs/killed:1",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        child.wait().unwrap();
        let index = std::fs::read(e.root.join("index.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&index).expect("index.json is whole");
        e.ok(&["images"]);
    }
    // The store still works: the commit can be redone and mounted, and prune removes what
    // the killed commits left.
    e.ok(&[
        "commit",
        "--upper",
        upper.to_str().unwrap(),
        "--image",
        "rfs/debian:12",
        "rfs/killed:1",
    ]);
    assert!(e.ok(&["images"]).contains("rfs/killed"));
    e.ok(&["prune"]);
    let leftovers: Vec<String> = e
        .blobs()
        .into_iter()
        .filter(|b| b.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Issue 13: `rfs info`, as `podman info`: the store's root and what it holds (images,
/// layers, containers, mounts, with sizes), the kernel features rfs uses, its version.
#[test]
fn info_reports_the_store_and_the_kernel_features() {
    let test = "info_reports_the_store_and_the_kernel_features";
    let Some(images) = images_dir(test) else {
        return;
    };
    let e = Env::new();
    e.load(&images.join("busybox-docker-archive.tar"));
    e.load(&images.join("docker/busybox-docker-save.tar"));
    let _container = ContainerGuard {
        env: &e,
        name: "c1",
    };
    e.ok(&["run", "--name", "c1", "rfs/busybox", "echo hi > /tmp/x"]);
    let (mount, _) = e.mount("mnt", &["rfs/busybox-committed"]);
    let info: serde_json::Value =
        serde_json::from_str(&e.ok(&["info", "--format", "json"])).expect("info JSON");
    let store = &info["store"];
    let root = std::fs::canonicalize(&e.root).unwrap();
    assert_eq!(store["root"], root.to_str().unwrap());
    // Two images share busybox's three layers; the second adds three.
    assert_eq!(store["images"]["number"], 2);
    let mut layers = BTreeSet::new();
    for image in ["rfs/busybox", "rfs/busybox-committed"] {
        for l in e.inspect(image)["RootFS"]["Layers"].as_array().unwrap() {
            layers.insert(l.as_str().unwrap().trim_start_matches("sha256:").to_owned());
        }
    }
    assert_eq!(store["layers"]["number"], layers.len());
    assert_eq!(layers.len(), 6);
    let blob = |hex: &str| {
        std::fs::metadata(e.root.join("blobs/sha256").join(hex))
            .unwrap()
            .len()
    };
    assert_eq!(
        store["layers"]["size"],
        layers.iter().map(|l| blob(l)).sum::<u64>()
    );
    // Every blob belongs to an image here: layers, configs, manifests.
    let all_blobs = du(&e.root.join("blobs/sha256"));
    assert_eq!(store["images"]["size"], all_blobs);
    assert_eq!(store["blobs"]["size"], all_blobs);
    assert_eq!(store["blobs"]["number"], e.blobs().len());
    assert_eq!(store["containers"]["number"], 1);
    assert_eq!(store["containers"]["running"], 0);
    assert_eq!(store["containers"]["size"], du(&e.root.join("containers")));
    assert!(
        store["containers"]["size"].as_u64().unwrap() >= 3,
        "the container's /tmp/x"
    );
    assert_eq!(store["mounts"]["writableLayers"], 1);
    assert!(store["mounts"]["active"].as_u64().unwrap() >= 1, "{info}");
    assert!(store["size"].as_u64().unwrap() >= all_blobs, "{info}");
    assert_eq!(info["version"]["version"], env!("CARGO_PKG_VERSION"));
    // Kernel features, each as this host has them for root.
    let features = &info["features"];
    assert_eq!(features["fuseDevice"]["available"], true, "{info}");
    assert_eq!(features["fusePassthrough"]["available"], true, "{info}");
    let uring = std::fs::read_to_string("/sys/module/fuse/parameters/enable_uring");
    assert_eq!(
        features["fuseIoUring"]["available"],
        uring.as_deref().is_ok_and(|v| v.trim() == "Y"),
        "{info}"
    );
    assert!(
        features["fuseIoUring"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("enable_uring") || d.contains("not in this kernel")),
        "{info}"
    );
    let overlay = std::fs::read_to_string("/proc/filesystems").unwrap();
    assert_eq!(
        features["kernelOverlay"]["available"],
        overlay.lines().any(|l| l.ends_with("overlay")),
        "{info}"
    );
    assert_eq!(info["host"]["rootless"], false);
    assert_eq!(info["host"]["uid"], 0);
    // The text form lists the same values.
    let text = e.ok(&["info"]);
    for want in [
        format!("  root: {}\n", root.display()),
        "  images:\n    number: 2\n".to_string(),
        "  containers:\n    number: 1\n    running: 0\n".to_string(),
        format!("version:\n  version: {}\n", env!("CARGO_PKG_VERSION")),
        "  fusePassthrough:\n    available: true\n".to_string(),
    ] {
        assert!(text.contains(&want), "no {want:?} in:\n{text}");
    }
    assert!(
        text.contains("  layers:\n    number: 6\n    size: 7.19MB\n"),
        "sizes in Docker's units:\n{text}"
    );
    mount.unmount().unwrap();
}
