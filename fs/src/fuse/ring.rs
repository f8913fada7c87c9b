//! FUSE over io_uring (Linux 6.14+, `CONFIG_FUSE_IO_URING`): the transport only.
//!
//! After INIT was answered with `FUSE_OVER_IO_URING`, [`start`] opens one queue per
//! *possible* CPU (the kernel's `nr_queues = num_possible_cpus()`; it routes a request to the
//! queue of the CPU its caller runs on, and switches from /dev/fuse to the rings only once
//! every queue has registered entries). Each queue is one thread owning one io_uring
//! (`IORING_SETUP_SQE128`) with `queue_depth` entries; an entry is a 288-byte
//! `fuse_uring_req_header` plus a payload buffer. The loop of a queue thread:
//!
//! 1. `submit_and_wait(1)`: submits every COMMIT_AND_FETCH queued since the last call (all
//!    the replies of one batch of completions go in one `io_uring_enter`) and sleeps.
//! 2. For each completion: a negative result is the kernel tearing the connection down
//!    (`ENOTCONN`, `ECONNABORTED`, ...; any other error is logged): the thread ends, closing
//!    its ring, which cancels the commands still in the kernel. Otherwise the entry holds a
//!    request: the `fuse_in_header` in `in_out`, `in_args[0]` in `op_in`, the rest in the
//!    payload (`payload_sz` bytes); [`RingServe::serve`] answers it into the payload buffer,
//!    the `fuse_out_header` goes into `in_out`, and COMMIT_AND_FETCH is queued with the
//!    entry's `commit_id`.
//! 3. Requests for which [`RingServe::may_block`] is true go to a shared worker pool
//!    instead, so the queue's other entries go on. The worker serves into the entry's
//!    buffers, sends the entry back over a channel and writes the queue's eventfd, on which
//!    the queue thread keeps a POLL_ADD armed; only the queue thread touches its ring.
//!
//! FORGET, INTERRUPT and notifications stay on /dev/fuse, which the caller keeps serving.
//!
//! # Buffer ownership
//! An entry's buffers ([`crate::sys::uring::EntryBuffers`]) are a value that is *moved*,
//! never shared: into the ring when its command is submitted (the kernel may write them),
//! back out with the command's completion (the queue thread may read and write them), into
//! a worker job and back. Two threads can therefore never touch one entry at once, and the
//! kernel never writes an entry userspace is working on.
//!
//! # Memory
//! Bytes per mount = `nr_queues × queue_depth × (288 + payload_size)`. The payload must be
//! at least the kernel's `max_payload_sz` = max(8192 (`FUSE_MIN_READ_BUFFER`), `max_write`,
//! `max_pages × PAGE_SIZE`) (`fuse_uring_create` in `fs/fuse/dev_uring.c`, 6.14–6.18), or
//! REGISTER fails with `EINVAL`; see [`min_payload_size`]. The defaults
//! ([`RingOptions::default`]) are depth 8 and 128 KiB + 4 KiB of payload (135,456 bytes
//! per entry): 2.07 MiB on 2 CPUs, 66.1 MiB on 64 CPUs. Depth 8 lets a CPU have eight
//! requests in flight (readahead and async reads run several per caller, and blocking
//! requests hold their entry while on a worker); more requests simply wait in the kernel's
//! per-queue list, so a smaller depth costs latency, never correctness. On hosts with many
//! CPUs a caller can lower the depth to keep the figure bounded.
//!
//! # Teardown
//! On unmount or abort the kernel completes every command it holds with `-ENOTCONN`, and a
//! commit after that fails at once the same way; each queue thread then ends by itself,
//! so [`Rings::join`] needs no timeout.

use std::io;
use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};

use crate::sys::uring::{
    COMMIT_ID_OFFSET, Completion, EntryBuffers, FuseRing, HEADER_SIZE, OP_IN_OFFSET, OP_IN_SIZE,
    PAYLOAD_SZ_OFFSET, RingSetup, Wake,
};

/// Size of `struct fuse_in_header`.
const IN_HEADER_SIZE: usize = 40;
/// Size of `struct fuse_out_header`.
const OUT_HEADER_SIZE: usize = 16;
/// `FUSE_MIN_READ_BUFFER`: the smallest payload the kernel accepts.
const FUSE_MIN_READ_BUFFER: usize = 8192;
/// The module parameter that switches the feature on.
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";
/// The io_uring sysctl: 0 allowed, 1 only for `io_uring_group` and root, 2 disabled.
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";
/// How long a worker beyond the first waits idle before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(10);

/// What a ring asks of the filesystem: serve one request.
pub trait RingServe: Send + Sync + 'static {
    /// `in_header`: the request's fuse_in_header bytes (the first 40 bytes of in_out);
    /// `op_in`: the 128-byte per-op area; `payload`: the payload_sz bytes the kernel wrote
    /// (a private copy — the entry's buffer is reused for the reply); `reply`: the entry's
    /// payload buffer (its full size), to receive the reply body. Returns the reply.
    fn serve(&self, in_header: &[u8], op_in: &[u8], payload: &[u8], reply: &mut [u8]) -> RingReply;
    /// Whether this request may block for long (a copy-up of a big file, SETLKW, fsync):
    /// such requests are served on a worker so the queue's other entries go on.
    fn may_block(&self, in_header: &[u8], op_in: &[u8]) -> bool;
}

/// The answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingReply {
    /// 0 or a positive errno
    pub error: i32,
    /// bytes of `reply` written (ignored when error != 0)
    pub len: usize,
}

/// Shape of the rings.
#[derive(Clone, Copy, Debug)]
pub struct RingOptions {
    /// Entries per queue (requests one CPU can have in flight).
    pub queue_depth: u16,
    /// Bytes of each entry's payload buffer; at least [`min_payload_size`].
    pub payload_size: usize,
    /// Pin each queue thread to its CPU (skipped, with a log line, where not allowed).
    pub pin_threads: bool,
}

impl Default for RingOptions {
    /// Depth 8, payload 128 KiB + 4 KiB (for `max_write` and `max_pages` of 128 KiB), pinned.
    fn default() -> Self {
        Self {
            queue_depth: 8,
            payload_size: 128 * 1024 + 4096,
            pin_threads: true,
        }
    }
}

impl RingOptions {
    /// Bytes of buffers these options take on `nr_queues` queues.
    pub fn memory_bytes(&self, nr_queues: usize) -> usize {
        nr_queues * usize::from(self.queue_depth) * (HEADER_SIZE + self.payload_size)
    }
}

/// The smallest payload buffer the kernel accepts for a connection: max(8192, `max_write`,
/// `max_pages × page size`), the rule of `fuse_uring_create` (`fs/fuse/dev_uring.c`).
pub fn min_payload_size(max_write: u32, max_pages: u16, page_size: usize) -> usize {
    FUSE_MIN_READ_BUFFER
        .max(max_write as usize)
        .max(usize::from(max_pages) * page_size)
}

/// Whether this kernel offers FUSE over io_uring now (for `rfs doctor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringAvailability {
    /// `/sys/module/fuse/parameters/enable_uring` exists (`CONFIG_FUSE_IO_URING`).
    pub parameter_present: bool,
    /// It reads `Y`.
    pub enabled: bool,
    /// `/proc/sys/kernel/io_uring_disabled` (0, 1 or 2), `None` where absent.
    pub io_uring_disabled: Option<u8>,
}

impl UringAvailability {
    /// Why FUSE over io_uring cannot be used, or `None` when it can.
    pub fn problem(&self) -> Option<String> {
        if !self.parameter_present {
            return Some(format!(
                "the kernel has no FUSE over io_uring ({ENABLE_URING} is absent: needs Linux \
                 6.14+ with CONFIG_FUSE_IO_URING)"
            ));
        }
        if !self.enabled {
            return Some(format!(
                "FUSE over io_uring is off: {ENABLE_URING} is N (root can write Y)"
            ));
        }
        match self.io_uring_disabled {
            Some(2) => Some(format!(
                "io_uring is disabled for everyone ({IO_URING_DISABLED} = 2)"
            )),
            Some(1) if crate::sys::geteuid() != 0 => Some(format!(
                "io_uring is limited to root and io_uring_group ({IO_URING_DISABLED} = 1)"
            )),
            _ => None,
        }
    }
}

/// Reads the kernel's switches for FUSE over io_uring.
pub fn kernel_offers_uring() -> UringAvailability {
    let param = std::fs::read_to_string(ENABLE_URING).ok();
    UringAvailability {
        parameter_present: param.is_some(),
        enabled: param.is_some_and(|p| p.trim() == "Y"),
        io_uring_disabled: std::fs::read_to_string(IO_URING_DISABLED)
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    }
}

/// The running queues of one mount.
pub struct Rings {
    threads: Vec<JoinHandle<()>>,
    counter: Arc<AtomicU64>,
    pool: Arc<PoolShared>,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings")
            .field("queues", &self.threads.len())
            .field("served", &self.served())
            .finish()
    }
}

impl Rings {
    /// Requests served through the rings so far (sum over queues), from an atomic counter.
    pub fn served(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// A shareable handle to the same counter (for `rfs` to report it).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }

    /// Waits for the queue threads, which end when the kernel tears the connection down,
    /// then for the workers, which end when no queue is left to send them work.
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                log::error!("fuse ring: a queue thread panicked");
            }
        }
        self.pool.join_all();
    }
}

/// Starts one thread per possible CPU (pinned to it if allowed), each with its own io_uring
/// (SQE128), registering `queue_depth` entries on `dev` (a dup of the mounted /dev/fuse fd,
/// after INIT was answered with FUSE_OVER_IO_URING). Returns once every queue has registered
/// (or the first error: io_uring refused (EPERM/ENOSYS, `/proc/sys/kernel/io_uring_disabled`),
/// EOPNOTSUPP/EINVAL from the kernel — then all started threads are stopped and the caller
/// serves /dev/fuse only).
///
/// # Errors
/// `Unsupported` when the kernel lacks the feature or it is off (checked first, with the
/// switch to flip in the message), `PermissionDenied` when io_uring is disabled,
/// `InvalidInput` for options the kernel would refuse, and the kernel's refusal of a ring
/// or a REGISTER, with the queue in the message.
pub fn start(dev: Arc<OwnedFd>, opts: RingOptions, serve: Arc<dyn RingServe>) -> io::Result<Rings> {
    let avail = kernel_offers_uring();
    if let Some(problem) = avail.problem() {
        let kind = if avail.parameter_present && avail.enabled {
            io::ErrorKind::PermissionDenied
        } else {
            io::ErrorKind::Unsupported
        };
        return Err(io::Error::new(kind, problem));
    }
    start_with(dev, opts, DEFAULT_SETUP, serve)
}

/// The ring flags used by [`start`]: `SINGLE_ISSUER` is true by construction (only the queue
/// thread submits) and lets the kernel skip locking; `DEFER_TASKRUN` runs the kernel's
/// delivery work (copying a request into an entry) only when the queue thread enters the
/// ring to wait, which is exactly where it sits, instead of interrupting it with task work
/// while it serves. libfuse leaves both off because they measured slower there. Here
/// (`measure_ring_setup_flags`, 20,000 serial stats of the root through the ring, kernel
/// 6.18, 2 CPUs, two rounds) one stat took: plain 8.4/7.1 µs, COOP_TASKRUN 10.0/8.7 µs,
/// SINGLE_ISSUER 8.8/7.9 µs, SINGLE_ISSUER + DEFER_TASKRUN 7.1/7.5 µs: no loss, so we keep
/// the flags that match the design. Parallel load is not measured yet.
const DEFAULT_SETUP: RingSetup = RingSetup {
    single_issuer: true,
    defer_taskrun: true,
    coop_taskrun: false,
};

/// [`start`] without the up-front checks of the kernel's switches, with explicit ring flags.
fn start_with(
    dev: Arc<OwnedFd>,
    opts: RingOptions,
    setup: RingSetup,
    serve: Arc<dyn RingServe>,
) -> io::Result<Rings> {
    if opts.queue_depth == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "fuse ring: queue_depth 0",
        ));
    }
    if opts.payload_size < FUSE_MIN_READ_BUFFER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fuse ring: payload_size {} is below the kernel's minimum {FUSE_MIN_READ_BUFFER}",
                opts.payload_size
            ),
        ));
    }
    let cpus = possible_cpus()?;
    let nr_queues = cpus.len();
    let qid_max = u16::try_from(nr_queues).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{nr_queues} CPUs: too many queues"),
        )
    })?;
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (job_tx, job_rx) = channel::unbounded();
    let pool = Arc::new(PoolShared {
        rx: job_rx,
        pending: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        max: nr_queues * usize::from(opts.queue_depth),
        handles: Mutex::new(Vec::new()),
        serve: serve.clone(),
        counter: counter.clone(),
    });
    let (ready_tx, ready_rx) = channel::unbounded::<(u16, io::Result<Wake>)>();
    let mut threads = Vec::with_capacity(nr_queues);
    let mut spawn_err = None;
    for (qid, &cpu) in (0..qid_max).zip(&cpus) {
        let q = Queue {
            qid,
            cpu,
            dev: dev.clone(),
            opts,
            setup,
            serve: serve.clone(),
            counter: counter.clone(),
            stop: stop.clone(),
            jobs: PoolHandle {
                tx: job_tx.clone(),
                shared: pool.clone(),
            },
        };
        let ready = ready_tx.clone();
        match std::thread::Builder::new()
            .name(format!("rfs-ring-{qid}"))
            .spawn(move || q.run(ready))
        {
            Ok(t) => threads.push(t),
            Err(e) => {
                spawn_err = Some(io::Error::new(
                    e.kind(),
                    format!("fuse ring queue {qid}: {e}"),
                ));
                break;
            }
        }
    }
    drop(ready_tx);
    drop(job_tx);
    let mut wakes = Vec::new();
    let mut first_err = spawn_err;
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok((_, Ok(w))) => wakes.push(w),
            Ok((_, Err(e))) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert_with(|| io::Error::other("fuse ring: a queue thread died"));
                break;
            }
        }
    }
    if let Some(e) = first_err {
        stop.store(true, Ordering::SeqCst);
        for w in &wakes {
            w.wake();
        }
        for t in threads {
            let _ = t.join();
        }
        pool.join_all();
        return Err(e);
    }
    Ok(Rings {
        threads,
        counter,
        pool,
    })
}

/// The CPUs of `/sys/devices/system/cpu/possible` ("0-3,8-11"), in order.
fn possible_cpus() -> io::Result<Vec<usize>> {
    let path = Path::new("/sys/devices/system/cpu/possible");
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    parse_cpu_list(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: cannot parse {text:?}", path.display()),
        )
    })
}

fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let a: usize = part.parse().ok()?;
                (a, a)
            }
        };
        if a > b {
            return None;
        }
        cpus.extend(a..=b);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// One queue, moved into its thread.
struct Queue {
    qid: u16,
    cpu: usize,
    dev: Arc<OwnedFd>,
    opts: RingOptions,
    setup: RingSetup,
    serve: Arc<dyn RingServe>,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    jobs: PoolHandle,
}

/// An entry going to or coming back from a worker (with its reply written).
struct Job {
    index: usize,
    buffers: EntryBuffers,
    back: Sender<Job>,
    wake: Wake,
}

impl Queue {
    fn ctx(&self, what: &str, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("fuse ring queue {}: {what}: {e}", self.qid),
        )
    }

    fn run(self, ready: Sender<(u16, io::Result<Wake>)>) {
        if self.opts.pin_threads {
            self.pin();
        }
        let mut early = Vec::new();
        let mut ring = match self.register(&mut early) {
            Ok(ring) => ring,
            Err(e) => {
                let _ = ready.send((self.qid, Err(e)));
                return;
            }
        };
        let (back_tx, back_rx) = channel::unbounded();
        if ready.send((self.qid, Ok(ring.waker()))).is_err() {
            return;
        }
        drop(ready);
        if let Err(e) = self.serve_loop(&mut ring, early, &back_tx, &back_rx) {
            log::error!("{e}");
        }
        // Dropping `ring` closes it: the kernel cancels the commands it still holds.
    }

    fn pin(&self) {
        let mut set = nix::sched::CpuSet::new();
        let pinned = set
            .set(self.cpu)
            .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
        if let Err(e) = pinned {
            log::info!(
                "fuse ring queue {}: not pinned to CPU {}: {e}",
                self.qid,
                self.cpu
            );
        }
    }

    /// Creates the ring, registers every entry and arms the wake poll. REGISTER completes
    /// only when a request arrives, so success is "submitted, and no error completion came
    /// back at once": the kernel refuses synchronously (EOPNOTSUPP, EINVAL, ENOTCONN) while
    /// issuing the SQE, so that completion is already in the CQ when submit returns.
    /// Requests already delivered are left in `early`.
    fn register(&self, early: &mut Vec<Completion>) -> io::Result<FuseRing> {
        let mut ring = FuseRing::new(self.dev.clone(), self.opts.queue_depth, self.setup)
            .map_err(|e| self.ctx("io_uring_setup", e))?;
        for index in 0..usize::from(self.opts.queue_depth) {
            let bufs = EntryBuffers::new(self.opts.payload_size)
                .map_err(|e| self.ctx("entry buffers", e))?;
            ring.register(index, self.qid, bufs)
                .map_err(|e| self.ctx("REGISTER", e))?;
        }
        ring.arm_wake().map_err(|e| self.ctx("eventfd poll", e))?;
        let want = usize::from(self.opts.queue_depth) + 1;
        let n = ring.submit().map_err(|e| self.ctx("submit REGISTER", e))?;
        if n != want {
            return Err(self.ctx(
                "submit REGISTER",
                io::Error::other(format!("{n} of {want} commands submitted")),
            ));
        }
        ring.reap(early);
        for c in early.iter() {
            if let Completion::Entry { result, .. } = c
                && *result < 0
            {
                return Err(self.ctx("REGISTER", io::Error::from_raw_os_error(-result)));
            }
        }
        Ok(ring)
    }

    fn serve_loop(
        &self,
        ring: &mut FuseRing,
        early: Vec<Completion>,
        back_tx: &Sender<Job>,
        back_rx: &Receiver<Job>,
    ) -> io::Result<()> {
        let mut comps = early;
        let mut scratch = Vec::new();
        loop {
            for c in comps.drain(..) {
                match c {
                    Completion::Wake { result } => {
                        if result < 0 {
                            let e = io::Error::from_raw_os_error(-result);
                            return Err(self.ctx("eventfd poll", e));
                        }
                        ring.drain_wake();
                        if self.stop.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        while let Ok(done) = back_rx.try_recv() {
                            self.commit(ring, done.index, done.buffers)?;
                        }
                        ring.arm_wake().map_err(|e| self.ctx("eventfd poll", e))?;
                    }
                    Completion::Entry {
                        index,
                        result,
                        buffers,
                    } => {
                        if result < 0 {
                            let e = io::Error::from_raw_os_error(-result);
                            if is_teardown(-result) {
                                log::debug!("fuse ring queue {}: connection ended: {e}", self.qid);
                                return Ok(());
                            }
                            return Err(self.ctx("entry command", e));
                        }
                        let header = buffers.header();
                        let blocks = self.serve.may_block(
                            &header[..IN_HEADER_SIZE],
                            &header[OP_IN_OFFSET..OP_IN_OFFSET + OP_IN_SIZE],
                        );
                        if blocks {
                            self.jobs.dispatch(Job {
                                index,
                                buffers,
                                back: back_tx.clone(),
                                wake: ring.waker(),
                            });
                        } else {
                            let mut buffers = buffers;
                            serve_entry(&*self.serve, &mut buffers, &mut scratch);
                            self.counter.fetch_add(1, Ordering::Relaxed);
                            self.commit(ring, index, buffers)?;
                        }
                    }
                }
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EBUSY: the CQ is full; reaping below makes room.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(self.ctx("io_uring_enter", e)),
            }
            ring.reap(&mut comps);
        }
    }

    fn commit(&self, ring: &mut FuseRing, index: usize, buffers: EntryBuffers) -> io::Result<()> {
        let commit_id = read_u64(buffers.header(), COMMIT_ID_OFFSET);
        ring.commit_and_fetch(index, self.qid, commit_id, buffers)
            .map_err(|e| self.ctx("COMMIT_AND_FETCH", e))
    }
}

/// Errors with which the kernel completes commands when the connection goes away.
fn is_teardown(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV
    )
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Serves the request in `buffers` and writes the reply in place: body in the payload,
/// `fuse_out_header` in `in_out`, `payload_sz`. A panic in the handler, an invalid errno or
/// a body larger than the buffer becomes `EIO`.
fn serve_entry(serve: &dyn RingServe, buffers: &mut EntryBuffers, scratch: &mut Vec<u8>) {
    let (header, payload) = buffers.parts_mut();
    let sz = u32::from_ne_bytes(
        header[PAYLOAD_SZ_OFFSET..PAYLOAD_SZ_OFFSET + 4]
            .try_into()
            .unwrap_or_default(),
    );
    let sz = (sz as usize).min(payload.len());
    scratch.clear();
    scratch.extend_from_slice(&payload[..sz]);
    let unique = read_u64(header, 8);
    let (in_header, rest) = header.split_at_mut(OP_IN_OFFSET);
    let op_in = &rest[..OP_IN_SIZE];
    let reply = catch_unwind(AssertUnwindSafe(|| {
        serve.serve(&in_header[..IN_HEADER_SIZE], op_in, scratch, payload)
    }))
    .unwrap_or_else(|_| {
        log::error!("fuse ring: request handler panicked (unique {unique})");
        RingReply {
            error: libc::EIO,
            len: 0,
        }
    });
    let payload_len = payload.len();
    let (error, len) = match reply {
        RingReply { error: 0, len } if len <= payload_len => (0, len),
        RingReply { error: 0, len } => {
            log::error!("fuse ring: reply of {len} bytes exceeds the {payload_len}-byte buffer");
            (libc::EIO, 0)
        }
        RingReply { error, .. } if (1..4096).contains(&error) => (error, 0),
        RingReply { error, .. } => {
            log::error!("fuse ring: invalid errno {error} in a reply");
            (libc::EIO, 0)
        }
    };
    // struct fuse_out_header { u32 len; i32 error; u64 unique; }
    let out_len = (OUT_HEADER_SIZE + len) as u32;
    in_header[0..4].copy_from_slice(&out_len.to_ne_bytes());
    in_header[4..8].copy_from_slice(&(-error).to_ne_bytes());
    in_header[8..16].copy_from_slice(&unique.to_ne_bytes());
    header_payload_sz(header, len as u32);
}

fn header_payload_sz(header: &mut [u8], len: u32) {
    header[PAYLOAD_SZ_OFFSET..PAYLOAD_SZ_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
}

/// The worker pool shared by the queues of one mount. It grows on demand: whenever more
/// jobs are unfinished than workers live, one more worker starts, up to one per entry
/// (`nr_queues × queue_depth`, the most requests that can be out at once), so a request
/// that waits for long (SETLKW) never keeps another blocking request from being served.
/// Workers beyond the first end after [`WORKER_IDLE`] without work; all end when the
/// queues are gone.
struct PoolShared {
    rx: Receiver<Job>,
    /// Jobs sent and not finished.
    pending: AtomicUsize,
    /// Workers running.
    live: AtomicUsize,
    max: usize,
    handles: Mutex<Vec<JoinHandle<()>>>,
    serve: Arc<dyn RingServe>,
    counter: Arc<AtomicU64>,
}

/// A queue's way into the pool.
struct PoolHandle {
    tx: Sender<Job>,
    shared: Arc<PoolShared>,
}

impl PoolHandle {
    fn dispatch(&self, job: Job) {
        let s = &self.shared;
        let pending = s.pending.fetch_add(1, Ordering::SeqCst) + 1;
        // The receiver lives in `shared`, which this handle holds: send cannot fail.
        let _ = self.tx.send(job);
        let live = s.live.load(Ordering::SeqCst);
        if pending > live
            && live < s.max
            && s.live
                .compare_exchange(live, live + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let shared = s.clone();
            match std::thread::Builder::new()
                .name("rfs-ring-worker".into())
                .spawn(move || worker(&shared))
            {
                Ok(h) => lock(&s.handles).push(h),
                Err(e) => {
                    s.live.fetch_sub(1, Ordering::SeqCst);
                    log::error!("fuse ring: cannot start a worker: {e}");
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PoolShared {
    /// Joins every worker, including any started while joining.
    fn join_all(&self) {
        loop {
            let handles = std::mem::take(&mut *lock(&self.handles));
            if handles.is_empty() {
                return;
            }
            for h in handles {
                let _ = h.join();
            }
        }
    }
}

fn worker(s: &PoolShared) {
    let mut scratch = Vec::new();
    loop {
        match s.rx.recv_timeout(WORKER_IDLE) {
            Ok(mut job) => {
                serve_entry(&*s.serve, &mut job.buffers, &mut scratch);
                s.counter.fetch_add(1, Ordering::Relaxed);
                s.pending.fetch_sub(1, Ordering::SeqCst);
                let wake = job.wake.clone();
                let back = job.back.clone();
                // The queue may be gone (teardown): then the entry is simply dropped.
                if back.send(job).is_ok() {
                    wake.wake();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if s.live.load(Ordering::SeqCst) > 1 {
                    let live = s.live.fetch_sub(1, Ordering::SeqCst) - 1;
                    if s.pending.load(Ordering::SeqCst) > live {
                        s.live.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                s.live.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::AtomicU32;
    use std::time::{Instant, SystemTime};

    use fuser::{
        Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, InitFlags, KernelConfig,
        ReplyAttr, ReplyEntry, Request,
    };

    use super::*;

    const FUSE_LOOKUP: u32 = 1;
    const FUSE_GETATTR: u32 = 3;
    /// What the ring answers for the root: size and mtime fuser's handler never gives.
    const RING_SIZE: u64 = 424_242;
    const RING_MTIME: u64 = 1_234_567_890;
    const DEV_SIZE: u64 = 1_111;

    /// Tests that flip the global `enable_uring` switch run one at a time.
    static SWITCH: Mutex<()> = Mutex::new(());

    /// Why a kernel test cannot run here, if it cannot.
    fn skip_reason() -> Option<&'static str> {
        if crate::sys::geteuid() != 0 {
            Some("not root")
        } else if !Path::new(ENABLE_URING).exists() {
            Some("no /sys/module/fuse/parameters/enable_uring (kernel without FUSE over io_uring)")
        } else if !Path::new("/dev/fuse").exists() {
            Some("no /dev/fuse")
        } else {
            None
        }
    }

    /// Sets `enable_uring` and puts back what it found when dropped, also on panic.
    struct EnableUring {
        found: String,
    }

    impl EnableUring {
        fn set(on: bool) -> Self {
            let found = std::fs::read_to_string(ENABLE_URING)
                .unwrap()
                .trim()
                .to_owned();
            std::fs::write(ENABLE_URING, if on { "Y" } else { "N" }).unwrap();
            Self { found }
        }
    }

    impl Drop for EnableUring {
        fn drop(&mut self) {
            if let Err(e) = std::fs::write(ENABLE_URING, &self.found) {
                eprintln!("cannot restore {ENABLE_URING} to {}: {e}", self.found);
            }
        }
    }

    /// The /dev/fuse side (served by fuser): a root whose size is `DEV_SIZE`.
    struct DevSide {
        uring_granted: Arc<AtomicBool>,
    }

    impl Filesystem for DevSide {
        fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
            config
                .set_max_write(128 * 1024)
                .map_err(|_| io::Error::other("max_write"))?;
            // Offered only while enable_uring is Y.
            let granted = config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
            self.uring_granted.store(granted, Ordering::SeqCst);
            Ok(())
        }

        fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
            let t = SystemTime::UNIX_EPOCH;
            let attr = FileAttr {
                ino,
                size: DEV_SIZE,
                blocks: 0,
                atime: t,
                mtime: t,
                ctime: t,
                crtime: t,
                kind: FileType::Directory,
                perm: 0o755,
                nlink: 2,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 4096,
                flags: 0,
            };
            reply.attr(&Duration::ZERO, &attr);
        }

        fn lookup(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
            reply.error(Errno::ENOENT);
        }
    }

    /// The ring side: GETATTR of anything is a directory of `RING_SIZE` bytes, LOOKUP is
    /// ENOENT; counts what it served and remembers the last looked-up name.
    #[derive(Default)]
    struct RingSide {
        getattrs: AtomicU32,
        lookups: AtomicU32,
        other: AtomicU32,
        last_other: AtomicU32,
        last_name: Mutex<Vec<u8>>,
    }

    fn opcode(in_header: &[u8]) -> u32 {
        u32::from_ne_bytes(in_header[4..8].try_into().unwrap())
    }

    impl RingServe for RingSide {
        fn serve(
            &self,
            in_header: &[u8],
            _op_in: &[u8],
            payload: &[u8],
            reply: &mut [u8],
        ) -> RingReply {
            match opcode(in_header) {
                FUSE_GETATTR => {
                    self.getattrs.fetch_add(1, Ordering::SeqCst);
                    let nodeid = read_u64(in_header, 16);
                    // struct fuse_attr_out { u64 attr_valid; u32 attr_valid_nsec; u32 dummy;
                    //   struct fuse_attr { u64 ino, size, blocks, atime, mtime, ctime;
                    //   u32 atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev,
                    //   blksize, flags; } }
                    let mut out = Vec::with_capacity(104);
                    out.extend_from_slice(&0u64.to_ne_bytes()); // attr_valid: no caching
                    out.extend_from_slice(&0u32.to_ne_bytes());
                    out.extend_from_slice(&0u32.to_ne_bytes());
                    for v in [nodeid, RING_SIZE, 0, RING_MTIME, RING_MTIME, RING_MTIME] {
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                    let mode = libc::S_IFDIR | 0o755;
                    for v in [0u32, 0, 0, mode, 2, 0, 0, 0, 4096, 0] {
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                    assert_eq!(out.len(), 104);
                    reply[..out.len()].copy_from_slice(&out);
                    RingReply {
                        error: 0,
                        len: out.len(),
                    }
                }
                FUSE_LOOKUP => {
                    self.lookups.fetch_add(1, Ordering::SeqCst);
                    *self.last_name.lock().unwrap() = payload.to_vec();
                    RingReply {
                        error: libc::ENOENT,
                        len: 0,
                    }
                }
                _ => {
                    self.other.fetch_add(1, Ordering::SeqCst);
                    self.last_other.store(opcode(in_header), Ordering::SeqCst);
                    RingReply {
                        error: libc::ENOSYS,
                        len: 0,
                    }
                }
            }
        }

        fn may_block(&self, in_header: &[u8], _op_in: &[u8]) -> bool {
            // Send lookups through the worker pool to exercise the hand-off.
            opcode(in_header) == FUSE_LOOKUP
        }
    }

    /// Unmounts (and joins fuser's thread) when dropped, also on panic.
    struct Mounted(Option<fuser::BackgroundSession>);

    impl Drop for Mounted {
        fn drop(&mut self) {
            if let Some(s) = self.0.take()
                && let Err(e) = s.umount_and_join()
            {
                eprintln!("unmount: {e}");
            }
        }
    }

    fn mount(dir: &Path) -> (Mounted, Arc<OwnedFd>, bool) {
        let granted = Arc::new(AtomicBool::new(false));
        let fs = DevSide {
            uring_granted: granted.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("rfs-ring-test".into())];
        let session = fuser::Session::new(fs, dir, &config).expect("mount");
        let dev = Arc::new(session.as_fd().try_clone_to_owned().expect("dup /dev/fuse"));
        let bg = session.spawn().expect("spawn fuser");
        (Mounted(Some(bg)), dev, granted.load(Ordering::SeqCst))
    }

    #[test]
    fn requests_go_through_the_ring_of_the_real_kernel() {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
        let _one = lock(&SWITCH);
        let _switch = EnableUring::set(true);
        let dir = tempfile::tempdir().unwrap();
        let (mounted, dev, granted) = mount(dir.path());
        assert!(
            granted,
            "the kernel offered FUSE_OVER_IO_URING and INIT took it"
        );
        let ring_side = Arc::new(RingSide::default());
        let opts = RingOptions {
            queue_depth: 4,
            ..RingOptions::default()
        };
        let rings = start(dev, opts, ring_side.clone()).expect("rings start");
        for i in 0..5 {
            let md = std::fs::metadata(dir.path()).expect("stat the mountpoint");
            assert_eq!(
                md.size(),
                RING_SIZE,
                "stat {i} answered by the ring, not /dev/fuse"
            );
            assert_eq!(md.mtime(), RING_MTIME as i64);
            let name = format!("nope-{i}");
            let err = std::fs::symlink_metadata(dir.path().join(&name)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert_eq!(
                *ring_side.last_name.lock().unwrap(),
                format!("{name}\0").into_bytes()
            );
        }
        let served = rings.served();
        let (g, l) = (
            ring_side.getattrs.load(Ordering::SeqCst),
            ring_side.lookups.load(Ordering::SeqCst),
        );
        eprintln!(
            "ring served {served}: {g} GETATTR, {l} LOOKUP, {} other (last opcode {})",
            ring_side.other.load(Ordering::SeqCst),
            ring_side.last_other.load(Ordering::SeqCst)
        );
        assert!(g >= 5 && l >= 5, "{g} GETATTR, {l} LOOKUP through the ring");
        assert_eq!(
            served,
            u64::from(g + l + ring_side.other.load(Ordering::SeqCst))
        );
        drop(mounted);
        // Unmounted: the kernel completes every entry with ENOTCONN and the queues end.
        rings.join();
    }

    /// Times stats through the ring with each set of ring flags (run by hand:
    /// `cargo test -p rfs-fs --lib fuse::ring -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn measure_ring_setup_flags() {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
        let _one = lock(&SWITCH);
        let _switch = EnableUring::set(true);
        let plain = RingSetup::default();
        let coop = RingSetup {
            coop_taskrun: true,
            ..plain
        };
        let single = RingSetup {
            single_issuer: true,
            ..plain
        };
        for round in 0..2 {
            for (name, setup) in [
                ("plain", plain),
                ("coop", coop),
                ("single", single),
                ("single+defer", DEFAULT_SETUP),
            ] {
                let dir = tempfile::tempdir().unwrap();
                let (mounted, dev, _) = mount(dir.path());
                let side = Arc::new(RingSide::default());
                let rings = start_with(dev, RingOptions::default(), setup, side.clone()).unwrap();
                let n = 20_000;
                let t = Instant::now();
                for _ in 0..n {
                    std::fs::metadata(dir.path()).unwrap();
                }
                let per = t.elapsed() / n;
                eprintln!(
                    "round {round} {name:>13}: {per:?} per stat, served {}",
                    rings.served()
                );
                drop(mounted);
                rings.join();
            }
        }
    }

    #[test]
    fn with_enable_uring_off_start_fails_at_once() {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
        let _one = lock(&SWITCH);
        let _switch = EnableUring::set(false);
        let dir = tempfile::tempdir().unwrap();
        let (_mounted, dev, granted) = mount(dir.path());
        assert!(!granted, "FUSE_OVER_IO_URING is not offered while off");
        let t = Instant::now();
        let err = start(
            dev.clone(),
            RingOptions::default(),
            Arc::new(RingSide::default()),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("enable_uring"), "{err}");
        // Past the up-front check, the kernel itself refuses REGISTER at once.
        let err = start_with(
            dev,
            RingOptions::default(),
            DEFAULT_SETUP,
            Arc::new(RingSide::default()),
        )
        .unwrap_err();
        assert_eq!(err.raw_os_error(), None);
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("REGISTER"), "{err}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        // The mount still works over /dev/fuse.
        assert_eq!(std::fs::metadata(dir.path()).unwrap().size(), DEV_SIZE);
    }

    /// A hand-made request in an entry, served without a kernel: header parsing, the private
    /// payload copy, and the reply encoding.
    #[test]
    fn serve_entry_encodes_the_reply_in_place() {
        struct Echo;
        impl RingServe for Echo {
            fn serve(&self, h: &[u8], op_in: &[u8], payload: &[u8], reply: &mut [u8]) -> RingReply {
                assert_eq!(h.len(), IN_HEADER_SIZE);
                assert_eq!(op_in.len(), OP_IN_SIZE);
                assert_eq!(op_in[0], 0xAB);
                match opcode(h) {
                    1 => {
                        reply[..payload.len()].copy_from_slice(payload);
                        RingReply {
                            error: 0,
                            len: payload.len(),
                        }
                    }
                    2 => RingReply {
                        error: 0,
                        len: reply.len() + 1,
                    },
                    3 => panic!("handler bug"),
                    _ => RingReply {
                        error: libc::EACCES,
                        len: 99,
                    },
                }
            }
            fn may_block(&self, _: &[u8], _: &[u8]) -> bool {
                false
            }
        }
        let mut scratch = Vec::new();
        for (op, want_err, want_len) in [
            (1u32, 0i32, 5usize),
            (2, -libc::EIO, 0),
            (3, -libc::EIO, 0),
            (4, -libc::EACCES, 0),
        ] {
            let mut b = EntryBuffers::new(FUSE_MIN_READ_BUFFER).unwrap();
            {
                let (h, p) = b.parts_mut();
                h[4..8].copy_from_slice(&op.to_ne_bytes());
                h[8..16].copy_from_slice(&77u64.to_ne_bytes());
                h[OP_IN_OFFSET] = 0xAB;
                h[COMMIT_ID_OFFSET..COMMIT_ID_OFFSET + 8].copy_from_slice(&77u64.to_ne_bytes());
                header_payload_sz(h, 5);
                p[..5].copy_from_slice(b"hello");
            }
            serve_entry(&Echo, &mut b, &mut scratch);
            let h = b.header();
            let len = u32::from_ne_bytes(h[0..4].try_into().unwrap()) as usize;
            let err = i32::from_ne_bytes(h[4..8].try_into().unwrap());
            let sz = u32::from_ne_bytes(
                h[PAYLOAD_SZ_OFFSET..PAYLOAD_SZ_OFFSET + 4]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(
                (err, sz as usize, len),
                (want_err, want_len, OUT_HEADER_SIZE + want_len),
                "op {op}"
            );
            assert_eq!(read_u64(h, 8), 77, "unique");
            assert_eq!(read_u64(h, COMMIT_ID_OFFSET), 77, "commit_id untouched");
            if op == 1 {
                assert_eq!(&b.payload()[..5], b"hello");
            }
        }
    }

    #[test]
    fn cpu_lists_and_memory_figures() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        let d = RingOptions::default();
        assert_eq!(d.memory_bytes(1), 8 * 135_456);
        assert_eq!(d.memory_bytes(2), 2_167_296);
        assert_eq!(d.memory_bytes(64), 69_353_472);
        assert_eq!(min_payload_size(4096, 0, 4096), 8192);
        assert_eq!(min_payload_size(128 * 1024, 32, 4096), 128 * 1024);
        assert_eq!(min_payload_size(4096, 256, 4096), 1024 * 1024);
        assert!(d.payload_size >= min_payload_size(128 * 1024, 32, 4096));
    }

    #[test]
    fn availability_explains_itself() {
        let off = UringAvailability {
            parameter_present: true,
            enabled: false,
            io_uring_disabled: Some(0),
        };
        assert!(off.problem().unwrap().contains("enable_uring is N"));
        let absent = UringAvailability {
            parameter_present: false,
            enabled: false,
            io_uring_disabled: None,
        };
        assert!(absent.problem().unwrap().contains("CONFIG_FUSE_IO_URING"));
        let disabled = UringAvailability {
            parameter_present: true,
            enabled: true,
            io_uring_disabled: Some(2),
        };
        assert!(disabled.problem().unwrap().contains("io_uring_disabled"));
        let ok = UringAvailability {
            parameter_present: true,
            enabled: true,
            io_uring_disabled: Some(0),
        };
        assert_eq!(ok.problem(), None);
    }
}
