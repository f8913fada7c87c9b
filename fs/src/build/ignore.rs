//! `.dockerignore`: which context paths a build leaves out. One pattern a line, `#`
//! comments, Go `filepath.Match` globs per path component (`*`, `?`, `[a-z]`, `[^a]`, `\`
//! escape) plus `**` for any number of directories, `!` for exceptions; the last matching
//! line wins, and a pattern that matches a directory matches everything under it.

/// One line of a `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    components: Vec<String>,
    exception: bool,
}

/// The parsed `.dockerignore` of a context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (exception, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let components: Vec<String> = pattern
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                (!components.is_empty()).then_some(Rule {
                    components,
                    exception,
                })
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of the build.
    pub fn is_ignored(&self, path: &str) -> bool {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let mut ignored = false;
        for rule in &self.rules {
            let hit = (1..=parts.len()).any(|k| match_components(&rule.components, &parts[..k]));
            if hit {
                ignored = !rule.exception;
            }
        }
        ignored
    }
}

/// Go `filepath.Match` of `pattern` against one path component `name` (the globs of a
/// `COPY` source).
pub fn glob_component(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob(&p, &n)
}

fn match_components(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_components(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => {
                let p: Vec<char> = first.chars().collect();
                let n: Vec<char> = name.chars().collect();
                glob(&p, &n) && match_components(rest, path_rest)
            }
            None => false,
        },
    }
}

/// Go `filepath.Match` on one component (no separators on either side).
fn glob(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|skip| glob(&p[1..], &n[skip..])),
        Some('?') => !n.is_empty() && glob(&p[1..], &n[1..]),
        Some('[') => {
            let Some((&c, n_rest)) = n.split_first() else {
                return false;
            };
            let mut i = 1;
            let negated = matches!(p.get(i), Some('^'));
            if negated {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            loop {
                let Some(&lo) = p.get(i) else {
                    return false; // unterminated class: Go reports ErrBadPattern, we match nothing
                };
                if lo == ']' && !first {
                    i += 1;
                    break;
                }
                first = false;
                let lo = if lo == '\\' {
                    i += 1;
                    match p.get(i) {
                        Some(&e) => e,
                        None => return false,
                    }
                } else {
                    lo
                };
                i += 1;
                let mut hi = lo;
                if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
                    hi = p[i + 1];
                    i += 2;
                }
                if lo <= c && c <= hi {
                    matched = true;
                }
            }
            matched != negated && glob(&p[i..], n_rest)
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && glob(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_directories_and_comments() {
        let ig = Ignore::parse("# comment\n\n*.log\n/build\ntmp?\n[a-c]x\n");
        assert!(ig.is_ignored("a.log"));
        assert!(!ig.is_ignored("sub/a.log"));
        assert!(ig.is_ignored("build"));
        assert!(ig.is_ignored("build/out/bin"));
        assert!(ig.is_ignored("tmp1"));
        assert!(!ig.is_ignored("tmp12"));
        assert!(ig.is_ignored("bx"));
        assert!(!ig.is_ignored("dx"));
        assert!(!ig.is_ignored("# comment"));
    }

    #[test]
    fn double_star_and_exceptions_last_match_wins() {
        let ig = Ignore::parse("**/*.o\ndocs\n!docs/README.md\n*.md\n!keep.md\n");
        assert!(ig.is_ignored("main.o"));
        assert!(ig.is_ignored("a/b/c.o"));
        assert!(ig.is_ignored("docs/x"));
        // `*.md` comes after the exception but only matches top-level names.
        assert!(!ig.is_ignored("docs/README.md"));
        assert!(ig.is_ignored("other.md"));
        assert!(!ig.is_ignored("keep.md"));
        assert!(!ig.is_ignored("src/main.rs"));
    }

    #[test]
    fn classes_negation_and_escapes() {
        let ig = Ignore::parse("[^a]1\nq\\*\n");
        assert!(ig.is_ignored("b1"));
        assert!(!ig.is_ignored("a1"));
        assert!(ig.is_ignored("q*"));
        assert!(!ig.is_ignored("qz"));
    }
}
