//! Rule files: parsing `rules/*.rules` into [`Rule`]s.
//!
//! ```text
//! # Free comments say why a group of rules is sound.
//!
//! ## One-line doc comment of the rule (required).
//! rule keep-through-map
//!   match (keep ?a ?i (map ?f ?x))
//!   let ?b = some-guard(?f, ?a)      # zero or more `let`/`if` clauses, in order
//!   if other-guard(?x, 2)
//!   => (map ?f (keep ?a ?i ?x))
//! ```
//!
//! The guards a clause may call are listed in [`crate::rules::guards`]. The default rules are embedded
//! in the binary; [`load_dir`] adds a user's own.

use crate::egraph::lang::TensorLang;
use crate::rules::guards::{guard, Guard};
use egg::{Pattern, PatternAst, Var};
use std::fmt;
use std::path::Path;

/// The rule files shipped with model-slim: every `rules/*.rules` file, by name, embedded at
/// build time (`build.rs`).
pub const DEFAULT_RULES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/default_rules.rs"));

/// Where a piece of rule text came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The rules file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A rule file that cannot be used, with the place of the problem.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The text does not parse, or names an unknown guard or variable.
    #[error("{origin}: {message}")]
    Syntax {
        /// Where.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// egg refuses to build the rule (its right side uses what its left side does not bind).
    #[error("{origin}: rule `{rule}`: {message}")]
    Invalid {
        /// Where the rule is defined.
        origin: Origin,
        /// The rule.
        rule: String,
        /// egg's reason.
        message: String,
    },
    /// A rules directory or file cannot be read.
    #[error("cannot read rules from {path}: {source}")]
    Io {
        /// The directory or file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One argument of a clause call, as written.
#[derive(Clone, Debug)]
pub enum ArgSpec {
    /// A pattern variable.
    Var(Var),
    /// An integer literal.
    Int(i64),
}

/// A `let` or `if` clause.
#[derive(Clone)]
pub struct Clause {
    /// Variables the clause binds (`let`); empty for an `if`.
    pub binds: Vec<Var>,
    /// The guard called.
    pub guard: &'static Guard,
    /// Its arguments.
    pub args: Vec<ArgSpec>,
}

/// A parsed rule.
#[derive(Clone)]
pub struct Rule {
    /// The rule's name (unique within its file).
    pub name: String,
    /// Its `##` doc comment.
    pub doc: String,
    /// The left-hand side.
    pub lhs: Pattern<TensorLang>,
    /// `let` and `if` clauses, in order.
    pub clauses: Vec<Clause>,
    /// The right-hand side.
    pub rhs: PatternAst<TensorLang>,
    /// Where the rule is written.
    pub origin: Origin,
}

/// Parses the default rules.
pub fn default_rules() -> Result<Vec<Rule>, RuleError> {
    let mut rules = vec![];
    for (file, text) in DEFAULT_RULES {
        rules.extend(parse(file, text)?);
    }
    Ok(rules)
}

/// Parses every `*.rules` file of a directory, in file name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, RuleError> {
    let io = |source| RuleError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    let mut rules = vec![];
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| RuleError::Io {
            path: file.display().to_string(),
            source,
        })?;
        rules.extend(parse(&file.display().to_string(), &text)?);
    }
    Ok(rules)
}

/// A rule under construction.
struct Draft {
    name: String,
    doc: String,
    origin: Origin,
    lhs: Option<Pattern<TensorLang>>,
    clauses: Vec<Clause>,
    rhs: Option<PatternAst<TensorLang>>,
    bound: Vec<Var>,
}

/// Parses one rule file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = vec![];
    let mut doc: Option<String> = None;
    let mut draft: Option<Draft> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let at = |col: usize, message: String| RuleError::Syntax {
            origin: Origin {
                file: file.to_string(),
                line,
                col,
            },
            message,
        };
        let indent = raw.len() - raw.trim_start().len();
        let trimmed = raw.trim();
        if let Some(text) = trimmed.strip_prefix("##") {
            if let Some(d) = draft.take() {
                rules.push(finish(d)?);
            }
            doc = Some(text.trim().to_string());
            continue;
        }
        let content = strip_comment(trimmed);
        if content.is_empty() {
            continue;
        }
        let col = indent + 1;
        if let Some(name) =
            content
                .strip_prefix("rule ")
                .or(if content == "rule" { Some("") } else { None })
        {
            if let Some(d) = draft.take() {
                rules.push(finish(d)?);
            }
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(at(col, "expected `rule NAME` with a one-word name".into()));
            }
            if rules.iter().any(|r: &Rule| r.name == name) {
                return Err(at(
                    col,
                    format!("rule `{name}` is defined twice in this file"),
                ));
            }
            let Some(doc) = doc.take() else {
                return Err(at(
                    col,
                    format!("rule `{name}` needs a `## doc comment` line above it"),
                ));
            };
            let origin = Origin {
                file: file.to_string(),
                line,
                col,
            };
            draft = Some(Draft {
                name: name.into(),
                doc,
                origin,
                lhs: None,
                clauses: vec![],
                rhs: None,
                bound: vec![],
            });
            continue;
        }
        let Some(d) = draft.as_mut() else {
            return Err(at(col, format!("expected `rule NAME`, found `{content}`")));
        };
        if let Some(pattern) = content.strip_prefix("match ") {
            if d.lhs.is_some() {
                return Err(at(col, "a rule has one `match` clause".into()));
            }
            let pattern: Pattern<TensorLang> = pattern
                .trim()
                .parse()
                .map_err(|e| at(col + 6, format!("bad pattern: {e}")))?;
            d.bound = pattern.vars();
            d.lhs = Some(pattern);
        } else if let Some(call) = content.strip_prefix("let ") {
            expect_after_match(d, &at, col)?;
            let (vars, call) = call
                .split_once('=')
                .ok_or_else(|| at(col, "expected `let ?v.. = guard(args)`".into()))?;
            let binds = parse_vars(vars).map_err(|m| at(col + 4, m))?;
            let clause = parse_call(call.trim(), binds, &d.bound).map_err(|m| at(col, m))?;
            d.bound.extend(clause.binds.iter().copied());
            d.clauses.push(clause);
        } else if let Some(call) = content.strip_prefix("if ") {
            expect_after_match(d, &at, col)?;
            let clause = parse_call(call.trim(), vec![], &d.bound).map_err(|m| at(col + 3, m))?;
            d.clauses.push(clause);
        } else if let Some(pattern) = content.strip_prefix("=>") {
            expect_after_match(d, &at, col)?;
            let ast: PatternAst<TensorLang> = pattern
                .trim()
                .parse()
                .map_err(|e| at(col + 3, format!("bad pattern: {e}")))?;
            if let Some(var) = unbound_var(&ast, &d.bound) {
                return Err(at(
                    col + 3,
                    format!("`{var}` is not bound by `match` or a `let`"),
                ));
            }
            d.rhs = Some(ast);
        } else {
            return Err(at(
                col,
                format!("expected `match`, `let`, `if` or `=>`, found `{content}`"),
            ));
        }
    }
    if let Some(d) = draft.take() {
        rules.push(finish(d)?);
    }
    Ok(rules)
}

fn strip_comment(line: &str) -> &str {
    line.split_once('#')
        .map(|(code, _)| code)
        .unwrap_or(line)
        .trim()
}

fn expect_after_match(
    d: &Draft,
    at: &impl Fn(usize, String) -> RuleError,
    col: usize,
) -> Result<(), RuleError> {
    if d.lhs.is_none() {
        return Err(at(col, "the `match` clause comes first".into()));
    }
    if d.rhs.is_some() {
        return Err(at(col, "`=>` is the rule's last clause".into()));
    }
    Ok(())
}

fn finish(d: Draft) -> Result<Rule, RuleError> {
    let missing = |what: &str| RuleError::Syntax {
        origin: d.origin.clone(),
        message: format!("rule `{}` has no `{what}` clause", d.name),
    };
    let lhs = d.lhs.clone().ok_or_else(|| missing("match"))?;
    let rhs = d.rhs.clone().ok_or_else(|| missing("=>"))?;
    Ok(Rule {
        name: d.name,
        doc: d.doc,
        lhs,
        clauses: d.clauses,
        rhs,
        origin: d.origin,
    })
}

fn parse_vars(text: &str) -> Result<Vec<Var>, String> {
    text.split_whitespace()
        .map(|v| {
            if !v.starts_with('?') {
                return Err(format!(
                    "`{v}` is not a variable (variables start with `?`)"
                ));
            }
            v.parse::<Var>()
                .map_err(|e| format!("bad variable `{v}`: {e}"))
        })
        .collect()
}

fn parse_call(text: &str, binds: Vec<Var>, bound: &[Var]) -> Result<Clause, String> {
    let (name, rest) = text
        .split_once('(')
        .ok_or_else(|| format!("expected `guard(args)`, found `{text}`"))?;
    let args = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("missing `)` in `{text}`"))?;
    let name = name.trim();
    let guard = guard(name).ok_or_else(|| {
        let known: Vec<_> = crate::rules::guards::GUARDS
            .iter()
            .map(|g| g.name)
            .collect();
        format!("unknown guard `{name}` (known: {})", known.join(", "))
    })?;
    let args: Vec<ArgSpec> = args
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| parse_arg(a, bound))
        .collect::<Result<_, _>>()?;
    if args.len() != guard.params.len() {
        return Err(format!(
            "`{name}` takes {} arguments ({}), got {}",
            guard.params.len(),
            guard.params.join(", "),
            args.len()
        ));
    }
    if binds.len() != guard.binds {
        return Err(format!(
            "`{name}` binds {} variables, the clause names {}",
            guard.binds,
            binds.len()
        ));
    }
    Ok(Clause { binds, guard, args })
}

fn parse_arg(arg: &str, bound: &[Var]) -> Result<ArgSpec, String> {
    if arg.starts_with('?') {
        let var: Var = arg
            .parse()
            .map_err(|e| format!("bad variable `{arg}`: {e}"))?;
        if !bound.contains(&var) {
            return Err(format!(
                "`{arg}` is not bound by `match` or an earlier `let`"
            ));
        }
        Ok(ArgSpec::Var(var))
    } else {
        arg.parse()
            .map(ArgSpec::Int)
            .map_err(|_| format!("`{arg}` is neither a variable nor an integer"))
    }
}

fn unbound_var(ast: &PatternAst<TensorLang>, bound: &[Var]) -> Option<Var> {
    ast.as_ref().iter().find_map(|n| match n {
        egg::ENodeOrVar::Var(v) if !bound.contains(v) => Some(*v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# why
## Maps commute with keep.
rule keep-through-map
  match (keep ?a ?i (map ?f ?x))   # trailing comment
  => (map ?f (keep ?a ?i ?x))
";

    fn error_of(text: &str) -> String {
        match parse("t.rules", text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error for:\n{text}"),
        }
    }

    #[test]
    fn parses_a_rule_with_its_doc() {
        let rules = parse("t.rules", GOOD).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "keep-through-map");
        assert_eq!(rules[0].doc, "Maps commute with keep.");
        assert_eq!(rules[0].origin.line, 3);
    }

    #[test]
    fn default_rules_parse() {
        let rules = default_rules().unwrap();
        assert!(rules.len() >= 5, "only {} default rules", rules.len());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let bad_pattern = "## d\nrule r\n  match (keep ?a ?i\n  => ?a\n";
        assert!(
            error_of(bad_pattern).starts_with("t.rules:3:9: bad pattern"),
            "{}",
            error_of(bad_pattern)
        );
        let unknown = "## d\nrule r\n  match (map ?f ?x)\n  if nonsense(?x)\n  => ?x\n";
        assert!(
            error_of(unknown).starts_with("t.rules:4:6: unknown guard `nonsense`"),
            "{}",
            error_of(unknown)
        );
        let unbound = "## d\nrule r\n  match (map ?f ?x)\n  => (map ?f ?y)\n";
        assert!(
            error_of(unbound).contains("t.rules:4:6: `?y` is not bound"),
            "{}",
            error_of(unbound)
        );
        let no_doc = "rule r\n  match ?x\n  => ?x\n";
        assert!(error_of(no_doc).starts_with("t.rules:1:1: rule `r` needs a `## doc comment`"));
        let arity = "## d\nrule r\n  match (map ?f ?x)\n  if full(?x)\n  => ?x\n";
        assert!(
            error_of(arity).contains("`full` takes 2 arguments"),
            "{}",
            error_of(arity)
        );
        let no_rhs = "## d\nrule r\n  match (map ?f ?x)\n";
        assert!(error_of(no_rhs).starts_with("t.rules:2:1: rule `r` has no `=>` clause"));
        let stray = "match ?x\n";
        assert!(error_of(stray).starts_with("t.rules:1:1: expected `rule NAME`"));
    }
}
