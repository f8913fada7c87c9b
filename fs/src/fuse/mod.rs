//! The thin FUSE adapter: each `fuser::Filesystem` method converts its arguments, calls
//! [`UnionFs`], and replies, or replies with `Error::errno()`. Nothing else in the crate
//! imports `fuser`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod ring;

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::Error;
use crate::lower::FileKind;
use crate::sys::SetTime;
use crate::union::{Attr, Caller, DirEntry, SetAttr, UnionFs, Writer};

/// How long the kernel may cache entries and attributes. Lower layers never change and every
/// change to the upper goes through us, so this can be long.
const TTL: Duration = Duration::from_secs(3600);

/// How ids on disk are shown in the mount (fuse-overlayfs `uidmapping=`/`gidmapping=`,
/// `squash_to_uid=`/`squash_to_gid=`/`squash_to_root`).
///
/// A mapping is a list of `(inside, outside, count)` ranges: an id `outside + k` on disk is
/// shown as `inside + k`, and a `chown` to `inside + k` stores `outside + k`. Ids outside
/// every range show as the overflow id 65534. Squashing shows every entry as owned by one id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMapping {
    /// uid ranges (inside, outside, count).
    pub uids: Vec<(u32, u32, u32)>,
    /// gid ranges (inside, outside, count).
    pub gids: Vec<(u32, u32, u32)>,
    /// Show every entry as owned by this uid.
    pub squash_uid: Option<u32>,
    /// Show every entry as owned by this gid.
    pub squash_gid: Option<u32>,
}

const OVERFLOW_ID: u32 = 65534;

fn map_range(ranges: &[(u32, u32, u32)], id: u32, outward: bool) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    for &(inside, outside, count) in ranges {
        let (from, to) = if outward {
            (outside, inside)
        } else {
            (inside, outside)
        };
        if id >= from && id - from < count {
            return to + (id - from);
        }
    }
    OVERFLOW_ID
}

impl IdMapping {
    /// Parses fuse-overlayfs's `inside:outside:count[:inside:outside:count...]`.
    ///
    /// # Errors
    /// A malformed list (not triples of numbers).
    pub fn parse_ranges(spec: &str) -> Result<Vec<(u32, u32, u32)>, String> {
        let nums: Result<Vec<u32>, _> = spec.split(':').map(str::parse::<u32>).collect();
        let nums = nums.map_err(|e| format!("bad id mapping {spec:?}: {e}"))?;
        if nums.is_empty() || nums.len() % 3 != 0 {
            return Err(format!(
                "bad id mapping {spec:?}: expected inside:outside:count triples"
            ));
        }
        Ok(nums.chunks(3).map(|c| (c[0], c[1], c[2])).collect())
    }

    /// The uid shown for `uid` on disk.
    pub fn uid_out(&self, uid: u32) -> u32 {
        self.squash_uid
            .unwrap_or_else(|| map_range(&self.uids, uid, true))
    }

    /// The gid shown for `gid` on disk.
    pub fn gid_out(&self, gid: u32) -> u32 {
        self.squash_gid
            .unwrap_or_else(|| map_range(&self.gids, gid, true))
    }

    /// The uid stored for a uid seen inside.
    pub fn uid_in(&self, uid: u32) -> u32 {
        map_range(&self.uids, uid, false)
    }

    /// The gid stored for a gid seen inside.
    pub fn gid_in(&self, gid: u32) -> u32 {
        map_range(&self.gids, gid, false)
    }
}

/// Files smaller than this are read through the daemon even when passthrough is on: one
/// `READ` at most per open (none for a lower file in the page cache), while a passthrough
/// read marks the inode's atime stale in the kernel and costs a `GETATTR` at the next
/// `stat` (`git status` sent 22 of them instead of 3).
const PASSTHROUGH_MIN_SIZE: u64 = 128 << 10;

/// The passthrough backing file shared by every passthrough open of one inode.
#[derive(Debug)]
struct Passthrough {
    backing: Arc<BackingId>,
    /// `(st_dev, st_ino)` of the host file behind `backing`.
    file: (u64, u64),
    opens: u32,
}

/// How the open files of one inode do their I/O. The kernel serves a passthrough open
/// from the host file itself, without `read`/`write` requests; it refuses an inode that has
/// both kinds of open files, and wants every passthrough open of an inode on the same
/// backing file (`fs/fuse/iomode.c`).
#[derive(Debug, Default)]
struct InodeIo {
    /// Open files served through `read`/`write`.
    cached: u32,
    passthrough: Option<Passthrough>,
}

/// Per-inode I/O modes and which mode each open handle took.
#[derive(Debug, Default)]
struct IoTable {
    inodes: HashMap<u64, InodeIo>,
    passthrough_handles: HashSet<u64>,
    cached_handles: HashSet<u64>,
}

/// The `fuser::Filesystem` over a [`UnionFs`].
#[derive(Debug)]
pub struct FuseAdapter {
    fs: Arc<UnionFs>,
    ids: IdMapping,
    fsync: bool,
    /// Asked for by the mount options (root only: the kernel wants `CAP_SYS_ADMIN`).
    passthrough_wanted: bool,
    /// Negotiated with the kernel and not yet refused by it.
    passthrough: AtomicBool,
    io: Mutex<IoTable>,
    /// The kernel can do without OPENDIR (FUSE_NO_OPENDIR_SUPPORT): `opendir` answers
    /// ENOSYS and listings are read by inode.
    no_opendir: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FuseAdapter {
    /// Wraps `fs`, showing ids through `ids`; `fsync` false makes fsync a no-op
    /// (fuse-overlayfs `fsync=0`); `passthrough` lets the kernel read files straight from
    /// the host (needs root and kernel 6.9 or later; ignored otherwise).
    pub fn new(fs: Arc<UnionFs>, ids: IdMapping, fsync: bool, passthrough: bool) -> Self {
        FuseAdapter {
            fs,
            ids,
            fsync,
            passthrough_wanted: passthrough,
            passthrough: AtomicBool::new(false),
            io: Mutex::new(IoTable::default()),
            no_opendir: AtomicBool::new(false),
        }
    }

    /// Replies to an `open` of `ino` that made handle `fh`: as passthrough when the data is
    /// a host file and the kernel allows it for this inode, else through `read`/`write`.
    fn reply_opened(&self, reply: ReplyOpen, ino: u64, fh: u64, flags: i32, keep_cache: bool) {
        let cached_flags = if keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        if !self.passthrough.load(Ordering::Relaxed) {
            return reply.opened(FileHandle(fh), cached_flags);
        }
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        let mut table = lock(&self.io);
        let IoTable {
            inodes,
            passthrough_handles,
            cached_handles,
        } = &mut *table;
        let io = inodes.entry(ino).or_default();
        let wants_new = io.passthrough.is_none() && io.cached == 0 && read_only;
        // Only an open that may start passthrough, or must join it, needs the host file
        // (an fstat): the others, most writes among them, go straight to cached I/O.
        let needs_file = wants_new || io.passthrough.is_some();
        let backing = needs_file.then(|| {
            self.fs.with_backing_file(fh, |fd, file, size| {
                let id = if wants_new && size >= PASSTHROUGH_MIN_SIZE {
                    Some(reply.open_backing(fd))
                } else {
                    None
                };
                (file, id)
            })
        });
        let backing = backing.flatten();
        match (&mut io.passthrough, backing) {
            (Some(pt), Some((file, _))) if pt.file == file => {
                pt.opens += 1;
                passthrough_handles.insert(fh);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &pt.backing);
            }
            (Some(_), _) => {
                // Open for passthrough on another host file (a copy-up happened while the
                // lower file was open): the kernel would fail this open with EIO.
                log::warn!(
                    "inode {ino:#x}: open refused while readers of its lower file are open \
                     (passthrough; mount with --no-passthrough to allow it)"
                );
                self.fs.release(fh);
                reply.error(Errno::from_i32(libc::EBUSY));
            }
            (None, Some((file, Some(Ok(id))))) => {
                let backing = Arc::new(id);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
                io.passthrough = Some(Passthrough {
                    backing,
                    file,
                    opens: 1,
                });
                passthrough_handles.insert(fh);
            }
            (None, backing) => {
                if let Some((_, Some(Err(e)))) = backing {
                    log::warn!("passthrough off: the kernel refused a backing file: {e}");
                    self.passthrough.store(false, Ordering::Relaxed);
                }
                io.cached += 1;
                cached_handles.insert(fh);
                reply.opened(FileHandle(fh), cached_flags);
            }
        }
    }

    /// The listing a `readdir` of `ino` at `offset` reads: the handle's snapshot, or, when
    /// the kernel skipped OPENDIR (`fh` 0), the one kept per directory.
    fn listing(&self, ino: u64, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>, Error> {
        if fh == 0 {
            self.fs.listing_at(ino, offset)
        } else {
            self.fs.readdir(fh)
        }
    }

    /// Counts handle `fh` of `ino`, made by `create`, as served through `read`/`write`.
    fn note_cached_open(&self, ino: u64, fh: u64) {
        if !self.passthrough_wanted {
            return;
        }
        let mut table = lock(&self.io);
        table.inodes.entry(ino).or_default().cached += 1;
        table.cached_handles.insert(fh);
    }

    /// Forgets handle `fh` of `ino`; the last passthrough open closes the backing file.
    fn note_release(&self, ino: u64, fh: u64) {
        if !self.passthrough_wanted {
            return;
        }
        let mut table = lock(&self.io);
        let passthrough = table.passthrough_handles.remove(&fh);
        if !passthrough && !table.cached_handles.remove(&fh) {
            return;
        }
        if let Some(io) = table.inodes.get_mut(&ino) {
            if passthrough {
                if let Some(pt) = &mut io.passthrough {
                    pt.opens -= 1;
                    if pt.opens == 0 {
                        io.passthrough = None;
                    }
                }
            } else {
                io.cached = io.cached.saturating_sub(1);
            }
            if io.cached == 0 && io.passthrough.is_none() {
                table.inodes.remove(&ino);
            }
        }
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        let mut f = file_attr(a);
        f.uid = self.ids.uid_out(f.uid);
        f.gid = self.ids.gid_out(f.gid);
        f
    }

    fn caller(&self, req: &Request) -> Caller {
        Caller {
            uid: self.ids.uid_in(req.uid()),
            gid: self.ids.gid_in(req.gid()),
            root: req.uid() == 0,
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, r: Result<Attr, Error>) {
        match r {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn errno(e: &Error) -> Errno {
    if let Error::Io { .. } = e {
        log::debug!("{e}: {:?}", std::error::Error::source(e));
    }
    Errno::from_i32(e.errno())
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

fn time((s, ns): (i64, u32)) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(u64::from(ns))
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                SetTime::At(-(d.as_secs() as i64), d.subsec_nanos())
            }
        },
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Error>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: Result<Vec<u8>, Error>) {
    match data {
        Ok(d) if size == 0 => reply.size(d.len() as u32),
        Ok(d) if d.len() <= size as usize => reply.data(&d),
        Ok(_) => reply.error(Errno::from_i32(libc::ERANGE)),
        Err(e) => reply.error(errno(&e)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            // We clear set-id bits on write, truncate and chown ourselves (see `write`),
            // which spares a GETATTR before every chown.
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let supported = config.capabilities() & wanted;
        if let Err(unsupported) = config.add_capabilities(supported) {
            log::debug!("kernel lacks {unsupported:?}");
        }
        if config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
        {
            self.no_opendir.store(true, Ordering::Relaxed);
        }
        if self.passthrough_wanted {
            if config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
                && config.set_max_stack_depth(1).is_ok()
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            {
                self.passthrough.store(true, Ordering::Relaxed);
            } else {
                log::info!("kernel has no FUSE passthrough: reads go through the daemon");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            // A negative entry (node id 0) lets the kernel cache "no such name" too.
            Err(Error::NotFound) => {
                let mut a = file_attr(&Attr {
                    ino: 0,
                    kind: FileKind::File,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    blocks: 0,
                    blksize: 0,
                    atime: (0, 0),
                    mtime: (0, 0),
                    ctime: (0, 0),
                    rdev: 0,
                });
                a.ino = INodeNo(0);
                reply.entry(&TTL, &a, Generation(0));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr_open(ino.0, fh.map(|fh| fh.0)) {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid: uid.map(|u| self.ids.uid_in(u)),
            gid: gid.map(|g| self.ids.gid_in(g)),
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
        };
        // With HANDLE_KILLPRIV_V2 a truncate no longer says whether the caller may keep the
        // set-id bits (it sends FATTR_KILL_SUIDGID, which fuser does not pass on): the
        // engine decides from the caller.
        match self
            .fs
            .setattr(ino.0, set, fh.map(|f| f.0), self.caller(req))
        {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .fs
            .mknod(parent.0, name, mode, u64::from(rdev), self.caller(req));
        self.reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(reply, self.fs.mkdir(parent.0, name, mode, self.caller(req)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.rmdir(parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.fs.symlink(
            parent.0,
            link_name,
            target.as_os_str().as_bytes(),
            self.caller(req),
        );
        self.reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits());
        reply_empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.reply_entry(reply, self.fs.link(ino.0, newparent.0, newname));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0, self.caller(req)) {
            // Immutable data may stay in the page cache across opens.
            Ok(o) => self.reply_opened(reply, ino.0, o.fh, flags.0, o.immutable),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel sets this when the writer lacks CAP_FSETID and the file has set-id
        // bits (HANDLE_KILLPRIV_V2).
        let writer = Writer {
            lacks_fsetid: write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID),
        };
        match self.fs.write(fh.0, offset, data, writer) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.note_release(ino.0, fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        if !self.fsync {
            return reply.ok();
        }
        reply_empty(reply, self.fs.fsync(fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir.load(Ordering::Relaxed) {
            // The kernel then never sends OPENDIR/RELEASEDIR again (two round trips saved
            // per directory visit) and caches listings as with FOPEN_CACHE_DIR.
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        match self.fs.opendir(ino.0) {
            // Every change to a directory goes through this mount, and the kernel drops its
            // cached listing when it makes one: let it keep listings across opens.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.listing(ino.0, fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut full = false;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let name = OsStr::from_bytes(&e.name);
            if reply.add(INodeNo(e.ino), (i + 1) as u64, file_type(e.kind), name) {
                full = true;
                break;
            }
        }
        if !full && fh.0 == 0 {
            self.fs.done_reading_dir(ino.0);
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let entries = match self.listing(ino.0, fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut full = false;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            // `.` and `..` carry no lookup count; every other entry counts as a lookup,
            // which is undone with `forget` if the buffer turns out to be full.
            let dot = e.name == b"." || e.name == b"..";
            let attr = if dot {
                match self.fs.getattr(e.ino) {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            } else {
                match self.fs.lookup_for_readdirplus(ino.0, &e.name) {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            };
            let name = OsStr::from_bytes(&e.name);
            if reply.add(
                INodeNo(attr.ino),
                (i + 1) as u64,
                name,
                &TTL,
                &self.attr(&attr),
                Generation(0),
            ) {
                if !dot {
                    self.fs.forget(attr.ino, 1);
                }
                full = true;
                break;
            }
        }
        if !full && fh.0 == 0 {
            self.fs.done_reading_dir(ino.0);
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namemax, s.frsize,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.fs.setxattr(ino.0, name.as_bytes(), value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.fs.getxattr(ino.0, name.as_bytes()));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let data = self.fs.listxattr(ino.0).map(|names| {
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(&n);
                out.push(0);
            }
            out
        });
        reply_xattr(reply, size, data);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.removexattr(ino.0, name.as_bytes()));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // `default_permissions` makes the kernel check modes itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .create(parent.0, name, mode, flags, self.caller(req))
        {
            Ok((a, fh)) => {
                self.note_cached_open(a.ino, fh);
                reply.created(
                    &TTL,
                    &self.attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fallocate(fh.0, mode, offset, length));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Name shown as the mount's source in /proc/mounts.
    pub fsname: String,
    /// Let other users (and root) use the mount (`allow_other`; needs root or
    /// `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
    /// Mount read-only.
    pub read_only: bool,
    /// Number of threads serving requests.
    pub threads: usize,
    /// How ids are shown.
    pub ids: IdMapping,
    /// Whether fsync reaches the disk (fuse-overlayfs `fsync=0` turns it off).
    pub fsync: bool,
    /// Let the kernel read host files directly (FUSE passthrough). Takes effect only for
    /// root in the initial user namespace on kernel 6.9 or later.
    pub passthrough: bool,
}

fn config(opts: &MountOptions) -> fuser::Config {
    use fuser::MountOption as M;
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        M::FSName(opts.fsname.clone()),
        M::Subtype("rfs".into()),
        M::DefaultPermissions,
        M::Dev,
        M::Suid,
    ];
    if opts.read_only {
        c.mount_options.push(M::RO);
    }
    if opts.allow_other {
        c.acl = fuser::SessionACL::All;
    }
    c.n_threads = Some(opts.threads.max(1));
    c.clone_fd = opts.threads > 1;
    c
}

/// A mounted filesystem, served from background threads (see [`spawn_mount`]).
pub struct Session(fuser::BackgroundSession);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl Session {
    /// Whether serving has ended: the kernel ends the session once the filesystem is
    /// unmounted, which for a lazily detached mount is when its last user leaves.
    pub fn is_finished(&self) -> bool {
        self.0.guard.is_finished()
    }

    /// Unmounts the mountpoint and waits for the serving threads.
    ///
    /// # Errors
    /// The unmount failed (the mount is busy, or gone), or a serving thread panicked.
    pub fn unmount(self) -> io::Result<()> {
        self.0.umount_and_join()
    }

    /// Lets the serving threads be until the process exits, without unmounting. Dropping a
    /// session unmounts its mountpoint *by path* (fuser cannot tell that its mount is
    /// gone), which after an unmount from outside would take down a newer mount at the same
    /// place: podman remounts a container's merged dir right after unmounting it. For a
    /// process that exits once its mount has ended.
    pub fn abandon(self) {
        std::mem::forget(self);
    }
}

/// Mounts `fs` on `mountpoint` and serves it from background threads until the returned
/// session is unmounted ([`Session::unmount`]) or the filesystem is unmounted externally
/// ([`Session::is_finished`] then says so).
///
/// # Errors
/// The mount failed (no `/dev/fuse`, mountpoint missing or busy, no permission).
pub fn spawn_mount(
    fs: Arc<UnionFs>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<Session> {
    crate::sys::set_umask(0);
    let adapter = FuseAdapter::new(fs, opts.ids.clone(), opts.fsync, opts.passthrough);
    fuser::spawn_mount(adapter, mountpoint, &config(opts)).map(Session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_mapping_maps_both_ways_and_overflows() {
        let m = IdMapping {
            uids: IdMapping::parse_ranges("0:1000:1:1:100000:65536").unwrap(),
            gids: Vec::new(),
            squash_uid: None,
            squash_gid: None,
        };
        assert_eq!(m.uid_out(1000), 0);
        assert_eq!(m.uid_out(100000), 1);
        assert_eq!(m.uid_out(100999), 1000);
        assert_eq!(m.uid_out(5), OVERFLOW_ID);
        assert_eq!(m.uid_in(0), 1000);
        assert_eq!(m.uid_in(1000), 100999);
        assert_eq!(m.gid_out(77), 77, "no gid ranges: identity");
        assert!(IdMapping::parse_ranges("0:1").is_err());
        assert!(IdMapping::parse_ranges("a:b:c").is_err());
        let sq = IdMapping {
            squash_uid: Some(0),
            squash_gid: Some(0),
            ..IdMapping::default()
        };
        assert_eq!((sq.uid_out(1234), sq.gid_out(99)), (0, 0));
    }
}
