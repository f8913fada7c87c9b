//! The `unsafe` half of the FUSE-over-io_uring transport (`fuse::ring` is the safe half).
//!
//! Three things here need `unsafe`, each behind a safe type:
//! - [`EntryBuffers`]: the two heap buffers of one ring entry (the 288-byte
//!   `fuse_uring_req_header` and the payload buffer) at addresses that never move, because
//!   the kernel keeps pointers to them from REGISTER until the connection ends. They are
//!   raw allocations reached only through `&self`/`&mut self` methods, so Rust never holds a
//!   reference into them while the kernel may write.
//! - [`FuseRing`]: one io_uring (SQE128) of one queue. Pushing an SQE is `unsafe` in the
//!   `io-uring` crate because the memory it names must stay valid until its completion. The
//!   ring therefore takes each entry's [`EntryBuffers`] by value when it pushes REGISTER or
//!   COMMIT_AND_FETCH and gives them back only with that command's completion
//!   ([`Completion::Entry`]): while the kernel owns a command, nobody in userspace can touch
//!   its buffers. When the ring is dropped, the io_uring fd is closed *before* the buffers it
//!   still holds are freed (field order), and closing it kills the ring's references so that
//!   any later delivery attempt runs with `IO_URING_F_TASK_DEAD` and copies nothing.
//! - [`Wake`]: an eventfd a worker thread writes to wake the queue thread, whose ring keeps a
//!   POLL_ADD armed on it.
//!
//! Only the thread that owns a [`FuseRing`] ever touches its submission queue: it is `Send`
//! (moved into the queue thread at start) but all its methods take `&mut self`.
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

/// Size of `struct fuse_uring_req_header` (ABI 7.42): `in_out[128]`, `op_in[128]`, and the
/// 32-byte `fuse_uring_ent_in_out`.
pub const HEADER_SIZE: usize = 288;
/// Offset of `in_out` (the `fuse_in_header` on fetch, the `fuse_out_header` on commit).
pub const IN_OUT_OFFSET: usize = 0;
/// Offset of `op_in`, the request's fixed per-op struct (`in_args[0]`).
pub const OP_IN_OFFSET: usize = 128;
/// Size of `op_in` (and of `in_out`).
pub const OP_IN_SIZE: usize = 128;
/// Offset of `fuse_uring_ent_in_out.commit_id` (u64).
pub const COMMIT_ID_OFFSET: usize = 256 + 8;
/// Offset of `fuse_uring_ent_in_out.payload_sz` (u32).
pub const PAYLOAD_SZ_OFFSET: usize = 256 + 16;

/// `FUSE_IO_URING_CMD_REGISTER`.
const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_COMMIT_AND_FETCH: u32 = 2;
/// The `user_data` of the eventfd poll; entry commands use their entry index.
const WAKE_USER_DATA: u64 = u64::MAX;
/// Alignment of the buffers: a page, so a payload never straddles more pages than needed.
const ALIGN: usize = 4096;

/// One owned, zeroed, page-aligned heap allocation at a fixed address.
struct RawBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl RawBuf {
    fn new(len: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(len.max(1), ALIGN).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring buffer of {len} bytes: {e}"),
            )
        })?;
        // SAFETY: `layout` has a non-zero size (max(1)) and a valid power-of-two alignment.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("ring buffer of {len} bytes"),
            )
        })?;
        Ok(Self { ptr, layout })
    }

    fn slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised (zeroed, then written) bytes
        // owned by `self`; the shared borrow of `self` keeps Rust writers away, and the kernel
        // writes only while the owning `EntryBuffers` sits inside a `FuseRing` (see module doc).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn slice_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed(self.layout)` and is freed exactly once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The buffers of one ring entry: header (`fuse_uring_req_header`) and payload, plus the
/// two-iovec array REGISTER points the kernel at. Moving this value never moves the buffers.
///
/// Ownership is the hand-off protocol: whoever holds the value may read and write the
/// buffers; a [`FuseRing`] holds it while the kernel owns the entry's command.
pub struct EntryBuffers {
    header: RawBuf,
    payload: RawBuf,
    payload_len: usize,
    /// `[header, payload]` as `struct iovec`, read by the kernel when it issues REGISTER.
    iov: Box<[libc::iovec; 2]>,
}

// SAFETY: the raw pointers are uniquely owned heap allocations (no aliasing outside this
// value and the kernel's use described in the module doc), so the value may move between
// threads like a `Box<[u8]>`.
unsafe impl Send for EntryBuffers {}

impl EntryBuffers {
    /// Allocates zeroed buffers: a header of [`HEADER_SIZE`] and a payload of `payload_len`.
    ///
    /// # Errors
    /// `OutOfMemory` when the allocation fails, `InvalidInput` for an impossible size.
    pub fn new(payload_len: usize) -> io::Result<Self> {
        let mut header = RawBuf::new(HEADER_SIZE)?;
        let mut payload = RawBuf::new(payload_len)?;
        let iov = Box::new([
            libc::iovec {
                iov_base: header.ptr.as_ptr().cast(),
                iov_len: HEADER_SIZE,
            },
            libc::iovec {
                iov_base: payload.ptr.as_ptr().cast(),
                iov_len: payload_len,
            },
        ]);
        // Touch both so that they are faulted in by us, not by the kernel's first copy.
        header.slice_mut()[0] = 0;
        payload.slice_mut()[0] = 0;
        Ok(Self {
            header,
            payload,
            payload_len,
            iov,
        })
    }

    /// The header buffer ([`HEADER_SIZE`] bytes).
    pub fn header(&self) -> &[u8] {
        &self.header.slice()[..HEADER_SIZE]
    }

    /// The payload buffer (its full size).
    pub fn payload(&self) -> &[u8] {
        &self.payload.slice()[..self.payload_len]
    }

    /// Both buffers at once, writable: `(header, payload)`.
    pub fn parts_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let len = self.payload_len;
        (
            &mut self.header.slice_mut()[..HEADER_SIZE],
            &mut self.payload.slice_mut()[..len],
        )
    }
}

/// What one completion brought back.
pub enum Completion {
    /// An entry's command completed: `result` is 0 when a request was fetched into
    /// `buffers`, or a negative errno (teardown: `-ENOTCONN`, `-ECONNABORTED`, ...;
    /// refusal: `-EOPNOTSUPP`, `-EINVAL`, ...). The buffers are the caller's again.
    Entry {
        /// The entry index given to [`FuseRing::register`].
        index: usize,
        /// The command's result (`cqe.res`).
        result: i32,
        /// The entry's buffers, back from the kernel.
        buffers: EntryBuffers,
    },
    /// The eventfd poll fired (or failed with `result` < 0); re-arm with
    /// [`FuseRing::arm_wake`].
    Wake {
        /// The poll's result.
        result: i32,
    },
}

/// Setup flags of a queue's ring beyond `IORING_SETUP_SQE128`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingSetup {
    /// `IORING_SETUP_SINGLE_ISSUER`.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN` (needs `single_issuer`).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN`.
    pub coop_taskrun: bool,
}

/// The io_uring of one FUSE queue (see module doc for the ownership rules).
pub struct FuseRing {
    // Field order matters: `ring` is dropped (its fd closed) before `in_kernel` frees the
    // buffers the kernel may still point at.
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    in_kernel: Vec<Option<EntryBuffers>>,
    dev: Arc<OwnedFd>,
    wake: Arc<File>,
}

impl FuseRing {
    /// Creates a ring for `depth` entries plus the wake poll, on `dev` (a /dev/fuse fd).
    ///
    /// # Errors
    /// Those of `io_uring_setup(2)`: `EPERM` when `kernel.io_uring_disabled` forbids it,
    /// `ENOSYS` without io_uring, `EINVAL` for unknown flags; and of `eventfd(2)`.
    pub fn new(dev: Arc<OwnedFd>, depth: u16, setup: RingSetup) -> io::Result<Self> {
        let entries = u32::from(depth) + 1;
        let mut b = IoUring::<squeue::Entry128, cqueue::Entry>::builder();
        // Every command of this ring is in flight at most once: depth + 1 CQEs at most.
        b.setup_cqsize(entries.next_power_of_two() * 2);
        if setup.single_issuer {
            b.setup_single_issuer();
        }
        if setup.defer_taskrun {
            b.setup_defer_taskrun();
        }
        if setup.coop_taskrun {
            b.setup_coop_taskrun();
        }
        let ring = b.build(entries)?;
        // SAFETY: eventfd has no memory arguments; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh eventfd that nothing else owns.
        let wake = Arc::new(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        let mut in_kernel = Vec::new();
        in_kernel.resize_with(usize::from(depth), || None);
        Ok(Self {
            ring,
            in_kernel,
            dev,
            wake,
        })
    }

    /// A handle that wakes this ring's thread (through the armed poll).
    pub fn waker(&self) -> Wake {
        Wake(self.wake.clone())
    }

    fn push(&mut self, entry: &squeue::Entry128) -> io::Result<()> {
        // SAFETY: every SQE pushed here names only memory this ring keeps alive until the
        // command completes or the ring is closed: the iovec array and buffers of an
        // `EntryBuffers` stored in `in_kernel` (REGISTER), nothing (COMMIT_AND_FETCH and
        // POLL_ADD, whose fds `dev` and `wake` the ring holds).
        unsafe { self.ring.submission().push(entry) }.map_err(|_| {
            io::Error::other("io_uring submission queue full (more commands than entries)")
        })
    }

    fn cmd(&self, cmd_op: u32, qid: u16, commit_id: u64) -> opcode::UringCmd80 {
        // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
        opcode::UringCmd80::new(types::Fd(self.dev.as_raw_fd()), cmd_op).cmd(cmd)
    }

    fn park(&mut self, index: usize, buffers: EntryBuffers) -> io::Result<()> {
        let slot = self.in_kernel.get_mut(index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring entry {index} out of range"),
            )
        })?;
        if slot.is_some() {
            return Err(io::Error::other(format!(
                "ring entry {index} already in the kernel"
            )));
        }
        *slot = Some(buffers);
        Ok(())
    }

    /// Queues REGISTER of entry `index` on queue `qid` (submitted by the next submit).
    ///
    /// # Errors
    /// `InvalidInput` for an index beyond the depth, and a full submission queue.
    pub fn register(&mut self, index: usize, qid: u16, buffers: EntryBuffers) -> io::Result<()> {
        let iov_addr = buffers.iov.as_ptr() as u64;
        self.park(index, buffers)?;
        let sqe = self
            .cmd(CMD_REGISTER, qid, 0)
            .addr(Some(iov_addr))
            .build()
            .user_data(index as u64);
        // `len` = the number of iovecs; UringCmd80 has no setter for it.
        let sqe = with_len(sqe, 2);
        self.push(&sqe)
            .inspect_err(|_| self.in_kernel[index] = None)
    }

    /// Queues COMMIT_AND_FETCH of entry `index`: the reply already written into `buffers`
    /// is committed for `commit_id`, and the entry waits for the next request.
    ///
    /// # Errors
    /// As [`FuseRing::register`].
    pub fn commit_and_fetch(
        &mut self,
        index: usize,
        qid: u16,
        commit_id: u64,
        buffers: EntryBuffers,
    ) -> io::Result<()> {
        self.park(index, buffers)?;
        let sqe = self
            .cmd(CMD_COMMIT_AND_FETCH, qid, commit_id)
            .build()
            .user_data(index as u64);
        self.push(&sqe)
            .inspect_err(|_| self.in_kernel[index] = None)
    }

    /// Arms the one-shot poll on the wake eventfd.
    ///
    /// # Errors
    /// A full submission queue.
    pub fn arm_wake(&mut self) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(self.wake.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(WAKE_USER_DATA);
        self.push(&squeue::Entry128::from(sqe))
    }

    /// Resets the wake eventfd after its poll fired.
    pub fn drain_wake(&self) {
        let mut buf = [0u8; 8];
        // Non-blocking: EAGAIN when already drained, which is fine.
        let _ = (&*self.wake).read(&mut buf);
    }

    /// Submits what was queued without waiting.
    ///
    /// # Errors
    /// Those of `io_uring_enter(2)`.
    pub fn submit(&mut self) -> io::Result<usize> {
        self.ring.submit()
    }

    /// Submits what was queued and waits for at least `want` completions.
    ///
    /// # Errors
    /// Those of `io_uring_enter(2)` (`EINTR` on a signal).
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        self.ring.submit_and_wait(want)
    }

    /// Moves every available completion into `out`, handing entry buffers back.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        let cqes: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (user_data, result) in cqes {
            if user_data == WAKE_USER_DATA {
                out.push(Completion::Wake { result });
                continue;
            }
            let index = user_data as usize;
            match self.in_kernel.get_mut(index).and_then(Option::take) {
                Some(buffers) => out.push(Completion::Entry {
                    index,
                    result,
                    buffers,
                }),
                None => log::error!("fuse ring: completion for entry {index} not in the kernel"),
            }
        }
    }

    /// How many entry commands the kernel holds now.
    pub fn in_kernel(&self) -> usize {
        self.in_kernel.iter().filter(|s| s.is_some()).count()
    }
}

/// Sets the SQE's `len` field, which `UringCmd80` leaves 0 (REGISTER wants the iovec count).
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]` over the 128-byte `io_uring_sqe` plus the command
    // tail; reading and writing it as plain bytes is sound (all fields are integers), and
    // `len` lives at offset 24 as a native-endian u32 in `struct io_uring_sqe`.
    unsafe {
        let mut bytes: [u8; 128] = std::mem::transmute(sqe);
        bytes[24..28].copy_from_slice(&len.to_ne_bytes());
        std::mem::transmute::<[u8; 128], squeue::Entry128>(bytes)
    }
}

/// Wakes a queue thread: writes 1 to its eventfd.
#[derive(Clone)]
pub struct Wake(Arc<File>);

impl Wake {
    /// Wakes the ring's thread; harmless if the ring is gone.
    pub fn wake(&self) {
        let _ = (&*self.0).write(&1u64.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqe_len_lands_at_the_kernel_offset() {
        let sqe = opcode::UringCmd80::new(types::Fd(7), CMD_REGISTER)
            .addr(Some(0x1234))
            .build()
            .user_data(5);
        let sqe = with_len(sqe, 2);
        // SAFETY: plain bytes of a plain struct, as in `with_len`.
        let bytes: [u8; 128] = unsafe { std::mem::transmute(sqe) };
        assert_eq!(bytes[0], opcode::UringCmd80::CODE, "opcode");
        assert_eq!(i32::from_ne_bytes(bytes[4..8].try_into().unwrap()), 7, "fd");
        assert_eq!(
            u32::from_ne_bytes(bytes[8..12].try_into().unwrap()),
            CMD_REGISTER,
            "cmd_op"
        );
        assert_eq!(
            u64::from_ne_bytes(bytes[16..24].try_into().unwrap()),
            0x1234,
            "addr"
        );
        assert_eq!(
            u32::from_ne_bytes(bytes[24..28].try_into().unwrap()),
            2,
            "len"
        );
        assert_eq!(
            u64::from_ne_bytes(bytes[32..40].try_into().unwrap()),
            5,
            "user_data"
        );
    }

    #[test]
    fn entry_buffers_have_the_asked_sizes_and_stay_put() {
        let mut b = EntryBuffers::new(10_000).unwrap();
        let before = b.header().as_ptr();
        b.parts_mut().1[9_999] = 7;
        let moved = b;
        assert_eq!(moved.header().as_ptr(), before);
        assert_eq!(moved.header().len(), HEADER_SIZE);
        assert_eq!(moved.payload().len(), 10_000);
        assert_eq!(moved.payload()[9_999], 7);
        assert_eq!(moved.iov[1].iov_len, 10_000);
    }
}
