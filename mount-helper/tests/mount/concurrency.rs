//! Concurrency: a long copy-up must not stall the rest of the filesystem. The data of a big
//! lower file is copied into the work dir while other threads look up, read, create and list
//! other files; they must all finish while the copy-up is still running.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{MountGuard, Scratch};

#[test]
fn a_long_copy_up_does_not_stall_other_files() {
    let s = Scratch::new();
    let lower = s.mkdir("lower");
    std::fs::create_dir_all(lower.join("other")).unwrap();
    for i in 0..50 {
        std::fs::write(lower.join(format!("other/f{i}")), format!("file {i}\n")).unwrap();
    }
    // 768 MiB of non-zero data (zero chunks would be copied as holes, which is instant).
    {
        let mut f = std::fs::File::create(lower.join("big")).unwrap();
        let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8 + 1).collect();
        for _ in 0..768 {
            f.write_all(&chunk).unwrap();
        }
    }
    let upper = s.mkdir("upper");
    let work = s.mkdir("work");
    let mnt = s.mkdir("mnt");
    let guard = MountGuard::rfs_dirs(&lower, &upper, &work, &mnt);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = Arc::clone(&done);
        let big = mnt.join("big");
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(big).unwrap();
            f.write_all(b"appended").unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    // Wait until the copy is under way: its temporary file appears in the work dir.
    let start = Instant::now();
    loop {
        let busy = std::fs::read_dir(&work).unwrap().next().is_some();
        if busy {
            break;
        }
        assert!(
            !done.load(Ordering::SeqCst),
            "copy-up finished before it could be observed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "copy-up never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Meanwhile: lookups, reads, a create, a listing, a mkdir, in other places.
    for i in 0..50 {
        let text = std::fs::read_to_string(mnt.join(format!("other/f{i}"))).unwrap();
        assert_eq!(text, format!("file {i}\n"));
    }
    std::fs::write(mnt.join("other/new"), "new").unwrap();
    std::fs::create_dir(mnt.join("newdir")).unwrap();
    assert_eq!(std::fs::read_dir(mnt.join("other")).unwrap().count(), 51);
    assert!(
        !done.load(Ordering::SeqCst),
        "the other operations waited for the copy-up to finish"
    );
    writer.join().unwrap();
    let meta = std::fs::metadata(mnt.join("big")).unwrap();
    assert_eq!(meta.len(), (768 << 20) + 8);
    guard.unmount().unwrap();
}
