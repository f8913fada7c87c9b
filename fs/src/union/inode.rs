//! The inode table: which inodes the kernel holds, under which names, and how many
//! references (`lookup` counts up, `forget` down).
//!
//! An entry still exactly its lower node in its lower place is only a count in the dense
//! `lower_refs` table (4 bytes); any other known entry is a full [`Inode`] in one of
//! [`SHARDS`] maps, which carries its names ([`Aliases`]) and which layers back it.
//!
//! Locking: a shard's lock is taken before an inode's `state` lock, never the other way;
//! no inode's `state` lock is held while another inode's is taken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::resolve::Resolved;
use super::{UnionFs, lock};
use crate::Error;
use crate::lower::{FileKind, ROOT_INO, UPPER_INO_BIT};
use crate::upper::WorkTemp;

/// A name an inode is known by: that of a lower node (shared with the lower tree, not
/// copied), or its own.
#[derive(Clone, Debug)]
pub(super) enum AliasName {
    Lower(u32),
    Own(Box<[u8]>),
}

/// The names by which the kernel knows an inode, `(parent ino, name)`, most recent first.
/// Nearly every inode has exactly one: it is kept inline, the rare others (hard links)
/// behind one box.
#[derive(Debug, Default)]
pub(super) struct Aliases {
    first: Option<(u64, AliasName)>,
    rest: Option<Box<[(u64, AliasName)]>>,
}

impl Aliases {
    /// The most recent name.
    pub(super) fn first(&self) -> Option<&(u64, AliasName)> {
        self.first.as_ref()
    }

    /// Every name, most recent first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(u64, AliasName)> {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    /// Adds a name as the most recent.
    fn push_front(&mut self, alias: (u64, AliasName)) {
        if let Some(old) = self.first.replace(alias) {
            let mut rest: Vec<_> = self.rest.take().map(Vec::from).unwrap_or_default();
            rest.insert(0, old);
            self.rest = Some(rest.into_boxed_slice());
        }
    }

    /// Keeps only the names `keep` accepts.
    fn retain(&mut self, mut keep: impl FnMut(&(u64, AliasName)) -> bool) {
        let mut all: Vec<(u64, AliasName)> = self.first.take().into_iter().collect();
        all.extend(self.rest.take().map(Vec::from).unwrap_or_default());
        all.retain(|a| keep(a));
        let mut it = all.into_iter();
        self.first = it.next();
        let rest: Vec<_> = it.collect();
        if !rest.is_empty() {
            self.rest = Some(rest.into_boxed_slice());
        }
    }
}

/// Mutable part of an inode: where it is and which layers back it.
#[derive(Debug)]
pub(super) struct NodeState {
    /// Names by which the kernel knows this inode. The root has none.
    pub(super) aliases: Aliases,
    /// The lower node: a non-directory's data source while not copied up, or the lower
    /// directory a directory merges with.
    pub(super) lower: Option<u32>,
    /// Whether the entry exists in the upper.
    pub(super) upper: bool,
    /// The upper entry is a metadata-only copy; its data is still `lower`'s.
    pub(super) metacopy: bool,
}

/// One inode the kernel has looked up. Its `state` lock is never held while taking another
/// inode's lock; `copy_lock` serialises copy-up of this inode only.
#[derive(Debug)]
pub(super) struct Inode {
    pub(super) kind: FileKind,
    pub(super) nlookup: AtomicU64,
    pub(super) state: Mutex<NodeState>,
    /// Serialises copy-up of this inode; holds the data copy made ahead of time by
    /// [`UnionFs::prepare_copy_up`] outside the namespace lock (removed from the work dir
    /// if the inode goes before the copy-up that would use it). Boxed: few inodes ever
    /// hold one, and every full inode pays for the slot.
    pub(super) copy_lock: Mutex<Option<Box<WorkTemp>>>,
}

impl Inode {
    /// A new inode with `nlookup` kernel references and no names yet.
    pub(super) fn new(kind: FileKind, nlookup: u64, lower: Option<u32>, upper: bool) -> Arc<Inode> {
        Arc::new(Inode {
            kind,
            nlookup: AtomicU64::new(nlookup),
            state: Mutex::new(NodeState {
                aliases: Aliases::default(),
                lower,
                upper,
                metacopy: false,
            }),
            copy_lock: Mutex::new(None),
        })
    }
}

/// The number of inode-table shards: threads looking up different inodes rarely wait on
/// each other.
pub(super) const SHARDS: usize = 16;

impl UnionFs {
    /// The shard of the inode table that holds `ino`.
    pub(super) fn shard(&self, ino: u64) -> &Mutex<HashMap<u64, Arc<Inode>>> {
        &self.inodes[(ino as usize ^ (ino >> 32) as usize) % SHARDS]
    }

    /// The inode `ino`, made a full [`Inode`] first if it is only counted in `lower_refs`.
    pub(super) fn inode(&self, ino: u64) -> Result<Arc<Inode>, Error> {
        let mut shard = lock(self.shard(ino));
        match shard.get(&ino) {
            Some(inode) => Ok(Arc::clone(inode)),
            None => self.make_full(&mut shard, ino).ok_or(Error::NotFound),
        }
    }

    /// Turns the `lower_refs` count of `ino` into a full inode in `shard` (its locked shard).
    fn make_full(&self, shard: &mut HashMap<u64, Arc<Inode>>, ino: u64) -> Option<Arc<Inode>> {
        let node = self.counted_lower_node(ino)?;
        let n = self.lower.node(node);
        let refs = self.lower_refs[node as usize].swap(0, Ordering::Relaxed);
        let inode = Inode::new(n.kind, u64::from(refs), Some(node), false);
        lock(&inode.state)
            .aliases
            .push_front((self.lower.ino(n.parent), AliasName::Lower(node)));
        shard.insert(ino, Arc::clone(&inode));
        Some(inode)
    }

    /// The lower node whose entry `ino` is counted in `lower_refs`, if it is. Call with the
    /// shard of `ino` locked.
    fn counted_lower_node(&self, ino: u64) -> Option<u32> {
        if ino & UPPER_INO_BIT != 0 {
            return None;
        }
        let node = self.lower.node_of_ino(ino)?;
        let refs = self.lower_refs.get(node as usize)?;
        (refs.load(Ordering::Relaxed) > 0).then_some(node)
    }

    /// The bytes of an alias name.
    fn alias_bytes<'a>(&'a self, n: &'a AliasName) -> &'a [u8] {
        match n {
            AliasName::Lower(node) => self.lower.name(*node),
            AliasName::Own(b) => b,
        }
    }

    /// An alias name for `name`: the lower node's own when it is the same bytes.
    fn alias_name(&self, name: &[u8], lower: Option<u32>) -> AliasName {
        match lower {
            Some(l) if self.lower.name(l) == name => AliasName::Lower(l),
            _ => AliasName::Own(name.into()),
        }
    }

    /// The first name of inode `ino`: (parent ino, name bytes).
    pub(super) fn first_alias(&self, st: &NodeState) -> Result<(u64, Vec<u8>), Error> {
        let (p, n) = st.aliases.first().ok_or(Error::NotFound)?;
        Ok((*p, self.alias_bytes(n).to_vec()))
    }

    /// The path of inode `ino` from the root (`""` for the root).
    pub(super) fn path(&self, mut ino: u64) -> Result<Vec<u8>, Error> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        while ino != ROOT_INO {
            let inode = self.inode(ino)?;
            let st = lock(&inode.state);
            let (parent, name) = self.first_alias(&st)?;
            parts.push(name);
            ino = parent;
            if parts.len() > 4096 {
                return Err(Error::Invalid("path too deep"));
            }
        }
        parts.reverse();
        Ok(parts.join(&b'/'))
    }

    /// Records that the kernel now knows `r` as `name` in `parent` (one more lookup).
    ///
    /// An entry that is exactly its lower node, in its lower place (not in the upper, its
    /// inode's first name, under its lower parent's inode), is only counted in `lower_refs`:
    /// its state follows from the lower tree. [`UnionFs::inode`] turns it into a full inode when an
    /// operation needs one. A walk of a large image so costs 4 bytes per entry.
    pub(super) fn remember(&self, parent: u64, name: &[u8], r: &Resolved, count_lookup: bool) {
        let mut shard = lock(self.shard(r.ino));
        if count_lookup
            && r.upper.is_none()
            && !shard.contains_key(&r.ino)
            && let Some(l) = r.lower
            && self.lower.node(l).ino_node == l
            && r.ino == self.lower.ino(l)
            && parent == self.lower.ino(self.lower.node(l).parent)
            && self.lower.name(l) == name
        {
            let refs = &self.lower_refs[l as usize];
            if refs.load(Ordering::Relaxed) < u32::MAX {
                refs.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if !shard.contains_key(&r.ino) {
            // Counted so far, now known otherwise: carry the count into a full inode.
            self.make_full(&mut shard, r.ino);
        }
        let inode = shard
            .entry(r.ino)
            .or_insert_with(|| Inode::new(r.kind, 0, r.lower, r.upper.is_some()));
        if inode.kind != r.kind {
            // The upper filesystem reused the inode number of a deleted entry of another type.
            // Start a new inode; keep the kernel's lookup count so its pending forgets balance.
            let carried = inode.nlookup.load(Ordering::Relaxed);
            *inode = Inode::new(r.kind, carried, r.lower, r.upper.is_some());
        }
        if count_lookup {
            inode.nlookup.fetch_add(1, Ordering::Relaxed);
        }
        let mut st = lock(&inode.state);
        st.upper = r.upper.is_some();
        st.metacopy = r.upper.as_ref().is_some_and(|e| e.metacopy);
        st.lower = r.lower;
        if !st
            .aliases
            .iter()
            .any(|(p, n)| *p == parent && self.alias_bytes(n) == name)
        {
            let alias = self.alias_name(name, r.lower);
            st.aliases.push_front((parent, alias));
        }
    }

    /// Renames one of `ino`'s names (its layers do not change: it is in the upper already).
    pub(super) fn move_alias(&self, ino: u64, from: (u64, &[u8]), to: (u64, &[u8])) {
        if let Ok(inode) = self.inode(ino) {
            let mut st = lock(&inode.state);
            st.aliases
                .retain(|(p, n)| !(*p == from.0 && self.alias_bytes(n) == from.1));
            st.aliases.push_front((to.0, AliasName::Own(to.1.into())));
            st.upper = true;
        }
    }

    /// Forgets one name of `ino` (its entry there was removed or replaced).
    pub(super) fn forget_alias(&self, ino: u64, parent: u64, name: &[u8]) {
        if let Ok(inode) = self.inode(ino) {
            lock(&inode.state)
                .aliases
                .retain(|(p, n)| !(*p == parent && self.alias_bytes(n) == name));
        }
    }

    /// Drops `n` kernel references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut shard = lock(self.shard(ino));
        if let Some(inode) = shard.get(&ino) {
            let prev = inode.nlookup.fetch_sub(
                n.min(inode.nlookup.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if prev <= n {
                shard.remove(&ino);
            }
        } else if let Some(node) = self.counted_lower_node(ino) {
            let refs = &self.lower_refs[node as usize];
            let drop_n = u32::try_from(n).unwrap_or(u32::MAX);
            refs.fetch_sub(drop_n.min(refs.load(Ordering::Relaxed)), Ordering::Relaxed);
        }
    }

    /// Number of inodes the kernel holds references to (for tests and memory accounting).
    pub fn inode_count(&self) -> usize {
        let full: usize = self.inodes.iter().map(|s| lock(s).len()).sum();
        let counted = self
            .lower_refs
            .iter()
            .filter(|r| r.load(Ordering::Relaxed) > 0)
            .count();
        full + counted
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use crate::union::fixture::{Fixture, Node};
    use crate::union::{Caller, SetAttr};

    fn full_inodes(fs: &UnionFs) -> usize {
        fs.inodes.iter().map(|s| lock(s).len()).sum()
    }

    fn fixture() -> Fixture {
        Fixture::new(&[&[
            ("d", Node::Dir),
            ("d/a", Node::File(b"a")),
            ("d/b", Node::File(b"b")),
        ]])
    }

    fn lookup(f: &Fixture, parent: u64, name: &str) -> u64 {
        f.fs.lookup(parent, OsStr::new(name)).expect("lookup").ino
    }

    fn path(f: &Fixture, ino: u64) -> String {
        String::from_utf8(f.fs.path(ino).expect("path")).expect("utf-8")
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_full_inode_stays_small() {
        // Every inode the kernel holds beyond a plain lower entry costs this, plus its map
        // slot (see the module docs of `union`).
        assert_eq!(std::mem::size_of::<Inode>(), 104);
    }

    #[test]
    fn a_lower_entry_in_its_lower_place_is_only_counted() {
        let f = fixture();
        let d = lookup(&f, ROOT_INO, "d");
        let a = lookup(&f, d, "a");
        assert_eq!(lookup(&f, d, "a"), a, "one number per entry");
        // A lookup in `d` needs its state, which makes `d` a full inode; `a` stays a count.
        assert_eq!(full_inodes(&f.fs), 2, "the root and d");
        assert_eq!(f.fs.inode_count(), 3);
        let node = f.fs.lower.node_of_ino(a).expect("a lower node");
        assert_eq!(f.fs.lower_refs[node as usize].load(Ordering::Relaxed), 2);
        assert_eq!(path(&f, a), "d/a");
        f.fs.forget(a, 1);
        assert_eq!(f.fs.inode_count(), 3, "one reference left");
        // The kernel never forgets more than it holds, but a stray forget must not wrap.
        f.fs.forget(a, 5);
        assert_eq!(f.fs.lower_refs[node as usize].load(Ordering::Relaxed), 0);
        assert_eq!(f.fs.inode_count(), 2);
        assert!(matches!(f.fs.getattr(a), Err(Error::NotFound)));
        f.fs.forget(ROOT_INO, 100);
        assert!(
            f.fs.getattr(ROOT_INO).is_ok(),
            "the root is never forgotten"
        );
    }

    #[test]
    fn an_operation_makes_a_full_inode_that_keeps_the_kernels_count() {
        let f = fixture();
        let d = lookup(&f, ROOT_INO, "d");
        let a = lookup(&f, d, "a");
        lookup(&f, d, "a");
        let set = SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        };
        f.fs.setattr(a, set, None, Caller::ROOT).expect("chmod");
        let inode = f.fs.inode(a).expect("full inode");
        assert_eq!(
            inode.nlookup.load(Ordering::Relaxed),
            2,
            "the count moved over"
        );
        assert!(lock(&inode.state).upper, "copied up");
        drop(inode);
        let node = f.fs.lower.node_of_ino(a).expect("a lower node");
        assert_eq!(f.fs.lower_refs[node as usize].load(Ordering::Relaxed), 0);
        f.fs.forget(a, 1);
        assert!(f.fs.getattr(a).is_ok());
        f.fs.forget(a, 1);
        assert!(matches!(f.fs.getattr(a), Err(Error::NotFound)));
        assert_eq!(full_inodes(&f.fs), 2, "the root and d");
    }

    #[test]
    fn an_inode_knows_each_of_its_names() {
        let f = fixture();
        let d = lookup(&f, ROOT_INO, "d");
        let a = lookup(&f, d, "a");
        let linked = f.fs.link(a, ROOT_INO, OsStr::new("hard")).expect("link");
        assert_eq!(linked.ino, a, "a hard link is the same inode");
        assert_eq!(path(&f, a), "hard", "the newest name first");
        f.fs.unlink(ROOT_INO, OsStr::new("hard")).expect("unlink");
        assert_eq!(path(&f, a), "d/a", "back to the name left");
        f.fs.rename(d, OsStr::new("a"), ROOT_INO, OsStr::new("moved"), 0)
            .expect("rename");
        assert_eq!(path(&f, a), "moved");
        assert_eq!(f.read(a), b"a");
    }
}
