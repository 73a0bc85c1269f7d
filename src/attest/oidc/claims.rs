//! What a checked token's claims must say, and what they make: claim
//! bindings (`bound_claims`, each a value or a list of values with `*`
//! globs) and the templates that turn claims into a SPIFFE ID path and a
//! task id (`"ci/github/{repository}"`).
//!
//! A claim is named by its key (`repository_owner`) or, for a claim inside
//! an object, by a JSON pointer (`/kubernetes.io/namespace`, RFC 6901), as
//! Vault's JWT auth names them.
//!
//! A claim value put into a SPIFFE ID may contain `/` (GitHub's
//! `repository` is `owner/name`), but every segment it makes must be a
//! valid SPIFFE path segment on its own: not empty, not `.` or `..`, and
//! only `A-Z a-z 0-9 . - _`. A value that breaks that is refused, never
//! escaped or cleaned up: an ID that is not exactly what the claims say
//! could name another workload.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::grant::TaskId;
use crate::spiffe_id::{SpiffeIdError, validate_segment};

/// Longest claim value a binding or template looks at, in bytes; longer
/// values match nothing and fill no template.
const MAX_VALUE_BYTES: usize = 1024;

/// Names one claim: a top-level key, or a JSON pointer into an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(String);

/// A value a claim must match: text where `*` stands for any run of
/// characters (none included, `/` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

/// One `bound_claims` entry: the claim must match one of the globs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The claim.
    pub claim: ClaimPath,
    /// What it may be.
    pub allowed: Vec<Glob>,
}

/// Every binding of a provider: all must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoundClaims(Vec<Binding>);

/// Text with `{claim}` placeholders, filled from a token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Claim(ClaimPath),
}

/// Why a binding did not match. Names the claim and what it must be, never
/// the value the token carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingMismatch {
    /// The claim, as the binding names it.
    pub claim: String,
    /// What the claim must match, as configured.
    pub expected: String,
    /// Whether the token has no such claim at all.
    pub missing: bool,
}

/// Why a template could not be filled: the claim (or the template), and
/// what is wrong with its value (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What could not be used: `claim "repository"`, or the template.
    pub subject: String,
    /// What is wrong, e.g. "would put a '..' segment into the SPIFFE ID".
    pub problem: String,
}

// === impl ClaimPath ===

impl ClaimPath {
    /// A claim name or JSON pointer, as written in the config.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text == "/" {
            return Err("a claim name is empty".to_owned());
        }
        if text.len() > 256 || text.chars().any(char::is_control) {
            return Err(format!(
                "claim name {:?} is not at most 256 bytes of printable text",
                text.chars().take(64).collect::<String>()
            ));
        }
        if text.starts_with('/') && text.split('/').skip(1).any(str::is_empty) {
            return Err(format!("JSON pointer {text:?} has an empty step"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The claim as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The claim's value in `claims`, if any.
    pub fn lookup<'a>(&self, claims: &'a BTreeMap<String, Value>) -> Option<&'a Value> {
        let Some(pointer) = self.0.strip_prefix('/') else {
            return claims.get(&self.0);
        };
        let (first, rest) = match pointer.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (pointer, None),
        };
        let top = claims.get(&unescape(first))?;
        match rest {
            None => Some(top),
            Some(rest) => top.pointer(&format!("/{rest}")),
        }
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One JSON pointer step, unescaped (`~1` is `/`, `~0` is `~`).
fn unescape(step: &str) -> String {
    step.replace("~1", "/").replace("~0", "~")
}

// === impl Glob ===

impl Glob {
    /// A value as written in the config.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a bound value is empty (use \"*\" for any value)".to_owned());
        }
        if text.len() > MAX_VALUE_BYTES || text.chars().any(char::is_control) {
            return Err(format!(
                "a bound value is not at most {MAX_VALUE_BYTES} bytes of printable text"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether `value` matches: `*` matches any run of characters.
    pub fn matches(&self, value: &str) -> bool {
        let pattern: Vec<char> = self.0.chars().collect();
        let text: Vec<char> = value.chars().collect();
        // The classic linear-backtracking wildcard match: remember the
        // last `*` and how much of the text it has taken.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if p < pattern.len() && pattern[p] == text[t] {
                p += 1;
                t += 1;
            } else if let Some((star_p, star_t)) = star {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|c| *c == '*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

// === impl BoundClaims ===

impl BoundClaims {
    /// The bindings as the config writes them: claim → a value or a list
    /// of values.
    pub fn new(bindings: Vec<Binding>) -> Self {
        Self(bindings)
    }

    /// The bindings, in order.
    pub fn bindings(&self) -> &[Binding] {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks every binding against `claims`; the first that fails is
    /// returned.
    pub fn check(&self, claims: &BTreeMap<String, Value>) -> Result<(), BindingMismatch> {
        for binding in &self.0 {
            let expected = || {
                binding
                    .allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            let Some(value) = binding.claim.lookup(claims) else {
                return Err(BindingMismatch {
                    claim: binding.claim.to_string(),
                    expected: expected(),
                    missing: true,
                });
            };
            let matched = scalars(value).iter().any(|candidate| {
                candidate.len() <= MAX_VALUE_BYTES
                    && binding.allowed.iter().any(|glob| glob.matches(candidate))
            });
            if !matched {
                return Err(BindingMismatch {
                    claim: binding.claim.to_string(),
                    expected: expected(),
                    missing: false,
                });
            }
        }
        Ok(())
    }
}

/// The values a claim offers to a binding: a string, number or boolean as
/// its text; a list, each such element of it. Objects and null offer none.
fn scalars(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

// === impl Binding ===

impl Binding {
    /// One `bound_claims` entry from the config: `claim = "value"` or
    /// `claim = ["value", "other-*"]`.
    pub fn parse(claim: &str, allowed: &[String]) -> Result<Self, String> {
        let claim = ClaimPath::parse(claim)?;
        if allowed.is_empty() {
            return Err(format!("{claim}: needs at least one value"));
        }
        let allowed = allowed
            .iter()
            .map(|text| Glob::parse(text).map_err(|message| format!("{claim}: {message}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { claim, allowed })
    }
}

// === impl Template ===

impl Template {
    /// Parses `{claim}` placeholders out of `text`. A brace that opens no
    /// placeholder or closes none is an error, and so is an empty one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            if rest[at..].starts_with('}') {
                return Err(format!("{text:?}: a '}}' closes no placeholder"));
            }
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("{text:?}: a '{{' is not closed"))?;
            let name = &after[..end];
            if name.contains('{') {
                return Err(format!("{text:?}: placeholders do not nest"));
            }
            let claim = ClaimPath::parse(name).map_err(|message| format!("{text:?}: {message}"))?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Claim(claim));
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err("is empty".to_owned());
        }
        Ok(Self {
            source: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The claims it reads, in order.
    pub fn claims(&self) -> impl Iterator<Item = &ClaimPath> {
        self.parts.iter().filter_map(|part| match part {
            Part::Claim(claim) => Some(claim),
            Part::Literal(_) => None,
        })
    }

    /// Checks that the template makes a SPIFFE ID path when every claim
    /// is a valid segment: at load, so a bad literal part is a config
    /// error, not a refusal of every token.
    pub fn check_path(&self) -> Result<(), String> {
        let sample = self.fill(|_| Ok("x".to_owned()));
        match sample {
            Ok(path) => check_segments(&path).map_err(|problem| {
                format!(
                    "{:?} does not make a SPIFFE ID path: it would put {problem} into it",
                    self.source
                )
            }),
            Err(error) => Err(error.problem),
        }
    }

    /// Checks that the template makes a task id when every claim is a
    /// plain value.
    pub fn check_task(&self) -> Result<(), String> {
        let sample = self.fill(|_| Ok("x".to_owned())).map_err(|e| e.problem)?;
        TaskId::new(&sample)
            .map(|_| ())
            .map_err(|error| format!("{:?} does not make a task id: it {error}", self.source))
    }

    /// The SPIFFE ID path (without a leading `/`) the template makes from
    /// `claims`. Every claim it names must be a string (or an integer)
    /// whose `/`-separated segments are each valid SPIFFE path segments.
    pub fn render_path(&self, claims: &BTreeMap<String, Value>) -> Result<String, TemplateError> {
        let path = self.fill(|claim| {
            let value = text_value(claim, claims)?;
            check_segments(&value).map_err(|problem| TemplateError {
                subject: format!("claim {:?}", claim.as_str()),
                problem: format!("would put {problem} into the SPIFFE ID"),
            })?;
            Ok(value)
        })?;
        check_segments(&path).map_err(|problem| TemplateError {
            subject: format!("the template {:?}", self.source),
            problem: format!("would put {problem} into the SPIFFE ID"),
        })?;
        Ok(path)
    }

    /// The task id the template makes from `claims`.
    pub fn render_task(&self, claims: &BTreeMap<String, Value>) -> Result<TaskId, TemplateError> {
        let task = self.fill(|claim| text_value(claim, claims))?;
        TaskId::new(&task).map_err(|error| TemplateError {
            subject: format!("the task template {:?}", self.source),
            problem: format!("makes a task id that {error}"),
        })
    }

    fn fill(
        &self,
        mut value: impl FnMut(&ClaimPath) -> Result<String, TemplateError>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Claim(claim) => out.push_str(&value(claim)?),
            }
        }
        Ok(out)
    }
}

/// A claim's value as template text: a string, or an integer's digits.
fn text_value(
    claim: &ClaimPath,
    claims: &BTreeMap<String, Value>,
) -> Result<String, TemplateError> {
    let problem = |problem: &str| TemplateError {
        subject: format!("claim {:?}", claim.as_str()),
        problem: problem.to_owned(),
    };
    match claim.lookup(claims) {
        None => Err(problem("is missing")),
        Some(Value::String(text)) if text.len() > MAX_VALUE_BYTES => {
            Err(problem("is too long to use"))
        }
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
        Some(_) => Err(problem("is not a string")),
    }
}

/// Checks every `/`-separated segment of `text`; on failure says what the
/// bad segment would be (never the segment itself).
fn check_segments(text: &str) -> Result<(), String> {
    for segment in text.split('/') {
        if let Err(error) = validate_segment(segment) {
            return Err(match error {
                SpiffeIdError::EmptySegment => "an empty segment".to_owned(),
                SpiffeIdError::DotSegment => "a '.' or '..' segment".to_owned(),
                SpiffeIdError::BadPathChar(bad) => {
                    format!("the character {bad:?}, which is not one of A-Z a-z 0-9 . - _")
                }
                other => other.to_string(),
            });
        }
    }
    Ok(())
}

impl fmt::Display for BindingMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.missing {
            write!(
                f,
                "claim {:?} is missing; it is bound to {}",
                self.claim, self.expected
            )
        } else {
            write!(
                f,
                "claim {:?} does not match its binding: it must be {}",
                self.claim, self.expected
            )
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.subject, self.problem)
    }
}
