//! Over a hundred malformed archives, generated from valid ones by the test: truncations,
//! corrupted header bytes, huge and negative sizes, bogus PAX records, hard-link cycles,
//! escaping names, and broken docker manifests. Each must give one clear error line and a
//! non-zero exit — no panic, no hang, nothing mounted, no temporary files left under rfs's
//! root directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Scratch, is_mounted, rfs_bin};

/// One 512-byte ustar header with a valid checksum.
fn header(name: &str, size: u64, typeflag: u8, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    fix_checksum(&mut h);
    h
}

fn fix_checksum(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn member(name: &str, data: &[u8]) -> Vec<u8> {
    let mut v = header(name, data.len() as u64, b'0', "").to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

fn finish(mut v: Vec<u8>) -> Vec<u8> {
    v.extend_from_slice(&[0u8; 1024]);
    v
}

/// A small valid flat rootfs tar: a directory, two files, a symlink, a hard link.
fn valid_tar() -> Vec<u8> {
    let mut v = header("etc/", 0, b'5', "").to_vec();
    v.extend(member("etc/hostname", b"rfs\n"));
    v.extend(member("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"));
    v.extend_from_slice(&header("etc/link", 0, b'2', "hostname"));
    v.extend_from_slice(&header("etc/hard", 0, b'1', "etc/passwd"));
    finish(v)
}

/// A PAX extended header carrying `record` for the next member.
fn pax(record: &[u8]) -> Vec<u8> {
    let mut v = header("PaxHeader/x", record.len() as u64, b'x', "").to_vec();
    v.extend_from_slice(record);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// Every malformed input: (label, bytes).
fn cases() -> Vec<(String, Vec<u8>)> {
    let good = valid_tar();
    let end_marker = good.len() - 1024;
    let mut out = Vec::new();
    // Truncations anywhere before the end-of-archive marker.
    for cut in (1..end_marker).step_by(97) {
        out.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    for cut in [511, 512, 513, 1023, 1024, 1536, end_marker - 1, end_marker] {
        out.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    // One corrupted byte in a header, checksum left as is: every header byte counts.
    for (i, pos) in (0..512).step_by(13).enumerate() {
        let mut v = good.clone();
        let at = 512 + pos; // the header of etc/hostname
        v[at] = v[at].wrapping_add(1 + (i as u8 % 7));
        out.push((format!("header byte {pos} changed"), v));
    }
    // Semantic faults with valid checksums.
    let with = |members: Vec<Vec<u8>>| finish(members.concat());
    out.push((
        "size beyond the end".into(),
        with(vec![
            header("big", 1 << 32, b'0', "").to_vec(),
            vec![0u8; 512],
        ]),
    ));
    let mut neg = header("neg", 0, b'0', "");
    neg[124] = 0xff; // base-256 with the sign bit: a negative size
    fix_checksum(&mut neg);
    out.push(("negative size".into(), with(vec![neg.to_vec()])));
    let mut octal = header("bad-octal", 0, b'0', "");
    octal[124..136].copy_from_slice(b"99999999999\0");
    fix_checksum(&mut octal);
    out.push(("size not octal".into(), with(vec![octal.to_vec()])));
    for (label, record) in [
        ("pax length too long", &b"99 path=x\n"[..]),
        ("pax length zero", &b"0 path=x\n"[..]),
        ("pax without newline", &b"10 path=xy"[..]),
        ("pax path escapes", &b"16 path=../../x\n"[..]),
        ("pax bad uid", &b"12 uid=-1xx\n"[..]),
        ("pax size huge", &b"28 size=99999999999999999\n"[..]),
    ] {
        out.push((label.into(), with(vec![pax(record), member("f", b"x")])));
    }
    out.push((
        "hard link cycle".into(),
        with(vec![
            header("a", 0, b'1', "b").to_vec(),
            header("b", 0, b'1', "a").to_vec(),
        ]),
    ));
    out.push((
        "hard link to itself".into(),
        with(vec![header("a", 0, b'1', "a").to_vec()]),
    ));
    out.push((
        "hard link to a later member".into(),
        with(vec![header("a", 0, b'1', "b").to_vec(), member("b", b"b")]),
    ));
    out.push((
        "hard link outside".into(),
        with(vec![header("a", 0, b'1', "../../etc/shadow").to_vec()]),
    ));
    for name in ["../x", "a/../../x", "/../x", "./../x"] {
        out.push((format!("name {name}"), with(vec![member(name, b"x")])));
    }
    out.push((
        "symlink then member".into(),
        with(vec![
            header("a", 0, b'2', "/etc").to_vec(),
            member("a/passwd", b"x"),
        ]),
    ));
    out.push((
        "duplicate".into(),
        with(vec![member("a", b"1"), member("a", b"2")]),
    ));
    out.push(("bare whiteout".into(), with(vec![member(".wh.", b"")])));
    out.push((
        "unknown type".into(),
        with(vec![header("s", 0, b'Z', "").to_vec()]),
    ));
    out.push((
        "random bytes".into(),
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ));
    out.push(("empty-looking garbage".into(), vec![0x1f, 0x8b, 0, 0]));
    // Docker archives with broken manifests (the layer itself is valid).
    let layer = valid_tar();
    let docker = |manifest: &str, extra: Vec<Vec<u8>>| -> Vec<u8> {
        let mut v = member("manifest.json", manifest.as_bytes());
        v.extend(member("layer.tar", &layer));
        v.extend(member(
            "config.json",
            br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#,
        ));
        for e in extra {
            v.extend(e);
        }
        finish(v)
    };
    for (label, manifest) in [
        ("manifest not json", "not json"),
        ("manifest empty list", "[]"),
        ("manifest no config", r#"[{"Layers":["layer.tar"]}]"#),
        (
            "manifest missing layer",
            r#"[{"Config":"config.json","Layers":["nope.tar"]}]"#,
        ),
        (
            "manifest layer escapes",
            r#"[{"Config":"config.json","Layers":["../layer.tar"]}]"#,
        ),
        (
            "manifest missing config",
            r#"[{"Config":"nope.json","Layers":["layer.tar"]}]"#,
        ),
        (
            "diff_ids mismatch",
            r#"[{"Config":"config.json","Layers":["layer.tar"]}]"#,
        ),
        (
            "manifest wrong types",
            r#"[{"Config":5,"Layers":"layer.tar"}]"#,
        ),
    ] {
        out.push((label.into(), docker(manifest, Vec::new())));
    }
    out
}

/// Files under `dir` whose names say they are temporary.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains("tmp") || name.starts_with('#') {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

#[test]
fn over_a_hundred_malformed_archives_are_refused_cleanly() {
    let cases = cases();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let s = Scratch::new();
    let root = s.mkdir("root");
    let mnt = s.mkdir("mnt");
    let mut failures = Vec::new();
    for (i, (label, bytes)) in cases.iter().enumerate() {
        let file = s.dir.path().join(format!("case-{i}.tar"));
        std::fs::write(&file, bytes).unwrap();
        let start = Instant::now();
        let mut child = Command::new(rfs_bin())
            .args(["mount", "--read-only", "--root"])
            .arg(&root)
            .arg(&file)
            .arg(&mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                failures.push(format!("{label}: hung"));
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if is_mounted(&mnt) {
            let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
            failures.push(format!("{label}: was mounted"));
            continue;
        }
        if status.success() {
            failures.push(format!("{label}: accepted"));
            continue;
        }
        if err.contains("panicked") || err.lines().count() != 1 || !err.starts_with("rfs: ") {
            failures.push(format!("{label}: not one clean line: {err:?}"));
        }
        if !err.contains(&file.display().to_string()) {
            failures.push(format!(
                "{label}: the message does not name the file: {err:?}"
            ));
        }
        let leftovers = temp_files(&root);
        if !leftovers.is_empty() {
            failures.push(format!("{label}: temporary files left: {leftovers:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} malformed archives were not refused cleanly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
