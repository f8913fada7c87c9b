//! Dockerfile variable expansion with BuildKit's semantics (its `shell/lex.go`): `$v`, `${v}`,
//! `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`, `${v:?w}`, `${v?w}`, single and double quotes, and the
//! escape character (`\` or the one set by the `# escape=` directive).
//!
//! [`expand_word`] expands one word and removes its quotes, as the instructions that take one value
//! (`WORKDIR`, `USER`, `ENV` values, ...) do. Unset variables expand to the empty string.

use std::collections::HashMap;

/// Why a word could not be expanded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpandError {
    /// `${` without its closing `}`.
    #[error("missing '}}' in {word:?}")]
    MissingBrace {
        /// The word being expanded.
        word: String,
    },
    /// `${}` or `${` followed by something that is not a name.
    #[error("bad substitution in {word:?}")]
    BadSubstitution {
        /// The word being expanded.
        word: String,
    },
    /// A modifier other than `-`, `+`, `?` (with or without `:`).
    #[error("unsupported modifier {modifier:?} in {word:?}")]
    UnsupportedModifier {
        /// The character after the name (and `:`).
        modifier: char,
        /// The word being expanded.
        word: String,
    },
    /// A quote opened and never closed.
    #[error("unexpected end of input: unterminated {quote} quote in {word:?}")]
    UnterminatedQuote {
        /// `'` or `"`.
        quote: char,
        /// The word being expanded.
        word: String,
    },
    /// `${v?msg}` / `${v:?msg}` with `v` unset (or empty, for `:?`).
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message after `?`, or a default one.
        message: String,
    },
}

/// Expands `word` against `vars` with `escape` as the escape character, removing quotes.
pub fn expand_word(
    word: &str,
    vars: &HashMap<String, String>,
    escape: char,
) -> Result<String, ExpandError> {
    let chars: Vec<char> = word.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        pos: 0,
        vars,
        escape,
        word,
    };
    lexer.until(None)
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
    vars: &'a HashMap<String, String>,
    escape: char,
    word: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Expands up to `stop` (left for the caller to consume) or the end of input; a missing `stop` is an error.
    fn until(&mut self, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                return Ok(out);
            }
            self.pos += 1;
            if c == self.escape {
                match self.next() {
                    Some(e) => out.push(e),
                    None => out.push(c),
                }
            } else if c == '\'' {
                out.push_str(&self.single_quoted()?);
            } else if c == '"' {
                out.push_str(&self.double_quoted()?);
            } else if c == '$' {
                out.push_str(&self.dollar()?);
            } else {
                out.push(c);
            }
        }
        if stop.is_some() {
            return Err(ExpandError::MissingBrace {
                word: self.word.to_string(),
            });
        }
        Ok(out)
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            match self.next() {
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
                None => {
                    return Err(ExpandError::UnterminatedQuote {
                        quote: '\'',
                        word: self.word.to_string(),
                    });
                }
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            match self.next() {
                Some('"') => return Ok(out),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(e) if e == '"' || e == '$' || e == self.escape => {
                        self.pos += 1;
                        out.push(e);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
                None => {
                    return Err(ExpandError::UnterminatedQuote {
                        quote: '"',
                        word: self.word.to_string(),
                    });
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            self.pos += 1;
            name.push(c);
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.vars.get(&name).cloned().unwrap_or_default());
        }
        self.pos += 1;
        let name = self.name();
        if name.is_empty() {
            return Err(ExpandError::BadSubstitution {
                word: self.word.to_string(),
            });
        }
        let value = self.vars.get(&name);
        match self.next() {
            Some('}') => Ok(value.cloned().unwrap_or_default()),
            Some(c) => {
                let colon = c == ':';
                let modifier = if colon { self.next() } else { Some(c) };
                let Some(modifier) = modifier else {
                    return Err(ExpandError::MissingBrace {
                        word: self.word.to_string(),
                    });
                };
                if !matches!(modifier, '-' | '+' | '?') {
                    return Err(ExpandError::UnsupportedModifier {
                        modifier,
                        word: self.word.to_string(),
                    });
                }
                let word = self.until(Some('}'))?;
                self.pos += 1;
                // With ':', an empty value counts as unset.
                let set = value.is_some_and(|v| !colon || !v.is_empty());
                match modifier {
                    '-' if set => Ok(value.cloned().unwrap_or_default()),
                    '-' => Ok(word),
                    '+' if set => Ok(word),
                    '+' => Ok(String::new()),
                    _ if set => Ok(value.cloned().unwrap_or_default()),
                    _ => Err(ExpandError::Required {
                        name,
                        message: if word.is_empty() {
                            "is not allowed to be unset".to_string()
                        } else {
                            word
                        },
                    }),
                }
            }
            None => Err(ExpandError::MissingBrace {
                word: self.word.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        [("PWD", "/home"), ("E", ""), ("A", "a b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ex(word: &str) -> Result<String, ExpandError> {
        expand_word(word, &vars(), '\\')
    }

    #[test]
    fn plain_and_braced_names() {
        assert_eq!(ex("$PWD/x").unwrap(), "/home/x");
        assert_eq!(ex("${PWD}x").unwrap(), "/homex");
        assert_eq!(ex("$PWDx").unwrap(), "");
        assert_eq!(ex("$UNSET-z").unwrap(), "-z");
        assert_eq!(ex("a$").unwrap(), "a$");
        assert_eq!(ex("$ x").unwrap(), "$ x");
    }

    #[test]
    fn modifiers_with_and_without_colon() {
        assert_eq!(ex("${UNSET:-w}").unwrap(), "w");
        assert_eq!(ex("${E:-w}").unwrap(), "w");
        assert_eq!(ex("${E-w}").unwrap(), "");
        assert_eq!(ex("${UNSET-w}").unwrap(), "w");
        assert_eq!(ex("${PWD:-w}").unwrap(), "/home");
        assert_eq!(ex("${PWD:+w}").unwrap(), "w");
        assert_eq!(ex("${E:+w}").unwrap(), "");
        assert_eq!(ex("${E+w}").unwrap(), "w");
        assert_eq!(ex("${UNSET+w}").unwrap(), "");
        assert_eq!(ex("${UNSET:-$PWD/y}").unwrap(), "/home/y");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(ex("'$PWD'").unwrap(), "$PWD");
        assert_eq!(ex("\"$PWD\"").unwrap(), "/home");
        assert_eq!(ex("\\$PWD").unwrap(), "$PWD");
        assert_eq!(ex("\"a\\\"b\\n\"").unwrap(), "a\"b\\n");
        assert_eq!(ex("a\\ b").unwrap(), "a b");
        assert_eq!(expand_word("`$PWD", &vars(), '`').unwrap(), "$PWD");
        assert_eq!(expand_word("\\$PWD", &vars(), '`').unwrap(), "\\/home");
    }

    #[test]
    fn errors() {
        assert!(matches!(ex("${PWD"), Err(ExpandError::MissingBrace { .. })));
        assert!(matches!(
            ex("${}"),
            Err(ExpandError::BadSubstitution { .. })
        ));
        assert!(matches!(
            ex("${PWD:=x}"),
            Err(ExpandError::UnsupportedModifier { modifier: '=', .. })
        ));
        assert!(matches!(
            ex("'ab"),
            Err(ExpandError::UnterminatedQuote { .. })
        ));
        assert_eq!(
            ex("${UNSET:?need it}"),
            Err(ExpandError::Required {
                name: "UNSET".into(),
                message: "need it".into()
            })
        );
        assert_eq!(ex("${E?x}").unwrap(), "");
    }
}
