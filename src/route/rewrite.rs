//! vulcand's `rewrite` middleware: `Regexp` is matched against `scheme://host` + the request
//! target, every match is replaced by `Replacement` (`$1`, `${name}`, `$$` as in Go's
//! `regexp.ReplaceAllString`), and either the new path and query go upstream (routing is not
//! redone) or, with `Redirect`, the client gets a 302 to the new URL when it changed.
//! Compiled once per table build; applying one allocates only when it matched.

use regex::bytes::Regex;
use serde::Deserialize;

/// One compiled `rewrite` middleware.
#[derive(Clone, Debug)]
pub struct RewriteRule {
    regex: Regex,
    replacement: Box<[u8]>,
    redirect: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RewriteDoc {
    regexp: String,
    #[serde(default)]
    replacement: String,
    #[serde(default)]
    rewrite_body: bool,
    #[serde(default)]
    redirect: bool,
}

impl PartialEq for RewriteRule {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
            && self.replacement == other.replacement
            && self.redirect == other.redirect
    }
}

/// What a rule does to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// The URL did not change.
    Unchanged,
    /// Send this target (path and query, origin form) upstream instead.
    Target(Vec<u8>),
    /// Answer 302 with this `Location`.
    Redirect(Vec<u8>),
    /// The new URL cannot be a request target (it holds a space, a control or non-ASCII byte).
    Invalid,
}

impl RewriteRule {
    /// Parse the middleware document. Also returns a note on what the rule leaves out
    /// (`RewriteBody`), for the report of unsupported settings.
    pub fn parse(config: &serde_json::Value) -> Result<(RewriteRule, Option<String>), String> {
        let doc = RewriteDoc::deserialize(config).map_err(|e| format!("rewrite: {e}"))?;
        if doc.regexp.is_empty() {
            return Err("rewrite: Regexp is empty".into());
        }
        let regex = Regex::new(&doc.regexp)
            .map_err(|e| format!("rewrite: Regexp {:?}: {e}", doc.regexp))?;
        if doc.replacement.contains("{{") {
            return Err(
                "rewrite: templates ({{ ... }}) in Replacement are not supported; use $1 or \
                 ${name} for captured text"
                    .into(),
            );
        }
        let note = doc.rewrite_body.then(|| {
            "RewriteBody is not supported: response bodies are passed on unchanged".to_string()
        });
        Ok((
            RewriteRule {
                regex,
                replacement: doc.replacement.into_bytes().into(),
                redirect: doc.redirect,
            },
            note,
        ))
    }

    pub fn redirects(&self) -> bool {
        self.redirect
    }

    /// Apply the rule to `url` (`scheme://host` + target).
    pub fn apply(&self, url: &[u8]) -> Rewritten {
        let new = self.regex.replace_all(url, &*self.replacement);
        if *new == *url {
            return Rewritten::Unchanged;
        }
        if new.iter().any(|&b| !(0x21..0x7f).contains(&b)) {
            return Rewritten::Invalid;
        }
        if self.redirect {
            return Rewritten::Redirect(new.into_owned());
        }
        Rewritten::Target(target_of(&new))
    }
}

/// The origin-form target of a URL: its path and query (`/` when it has no path), without
/// scheme, authority or fragment.
fn target_of(url: &[u8]) -> Vec<u8> {
    let mut rest = url;
    if let Some(i) = find(url, b"://") {
        let after = &url[i + 3..];
        let end = after
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    if let Some(hash) = memchr::memchr(b'#', rest) {
        rest = &rest[..hash];
    }
    let mut target = Vec::with_capacity(rest.len() + 1);
    if rest.first() != Some(&b'/') {
        target.push(b'/');
    }
    target.extend_from_slice(rest);
    target
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(regexp: &str, replacement: &str, redirect: bool) -> RewriteRule {
        let doc = json!({"Regexp": regexp, "Replacement": replacement, "Redirect": redirect});
        RewriteRule::parse(&doc).unwrap().0
    }

    fn target(s: &str) -> Rewritten {
        Rewritten::Target(s.as_bytes().to_vec())
    }

    #[test]
    fn captures_rewrite_the_path_and_keep_or_replace_the_query() {
        let r = rule("^http://([^/]+)/v1/(.*)$", "http://$1/api/v1/$2", false);
        assert_eq!(
            r.apply(b"http://svc/v1/users?id=3"),
            target("/api/v1/users?id=3")
        );
        assert_eq!(r.apply(b"http://svc/v2/users"), Rewritten::Unchanged);
        let named = rule("/users/(?P<id>[0-9]+)", "/people/${id}/profile", false);
        assert_eq!(
            named.apply(b"http://h:80/users/42?x=1"),
            target("/people/42/profile?x=1")
        );
        // Every match is replaced, as Go's ReplaceAllString does.
        let all = rule("a", "b", false);
        assert_eq!(all.apply(b"http://h/aa"), target("/bb"));
        // `$1x` is the group named "1x" (empty), as in Go.
        let greedy = rule("/(x)", "/$1y$$", false);
        assert_eq!(greedy.apply(b"http://h/x"), target("/$"));
    }

    #[test]
    fn the_new_url_may_be_relative_or_lose_its_path() {
        let r = rule("^.*$", "/only/path", false);
        assert_eq!(r.apply(b"http://h/a"), target("/only/path"));
        let r = rule("/a$", "", false);
        assert_eq!(r.apply(b"http://h/a"), target("/"));
        let r = rule("/a", "?q=1#frag", false);
        assert_eq!(r.apply(b"http://h/a"), target("/?q=1"));
    }

    #[test]
    fn redirects_name_the_whole_new_url_only_when_it_changed() {
        let r = rule(
            "^http://old.example.com/(.*)",
            "https://new.example.com/$1",
            true,
        );
        assert!(r.redirects());
        assert_eq!(
            r.apply(b"http://old.example.com/a?b"),
            Rewritten::Redirect(b"https://new.example.com/a?b".to_vec())
        );
        assert_eq!(r.apply(b"http://new.example.com/a"), Rewritten::Unchanged);
        let same = rule("(.*)", "$1", true);
        assert_eq!(same.apply(b"http://h/a"), Rewritten::Unchanged);
    }

    #[test]
    fn a_replacement_that_makes_a_bad_target_is_caught() {
        let r = rule("/a", "/a b", false);
        assert_eq!(r.apply(b"http://h/a"), Rewritten::Invalid);
    }

    #[test]
    fn bad_documents_and_unsupported_parts_are_named() {
        assert!(
            RewriteRule::parse(&json!({"Regexp": "(", "Replacement": "x"}))
                .unwrap_err()
                .contains("Regexp")
        );
        assert!(RewriteRule::parse(&json!({"Replacement": "x"})).is_err());
        assert!(RewriteRule::parse(&json!({"Regexp": "", "Replacement": "x"})).is_err());
        let err = RewriteRule::parse(
            &json!({"Regexp": "a", "Replacement": "{{.Request.Header.Get \"X\"}}"}),
        )
        .unwrap_err();
        assert!(err.contains("templates"), "{err}");
        let (_, note) =
            RewriteRule::parse(&json!({"Regexp": "a", "Replacement": "b", "RewriteBody": true}))
                .unwrap();
        assert!(note.unwrap().contains("RewriteBody"));
    }
}
