//! What the metadata instructions do to the image's [`ContainerConfig`] (the one typed
//! model, [`crate::image::model`]), arguments already expanded: the ones that take more than
//! setting a field (`ENV`, `WORKDIR`, `EXPOSE`, `VOLUME`, `LABEL`, `ENTRYPOINT`, shell form
//! through `SHELL`). `USER`, `STOPSIGNAL`, `CMD` and `SHELL` set their field directly.

use std::collections::BTreeMap;

use super::parse::CommandForm;
use crate::image::model::{ContainerConfig, Empty};

/// The shell of shell-form commands when the stage has no `SHELL`.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The stage's shell: its `SHELL`, or `/bin/sh -c`.
pub fn shell(cfg: &ContainerConfig) -> Vec<String> {
    cfg.shell
        .clone()
        .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
}

/// The argv of a `RUN`/`CMD`/`ENTRYPOINT`: exec form as written, shell form through the shell.
pub fn argv(cfg: &ContainerConfig, form: &CommandForm) -> Vec<String> {
    match form {
        CommandForm::Exec(argv) => argv.clone(),
        CommandForm::Shell(line) => {
            let mut argv = shell(cfg);
            argv.push(line.clone());
            argv
        }
    }
}

/// `ENV name=value`: replaces the variable in place, or appends it.
pub fn set_env(cfg: &mut ContainerConfig, name: &str, value: &str) {
    let env = cfg.env.get_or_insert_with(Vec::new);
    let entry = format!("{name}={value}");
    match env
        .iter_mut()
        .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == name)
    {
        Some(kv) => *kv = entry,
        None => env.push(entry),
    }
}

/// `WORKDIR dir`: relative to the current one (`/` when unset), `.` and `..` resolved.
pub fn workdir(cfg: &mut ContainerConfig, dir: &str) {
    let base = if dir.starts_with('/') {
        String::new()
    } else {
        cfg.working_dir.clone().unwrap_or_default()
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in base.split('/').chain(dir.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    cfg.working_dir = Some(format!("/{}", parts.join("/")));
}

/// `EXPOSE port[/proto]...`: `tcp` unless a protocol is given.
pub fn expose(cfg: &mut ContainerConfig, ports: &[String]) {
    let map = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
    for p in ports {
        let key = if p.contains('/') {
            p.to_ascii_lowercase()
        } else {
            format!("{p}/tcp")
        };
        map.insert(key, Empty {});
    }
}

/// `VOLUME path...`.
pub fn volumes(cfg: &mut ContainerConfig, paths: &[String]) {
    let map = cfg.volumes.get_or_insert_with(BTreeMap::new);
    for p in paths {
        map.insert(p.clone(), Empty {});
    }
}

/// `LABEL k=v...`.
pub fn labels(cfg: &mut ContainerConfig, pairs: &[(String, String)]) {
    let map = cfg.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in pairs {
        map.insert(k.clone(), v.clone());
    }
}

/// `ENTRYPOINT`: sets it and, as Docker does, clears a `CMD` inherited from the base.
pub fn entrypoint(cfg: &mut ContainerConfig, form: &CommandForm) {
    cfg.entrypoint = Some(argv(cfg, form));
    cfg.cmd = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_in_place_and_appends() {
        let mut cfg = ContainerConfig {
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            ..Default::default()
        };
        set_env(&mut cfg, "PATH", "/usr/bin:/bin");
        set_env(&mut cfg, "B", "x y");
        assert_eq!(cfg.env.unwrap(), vec!["PATH=/usr/bin:/bin", "A=1", "B=x y"]);
    }

    #[test]
    fn workdir_is_relative_to_the_last_one() {
        let mut cfg = ContainerConfig::default();
        workdir(&mut cfg, "app");
        assert_eq!(cfg.working_dir.as_deref(), Some("/app"));
        workdir(&mut cfg, "src/../lib/./x");
        assert_eq!(cfg.working_dir.as_deref(), Some("/app/lib/x"));
        workdir(&mut cfg, "/srv/");
        assert_eq!(cfg.working_dir.as_deref(), Some("/srv"));
        workdir(&mut cfg, "../../..");
        assert_eq!(cfg.working_dir.as_deref(), Some("/"));
    }

    #[test]
    fn commands_ports_volumes_labels() {
        let mut cfg = ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        assert_eq!(
            argv(&cfg, &CommandForm::Shell("echo hi".into())),
            vec!["/bin/sh", "-c", "echo hi"]
        );
        cfg.shell = Some(vec!["/bin/bash".into(), "-ec".into()]);
        entrypoint(&mut cfg, &CommandForm::Shell("run".into()));
        assert_eq!(
            cfg.entrypoint.clone().unwrap(),
            vec!["/bin/bash", "-ec", "run"]
        );
        assert_eq!(cfg.cmd, None);
        expose(&mut cfg, &["80".into(), "53/UDP".into()]);
        let ports: Vec<_> = cfg.exposed_ports.clone().unwrap().into_keys().collect();
        assert_eq!(ports, vec!["53/udp", "80/tcp"]);
        volumes(&mut cfg, &["/data".into()]);
        assert!(cfg.volumes.clone().unwrap().contains_key("/data"));
        labels(
            &mut cfg,
            &[("a".into(), "1".into()), ("a".into(), "2".into())],
        );
        assert_eq!(cfg.labels.unwrap()["a"], "2");
    }
}
