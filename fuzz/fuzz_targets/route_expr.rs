//! Route expressions from untrusted text: parsing never panics, a parsed expression's
//! normalized form parses back to itself, and a table built from it looks requests up
//! without panicking. Input: the expression, then optionally `\n` and a request path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::route::{compile, expr, CompileOptions, KvSet, RouteRequest};

struct Req<'a> {
    path: &'a [u8],
}

impl RouteRequest for Req<'_> {
    fn method(&self) -> &[u8] {
        b"GET"
    }
    fn host(&self) -> &[u8] {
        b"api.example.com"
    }
    fn path(&self) -> &[u8] {
        self.path
    }
    fn header(&self, _name: &[u8]) -> Option<&[u8]> {
        Some(self.path)
    }
}

fuzz_target!(|data: &[u8]| {
    let (text, path) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"/"[..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(parsed) = expr::parse(text) else {
        return;
    };
    let normalized = parsed.normalized();
    let again = expr::parse(&normalized)
        .unwrap_or_else(|e| panic!("normalized {normalized:?} of {text:?} does not parse: {e}"));
    assert_eq!(again.normalized(), normalized);

    let mut kv = KvSet::default();
    kv.entries.insert(
        "/vulcand/backends/b/backend".into(),
        r#"{"Type":"http"}"#.into(),
    );
    let doc = serde_json::json!({"Type": "http", "BackendId": "b", "Route": text});
    kv.entries
        .insert("/vulcand/frontends/f/frontend".into(), doc.to_string());
    let compiled = compile(&kv, &CompileOptions::default());
    assert_eq!(compiled.table.frontends().len(), 1);
    let req = Req { path };
    let found = compiled.table.lookup(&req).is_some();
    assert_eq!(
        found,
        parsed.matches(&req),
        "index and matchers disagree on {text:?}"
    );
});
