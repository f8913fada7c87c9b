//! Dockerfile syntax: parser directives (`# escape=`, `# syntax=`), comments, line
//! continuations, heredocs, and the split of each logical line into an instruction keyword and its
//! unexpanded arguments, each tagged with the Dockerfile line where it starts.
//!
//! The argument shapes shared by several instructions are here too: exec vs shell form
//! ([`command_form`]), word splitting ([`split_words`]) and `name=value` lists ([`name_values`]).
//! Expansion ([`super::expand`]) and evaluation happen later, per instruction.

use std::fmt;

/// The instructions of the Dockerfile language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// `FROM`.
    From,
    /// `RUN`.
    Run,
    /// `CMD`.
    Cmd,
    /// `LABEL`.
    Label,
    /// `MAINTAINER`.
    Maintainer,
    /// `EXPOSE`.
    Expose,
    /// `ENV`.
    Env,
    /// `ADD`.
    Add,
    /// `COPY`.
    Copy,
    /// `ENTRYPOINT`.
    Entrypoint,
    /// `VOLUME`.
    Volume,
    /// `USER`.
    User,
    /// `WORKDIR`.
    Workdir,
    /// `ARG`.
    Arg,
    /// `ONBUILD`.
    Onbuild,
    /// `STOPSIGNAL`.
    Stopsignal,
    /// `HEALTHCHECK`.
    Healthcheck,
    /// `SHELL`.
    Shell,
}

impl Keyword {
    const ALL: [(&'static str, Keyword); 18] = [
        ("FROM", Keyword::From),
        ("RUN", Keyword::Run),
        ("CMD", Keyword::Cmd),
        ("LABEL", Keyword::Label),
        ("MAINTAINER", Keyword::Maintainer),
        ("EXPOSE", Keyword::Expose),
        ("ENV", Keyword::Env),
        ("ADD", Keyword::Add),
        ("COPY", Keyword::Copy),
        ("ENTRYPOINT", Keyword::Entrypoint),
        ("VOLUME", Keyword::Volume),
        ("USER", Keyword::User),
        ("WORKDIR", Keyword::Workdir),
        ("ARG", Keyword::Arg),
        ("ONBUILD", Keyword::Onbuild),
        ("STOPSIGNAL", Keyword::Stopsignal),
        ("HEALTHCHECK", Keyword::Healthcheck),
        ("SHELL", Keyword::Shell),
    ];

    /// The keyword for `word`, case-insensitively, as Docker accepts it.
    pub fn parse(word: &str) -> Option<Keyword> {
        let upper = word.to_ascii_uppercase();
        Self::ALL
            .iter()
            .find(|(name, _)| *name == upper)
            .map(|(_, k)| *k)
    }

    /// The keyword as written in history entries and step lines (`RUN`, `COPY`, ...).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(name, _)| *name)
            .unwrap_or("?")
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instruction: its keyword, its arguments as written (continuations joined, not
/// expanded) and the 1-based Dockerfile line where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction.
    pub keyword: Keyword,
    /// Its arguments, continuations joined, unexpanded.
    pub args: String,
    /// The heredocs its arguments open (`RUN`, `COPY`, `ADD` only), in order.
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc (`<<EOF`, `<<-EOF`, `<<"EOF"`): the lines after the instruction up to the
/// delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, without quotes.
    pub name: String,
    /// The body, each line ending in a newline (leading tabs removed for `<<-`).
    pub content: String,
    /// False when the delimiter was quoted: the body is taken literally.
    pub expand: bool,
}

/// The heredoc openers in `args`: (name, strip tabs, expand).
fn heredoc_openers(args: &str, escape: char) -> Vec<(String, bool, bool)> {
    split_words(args, escape)
        .iter()
        .filter_map(|w| {
            let rest = w.strip_prefix("<<")?;
            let (strip, rest) = match rest.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            let unquoted = rest
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')));
            let name = unquoted.unwrap_or(rest);
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            valid.then(|| (name.to_string(), strip, unquoted.is_none()))
        })
        .collect()
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    /// The `# syntax=` directive, accepted and recorded, not acted on.
    pub syntax: Option<String>,
    /// The instructions in order.
    pub instructions: Vec<Instruction>,
}

/// A syntax error, with the Dockerfile line it is on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Dockerfile line {line}: {message}")]
pub struct ParseError {
    /// The 1-based Dockerfile line.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Parses the text of a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    let mut syntax = None;
    let mut i = 0;
    // Directives: `# key=value` lines at the very top, before any blank line, comment or
    // instruction.
    while let Some(line) = lines.get(i) {
        let Some(body) = line.trim().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = body.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        match key.as_str() {
            "escape" => {
                escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(err(
                            i + 1,
                            format!("invalid escape token {value:?}: must be ` or \\"),
                        ));
                    }
                }
            }
            "syntax" => syntax = Some(value.to_string()),
            _ => break,
        }
        i += 1;
    }

    let mut instructions = Vec::new();
    while i < lines.len() {
        let start = i;
        let first = lines[i].trim();
        i += 1;
        if first.is_empty() || first.starts_with('#') {
            continue;
        }
        let mut logical = String::new();
        let mut current = first.to_string();
        loop {
            let trimmed = current.trim_end();
            match trimmed.strip_suffix(escape) {
                Some(head) => {
                    logical.push_str(head);
                    // Continue on the next line that is not a comment or blank.
                    let mut next = None;
                    while i < lines.len() {
                        let l = lines[i];
                        i += 1;
                        let t = l.trim();
                        if t.starts_with('#') || t.is_empty() {
                            continue;
                        }
                        next = Some(l.to_string());
                        break;
                    }
                    match next {
                        Some(l) => current = l,
                        None => break,
                    }
                }
                None => {
                    logical.push_str(trimmed);
                    break;
                }
            }
        }
        let logical = logical.trim();
        let (word, args) = match logical.find(char::is_whitespace) {
            Some(at) => (&logical[..at], logical[at..].trim_start()),
            None => (logical, ""),
        };
        let keyword = Keyword::parse(word)
            .ok_or_else(|| err(start + 1, format!("unknown instruction: {word}")))?;
        if args.is_empty() {
            return Err(err(
                start + 1,
                format!("{keyword} requires at least one argument"),
            ));
        }
        let mut heredocs = Vec::new();
        if matches!(keyword, Keyword::Run | Keyword::Copy | Keyword::Add) {
            for (name, strip, expand) in heredoc_openers(args, escape) {
                let mut content = String::new();
                loop {
                    let Some(l) = lines.get(i) else {
                        return Err(err(
                            start + 1,
                            format!("unterminated heredoc: no line {name:?} after it"),
                        ));
                    };
                    i += 1;
                    let l = if strip { l.trim_start_matches('\t') } else { l };
                    if l == name {
                        break;
                    }
                    content.push_str(l);
                    content.push('\n');
                }
                heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                });
            }
        }
        instructions.push(Instruction {
            line: start + 1,
            keyword,
            args: args.to_string(),
            heredocs,
        });
    }
    Ok(Dockerfile {
        escape,
        syntax,
        instructions,
    })
}

/// The form of a `RUN`, `CMD`, `ENTRYPOINT` or `SHELL` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandForm {
    /// A JSON array of strings, run without a shell.
    Exec(Vec<String>),
    /// Anything else, handed to the shell as one string.
    Shell(String),
}

/// Exec form when `args` is a JSON array of strings (as Docker decides), shell form otherwise.
pub fn command_form(args: &str) -> CommandForm {
    if args.trim_start().starts_with('[') {
        if let Ok(argv) = serde_json::from_str::<Vec<String>>(args) {
            return CommandForm::Exec(argv);
        }
    }
    CommandForm::Shell(args.to_string())
}

/// Splits `args` on whitespace outside quotes, keeping quotes and escapes in each word for
/// the expansion that follows.
pub fn split_words(args: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        if c == escape && quote != Some('\'') {
            word.push(c);
            if let Some(n) = chars.next() {
                word.push(n);
            }
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The `name=value` pairs of `ENV`, `LABEL` (and the legacy `ENV name value` form), values
/// still unexpanded. `line` is the instruction's line, for the error.
pub fn name_values(
    args: &str,
    escape: char,
    line: usize,
) -> Result<Vec<(String, String)>, ParseError> {
    let words = split_words(args, escape);
    let Some(first) = words.first() else {
        return Err(err(line, "missing name=value"));
    };
    if !first.contains('=') {
        // Legacy form: the rest of the line is the value.
        let value = args.trim_start()[first.len()..].trim();
        if value.is_empty() {
            return Err(err(line, format!("{first} must have two arguments")));
        }
        return Ok(vec![(first.clone(), value.to_string())]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
            _ => Err(err(
                line,
                format!("syntax error: can't find = in {w:?}; must be of the form name=value"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_with_lines_comments_and_continuations() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n\
             FROM busybox\n\
             \n\
             # a comment\n\
             run echo a \\\n\
             # inside the continuation\n\
             \x20   && echo b\n\
             ENV A=1\n",
        )
        .unwrap();
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.escape, '\\');
        let got: Vec<_> = df
            .instructions
            .iter()
            .map(|i| (i.line, i.keyword, i.args.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, Keyword::From, "busybox"),
                (5, Keyword::Run, "echo a     && echo b"),
                (8, Keyword::Env, "A=1"),
            ]
        );
    }

    #[test]
    fn escape_directive_changes_the_continuation() {
        let df = parse("# escape=`\nFROM scratch\nCOPY a `\n  b\nRUN dir c:\\\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.instructions[1].args, "a   b");
        assert_eq!(df.instructions[2].args, "dir c:\\");
    }

    #[test]
    fn directive_after_an_instruction_is_a_comment() {
        let df = parse("FROM scratch\n# escape=`\nRUN a `\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert_eq!(df.instructions[1].args, "a `");
    }

    #[test]
    fn heredocs_are_read_after_their_instruction() {
        let df = parse(
            "FROM scratch\n\
             RUN <<EOF\necho $A\n  indented\nEOF\n\
             COPY <<-'one' <<\"two\" /dst/\n\tx\none\ny\ntwo\n\
             ENV <<NOT=heredoc\n",
        )
        .unwrap();
        let run = &df.instructions[1];
        assert_eq!(run.line, 2);
        assert_eq!(
            run.heredocs,
            vec![Heredoc {
                name: "EOF".into(),
                content: "echo $A\n  indented\n".into(),
                expand: true
            }]
        );
        let copy = &df.instructions[2];
        assert_eq!(copy.line, 6);
        assert_eq!(copy.heredocs[0].content, "x\n");
        assert_eq!(copy.heredocs[1].content, "y\n");
        assert!(!copy.heredocs[0].expand && !copy.heredocs[1].expand);
        assert_eq!(df.instructions[3].line, 11);
        assert!(df.instructions[3].heredocs.is_empty());
        assert_eq!(
            parse("FROM scratch\nRUN <<EOF\necho\n").unwrap_err().line,
            2
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("FROM scratch\n\nFROBNICATE x\n").unwrap_err(),
            err(3, "unknown instruction: FROBNICATE")
        );
        assert_eq!(
            parse("FROM scratch\nWORKDIR\n").unwrap_err().to_string(),
            "Dockerfile line 2: WORKDIR requires at least one argument"
        );
        assert_eq!(parse("# escape=x\nFROM scratch\n").unwrap_err().line, 1);
    }

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(
            command_form(r#"["sh", "-c", "echo hi"]"#),
            CommandForm::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        // Not valid JSON: Docker runs it through the shell.
        assert_eq!(
            command_form("[ -f x ] && echo y"),
            CommandForm::Shell("[ -f x ] && echo y".into())
        );
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"A="x y" B='p q' C=a\ b"#, '\\'),
            vec![r#"A="x y""#, "B='p q'", r"C=a\ b"]
        );
    }

    #[test]
    fn name_value_forms() {
        assert_eq!(
            name_values(r#"A=1 B="two words""#, '\\', 3).unwrap(),
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), r#""two words""#.to_string())
            ]
        );
        assert_eq!(
            name_values("PATH /bin /usr/bin", '\\', 3).unwrap(),
            vec![("PATH".to_string(), "/bin /usr/bin".to_string())]
        );
        assert_eq!(name_values("A=1 B", '\\', 7).unwrap_err().line, 7);
        assert_eq!(name_values("=1", '\\', 2).unwrap_err().line, 2);
        assert!(name_values("A", '\\', 4).is_err());
    }
}
