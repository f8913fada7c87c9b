//! Progress reports of long steps (hashing, decompressing, copying, indexing, writing a
//! layer): the callback type the library takes, and reader and writer wrappers that call it.
//!
//! A report is (what is happening, bytes done, bytes in total). A total of 0 means the size
//! is not known in advance (a stream); such a step ends with a report whose `done` and
//! `total` are equal. Each step reports at its start and end and at most every [`STEP`] bytes
//! in between, so a caller may draw on every report.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// A progress callback: (what is happening, bytes done, bytes in total); see the module docs.
pub type Progress<'a> = dyn Fn(&str, u64, u64) + Sync + 'a;

/// How often (in bytes) a long step reports progress.
pub(crate) const STEP: u64 = 8 << 20;

/// A reader that reports how far it got as `what`: at the start, every few MiB, and at end
/// of file (then with `done` as the total, for a stream of unknown size). A seek moves
/// `done` to the new position, so a reader that skips data with seeks still reports the
/// part of the file it has passed.
pub(crate) struct ProgressReader<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    what: &'a str,
    progress: Option<&'a Progress<'a>>,
}

impl<'a, R> ProgressReader<'a, R> {
    /// Wraps `inner`, which holds `total` bytes (0 if unknown), and reports its start.
    pub(crate) fn new(
        inner: R,
        what: &'a str,
        total: u64,
        progress: Option<&'a Progress<'a>>,
    ) -> Self {
        if let Some(p) = progress {
            p(what, 0, total);
        }
        ProgressReader {
            inner,
            done: 0,
            reported: 0,
            total,
            what,
            progress,
        }
    }

    /// How far the reader got: bytes read, or the position a seek moved to.
    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    fn advanced(&mut self, at_end: bool) {
        let Some(p) = self.progress else {
            return;
        };
        if at_end {
            p(self.what, self.done, self.total.max(self.done));
            self.reported = self.done;
        } else if self.done.abs_diff(self.reported) >= STEP {
            // A stream that outgrows its announced size has no known total any more.
            let total = if self.done > self.total {
                0
            } else {
                self.total
            };
            p(self.what, self.done, total);
            self.reported = self.done;
        }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.advanced(n == 0 && !buf.is_empty());
        Ok(n)
    }
}

impl<R: Seek> Seek for ProgressReader<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.done = at;
        self.advanced(false);
        Ok(at)
    }
}

/// A writer that reports the bytes written so far as `what`, a step of unknown size, every
/// few MiB; [`ProgressWriter::finish`] reports its end.
pub(crate) struct ProgressWriter<'a, W> {
    inner: W,
    done: u64,
    reported: u64,
    what: &'a str,
    progress: Option<&'a Progress<'a>>,
}

impl<'a, W> ProgressWriter<'a, W> {
    /// Wraps `inner` and reports the start.
    pub(crate) fn new(inner: W, what: &'a str, progress: Option<&'a Progress<'a>>) -> Self {
        if let Some(p) = progress {
            p(what, 0, 0);
        }
        ProgressWriter {
            inner,
            done: 0,
            reported: 0,
            what,
            progress,
        }
    }

    /// Reports the end (all `done` bytes of `done`) and returns the inner writer.
    pub(crate) fn finish(self) -> W {
        if let Some(p) = self.progress {
            p(self.what, self.done, self.done);
        }
        self.inner
    }
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= STEP {
            if let Some(p) = self.progress {
                p(self.what, self.done, 0);
            }
            self.reported = self.done;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_reader_reports_start_steps_seeks_and_end() {
        let log = std::sync::Mutex::new(Vec::<(String, u64, u64)>::new());
        let report = |w: &str, d: u64, t: u64| log.lock().expect("log").push((w.to_owned(), d, t));
        let data = vec![0u8; 20 << 20];
        // Known size: start, every 8 MiB, end.
        let mut reader =
            ProgressReader::new(io::Cursor::new(&data), "copy", 20 << 20, Some(&report));
        io::copy(&mut reader, &mut io::sink()).expect("copy");
        let got = log.lock().expect("log").clone();
        assert_eq!(got.first(), Some(&("copy".into(), 0, 20 << 20)));
        assert_eq!(got.last(), Some(&("copy".into(), 20 << 20, 20 << 20)));
        assert!(got.contains(&("copy".into(), 8 << 20, 20 << 20)), "{got:?}");
        // A seek past data counts as passed; a stream of unknown size ends at its length.
        log.lock().expect("log").clear();
        let mut reader = ProgressReader::new(io::Cursor::new(&data), "skim", 0, Some(&report));
        reader.seek(SeekFrom::Start(16 << 20)).expect("seek");
        io::copy(&mut reader, &mut io::sink()).expect("copy");
        let got = log.lock().expect("log").clone();
        assert_eq!(
            got,
            [
                ("skim".into(), 0, 0),
                ("skim".into(), 16 << 20, 0),
                ("skim".into(), 20 << 20, 20 << 20)
            ]
        );
    }

    #[test]
    fn a_progress_writer_reports_an_unknown_size_until_it_finishes() {
        let log = std::sync::Mutex::new(Vec::<(String, u64, u64)>::new());
        let report = |w: &str, d: u64, t: u64| log.lock().expect("log").push((w.to_owned(), d, t));
        let mut writer = ProgressWriter::new(Vec::new(), "layer", Some(&report));
        writer.write_all(&vec![1u8; 9 << 20]).expect("write");
        assert_eq!(writer.finish().len(), 9 << 20);
        let got = log.lock().expect("log").clone();
        assert_eq!(
            got,
            [
                ("layer".into(), 0, 0),
                ("layer".into(), 9 << 20, 0),
                ("layer".into(), 9 << 20, 9 << 20)
            ]
        );
    }
}
