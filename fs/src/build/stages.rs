//! Stages of a multi-stage Dockerfile: the global `ARG`s before the first `FROM`, each
//! `FROM [--platform=P] BASE [AS name]` with the instructions that follow it, and which
//! stages a `--target` needs (through `FROM <stage>` and `COPY --from=<stage>`).

use std::collections::BTreeSet;

use super::parse::{Instruction, Keyword, ParseError, split_words};

/// One stage: its `FROM` (unexpanded base, optional name and platform) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `FROM` line.
    pub line: usize,
    /// The base as written (a store image, an archive path, `scratch`, or an earlier stage).
    pub base: String,
    /// `AS name`, lowercased as Docker does.
    pub name: Option<String>,
    /// `--platform=P`.
    pub platform: Option<String>,
    /// The instructions after `FROM`, up to the next `FROM`.
    pub body: Vec<Instruction>,
}

/// A Dockerfile cut into global `ARG`s and stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// The `ARG` instructions before the first `FROM`.
    pub global_args: Vec<Instruction>,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Cuts `instructions` into stages.
pub fn split(instructions: &[Instruction], escape: char) -> Result<Stages, ParseError> {
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for inst in instructions {
        if inst.keyword == Keyword::From {
            let mut words = split_words(&inst.args, escape);
            let mut platform = None;
            while let Some(flag) = words.first().filter(|w| w.starts_with("--")) {
                match flag.strip_prefix("--platform=") {
                    Some(p) => platform = Some(p.to_string()),
                    None => return Err(err(inst.line, format!("FROM: unknown flag {flag}"))),
                }
                words.remove(0);
            }
            let (base, name) = match words.as_slice() {
                [base] => (base.clone(), None),
                [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (base.clone(), Some(name.to_ascii_lowercase()))
                }
                _ => {
                    return Err(err(
                        inst.line,
                        "FROM requires either one argument, or three: FROM <source> AS <name>",
                    ));
                }
            };
            if let Some(n) = &name {
                if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                    return Err(err(inst.line, format!("duplicate stage name {n:?}")));
                }
            }
            stages.push(Stage {
                line: inst.line,
                base,
                name,
                platform,
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(inst.clone());
        } else if inst.keyword == Keyword::Arg {
            global_args.push(inst.clone());
        } else {
            return Err(err(
                inst.line,
                format!(
                    "{} before the first FROM (only ARG may come first)",
                    inst.keyword
                ),
            ));
        }
    }
    if stages.is_empty() {
        return Err(err(
            1,
            "no FROM instruction: a Dockerfile needs at least one stage",
        ));
    }
    Ok(Stages {
        global_args,
        stages,
    })
}

impl Stages {
    /// The index of the stage called `name` (case-insensitive) or numbered `name`, among
    /// the stages before `before`.
    pub fn find(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    }

    /// The index of `--target` (the last stage when `None`).
    pub fn target(&self, target: Option<&str>) -> Result<usize, ParseError> {
        match target {
            None => Ok(self.stages.len() - 1),
            Some(t) => self
                .find(t, self.stages.len())
                .ok_or_else(|| err(1, format!("target stage {t:?} could not be found"))),
        }
    }

    /// The stages `target` needs, itself included, in build order. References are
    /// unexpanded names; a reference that names no earlier stage is an image, not a stage.
    pub fn needed(&self, target: usize, escape: char) -> BTreeSet<usize> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let stage = &self.stages[i];
            let mut refs = vec![stage.base.clone()];
            for inst in &stage.body {
                if matches!(inst.keyword, Keyword::Copy | Keyword::Add) {
                    refs.extend(
                        split_words(&inst.args, escape)
                            .iter()
                            .take_while(|w| w.starts_with("--"))
                            .filter_map(|w| w.strip_prefix("--from=").map(str::to_string)),
                    );
                }
            }
            todo.extend(refs.iter().filter_map(|r| self.find(r, i)));
        }
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::parse::parse;

    fn stages(text: &str) -> Result<Stages, ParseError> {
        split(&parse(text).unwrap().instructions, '\\')
    }

    const MULTI: &str = "ARG BASE=busybox\n\
        FROM $BASE AS Tools\nRUN echo tools\n\
        FROM --platform=linux/amd64 busybox AS unused\nRUN false\n\
        FROM tools AS build\nRUN echo build\n\
        FROM scratch\nCOPY --from=build /a /a\nCOPY --chown=1:1 --from=0 /b /b\n";

    #[test]
    fn stages_names_platforms_and_global_args() {
        let s = stages(MULTI).unwrap();
        assert_eq!(s.global_args.len(), 1);
        assert_eq!(s.stages.len(), 4);
        assert_eq!(s.stages[0].name.as_deref(), Some("tools"));
        assert_eq!(s.stages[0].base, "$BASE");
        assert_eq!(s.stages[1].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(s.stages[3].body.len(), 2);
        assert_eq!(s.stages[3].line, 8);
    }

    #[test]
    fn only_the_stages_the_target_needs_are_built() {
        let s = stages(MULTI).unwrap();
        let last = s.target(None).unwrap();
        assert_eq!(s.needed(last, '\\'), BTreeSet::from([0, 2, 3]));
        let tools = s.target(Some("TOOLS")).unwrap();
        assert_eq!(s.needed(tools, '\\'), BTreeSet::from([0]));
        assert_eq!(s.target(Some("unused")).unwrap(), 1);
        assert!(s.target(Some("nope")).is_err());
    }

    #[test]
    fn bad_stage_structure_names_the_line() {
        assert_eq!(stages("RUN x\nFROM scratch\n").unwrap_err().line, 1);
        assert_eq!(stages("ARG A\n").unwrap_err().line, 1);
        assert_eq!(stages("FROM a AS x\nFROM b AS X\n").unwrap_err().line, 2);
        assert_eq!(stages("FROM a b\n").unwrap_err().line, 1);
        assert_eq!(stages("FROM --pull a\n").unwrap_err().line, 1);
    }
}
