//! Rule files: parsing `rules/*.rules` into [`Rule`]s.
//!
//! ```text
//! # Free comments say why a group of rules is sound.
//!
//! ## One-line doc comment of the rule (required).
//! #= f(x)[I] = f(x[I]) for an element-wise f      (the identity that makes it sound)
//! rule keep-through-map
//!   match (keep ?a ?i (map ?f ?x))
//!   let ?b = some-guard(?f, ?a)      # zero or more `let`/`if` clauses, in order
//!   if other-guard(?x, 2)
//!   => (map ?f (keep ?a ?i ?x))
//! ```
//!
//! The guards a clause may call are listed in [`crate::rules::guards`]. Every variable has a
//! [`Sort`] (tensor, op, axis, set), given by its position in the `match` pattern or by the guard
//! that binds it; a guard argument or a right-hand-side position of another sort is a parse
//! error. The default rules are embedded in the binary; [`load_dir`] adds a user's own.

use crate::egraph::lang::{Sort, TensorLang};
use crate::rules::guards::{guard, Guard, GUARDS};
use egg::{ENodeOrVar, Language, Pattern, PatternAst, Var};
use std::collections::HashMap;
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
    /// Its `#=` line: the identity that makes it sound.
    pub identity: Option<String>,
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
    identity: Option<String>,
    origin: Origin,
    lhs: Option<Pattern<TensorLang>>,
    clauses: Vec<Clause>,
    rhs: Option<PatternAst<TensorLang>>,
    /// The sort of every variable bound so far (by `match` or a `let`).
    sorts: HashMap<Var, Sort>,
}

/// A rule file being read line by line.
struct FileParser<'a> {
    file: &'a str,
    rules: Vec<Rule>,
    /// The `##` doc comment waiting for its rule.
    doc: Option<String>,
    /// The `#=` identity waiting for its rule.
    identity: Option<String>,
    draft: Option<Draft>,
}

/// Parses one rule file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut parser = FileParser {
        file,
        rules: vec![],
        doc: None,
        identity: None,
        draft: None,
    };
    for (index, raw) in text.lines().enumerate() {
        parser.line(index + 1, raw)?;
    }
    parser.close_rule()?;
    Ok(parser.rules)
}

impl FileParser<'_> {
    fn origin(&self, line: usize, col: usize) -> Origin {
        origin(self.file, line, col)
    }

    fn line(&mut self, line: usize, raw: &str) -> Result<(), RuleError> {
        let col = raw.len() - raw.trim_start().len() + 1;
        let trimmed = raw.trim();
        if let Some(doc) = trimmed.strip_prefix("##") {
            self.close_rule()?;
            self.doc = Some(doc.trim().to_string());
            return Ok(());
        }
        if let Some(identity) = trimmed.strip_prefix("#=") {
            self.close_rule()?;
            self.identity = Some(identity.trim().to_string());
            return Ok(());
        }
        let content = strip_comment(trimmed);
        if content.is_empty() {
            return Ok(());
        }
        let file = self.file;
        let at = |col: usize, message: String| RuleError::Syntax {
            origin: origin(file, line, col),
            message,
        };
        if content == "rule" || content.starts_with("rule ") {
            return self.start_rule(content["rule".len()..].trim(), line, col);
        }
        let Some(draft) = self.draft.as_mut() else {
            return Err(at(col, format!("expected `rule NAME`, found `{content}`")));
        };
        draft
            .clause(content, col)
            .map_err(|(c, message)| at(c, message))
    }

    fn start_rule(&mut self, name: &str, line: usize, col: usize) -> Result<(), RuleError> {
        self.close_rule()?;
        let file = self.file;
        let at = |message: String| RuleError::Syntax {
            origin: origin(file, line, col),
            message,
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(at("expected `rule NAME` with a one-word name".into()));
        }
        if self.rules.iter().any(|r| r.name == name) {
            return Err(at(format!("rule `{name}` is defined twice in this file")));
        }
        let Some(doc) = self.doc.take() else {
            return Err(at(format!(
                "rule `{name}` needs a `## doc comment` line above it"
            )));
        };
        self.draft = Some(Draft {
            name: name.into(),
            doc,
            identity: self.identity.take(),
            origin: self.origin(line, col),
            lhs: None,
            clauses: vec![],
            rhs: None,
            sorts: HashMap::new(),
        });
        Ok(())
    }

    fn close_rule(&mut self) -> Result<(), RuleError> {
        if let Some(draft) = self.draft.take() {
            self.rules.push(draft.finish()?);
        }
        Ok(())
    }
}

fn origin(file: &str, line: usize, col: usize) -> Origin {
    Origin {
        file: file.to_string(),
        line,
        col,
    }
}

/// A clause's problem: the column it is at, and what is wrong.
type ClauseError = (usize, String);

impl Draft {
    /// Adds one `match`, `let`, `if` or `=>` clause starting at column `col`.
    fn clause(&mut self, content: &str, col: usize) -> Result<(), ClauseError> {
        if let Some(pattern) = content.strip_prefix("match ") {
            if self.lhs.is_some() {
                return Err((col, "a rule has one `match` clause".into()));
            }
            let pattern: Pattern<TensorLang> = pattern
                .trim()
                .parse()
                .map_err(|e| (col + 6, format!("bad pattern: {e}")))?;
            bind_pattern_sorts(&pattern.ast, &mut self.sorts).map_err(|m| (col + 6, m))?;
            self.lhs = Some(pattern);
            return Ok(());
        }
        self.expect_between_match_and_rhs(col)?;
        if let Some(call) = content.strip_prefix("let ") {
            let (vars, call) = call
                .split_once('=')
                .ok_or_else(|| (col, "expected `let ?v.. = guard(args)`".to_string()))?;
            let binds = parse_vars(vars).map_err(|m| (col + 4, m))?;
            let clause = parse_call(call.trim(), binds, &self.sorts).map_err(|m| (col, m))?;
            for (var, sort) in clause.binds.iter().zip(clause.guard.binds) {
                if self.sorts.insert(*var, *sort).is_some() {
                    return Err((col + 4, format!("`{var}` is already bound")));
                }
            }
            self.clauses.push(clause);
        } else if let Some(call) = content.strip_prefix("if ") {
            let clause = parse_call(call.trim(), vec![], &self.sorts).map_err(|m| (col + 3, m))?;
            self.clauses.push(clause);
        } else if let Some(pattern) = content.strip_prefix("=>") {
            let ast: PatternAst<TensorLang> = pattern
                .trim()
                .parse()
                .map_err(|e| (col + 3, format!("bad pattern: {e}")))?;
            check_pattern_sorts(&ast, &self.sorts).map_err(|m| (col + 3, m))?;
            self.rhs = Some(ast);
        } else {
            return Err((
                col,
                format!("expected `match`, `let`, `if` or `=>`, found `{content}`"),
            ));
        }
        Ok(())
    }

    fn expect_between_match_and_rhs(&self, col: usize) -> Result<(), ClauseError> {
        if self.lhs.is_none() {
            return Err((col, "the `match` clause comes first".into()));
        }
        if self.rhs.is_some() {
            return Err((col, "`=>` is the rule's last clause".into()));
        }
        Ok(())
    }

    fn finish(self) -> Result<Rule, RuleError> {
        let missing = |what: &str| RuleError::Syntax {
            origin: self.origin.clone(),
            message: format!("rule `{}` has no `{what}` clause", self.name),
        };
        let lhs = self.lhs.clone().ok_or_else(|| missing("match"))?;
        let rhs = self.rhs.clone().ok_or_else(|| missing("=>"))?;
        Ok(Rule {
            name: self.name,
            doc: self.doc,
            identity: self.identity,
            lhs,
            clauses: self.clauses,
            rhs,
            origin: self.origin,
        })
    }
}

fn strip_comment(line: &str) -> &str {
    line.split_once('#')
        .map(|(code, _)| code)
        .unwrap_or(line)
        .trim()
}

/// Each position of a pattern with the sort it must have: the root is a tensor, and every
/// child has the sort its operator gives that position.
fn positions(ast: &PatternAst<TensorLang>) -> Vec<(usize, Sort)> {
    let nodes = ast.as_ref();
    let mut found = vec![];
    let mut stack = vec![(nodes.len() - 1, Sort::Tensor)];
    while let Some((index, sort)) = stack.pop() {
        found.push((index, sort));
        if let ENodeOrVar::ENode(node) = &nodes[index] {
            for (k, child) in node.children().iter().enumerate() {
                stack.push((usize::from(*child), node.child_sort(k)));
            }
        }
    }
    found
}

/// What sits at a position of a pattern, when it is not a variable: an operation is a tensor,
/// a number an axis or integer; other leaves are not checked.
fn leaf_fits(node: &TensorLang, sort: Sort) -> bool {
    match node {
        TensorLang::Num(_) => matches!(sort, Sort::Axis | Sort::Int),
        TensorLang::Key(_) => true,
        _ => sort == Sort::Tensor,
    }
}

/// Walks a pattern's positions: an operation or number must fit its position's sort, and
/// `variable` is told the sort of each variable's position.
fn walk_sorts(
    ast: &PatternAst<TensorLang>,
    mut variable: impl FnMut(Var, Sort) -> Result<(), String>,
) -> Result<(), String> {
    for (index, sort) in positions(ast) {
        match &ast.as_ref()[index] {
            ENodeOrVar::Var(var) => variable(*var, sort)?,
            ENodeOrVar::ENode(node) if !leaf_fits(node, sort) => {
                return Err(format!("`{node}` is not {}", sort.a()))
            }
            ENodeOrVar::ENode(_) => {}
        }
    }
    Ok(())
}

/// Gives the variables of a `match` pattern their sorts; a variable used at two sorts is an
/// error.
fn bind_pattern_sorts(
    ast: &PatternAst<TensorLang>,
    sorts: &mut HashMap<Var, Sort>,
) -> Result<(), String> {
    walk_sorts(ast, |var, sort| match sorts.insert(var, sort) {
        Some(other) if other != sort => Err(format!(
            "`{var}` is used as {} and as {}",
            other.a(),
            sort.a()
        )),
        _ => Ok(()),
    })
}

/// Checks a right-hand side: every variable is bound, and at a position of its sort.
fn check_pattern_sorts(
    ast: &PatternAst<TensorLang>,
    sorts: &HashMap<Var, Sort>,
) -> Result<(), String> {
    walk_sorts(ast, |var, sort| match sorts.get(&var) {
        None => Err(format!("`{var}` is not bound by `match` or a `let`")),
        Some(bound) if *bound != sort => Err(format!(
            "`{var}` is {}, used where {} goes",
            bound.a(),
            sort.a()
        )),
        Some(_) => Ok(()),
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

fn parse_call(text: &str, binds: Vec<Var>, sorts: &HashMap<Var, Sort>) -> Result<Clause, String> {
    let (name, rest) = text
        .split_once('(')
        .ok_or_else(|| format!("expected `guard(args)`, found `{text}`"))?;
    let args = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("missing `)` in `{text}`"))?;
    let name = name.trim();
    let guard = guard(name).ok_or_else(|| {
        let known: Vec<_> = GUARDS.iter().map(|g| g.name).collect();
        format!("unknown guard `{name}` (known: {})", known.join(", "))
    })?;
    let args: Vec<&str> = args
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if args.len() != guard.params.len() {
        let params: Vec<String> = guard
            .params
            .iter()
            .map(|(n, s)| format!("{n} {s}"))
            .collect();
        return Err(format!(
            "`{name}` takes {} arguments ({}), got {}",
            guard.params.len(),
            params.join(", "),
            args.len()
        ));
    }
    if binds.len() != guard.binds.len() {
        return Err(format!(
            "`{name}` binds {} variables, the clause names {}",
            guard.binds.len(),
            binds.len()
        ));
    }
    let args = args
        .iter()
        .zip(guard.params)
        .map(|(arg, (param, sort))| {
            parse_arg(arg, *sort, sorts).map_err(|m| format!("`{name}` argument {param}: {m}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Clause { binds, guard, args })
}

/// One argument, which must have `sort`.
fn parse_arg(arg: &str, sort: Sort, sorts: &HashMap<Var, Sort>) -> Result<ArgSpec, String> {
    if arg.starts_with('?') {
        let var: Var = arg
            .parse()
            .map_err(|e| format!("bad variable `{arg}`: {e}"))?;
        match sorts.get(&var) {
            None => Err(format!(
                "`{arg}` is not bound by `match` or an earlier `let`"
            )),
            Some(bound) if *bound != sort => {
                Err(format!("`{arg}` is {}, not {}", bound.a(), sort.a()))
            }
            Some(_) => Ok(ArgSpec::Var(var)),
        }
    } else if matches!(sort, Sort::Int | Sort::Axis) {
        arg.parse()
            .map(ArgSpec::Int)
            .map_err(|_| format!("`{arg}` is neither a variable nor an integer"))
    } else {
        Err(format!(
            "`{arg}` is not a variable ({} is expected)",
            sort.a()
        ))
    }
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
    fn default_rules_parse_and_state_their_identity() {
        let rules = default_rules().unwrap();
        assert!(rules.len() >= 5, "only {} default rules", rules.len());
        for rule in &rules {
            assert!(
                rule.identity.is_some(),
                "{}: `{}` has no `#=` identity",
                rule.origin,
                rule.name
            );
        }
    }

    #[test]
    fn arguments_and_positions_are_checked_by_sort() {
        let op_for_tensor = "## d\nrule r\n  match (map ?f ?x)\n  if all-zero(?f)\n  => ?x\n";
        assert!(
            error_of(op_for_tensor).contains("`all-zero` argument ?t: `?f` is an op, not a tensor"),
            "{}",
            error_of(op_for_tensor)
        );
        let tensor_as_op = "## d\nrule r\n  match (map ?f ?x)\n  => (map ?x ?x)\n";
        assert!(
            error_of(tensor_as_op).contains("`?x` is a tensor, used where an op goes"),
            "{}",
            error_of(tensor_as_op)
        );
        let two_sorts = "## d\nrule r\n  match (bin ?f ?f ?x)\n  => ?x\n";
        assert!(
            error_of(two_sorts).contains("`?f` is used as a"),
            "{}",
            error_of(two_sorts)
        );
        let literal_for_tensor = "## d\nrule r\n  match (map ?f ?x)\n  if all-zero(3)\n  => ?x\n";
        assert!(
            error_of(literal_for_tensor).contains("`3` is not a variable (a tensor is expected)"),
            "{}",
            error_of(literal_for_tensor)
        );
        let rebound =
            "## d\nrule r\n  match (map ?f ?x)\n  let ?x = canonical-axis-op(?f)\n  => ?x\n";
        assert!(
            error_of(rebound).contains("`?x` is already bound"),
            "{}",
            error_of(rebound)
        );
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
