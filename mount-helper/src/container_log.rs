//! A detached container's log: what its command writes to stdout and stderr, kept apart, in
//! one file of the CRI logging format that podman (`k8s-file`) and the kubelet write:
//!
//! ```text
//! 2026-12-05T07:43:11.123456789Z stdout F a whole line
//! 2026-12-05T07:43:11.123456999Z stderr P the start of a long line ...
//! ```
//!
//! `F` ends a line, `P` is part of one (a line longer than [`MAX_LINE`], or the last bytes
//! before the stream closed). The writer is the container's supervisor (`rfs run -d`): one
//! thread reads both pipes and appends. The file is capped: past [`MAX_BYTES`] it becomes
//! `ctr.log.1` (replacing the one before) and a new `ctr.log` starts, so a chatty container
//! keeps at most twice the cap. `rfs logs` reads both, oldest first.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rfs_fs::store::Timestamp;

/// The log file's name in the container's directory.
pub(crate) const LOG_FILE: &str = "ctr.log";

/// How long a line may get before it is written as a part (`P`).
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// The size past which the log is rotated.
pub(crate) const MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// When the supervisor read it (RFC 3339, nanoseconds, UTC).
    pub(crate) time: String,
    pub(crate) stream: Stream,
    /// Whether it ends a line.
    pub(crate) full: bool,
    /// The bytes, without the newline.
    pub(crate) text: Vec<u8>,
}

/// The log paths of the container in `dir`, oldest first.
pub(crate) fn files(dir: &Path) -> [PathBuf; 2] {
    [dir.join(format!("{LOG_FILE}.1")), dir.join(LOG_FILE)]
}

/// Appends records to a container's log, rotating it at `cap` bytes.
pub(crate) struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    cap: u64,
}

impl Writer {
    /// Opens (or creates, mode 0600) the log of the container in `dir`.
    pub(crate) fn open(dir: &Path, cap: u64) -> std::io::Result<Writer> {
        let file = open_log(&dir.join(LOG_FILE))?;
        let size = file.metadata()?.len();
        Ok(Writer {
            dir: dir.to_owned(),
            file,
            size,
            cap,
        })
    }

    /// Appends one record.
    pub(crate) fn write(&mut self, stream: Stream, full: bool, text: &[u8]) -> std::io::Result<()> {
        if self.size >= self.cap {
            let [old, current] = files(&self.dir);
            std::fs::rename(&current, &old)?;
            self.file = open_log(&current)?;
            self.size = 0;
        }
        let mut line = format!(
            "{} {} {} ",
            Timestamp::now().to_rfc3339_nano(),
            stream.name(),
            if full { 'F' } else { 'P' }
        )
        .into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Reads the container's stdout and stderr pipes until both close, writing what comes to
/// `log` a line at a time. Write errors are reported once and the rest is drained, so the
/// container never blocks on a full pipe.
pub(crate) fn copy_streams(stdout: OwnedFd, stderr: OwnedFd, mut log: Writer) {
    let mut open = vec![
        (Stream::Stdout, File::from(stdout), Vec::new()),
        (Stream::Stderr, File::from(stderr), Vec::new()),
    ];
    let mut failed = false;
    let mut emit = |log: &mut Writer, stream, full, text: &[u8]| {
        if let Err(e) = log.write(stream, full, text) {
            if !failed {
                eprintln!("rfs: writing the container's log: {e}");
                failed = true;
            }
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    while !open.is_empty() {
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = open
                .iter()
                .map(|(_, f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("rfs: reading the container's output: {e}");
                    return;
                }
            }
        };
        let mut closed = Vec::new();
        for (i, (stream, file, pending)) in open.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let n = match file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                if !pending.is_empty() {
                    emit(&mut log, *stream, false, pending);
                }
                closed.push(i);
                continue;
            }
            pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(nl) = pending[start..].iter().position(|&b| b == b'\n') {
                let mut line = &pending[start..start + nl];
                while line.len() > MAX_LINE {
                    emit(&mut log, *stream, false, &line[..MAX_LINE]);
                    line = &line[MAX_LINE..];
                }
                emit(&mut log, *stream, true, line);
                start += nl + 1;
            }
            pending.drain(..start);
            while pending.len() >= MAX_LINE {
                let part: Vec<u8> = pending.drain(..MAX_LINE).collect();
                emit(&mut log, *stream, false, &part);
            }
        }
        for i in closed.into_iter().rev() {
            open.remove(i);
        }
    }
}

/// Parses one line of the log; `None` for a line that is not a record.
pub(crate) fn parse(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let text = parts.next().unwrap_or_default().to_vec();
    Some(Record {
        time,
        stream,
        full,
        text,
    })
}

/// Every record of the container's log in `dir`, oldest first (none if it has no log).
///
/// # Errors
/// A log file exists but cannot be read.
pub(crate) fn read_all(dir: &Path) -> std::io::Result<Vec<Record>> {
    let mut records = Vec::new();
    for path in files(dir) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).split(b'\n') {
            if let Some(r) = parse(&line?) {
                records.push(r);
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_kept_apart_and_long_lines_split() {
        let dir = tempfile::tempdir().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let log = Writer::open(dir.path(), MAX_BYTES).unwrap();
        let reader = std::thread::spawn(move || copy_streams(out_r, err_r, log));
        let mut out = File::from(out_w);
        let mut err = File::from(err_w);
        out.write_all(b"one\ntwo\n").unwrap();
        err.write_all(b"oops\n").unwrap();
        let long = vec![b'x'; MAX_LINE + 10];
        out.write_all(&long).unwrap();
        out.write_all(b"\nlast words").unwrap();
        drop(out);
        drop(err);
        reader.join().unwrap();
        let records = read_all(dir.path()).unwrap();
        // (full, length, first byte) of each stdout record.
        let out: Vec<(bool, usize, u8)> = records
            .iter()
            .filter(|r| r.stream == Stream::Stdout)
            .map(|r| (r.full, r.text.len(), r.text[0]))
            .collect();
        assert_eq!(
            out,
            [
                (true, 3, b'o'),
                (true, 3, b't'),
                (false, MAX_LINE, b'x'),
                (true, 10, b'x'),
                (false, 10, b'l'),
            ]
        );
        let err: Vec<&[u8]> = records
            .iter()
            .filter(|r| r.stream == Stream::Stderr)
            .map(|r| r.text.as_slice())
            .collect();
        assert_eq!(err, [b"oops".as_slice()]);
        assert!(records.iter().all(|r| Timestamp::parse(&r.time).is_some()));
    }

    #[test]
    fn the_log_rotates_at_its_cap_and_reads_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Writer::open(dir.path(), 200).unwrap();
        for i in 0..20 {
            log.write(Stream::Stdout, true, format!("line {i}").as_bytes())
                .unwrap();
        }
        let [old, current] = files(dir.path());
        assert!(old.exists() && current.exists());
        assert!(std::fs::metadata(&current).unwrap().len() < 300);
        let texts: Vec<String> = read_all(dir.path())
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.text).into_owned())
            .collect();
        // What was rotated away twice is gone; the rest is in order, ending with the last.
        assert_eq!(texts.last().unwrap(), "line 19");
        let numbers: Vec<u32> = texts
            .iter()
            .map(|t| t.trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert!(numbers.len() < 20, "older lines were dropped");
    }

    #[test]
    fn records_parse_and_other_lines_do_not() {
        let r = parse(b"2026-12-05T07:43:11.000000001Z stderr P a b c").unwrap();
        assert_eq!((r.stream, r.full), (Stream::Stderr, false));
        assert_eq!(r.text, b"a b c");
        assert!(parse(b"garbage").is_none());
        assert!(parse(b"t stdin F x").is_none());
        assert_eq!(parse(b"t stdout F").unwrap().text, b"");
    }
}
