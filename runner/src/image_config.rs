//! The parts of an OCI (or docker) image config that `rfs run` honours, with docker's
//! precedence between the image and the command line: `Env` (plus a default `PATH`),
//! `Entrypoint` and `Cmd`, `WorkingDir`, `User`. Plain values in, plain values out: the
//! caller reads them from its typed image config (the runner does not depend on the image
//! library) and turns the result into a [`crate::RunSpec`].

/// `PATH` when the image sets none (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The error for a container with nothing to run.
#[derive(Debug, thiserror::Error)]
#[error("no command: the image has no Entrypoint or Cmd; give one after the image")]
pub struct NoCommand;

/// What an image gives a container run from it unless the command line says otherwise: the
/// parts of its config `rfs run` honours.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageDefaults {
    /// `Env`, `KEY=VALUE`.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir` (empty if unset).
    pub working_dir: String,
    /// `User` (empty if unset).
    pub user: String,
}

/// Docker's precedence: `--entrypoint` replaces the image's entrypoint and drops its Cmd;
/// a CMD on the command line replaces the image's Cmd.
///
/// # Errors
/// [`NoCommand`] if neither gives a command.
pub fn command_line(
    image: &ImageDefaults,
    entrypoint: Option<&str>,
    cmd: &[String],
) -> Result<Vec<String>, NoCommand> {
    let (mut argv, default_cmd) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    argv.extend(if cmd.is_empty() {
        default_cmd
    } else {
        cmd.to_vec()
    });
    if argv.is_empty() {
        return Err(NoCommand);
    }
    Ok(argv)
}

/// The image's Env, a default PATH, HOSTNAME, TERM with a tty, then `-e` (a bare `KEY` takes
/// rfs's own value, or is dropped if unset).
pub fn environment(
    image: &ImageDefaults,
    overrides: &[String],
    hostname: &str,
    tty: bool,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or_default().to_string();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    };
    set(format!("PATH={DEFAULT_PATH}"));
    set(format!("HOSTNAME={hostname}"));
    if tty {
        set("TERM=xterm".to_string());
    }
    for kv in &image.env {
        set(kv.clone());
    }
    for kv in overrides {
        if kv.contains('=') {
            set(kv.clone());
        } else if let Ok(v) = std::env::var(kv) {
            set(format!("{kv}={v}"));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busybox_like() -> ImageDefaults {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ImageDefaults {
            env: s(&["PATH=/bin", "FOO=bar"]),
            entrypoint: s(&["/bin/sh", "-c"]),
            cmd: s(&["echo hi"]),
            working_dir: "/home/app".into(),
            user: "app".into(),
        }
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let img = busybox_like();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&img, None, &[]).unwrap(),
            s(&["/bin/sh", "-c", "echo hi"])
        );
        assert_eq!(
            command_line(&img, None, &s(&["exit 3"])).unwrap(),
            s(&["/bin/sh", "-c", "exit 3"])
        );
        assert_eq!(
            command_line(&img, Some("/bin/id"), &[]).unwrap(),
            s(&["/bin/id"])
        );
        assert_eq!(
            command_line(&img, Some(""), &s(&["ls", "/"])).unwrap(),
            s(&["ls", "/"])
        );
        assert!(command_line(&ImageDefaults::default(), None, &[]).is_err());
    }

    #[test]
    fn environment_layers_defaults_image_and_flags() {
        let img = busybox_like();
        let env = environment(&img, &["FOO=baz".into(), "NEW=1".into()], "h", false);
        assert_eq!(env, ["PATH=/bin", "HOSTNAME=h", "FOO=baz", "NEW=1"]);
        let bare = environment(&ImageDefaults::default(), &[], "h", true);
        assert_eq!(
            bare,
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=h".into(),
                "TERM=xterm".into()
            ]
        );
    }
}
