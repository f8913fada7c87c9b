//! A container's own network (`--net private`, the default): the sandbox makes a network
//! namespace, and `pasta` (from passt, the userspace stack podman uses rootless) joins it
//! before the container starts, configures its interface from the host's, and forwards the
//! ports `-p` publishes. pasta runs as the supervisor's child and ends with the container (or
//! with the supervisor). The container's gateway is not
//! mapped to the host's loopback (`--no-map-gw`), and nothing is forwarded that `-p` does not
//! ask for, in either direction.

use std::net::IpAddr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::unistd::Pid;

/// The program that connects a private network namespace.
pub(crate) const PASTA: &str = "pasta";

/// Which transport a published port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// `-p [IP:]HOST:CTR[/tcp|udp]`: a host port that reaches a container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortMapping {
    /// The host address it listens on (every address without one).
    pub(crate) host_ip: Option<IpAddr>,
    pub(crate) host_port: u16,
    pub(crate) container_port: u16,
    pub(crate) proto: Proto,
}

impl PortMapping {
    /// Parses `-p`'s argument.
    ///
    /// # Errors
    /// Not of the form `[IP:]HOST:CTR[/tcp|udp]`, or a port out of range.
    pub(crate) fn parse(text: &str) -> Result<PortMapping> {
        let bad = || format!("-p {text}: expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]");
        let (spec, proto) = match text.rsplit_once('/') {
            Some((s, "tcp")) => (s, Proto::Tcp),
            Some((s, "udp")) => (s, Proto::Udp),
            Some(_) => bail!(bad()),
            None => (text, Proto::Tcp),
        };
        let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
        let port = |p: &str| -> Result<u16> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{}: {p:?} is not a port", bad()),
            }
        };
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [ctr, host] => (None, port(host)?, port(ctr)?),
            [ctr, host, ip] => {
                let ip: IpAddr = ip
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .with_context(|| format!("{}: {ip:?} is not an address", bad()))?;
                (Some(ip), port(host)?, port(ctr)?)
            }
            _ => bail!(bad()),
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            proto,
        })
    }

    /// pasta's spec of this forward: `[ADDR/]HOST:CTR`.
    fn pasta_spec(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip}/{}:{}", self.host_port, self.container_port),
            None => format!("{}:{}", self.host_port, self.container_port),
        }
    }
}

impl std::fmt::Display for PortMapping {
    /// As `docker port` shows it: `127.0.0.1:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = self
            .host_ip
            .map_or("0.0.0.0".to_string(), |ip| ip.to_string());
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(
            f,
            "{ip}:{}->{}/{proto}",
            self.host_port, self.container_port
        )
    }
}

/// The arguments of the pasta that connects the network namespace of `pid`.
fn pasta_args(pid: Pid, ports: &[PortMapping], as_root: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--config-net",
        "--quiet",
        "--no-map-gw",
        "-T",
        "none",
        "-U",
        "none",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    // pasta leaves root for nobody unless told, and nobody may not join the namespace.
    if as_root {
        args.extend(["--runas".into(), "0".into()]);
    }
    for (proto, flag) in [(Proto::Tcp, "-t"), (Proto::Udp, "-u")] {
        let specs: Vec<String> = ports
            .iter()
            .filter(|p| p.proto == proto)
            .map(PortMapping::pasta_spec)
            .collect();
        args.push(flag.into());
        args.push(if specs.is_empty() {
            "none".into()
        } else {
            specs.join(",")
        });
    }
    args.push(pid.as_raw().to_string());
    args
}

/// A running pasta, ended (SIGKILL: it keeps no state) when dropped. It also dies with the
/// process that started it (`PR_SET_PDEATHSIG`), so a killed supervisor leaves none behind.
pub(crate) struct Pasta {
    child: std::process::Child,
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long pasta may take to configure the namespace and bind the ports.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects the network namespace of `pid` (the sandbox) with pasta, run in the foreground
/// as this process's child, and returns once its interface is configured and its ports listen
/// (pasta writes its pid file then). `dir` holds its pid file and its messages (`pasta.log`).
///
/// # Errors
/// pasta is missing, failed (its message says why, e.g. a host port in use), or was not ready
/// in time.
pub(crate) fn connect(pid: Pid, ports: &[PortMapping], dir: &std::path::Path) -> Result<Pasta> {
    let as_root = nix::unistd::geteuid().is_root();
    let pid_file = dir.join("pasta.pid");
    let log_path = dir.join("pasta.log");
    let _ = std::fs::remove_file(&pid_file);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(PASTA);
    cmd.arg("--foreground")
        .arg("--pid")
        .arg(&pid_file)
        .args(pasta_args(pid, ports, as_root))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    rfs_runner::syscall::kill_with_parent_on_exec(&mut cmd);
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{PASTA} is not installed: install the passt package for --net private, or use \
                 --net host or --net none"
            )
        } else {
            anyhow::Error::new(e).context(format!("starting {PASTA}"))
        }
    })?;
    let mut pasta = Pasta { child };
    let start = std::time::Instant::now();
    loop {
        if std::fs::read_to_string(&pid_file).is_ok_and(|t| !t.trim().is_empty()) {
            return Ok(pasta);
        }
        let exited = pasta.child.try_wait().context("waiting for pasta")?;
        if exited.is_some() || start.elapsed() > READY_WITHIN {
            let why: Vec<String> = std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
                .map(str::to_string)
                .collect();
            let status = exited.map_or("not ready in time".to_string(), |s| s.to_string());
            let tun_usable = nix::unistd::access(
                "/dev/net/tun",
                nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
            )
            .is_ok();
            let hint = if tun_usable {
                ""
            } else {
                " (/dev/net/tun is not open to this user: distributions make it mode 0666)"
            };
            bail!(
                "connecting the container's network with {PASTA} ({status}): {}{hint}",
                why.join("; ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_parse_as_docker_writes_them() {
        let p = PortMapping::parse("127.0.0.1:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (8080, 80, Proto::Tcp)
        );
        assert_eq!(p.to_string(), "127.0.0.1:8080->80/tcp");
        let p = PortMapping::parse("5353:53/udp").unwrap();
        assert_eq!((p.host_ip, p.proto), (None, Proto::Udp));
        assert_eq!(p.to_string(), "0.0.0.0:5353->53/udp");
        let p = PortMapping::parse("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        for bad in [
            "80",
            "a:80",
            "8080:0",
            "1.2.3:8080:80",
            "8080:80/sctp",
            "70000:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pasta_forwards_only_what_is_published() {
        let ports = [
            PortMapping::parse("127.0.0.1:8080:80").unwrap(),
            PortMapping::parse("9000:90").unwrap(),
        ];
        let args = pasta_args(Pid::from_raw(42), &ports, false);
        let joined = args.join(" ");
        assert!(joined.contains("-t 127.0.0.1/8080:80,9000:90"), "{joined}");
        assert!(
            joined.contains("-u none") && joined.contains("-T none -U none"),
            "{joined}"
        );
        assert!(joined.contains("--no-map-gw") && !joined.contains("--runas"));
        assert_eq!(args.last().unwrap(), "42");
        let root = pasta_args(Pid::from_raw(42), &[], true).join(" ");
        assert!(
            root.contains("--runas 0") && root.contains("-t none"),
            "{root}"
        );
    }
}
