//! [`Platform`]: which image of a multi-platform index to run (`linux/arm64/v8`).
//!
//! Names follow the OCI image index `platform` object, which uses Go's `GOOS`/`GOARCH` values
//! (`amd64`, not `x86_64`). Matching follows the usual normalisation of containerd's
//! `platforms` package: the common aliases (`x86_64`, `aarch64`) mean the Go names, and an
//! absent variant equals the architecture's default one (`arm64` is `v8`, `arm` is `v7`,
//! `amd64` is `v1`).

use std::fmt;

use super::Error;

/// An OS, architecture and optional CPU variant, as in an OCI image index entry's `platform`
/// object (and at the top level of an image config, which uses the same field names).
///
/// Serialised in the order the store has always written index entries (`architecture`, `os`,
/// `variant`), so rewriting `index.json` changes no bytes it does not mean to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub struct Platform {
    /// CPU architecture, as Go's `GOARCH` (`amd64`, `arm64`, `arm`, `ppc64le` …).
    pub architecture: String,
    /// Operating system, as Go's `GOOS` (`linux`).
    pub os: String,
    /// CPU variant (`v8` for arm64, `v7` for arm …); `None` means any, preferring the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Linux on this machine's architecture, with no variant.
    pub fn host() -> Platform {
        Platform {
            os: "linux".to_owned(),
            architecture: host_architecture().to_owned(),
            variant: None,
        }
    }

    /// The platform `spec` names (see [`Platform::parse`]), or this machine's if there is none:
    /// what a `--platform` option means.
    ///
    /// # Errors
    ///
    /// As [`Platform::parse`].
    pub fn parse_or_host(spec: Option<&str>) -> Result<Platform, Error> {
        spec.map_or_else(|| Ok(Platform::host()), Platform::parse)
    }

    /// Parses `os/architecture[/variant]`, such as `linux/arm64/v8` or `linux/amd64`.
    ///
    /// Architecture aliases are normalised (`x86_64` → `amd64`, `aarch64` → `arm64`).
    ///
    /// # Errors
    ///
    /// [`Error::Platform`] if there are not two or three non-empty parts.
    pub fn parse(spec: &str) -> Result<Platform, Error> {
        let invalid = |problem| Error::Platform {
            spec: spec.to_owned(),
            problem,
        };
        let parts: Vec<&str> = spec.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(invalid(
                "expected os/architecture or os/architecture/variant",
            ));
        }
        if parts.iter().any(|part| part.trim().is_empty()) {
            return Err(invalid("empty part"));
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: normalize_architecture(&parts[1].to_ascii_lowercase()).to_owned(),
            variant: parts.get(2).map(|variant| variant.to_ascii_lowercase()),
        })
    }

    /// How well `candidate` (an index entry) satisfies this wanted platform: `None` if not at
    /// all, else a rank where lower is better (0: same variant after normalisation; 1: another
    /// variant, accepted because no variant was asked for).
    pub fn rank(&self, candidate: &Platform) -> Option<u8> {
        if !self.os.eq_ignore_ascii_case(&candidate.os) {
            return None;
        }
        let architecture = normalize_architecture(&self.architecture);
        if architecture != normalize_architecture(&candidate.architecture) {
            return None;
        }
        let wanted = normalize_variant(architecture, self.variant.as_deref());
        let offered = normalize_variant(architecture, candidate.variant.as_deref());
        match (self.variant.is_some(), wanted == offered) {
            (_, true) => Some(0),
            (false, false) => Some(1),
            (true, false) => None,
        }
    }

    /// Whether `candidate` satisfies this wanted platform.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.rank(candidate).is_some()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// This machine's architecture as Go names it.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "loongarch64" => "loong64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

/// The Go name for common aliases of an architecture.
fn normalize_architecture(architecture: &str) -> &str {
    match architecture {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "i686" => "386",
        other => other,
    }
}

/// The variant an absent one stands for.
fn normalize_variant<'a>(architecture: &str, variant: Option<&'a str>) -> Option<&'a str> {
    match (architecture, variant) {
        ("arm64", None | Some("8")) => Some("v8"),
        ("arm", None | Some("7")) => Some("v7"),
        ("amd64", None) => Some("v1"),
        (_, variant) => variant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(spec: &str) -> Platform {
        Platform::parse(spec).expect(spec)
    }

    #[test]
    fn parse_and_display() {
        let arm = platform("linux/arm64/v8");
        assert_eq!(arm.os, "linux");
        assert_eq!(arm.architecture, "arm64");
        assert_eq!(arm.variant.as_deref(), Some("v8"));
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        assert_eq!(platform("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(platform("Linux/AArch64").to_string(), "linux/arm64");
    }

    #[test]
    fn parse_rejects_malformed_specs() {
        for spec in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/arm64/v8/x",
            "linux/ /v8",
        ] {
            assert!(
                matches!(Platform::parse(spec), Err(Error::Platform { .. })),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn host_is_linux_with_a_go_architecture_name() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_eq!(host.variant, None);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.architecture, "amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(host.architecture, "arm64");
        }
    }

    #[test]
    fn variants_match_after_normalisation() {
        let arm64 = platform("linux/arm64");
        let arm64_v8 = platform("linux/arm64/v8");
        assert_eq!(arm64.rank(&arm64_v8), Some(0));
        assert_eq!(arm64_v8.rank(&arm64), Some(0));
        assert_eq!(arm64.rank(&platform("linux/arm64/v9")), Some(1));
        assert_eq!(arm64_v8.rank(&platform("linux/arm64/v9")), None);
        assert!(!arm64.matches(&platform("linux/amd64")));
        assert!(!arm64.matches(&platform("windows/arm64")));
        assert!(platform("linux/amd64").matches(&platform("linux/x86_64")));
    }
}
