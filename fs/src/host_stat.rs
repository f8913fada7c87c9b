//! The stat fields of directory-layer entries that a [`LowerNode`](crate::lower::LowerNode)
//! has no room for: atime, ctime, st_blocks and st_blksize as the host reports them.
//!
//! Kernel overlayfs reports an untouched lower entry's own stat, and tools compare more of it
//! than the mtime: git's index keeps ctime (seconds and nanoseconds) and re-reads every file
//! whose ctime differs. A tar member has only an mtime, so a tar layer's entries report it for
//! all three times; a host directory has all of them, and rfs reports them.
//!
//! Memory: most nodes need none of this. A file written once has atime == mtime == ctime, and
//! its st_blocks is its size rounded up to its filesystem's blocks. So each field is a
//! [`Sparse`] column holding only the values that differ from what the node itself implies:
//! a bit and a half per node per column, plus 12 bytes per time that differs (16 for odd
//! block counts). A tree of files extracted with their archive mtimes pays 12 bytes per node
//! for the ctime (24 when their atimes differ too); a freshly written tree pays almost nothing.

use crate::lower::FileKind;

/// The `st_blksize` rfs reports for tar members (the page size, as on most filesystems).
pub(crate) const DEFAULT_BLKSIZE: u32 = 4096;

/// A value for some of a sequence of nodes numbered from 0: a presence bit per node, and the
/// values of the nodes that have one, in node order. Finding a value is one popcount.
#[derive(Debug)]
pub(crate) struct Sparse<T> {
    /// Bit `i % 64` of word `i / 64`: node `i` has a value.
    bits: Vec<u64>,
    /// How many values come before word `w`'s nodes.
    ranks: Vec<u32>,
    values: Vec<T>,
    len: u32,
}

impl<T> Default for Sparse<T> {
    fn default() -> Self {
        Sparse {
            bits: Vec::new(),
            ranks: Vec::new(),
            values: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Sparse<T> {
    /// Appends the next node's value (`None`: it has none).
    pub(crate) fn push(&mut self, value: Option<T>) {
        let i = self.len as usize;
        if i % 64 == 0 {
            self.bits.push(0);
            self.ranks.push(self.values.len() as u32);
        }
        if let Some(v) = value {
            self.bits[i / 64] |= 1 << (i % 64);
            self.values.push(v);
        }
        self.len += 1;
    }

    /// Node `i`'s value, if it has one.
    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        let (w, b) = (i as usize / 64, i % 64);
        let word = *self.bits.get(w)?;
        if word >> b & 1 == 0 {
            return None;
        }
        let below = (word & ((1u64 << b) - 1)).count_ones();
        self.values.get((self.ranks[w] + below) as usize)
    }

    /// How many nodes have a value.
    pub(crate) fn count(&self) -> usize {
        self.values.len()
    }

    fn shrink_to_fit(&mut self) {
        self.bits.shrink_to_fit();
        self.ranks.shrink_to_fit();
        self.values.shrink_to_fit();
    }
}

/// A timestamp in 12 bytes (an `(i64, u32)` takes 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Time {
    sec: [u32; 2],
    nsec: u32,
}

impl From<(i64, u32)> for Time {
    fn from((sec, nsec): (i64, u32)) -> Time {
        let s = sec as u64;
        Time {
            sec: [s as u32, (s >> 32) as u32],
            nsec,
        }
    }
}

impl From<Time> for (i64, u32) {
    fn from(t: Time) -> (i64, u32) {
        let s = u64::from(t.sec[0]) | (u64::from(t.sec[1]) << 32);
        (s as i64, t.nsec)
    }
}

/// A block count or block size that is not what [`predicted_blocks`] and the layer say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Odd {
    blocks: u64,
    blksize: u32,
}

/// The host's stat fields of one directory-layer entry, as read while indexing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostExtra {
    pub(crate) atime: (i64, u32),
    pub(crate) ctime: (i64, u32),
    pub(crate) blocks: u64,
    pub(crate) blksize: u32,
    pub(crate) nlink: u32,
}

impl HostExtra {
    pub(crate) fn from_stat(st: &crate::sys::Stat) -> HostExtra {
        HostExtra {
            atime: (st.st_atime, st.st_atime_nsec as u32),
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            blocks: st.st_blocks as u64,
            blksize: st.st_blksize as u32,
            nlink: st.st_nlink as u32,
        }
    }
}

/// What `stat` shows of a lower node besides its [`Meta`](crate::lower::Meta) and nlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatExtra {
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
    /// Status change time.
    pub ctime: (i64, u32),
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Preferred I/O size.
    pub blksize: u32,
}

/// The `st_blocks` a file of `kind` and `size` has on a filesystem with `blksize` blocks and
/// no holes; symlinks short enough to live in the inode (nearly all) and special files have
/// none.
fn predicted_blocks(kind: FileKind, size: u64, blksize: u32) -> u64 {
    match kind {
        FileKind::File | FileKind::Dir => {
            let b = u64::from(blksize.max(512));
            size.div_ceil(b) * (b / 512)
        }
        _ => 0,
    }
}

/// What a node implies about its own stat: the defaults the columns store differences from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Implied {
    pub(crate) kind: FileKind,
    pub(crate) mtime: (i64, u32),
    /// `st_size` (a symlink's target length).
    pub(crate) size: u64,
    /// The `st_blksize` of the node's layer.
    pub(crate) blksize: u32,
}

impl Implied {
    fn blocks(&self) -> u64 {
        predicted_blocks(self.kind, self.size, self.blksize)
    }
}

/// The side table: one entry per node of the lower tree, in node order, kept only when a
/// directory layer is present.
#[derive(Debug, Default)]
pub(crate) struct HostStats {
    atime: Sparse<Time>,
    ctime: Sparse<Time>,
    odd: Sparse<Odd>,
}

impl HostStats {
    /// Appends the next node: `host` is `None` for a node that no directory layer supplies
    /// (a tar member, an implied directory).
    pub(crate) fn push(&mut self, host: Option<&HostExtra>, implied: &Implied) {
        let differs = |t: (i64, u32)| (t != implied.mtime).then(|| Time::from(t));
        self.atime.push(host.and_then(|h| differs(h.atime)));
        self.ctime.push(host.and_then(|h| differs(h.ctime)));
        self.odd.push(host.and_then(|h| {
            (h.blocks != implied.blocks() || h.blksize != implied.blksize).then_some(Odd {
                blocks: h.blocks,
                blksize: h.blksize,
            })
        }));
    }

    /// Node `i`'s fields: those stored, else the implied ones.
    pub(crate) fn get(&self, i: u32, implied: &Implied) -> StatExtra {
        let time = |col: &Sparse<Time>| col.get(i).map_or(implied.mtime, |&t| t.into());
        let (blocks, blksize) = self
            .odd
            .get(i)
            .map_or((implied.blocks(), implied.blksize), |o| {
                (o.blocks, o.blksize)
            });
        StatExtra {
            atime: time(&self.atime),
            ctime: time(&self.ctime),
            blocks,
            blksize,
        }
    }

    /// How many values the columns hold: atimes, ctimes, odd block counts.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.atime.count(), self.ctime.count(), self.odd.count())
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.atime.shrink_to_fit();
        self.ctime.shrink_to_fit();
        self.odd.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_finds_each_value_across_words() {
        let mut s = Sparse::default();
        let has = |i: u32| i % 3 == 0 || (130..140).contains(&i);
        for i in 0..300u32 {
            s.push(has(i).then_some(i * 10));
        }
        for i in 0..300u32 {
            assert_eq!(s.get(i).copied(), has(i).then_some(i * 10), "node {i}");
        }
        assert_eq!(s.get(300), None);
        assert_eq!(s.get(10_000), None);
        assert_eq!(s.count(), (0..300).filter(|&i| has(i)).count());
    }

    #[test]
    fn times_survive_packing() {
        for t in [
            (0, 0),
            (1_796_397_569, 187_036_372),
            (-1, 999_999_999),
            (i64::MIN, 1),
            (i64::MAX, 0),
        ] {
            assert_eq!(<(i64, u32)>::from(Time::from(t)), t);
        }
        assert_eq!(std::mem::size_of::<Time>(), 12);
    }

    #[test]
    fn only_what_differs_from_the_node_is_stored() {
        let implied = |kind, size| Implied {
            kind,
            mtime: (1_669_064_730, 5),
            size,
            blksize: 4096,
        };
        let plain = HostExtra {
            atime: (1_669_064_730, 5),
            ctime: (1_669_064_730, 5),
            blocks: 8,
            blksize: 4096,
            nlink: 1,
        };
        let extracted = HostExtra {
            ctime: (1_796_397_569, 187_036_372),
            ..plain
        };
        let sparse_file = HostExtra { blocks: 0, ..plain };
        let mut h = HostStats::default();
        let nodes = [
            (Some(plain), implied(FileKind::File, 9)),
            (Some(extracted), implied(FileKind::File, 9)),
            (None, implied(FileKind::File, 9)),
            (Some(sparse_file), implied(FileKind::File, 1 << 20)),
            (
                Some(HostExtra { blocks: 0, ..plain }),
                implied(FileKind::Symlink, 3),
            ),
        ];
        for (host, imp) in &nodes {
            h.push(host.as_ref(), imp);
        }
        assert_eq!(h.counts(), (0, 1, 1));
        for (i, (host, imp)) in nodes.iter().enumerate() {
            let got = h.get(i as u32, imp);
            let want = match host {
                Some(x) => StatExtra {
                    atime: x.atime,
                    ctime: x.ctime,
                    blocks: x.blocks,
                    blksize: x.blksize,
                },
                None => StatExtra {
                    atime: imp.mtime,
                    ctime: imp.mtime,
                    blocks: 8,
                    blksize: 4096,
                },
            };
            assert_eq!(got, want, "node {i}");
        }
    }
}
