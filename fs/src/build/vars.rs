//! Variable scopes of a build, as Docker defines them: `ARG`s before the first `FROM` are
//! global and visible only to `FROM` lines (and to a stage that redeclares them with `ARG
//! name`); each stage has its own `ARG`s and `ENV`s, and `ENV` wins over an `ARG` of the
//! same name. `--build-arg` overrides a declared default; the predefined platform args
//! (`TARGETOS`, `TARGETARCH`, ...) are global and, in a stage, visible once declared.

use std::collections::HashMap;

use super::expand::{ExpandError, expand_word};

/// Values given from outside the Dockerfile: `--build-arg` and the predefined args.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// `--build-arg K=V`.
    pub build_args: HashMap<String, String>,
    /// `TARGETOS`, `TARGETARCH`, `BUILDPLATFORM`, ...
    pub predefined: HashMap<String, String>,
}

/// The global scope: predefined args and the `ARG`s before the first `FROM`.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    values: HashMap<String, String>,
}

impl Globals {
    /// The scope before any `ARG`: only the predefined args.
    pub fn new(given: &Given) -> Self {
        Globals {
            values: given.predefined.clone(),
        }
    }

    /// `ARG name[=default]` before the first `FROM` (`default` unexpanded).
    pub fn declare(
        &mut self,
        given: &Given,
        name: &str,
        default: Option<&str>,
        escape: char,
    ) -> Result<(), ExpandError> {
        let value = match (given.build_args.get(name), default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => Some(expand_word(d, &self.values, escape)?),
            (None, None) => None,
        };
        // Declared without a value: known, but unset.
        if let Some(value) = value {
            self.values.insert(name.to_string(), value);
        }
        Ok(())
    }

    /// The variables a `FROM` line sees.
    pub fn values(&self) -> &HashMap<String, String> {
        &self.values
    }
}

/// One stage's scope: its `ARG`s, overlaid by its `ENV` (from the base image, then the
/// stage's own `ENV` instructions).
#[derive(Debug, Clone, Default)]
pub struct StageVars {
    args: HashMap<String, String>,
    env: HashMap<String, String>,
}

impl StageVars {
    /// A stage whose base image has `env` (`K=V` strings of its config).
    pub fn new(base_env: &[String]) -> Self {
        let env = base_env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        StageVars {
            args: HashMap::new(),
            env,
        }
    }

    /// `ARG name[=default]` inside the stage: `--build-arg` wins, then the default, then the
    /// global of that name.
    pub fn declare_arg(
        &mut self,
        given: &Given,
        globals: &Globals,
        name: &str,
        default: Option<&str>,
        escape: char,
    ) -> Result<(), ExpandError> {
        let value = match (given.build_args.get(name), default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => Some(expand_word(d, &self.values(), escape)?),
            (None, None) => globals.values.get(name).cloned(),
        };
        if let Some(value) = value {
            self.args.insert(name.to_string(), value);
        }
        Ok(())
    }

    /// `ENV name=value` (value already expanded).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_string(), value.to_string());
    }

    /// What the stage's instructions expand against: `ARG`s overlaid by `ENV`.
    pub fn values(&self) -> HashMap<String, String> {
        let mut all = self.args.clone();
        all.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// The stage's `ARG` values, which `RUN` sees in its environment but the image does not keep.
    pub fn args(&self) -> &HashMap<String, String> {
        &self.args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given() -> Given {
        Given {
            build_args: [("VERSION".to_string(), "2".to_string())].into(),
            predefined: [("TARGETARCH".to_string(), "amd64".to_string())].into(),
        }
    }

    #[test]
    fn globals_see_build_args_defaults_and_predefined() {
        let g = given();
        let mut globals = Globals::new(&g);
        globals.declare(&g, "VERSION", Some("1"), '\\').unwrap();
        globals
            .declare(&g, "BASE", Some("busybox-$TARGETARCH:$VERSION"), '\\')
            .unwrap();
        globals.declare(&g, "UNSET", None, '\\').unwrap();
        assert_eq!(globals.values()["BASE"], "busybox-amd64:2");
        assert!(!globals.values().contains_key("UNSET"));
    }

    #[test]
    fn a_stage_sees_a_global_only_once_it_redeclares_it() {
        let g = given();
        let mut globals = Globals::new(&g);
        globals.declare(&g, "BASE", Some("x"), '\\').unwrap();
        let mut stage = StageVars::new(&[]);
        assert!(!stage.values().contains_key("BASE"));
        assert!(!stage.values().contains_key("TARGETARCH"));
        stage.declare_arg(&g, &globals, "BASE", None, '\\').unwrap();
        stage
            .declare_arg(&g, &globals, "TARGETARCH", None, '\\')
            .unwrap();
        assert_eq!(stage.values()["BASE"], "x");
        assert_eq!(stage.values()["TARGETARCH"], "amd64");
    }

    #[test]
    fn env_wins_over_arg_and_build_arg_over_default() {
        let g = given();
        let globals = Globals::new(&g);
        let mut stage = StageVars::new(&["PATH=/bin".to_string(), "V=base".to_string()]);
        stage
            .declare_arg(&g, &globals, "V", Some("arg"), '\\')
            .unwrap();
        assert_eq!(stage.values()["V"], "base");
        assert_eq!(stage.args()["V"], "arg");
        stage
            .declare_arg(&g, &globals, "VERSION", Some("1"), '\\')
            .unwrap();
        assert_eq!(stage.values()["VERSION"], "2");
        stage.set_env("VERSION", "3");
        assert_eq!(stage.values()["VERSION"], "3");
        assert_eq!(stage.values()["PATH"], "/bin");
    }
}
