//! Content digests: [`Digest`] (sha256, written `sha256:<64 hex>` as in the OCI image spec) and
//! [`HashingReader`], which hashes bytes as they stream past so a blob is read once, not once to
//! use and once to check.
//!
//! rfs only accepts sha256 (DESIGN §2 rule 6): it is the only algorithm OCI registries and
//! `docker save` use for layers, and refusing the others keeps every store name one length.
//! Parsing follows the OCI `descriptor.md` grammar for the `sha256` algorithm: the encoded part is
//! exactly 64 lowercase hex digits.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The only algorithm rfs accepts, as it appears before the `:` of a digest string.
pub const ALGORITHM: &str = "sha256";

/// Length in bytes of a sha256 digest.
const LEN: usize = 32;

/// How much of a rejected digest string an error repeats; input can be hostile and long.
const MAX_ECHO: usize = 80;

/// A sha256 content digest.
///
/// Displays (and serialises, for JSON manifests) as `sha256:<64 lowercase hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; LEN]);

/// Why a digest string was rejected, or why content did not match its digest.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The algorithm part is not `sha256`.
    #[error("digest `{digest}` uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm {
        /// The rejected digest string (possibly shortened).
        digest: String,
    },
    /// The string is not `sha256:` followed by 64 lowercase hex digits.
    #[error("digest `{digest}` is malformed: expected `sha256:` and 64 lowercase hex digits")]
    Malformed {
        /// The rejected digest string (possibly shortened).
        digest: String,
    },
    /// The content hashed to something other than what was expected.
    #[error("content has digest {actual}, expected {expected}")]
    Mismatch {
        /// The digest the content should have had.
        expected: Digest,
        /// The digest the content actually has.
        actual: Digest,
    },
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    ///
    /// # Errors
    ///
    /// [`DigestError::UnsupportedAlgorithm`] for any other algorithm (`sha512:…`),
    /// [`DigestError::Malformed`] for a missing `:` or an encoded part that is not 64 lowercase
    /// hex digits.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(DigestError::Malformed { digest: echo(s) });
        };
        if algorithm != ALGORITHM {
            return Err(DigestError::UnsupportedAlgorithm { digest: echo(s) });
        }
        Digest::from_hex(encoded).map_err(|_| DigestError::Malformed { digest: echo(s) })
    }

    /// Parses the bare 64 lowercase hex digits of a sha256 digest (a store file name).
    ///
    /// # Errors
    ///
    /// [`DigestError::Malformed`] if `hex` is not exactly 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        let malformed = || DigestError::Malformed { digest: echo(hex) };
        let digits = hex.as_bytes();
        if digits.len() != 2 * LEN {
            return Err(malformed());
        }
        let mut bytes = [0u8; LEN];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or_else(malformed)?;
            let low = hex_value(pair[1]).ok_or_else(malformed)?;
            *byte = (high << 4) | low;
        }
        Ok(Digest(bytes))
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; LEN]) -> Digest {
        Digest(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; LEN] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the `sha256:` prefix (as in `blobs/sha256/<hex>`).
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(2 * LEN);
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// The digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }
}

/// The value of one lowercase hex digit; uppercase is rejected as the OCI grammar requires.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// A copy of rejected input short enough to put in an error message.
fn echo(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ALGORITHM}:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A reader that computes the sha256 of everything read through it.
///
/// Wrap the source, read it to the end (directly, or through a decompressor or a copy), then call
/// [`finish`](HashingReader::finish) for the digest or [`verify`](HashingReader::verify) to
/// compare it with the expected one. Only bytes actually returned by `read` are hashed, so the
/// digest covers the whole stream only if the caller read to EOF.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes_read: u64,
}

impl<R> HashingReader<R> {
    /// Starts hashing what is read from `inner`.
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes_read: 0,
        }
    }

    /// How many bytes have been read (and hashed) so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The digest of the bytes read so far, and their count.
    pub fn finish(self) -> (Digest, u64) {
        (Digest(self.hasher.finalize().into()), self.bytes_read)
    }

    /// The wrapped reader, the digest of the bytes read so far, and their count.
    pub fn into_parts(self) -> (R, Digest, u64) {
        (
            self.inner,
            Digest(self.hasher.finalize().into()),
            self.bytes_read,
        )
    }

    /// Compares the digest of the bytes read so far with `expected`; returns their count.
    ///
    /// # Errors
    ///
    /// [`DigestError::Mismatch`] naming both digests.
    pub fn verify(self, expected: &Digest) -> Result<u64, DigestError> {
        let (actual, bytes_read) = self.finish();
        if actual == *expected {
            Ok(bytes_read)
        } else {
            Err(DigestError::Mismatch {
                expected: *expected,
                actual,
            })
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        self.hasher.update(&buf[..count]);
        // `count <= buf.len()`, which fits in u64 on every supported target.
        self.bytes_read += count as u64;
        Ok(count)
    }
}

impl<R> fmt::Debug for HashingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashingReader")
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("abc"), from FIPS 180-2 appendix B.1.
    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    /// sha256 of no bytes.
    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_display_round_trip() {
        let digest = Digest::parse(ABC).expect("valid digest");
        assert_eq!(digest.to_string(), ABC);
        assert_eq!(format!("{digest:?}"), ABC);
        assert_eq!(digest.hex(), &ABC[7..]);
        assert_eq!(ABC.parse::<Digest>().expect("FromStr"), digest);
        assert_eq!(Digest::from_hex(&ABC[7..]).expect("hex"), digest);
        assert_eq!(Digest::from_bytes(*digest.as_bytes()), digest);
    }

    #[test]
    fn of_bytes_matches_known_vectors() {
        assert_eq!(Digest::of_bytes(b"abc").to_string(), ABC);
        assert_eq!(Digest::of_bytes(b"").to_string(), EMPTY);
    }

    #[test]
    fn other_algorithms_are_unsupported() {
        for text in ["sha512:abcd", "md5:00", "SHA256:abc"] {
            assert!(
                matches!(
                    Digest::parse(text),
                    Err(DigestError::UnsupportedAlgorithm { .. })
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_hex_is_rejected() {
        let upper = ABC.to_uppercase().replacen("SHA256", "sha256", 1);
        let cases = [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &ABC[..ABC.len() - 1],
            &format!("{ABC}0"),
            &upper,
            &format!("sha256:{}", ABC[7..].replace('a', "g")),
            &format!("{}é", &ABC[..ABC.len() - 2]),
        ];
        for text in cases {
            assert!(
                matches!(Digest::parse(text), Err(DigestError::Malformed { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn errors_shorten_long_input() {
        let long = format!("sha256:{}", "z".repeat(10_000));
        let message = Digest::parse(&long).expect_err("malformed").to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let digest = Digest::parse(ABC).expect("valid");
        let json = serde_json::to_string(&digest).expect("serialise");
        assert_eq!(json, format!("\"{ABC}\""));
        let back: Digest = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, digest);
        assert!(serde_json::from_str::<Digest>("\"sha512:00\"").is_err());
    }

    #[test]
    fn hashing_reader_verifies_what_it_streamed() {
        let mut reader = HashingReader::new(&b"abc"[..]);
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).expect("read");
        assert_eq!(reader.bytes_read(), 3);
        let expected = Digest::parse(ABC).expect("valid");
        assert_eq!(reader.verify(&expected).expect("match"), 3);
    }

    #[test]
    fn hashing_reader_reports_a_mismatch_with_both_digests() {
        let mut reader = HashingReader::new(&b"abd"[..]);
        io::copy(&mut reader, &mut io::sink()).expect("read");
        let expected = Digest::parse(ABC).expect("valid");
        match reader.verify(&expected) {
            Err(DigestError::Mismatch {
                expected: e,
                actual,
            }) => {
                assert_eq!(e, expected);
                assert_eq!(actual, Digest::of_bytes(b"abd"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }
}
