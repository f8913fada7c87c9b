//! Operation sequences on the union engine in-process (no mount), checked against a small
//! model of overlay semantics after every operation. The check is the `union_ops` fuzz
//! target's own (`fuzz/src/union_ops.rs`, included with `#[path]`); here it runs on
//! deterministic pseudo-random inputs with the stable toolchain.

// The fuzz crate needs the function public; this test crate does not.
#[allow(unreachable_pub)]
#[path = "../../fuzz/src/union_ops.rs"]
mod union_ops;

/// A fixed pseudo-random byte stream (xorshift), so failures reproduce.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn operation_sequences_match_the_model() {
    for seed in 0..150 {
        union_ops::union_ops(&bytes(seed, 5 * 64));
    }
}
