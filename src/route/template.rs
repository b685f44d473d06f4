//! Path and host templates with placeholders: `Path("/users/<id>/posts/<int:n>")`,
//! `Path("/static/<path:rest>")`, `Host("<tenant>.example.com")`.
//!
//! A placeholder fills one whole segment (path) or label (host):
//! - `<x>` (or `<string:x>`): one non-empty segment, no `/` (in hosts: one label, no `.`);
//! - `<int:x>`: one segment of ASCII digits;
//! - `<path:x>`: the rest of the path, one or more segments, `/` allowed; last segment only,
//!   and not in hosts.
//!
//! Differences from vulcand's character trie, chosen so matching stays a segment walk:
//! a placeholder must fill a whole segment (`/v<n>` is refused at compile time), `<x>` does not
//! match an empty segment, and `<int:x>` needs at least one digit. Placeholder names are only
//! documentation: ringway does not pass captured values on, so `/a/<x>` and `/a/<y>` are the
//! same route.

/// One segment of a template.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// Literal bytes (host labels are stored lowercased).
    Literal(Box<[u8]>),
    /// `<int:x>`: ASCII digits.
    Int,
    /// `<x>` / `<string:x>`: any non-empty segment.
    Str,
    /// `<path:x>`: the non-empty rest of the path.
    Tail,
}

impl Segment {
    /// Sort order of segment kinds by specificity: literal, int, string, tail.
    pub(crate) fn kind_rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Int => 1,
            Segment::Str => 2,
            Segment::Tail => 3,
        }
    }

    fn matches(&self, seg: &[u8], ignore_case: bool) -> bool {
        match self {
            Segment::Literal(lit) if ignore_case => lit.eq_ignore_ascii_case(seg),
            Segment::Literal(lit) => **lit == *seg,
            Segment::Int => !seg.is_empty() && seg.iter().all(u8::is_ascii_digit),
            Segment::Str => !seg.is_empty(),
            Segment::Tail => false,
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Segment::Literal(lit) => out.push_str(&String::from_utf8_lossy(lit)),
            Segment::Int => out.push_str("<int:_>"),
            Segment::Str => out.push_str("<_>"),
            Segment::Tail => out.push_str("<path:_>"),
        }
    }
}

/// A parsed `Path(...)` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    /// Segments after the leading `/`; `/` itself is one empty literal segment.
    pub segments: Vec<Segment>,
}

/// A parsed `Host(...)` argument (labels in written order, literals lowercased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTemplate {
    pub labels: Vec<Segment>,
}

/// Split `rest` at its first `sep`: the segment and what follows it (if a separator followed).
pub(crate) fn split_first(rest: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(sep, rest) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// The part of a request path the segment walk starts at: after the leading `/`. A path
/// without one (`*`, absolute-form) matches no template.
pub(crate) fn path_body(path: &[u8]) -> Option<&[u8]> {
    path.strip_prefix(b"/")
}

fn parse_segment(text: &str, allow_tail: bool, lowercase: bool) -> Result<Segment, String> {
    if !text.contains(['<', '>']) {
        let bytes = if lowercase {
            text.to_ascii_lowercase().into_bytes()
        } else {
            text.as_bytes().to_vec()
        };
        return Ok(Segment::Literal(bytes.into_boxed_slice()));
    }
    let inner = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .filter(|t| !t.contains(['<', '>']))
        .ok_or_else(|| format!("placeholder must fill a whole segment, got {text:?}"))?;
    let (kind, name) = inner.split_once(':').unwrap_or(("string", inner));
    if name.is_empty() || name.contains(':') {
        return Err(format!(
            "placeholder {text:?} needs exactly one name, as in <x> or <int:x>"
        ));
    }
    match kind {
        "string" => Ok(Segment::Str),
        "int" => Ok(Segment::Int),
        "path" if allow_tail => Ok(Segment::Tail),
        "path" => Err(format!("{text:?}: <path:...> is not allowed here")),
        _ => Err(format!(
            "unknown placeholder type {kind:?} in {text:?}; expected string, int or path"
        )),
    }
}

impl PathTemplate {
    /// Parse a path. A path without a leading `/` gets one (`Path("users")` means `/users`):
    /// request paths always start with `/`, so vulcand would never match it at all.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        if text.is_empty() {
            return Err("empty path".to_string());
        }
        let body = text.strip_prefix('/').unwrap_or(text);
        let parts: Vec<&str> = body.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = parse_segment(part, true, false)?;
            if seg == Segment::Tail && i + 1 != parts.len() {
                return Err(format!("{part:?} must be the last segment of the path"));
            }
            segments.push(seg);
        }
        Ok(PathTemplate { segments })
    }

    /// True when the template has no placeholders.
    pub fn is_literal(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    pub fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// The path as one string, placeholder names replaced by `_` (`/users/<int:_>`); parses
    /// back to the same template.
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            seg.write(&mut out);
        }
        out
    }

    /// Does the raw request path match? Bytes are compared as received (no percent-decoding).
    pub fn matches(&self, path: &[u8]) -> bool {
        let mut rest = path_body(path);
        if rest.is_none() {
            return false;
        }
        for seg in &self.segments {
            let Some(r) = rest else { return false };
            if *seg == Segment::Tail {
                return !r.is_empty();
            }
            let (head, next) = split_first(r, b'/');
            if !seg.matches(head, false) {
                return false;
            }
            rest = next;
        }
        rest.is_none()
    }
}

impl HostTemplate {
    /// Parse a host name, with `<x>` / `<int:x>` label placeholders.
    pub fn parse(text: &str) -> Result<HostTemplate, String> {
        if text.is_empty() {
            return Err("empty host".to_string());
        }
        if text.len() > 253 {
            return Err("host name longer than 253 bytes".to_string());
        }
        let labels = text
            .split('.')
            .map(|label| parse_segment(label, false, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostTemplate { labels })
    }

    pub fn is_literal(&self) -> bool {
        self.labels.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    /// Lowercased host, placeholder names replaced by `_` (`<_>.example.com`).
    pub fn normalized(&self) -> String {
        let mut out = String::new();
        for (i, label) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            label.write(&mut out);
        }
        out
    }

    /// Does the request host (without port) match, ignoring ASCII case?
    pub fn matches(&self, host: &[u8]) -> bool {
        let mut rest = Some(host);
        for label in &self.labels {
            let Some(r) = rest else { return false };
            let (head, next) = split_first(r, b'.');
            if !label.matches(head, true) {
                return false;
            }
            rest = next;
        }
        rest.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(t: &str) -> PathTemplate {
        PathTemplate::parse(t).unwrap()
    }

    #[test]
    fn literal_paths_match_exactly_including_trailing_slash() {
        let p = path("/users");
        assert!(p.is_literal());
        assert!(p.matches(b"/users"));
        assert!(!p.matches(b"/users/"));
        assert!(!p.matches(b"/users/1"));
        assert!(!p.matches(b"/user"));
        assert!(path("/").matches(b"/"));
        assert!(!path("/").matches(b"/a"));
        assert!(!path("/users").matches(b"users"));
        assert!(!path("/<x>").matches(b"*"));
    }

    #[test]
    fn a_path_without_leading_slash_gets_one() {
        assert_eq!(path("users"), path("/users"));
        assert!(path("users").matches(b"/users"));
    }

    #[test]
    fn string_placeholder_matches_one_non_empty_segment() {
        let p = path("/users/<id>/posts");
        assert!(!p.is_literal());
        assert!(p.matches(b"/users/bob/posts"));
        assert!(p.matches(b"/users/42/posts"));
        assert!(!p.matches(b"/users//posts"));
        assert!(!p.matches(b"/users/a/b/posts"));
        assert_eq!(path("/users/<string:id>"), path("/users/<id>"));
    }

    #[test]
    fn int_placeholder_rejects_non_digits() {
        let p = path("/orders/<int:n>");
        assert!(p.matches(b"/orders/123"));
        assert!(!p.matches(b"/orders/12a"));
        assert!(!p.matches(b"/orders/"));
        assert!(!p.matches(b"/orders/-1"));
    }

    #[test]
    fn path_placeholder_takes_the_rest_of_the_path() {
        let p = path("/static/<path:file>");
        assert!(p.matches(b"/static/a"));
        assert!(p.matches(b"/static/css/site/main.css"));
        assert!(p.matches(b"/static/a/"));
        assert!(!p.matches(b"/static/"));
        assert!(!p.matches(b"/static"));
    }

    #[test]
    fn malformed_placeholders_are_refused() {
        for (t, want) in [
            ("/v<n>", "whole segment"),
            ("/<a>b", "whole segment"),
            ("/<>", "one name"),
            ("/<int:>", "one name"),
            ("/<a:b:c>", "one name"),
            ("/<float:x>", "unknown placeholder type"),
            ("/<path:p>/x", "last segment"),
            ("", "empty"),
        ] {
            let err = PathTemplate::parse(t).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
    }

    #[test]
    fn names_do_not_change_the_normalized_form() {
        assert_eq!(path("/a/<x>/<int:y>").normalized(), "/a/<_>/<int:_>");
        assert_eq!(path("/a/<path:r>").normalized(), "/a/<path:_>");
        assert_eq!(path("/").normalized(), "/");
    }

    #[test]
    fn hosts_match_case_insensitively_with_label_placeholders() {
        let h = HostTemplate::parse("API.Example.com").unwrap();
        assert!(h.is_literal());
        assert_eq!(h.normalized(), "api.example.com");
        assert!(h.matches(b"api.EXAMPLE.com"));
        assert!(!h.matches(b"api.example.com.evil"));
        let t = HostTemplate::parse("<tenant>.example.com").unwrap();
        assert!(t.matches(b"acme.example.com"));
        assert!(!t.matches(b"a.b.example.com"));
        assert!(!t.matches(b"example.com"));
        assert!(HostTemplate::parse("<path:x>.example.com").is_err());
    }
}
