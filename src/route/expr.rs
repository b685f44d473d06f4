//! vulcand's route expression language (`Host`, `Path`, `PathRegexp`, `PathPrefix`, `Method`,
//! `Header`, ... joined by `&&`) parsed once into typed matchers.
//!
//! ```text
//! expr    := call ( "&&" call )*            whitespace allowed between tokens
//! call    := Name "(" [ string ( "," string )* ] ")"
//! string  := "..." (Go escapes: \" \\ \n \r \t \a \b \f \v) | `raw`
//! ```
//!
//! Semantics, matching vulcand unless noted:
//! - `Host("a.b")` compares the request host (without port) ignoring ASCII case; label
//!   placeholders work as in vulcand (`Host("<tenant>.example.com")`), see [`super::template`].
//! - `Path("/x")` matches the whole raw path (no percent-decoding, no query) with `<x>`,
//!   `<int:x>`, `<path:x>` placeholders. A path without a leading `/` gets one.
//! - `PathPrefix("/x")` (ringway extension, as Traefik) is a plain byte prefix: `/api` matches
//!   `/api`, `/api/v1` and also `/apiary`. Write `/api/` to stop at a segment boundary. A
//!   prefix without a leading `/` gets one, like `Path`.
//! - `*Regexp` arguments are Rust `regex` syntax and **unanchored**, exactly as vulcand's
//!   `regexp.MatchString`: `PathRegexp("/users")` matches `/v1/users/x`; write `^...$` to
//!   anchor. `HostRegexp` is case-insensitive (vulcand lowercases both sides).
//! - `Method("GET")` is an exact, case-sensitive comparison (methods are case-sensitive).
//! - `Header("Name", "value")` compares the first value of the field exactly;
//!   `HeaderRegexp` runs on the first value, or on the empty string when the field is absent
//!   (as Go's `Header.Get`).

use std::fmt;

use regex::bytes::{Regex, RegexBuilder};
use thiserror::Error;

use super::template::{HostTemplate, PathTemplate};
use super::RouteRequest;

/// A route expression that did not parse: where, and what was expected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("at byte {position}: {message}")]
pub struct ExprError {
    /// Byte offset into the expression.
    pub position: usize,
    pub message: String,
}

/// One typed matcher of an expression.
#[derive(Clone, Debug)]
pub enum Matcher {
    Host(HostTemplate),
    HostRegexp(Regex),
    Path(PathTemplate),
    PathPrefix(Box<[u8]>),
    PathRegexp(Regex),
    Method(Box<[u8]>),
    MethodRegexp(Regex),
    Header { name: String, value: Box<[u8]> },
    HeaderRegexp { name: String, regex: Regex },
}

/// A parsed expression: every matcher must match.
#[derive(Clone, Debug)]
pub struct Expr {
    pub matchers: Vec<Matcher>,
}

const MATCHERS: &str =
    "Host, HostRegexp, Path, PathRegexp, PathPrefix, Method, MethodRegexp, Header, HeaderRegexp";

/// Parse a route expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    Parser(Cursor {
        src: text,
        pos: 0,
        what: "expression",
        depth: 0,
    })
    .expr()
}

impl Expr {
    /// The matchers as a canonical string: sorted, double-quoted, placeholder names as `_`.
    /// It parses back to an expression with the same normalized form.
    /// Two expressions with the same normalized form match the same requests.
    pub fn normalized(&self) -> String {
        let mut parts: Vec<String> = self.matchers.iter().map(Matcher::to_string).collect();
        parts.sort();
        parts.dedup();
        parts.join(" && ")
    }

    /// Does the request satisfy every matcher?
    pub fn matches(&self, req: &dyn RouteRequest) -> bool {
        self.matchers.iter().all(|m| m.matches(req))
    }
}

/// The request path as vulcand sees it: an empty path is `/`.
pub(crate) fn request_path(req: &dyn RouteRequest) -> &[u8] {
    let path = req.path();
    if path.is_empty() {
        b"/"
    } else {
        path
    }
}

impl Matcher {
    /// Does the request satisfy this matcher?
    pub fn matches(&self, req: &dyn RouteRequest) -> bool {
        match self {
            Matcher::Host(t) => t.matches(req.host()),
            Matcher::HostRegexp(re) => re.is_match(req.host()),
            Matcher::Path(t) => t.matches(request_path(req)),
            Matcher::PathPrefix(p) => request_path(req).starts_with(p),
            Matcher::PathRegexp(re) => re.is_match(request_path(req)),
            Matcher::Method(m) => req.method() == &**m,
            Matcher::MethodRegexp(re) => re.is_match(req.method()),
            Matcher::Header { name, value } => req.header(name.as_bytes()) == Some(&**value),
            Matcher::HeaderRegexp { name, regex } => {
                regex.is_match(req.header(name.as_bytes()).unwrap_or(b""))
            }
        }
    }
}

fn quote(out: &mut fmt::Formatter<'_>, text: &[u8]) -> fmt::Result {
    out.write_str("\"")?;
    for c in String::from_utf8_lossy(text).chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            c => write!(out, "{c}")?,
        }
    }
    out.write_str("\"")
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, args): (&str, Vec<&[u8]>) = match self {
            Matcher::Host(t) => {
                f.write_str("Host(")?;
                quote(f, t.normalized().as_bytes())?;
                return f.write_str(")");
            }
            Matcher::Path(t) => {
                f.write_str("Path(")?;
                quote(f, t.normalized().as_bytes())?;
                return f.write_str(")");
            }
            Matcher::HostRegexp(re) => ("HostRegexp", vec![re.as_str().as_bytes()]),
            Matcher::PathPrefix(p) => ("PathPrefix", vec![p]),
            Matcher::PathRegexp(re) => ("PathRegexp", vec![re.as_str().as_bytes()]),
            Matcher::Method(m) => ("Method", vec![m]),
            Matcher::MethodRegexp(re) => ("MethodRegexp", vec![re.as_str().as_bytes()]),
            Matcher::Header { name, value } => ("Header", vec![name.as_bytes(), value]),
            Matcher::HeaderRegexp { name, regex } => (
                "HeaderRegexp",
                vec![name.as_bytes(), regex.as_str().as_bytes()],
            ),
        };
        write!(f, "{name}(")?;
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            quote(f, arg)?;
        }
        f.write_str(")")
    }
}

/// The string literal opening at byte `at` of `src` (a `"` or a backtick): its text and the
/// byte after its closing quote. Double quotes take Go's escapes (`\" \\ \n \r \t \a \b
/// \f \v`) and no newline; backticks are raw, as in Go. Shared by every language of vulcand's
/// that has strings (route expressions, predicates).
pub(crate) fn quoted_string(src: &str, at: usize) -> Result<(String, usize), ExprError> {
    let err = |position: usize, message: String| Err(ExprError { position, message });
    let quote = match src[at..].chars().next() {
        Some(q @ ('"' | '`')) => q,
        _ => return err(at, "expected a string in double quotes or backticks".into()),
    };
    let body = at + 1;
    let mut text = String::new();
    let mut chars = src[body..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((text, body + i + 1));
        }
        if c == '\\' && quote == '"' {
            let Some((_, e)) = chars.next() else { break };
            text.push(match e {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'a' => '\x07',
                'b' => '\x08',
                'f' => '\x0c',
                'v' => '\x0b',
                other => {
                    return err(
                        body + i,
                        format!("unknown escape \\{other} (write \\\\ for a backslash)"),
                    )
                }
            });
        } else if c == '\n' && quote == '"' {
            return err(body + i, "newline inside a double-quoted string".into());
        } else {
            text.push(c);
        }
    }
    err(at, format!("unterminated string starting with {quote}"))
}

/// A position in the text of one of vulcand's small languages, with the moves every parser
/// of them makes.
pub(crate) struct Cursor<'a> {
    pub src: &'a str,
    pub pos: usize,
    /// What the text is called in "found the end of the ..." messages.
    pub what: &'static str,
    /// Parentheses open at the cursor, for languages that nest.
    pub depth: usize,
}

impl Cursor<'_> {
    pub fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    pub fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    /// "found 'x'" for the character at the cursor, for error messages.
    pub fn found(&self) -> String {
        match self.rest().chars().next() {
            Some(c) => format!("found {c:?}"),
            None => format!("found the end of the {}", self.what),
        }
    }
}

/// A parser type that is a [`Cursor`] with the grammar's own methods on top.
macro_rules! cursor_parser {
    ($name:ident) => {
        struct $name<'a>($crate::route::expr::Cursor<'a>);

        impl<'a> std::ops::Deref for $name<'a> {
            type Target = $crate::route::expr::Cursor<'a>;
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name<'_> {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }
    };
}
pub(crate) use cursor_parser;

cursor_parser!(Parser);

/// A string argument and the byte offset of its opening quote.
struct Arg {
    text: String,
    at: usize,
}

impl Parser<'_> {
    fn err<T>(&self, position: usize, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            position,
            message: message.into(),
        })
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        self.skip_ws();
        if self.rest().is_empty() {
            return self.err(
                self.pos,
                format!("empty route expression; expected a matcher ({MATCHERS})"),
            );
        }
        let mut matchers = Vec::new();
        loop {
            matchers.push(self.call()?);
            self.skip_ws();
            if self.rest().is_empty() {
                return Ok(Expr { matchers });
            }
            if !self.rest().starts_with("&&") {
                return self.err(
                    self.pos,
                    format!(
                        "expected \"&&\" or the end of the expression, {}",
                        self.found()
                    ),
                );
            }
            self.pos += 2;
            self.skip_ws();
        }
    }

    fn call(&mut self) -> Result<Matcher, ExprError> {
        let start = self.pos;
        let len = self
            .rest()
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        if len == 0 {
            return self.err(
                start,
                format!("expected a matcher ({MATCHERS}), {}", self.found()),
            );
        }
        let name = &self.src[start..start + len];
        self.pos += len;
        self.skip_ws();
        if !self.rest().starts_with('(') {
            return self.err(
                self.pos,
                format!("expected \"(\" after {name}, {}", self.found()),
            );
        }
        self.pos += 1;
        let args = self.args()?;
        self.build(name, start, args)
    }

    fn args(&mut self) -> Result<Vec<Arg>, ExprError> {
        let mut args = Vec::new();
        self.skip_ws();
        if self.rest().starts_with(')') {
            self.pos += 1;
            return Ok(args);
        }
        loop {
            self.skip_ws();
            args.push(self.string()?);
            self.skip_ws();
            match self.rest().chars().next() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(args);
                }
                _ => {
                    return self.err(
                        self.pos,
                        format!("expected \",\" or \")\", {}", self.found()),
                    )
                }
            }
        }
    }

    fn string(&mut self) -> Result<Arg, ExprError> {
        let at = self.pos;
        if !self.rest().starts_with(['"', '`']) {
            return self.err(
                at,
                format!(
                    "expected a string in double quotes or backticks, {}",
                    self.found()
                ),
            );
        }
        let (text, end) = quoted_string(self.src, at)?;
        self.pos = end;
        Ok(Arg { text, at })
    }

    fn build(&self, name: &str, at: usize, args: Vec<Arg>) -> Result<Matcher, ExprError> {
        let want = match name {
            "Host" | "HostRegexp" | "Path" | "PathRegexp" | "PathPrefix" | "Method"
            | "MethodRegexp" => 1,
            "Header" | "HeaderRegexp" => 2,
            _ => {
                return self.err(
                    at,
                    format!("unknown matcher {name:?}; expected one of {MATCHERS}"),
                )
            }
        };
        if args.len() != want {
            let what = if want == 1 { "argument" } else { "arguments" };
            return self.err(
                at,
                format!("{name} takes {want} {what}, got {}", args.len()),
            );
        }
        let mut args = args.into_iter();
        let first = args.next().expect("argument count checked above");
        let second = args.next();
        let fail = |message: String| ExprError {
            position: first.at,
            message: format!("{name}: {message}"),
        };
        let non_empty = |arg: &Arg| {
            if arg.text.is_empty() {
                Err(ExprError {
                    position: arg.at,
                    message: format!("{name}: empty argument"),
                })
            } else {
                Ok(arg.text.clone().into_bytes().into_boxed_slice())
            }
        };
        let regex = |arg: &Arg, ignore_case: bool| {
            RegexBuilder::new(&arg.text)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| ExprError {
                    position: arg.at,
                    message: format!("{name}: bad regular expression: {e}"),
                })
        };
        Ok(match name {
            "Host" => Matcher::Host(HostTemplate::parse(&first.text).map_err(fail)?),
            "HostRegexp" => Matcher::HostRegexp(regex(&first, true)?),
            "Path" => Matcher::Path(PathTemplate::parse(&first.text).map_err(fail)?),
            "PathRegexp" => Matcher::PathRegexp(regex(&first, false)?),
            "PathPrefix" => {
                let mut prefix = non_empty(&first)?.into_vec();
                if prefix[0] != b'/' {
                    prefix.insert(0, b'/');
                }
                Matcher::PathPrefix(prefix.into_boxed_slice())
            }
            "Method" => Matcher::Method(non_empty(&first)?),
            "MethodRegexp" => Matcher::MethodRegexp(regex(&first, false)?),
            "Header" => {
                let value = second.expect("Header takes two arguments, checked above");
                Matcher::Header {
                    name: String::from_utf8(non_empty(&first)?.into_vec())
                        .expect("argument text came from a str"),
                    value: non_empty(&value)?,
                }
            }
            _ => {
                let value = second.expect("HeaderRegexp takes two arguments, checked above");
                Matcher::HeaderRegexp {
                    name: String::from_utf8(non_empty(&first)?.into_vec())
                        .expect("argument text came from a str"),
                    regex: regex(&value, false)?,
                }
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
