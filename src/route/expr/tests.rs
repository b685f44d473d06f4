//! Expression parsing and matching.

use super::*;

pub(crate) struct Req<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

impl RouteRequest for Req<'_> {
    fn method(&self) -> &[u8] {
        self.method.as_bytes()
    }
    fn host(&self) -> &[u8] {
        self.host.as_bytes()
    }
    fn path(&self) -> &[u8] {
        self.path.as_bytes()
    }
    fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

fn get(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        host: "example.com",
        path,
        headers: &[],
    }
}

fn matches(expr: &str, req: &Req) -> bool {
    parse(expr).unwrap().matches(req)
}

fn error(expr: &str) -> ExprError {
    parse(expr).unwrap_err()
}

#[test]
fn every_matcher_parses_and_normalizes() {
    for (written, normalized) in [
        (r#"Host("API.example.com")"#, r#"Host("api.example.com")"#),
        (
            r#"HostRegexp(".*\\.example\\.com")"#,
            r#"HostRegexp(".*\\.example\\.com")"#,
        ),
        (r#"Path("/users/<id>")"#, r#"Path("/users/<_>")"#),
        (
            r#"Path("/n/<int:n>/<path:p>")"#,
            r#"Path("/n/<int:_>/<path:_>")"#,
        ),
        (r#"PathRegexp("/users/.*")"#, r#"PathRegexp("/users/.*")"#),
        (r#"PathPrefix("/api")"#, r#"PathPrefix("/api")"#),
        (r#"Method("GET")"#, r#"Method("GET")"#),
        (r#"MethodRegexp("GET|POST")"#, r#"MethodRegexp("GET|POST")"#),
        (r#"Header("X-Env","prod")"#, r#"Header("X-Env", "prod")"#),
        (
            r#"HeaderRegexp("X-Env","^pr")"#,
            r#"HeaderRegexp("X-Env", "^pr")"#,
        ),
    ] {
        let expr = parse(written).unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(expr.matchers.len(), 1);
        assert_eq!(expr.normalized(), normalized);
        let again = parse(normalized).unwrap_or_else(|e| panic!("{normalized}: {e}"));
        assert_eq!(again.normalized(), normalized);
    }
}

#[test]
fn backticks_and_double_quotes_are_the_same_string() {
    let raw = parse(r"PathRegexp(`/a\.b`)").unwrap();
    let quoted = parse(r#"PathRegexp("/a\\.b")"#).unwrap();
    assert_eq!(raw.normalized(), quoted.normalized());
    assert!(raw.matches(&get("/a.b")));
    assert!(!raw.matches(&get("/axb")));
}

#[test]
fn double_quoted_strings_take_go_escapes() {
    let expr = parse(r#"Header("X-Q", "say \"hi\" \\ there")"#).unwrap();
    let req = Req {
        headers: &[("x-q", r#"say "hi" \ there"#)],
        ..get("/")
    };
    assert!(expr.matches(&req));
    let err = error(r#"Path("/a\q")"#);
    assert_eq!(err.position, 8);
    assert!(err.message.contains("unknown escape \\q"), "{err}");
}

#[test]
fn backtick_strings_are_raw() {
    let expr = parse(r#"Header(`X-Q`, `a\"b`)"#).unwrap();
    let req = Req {
        headers: &[("X-Q", r#"a\"b"#)],
        ..get("/")
    };
    assert!(expr.matches(&req));
}

#[test]
fn and_chains_allow_any_whitespace() {
    let tight = parse(r#"Host("a.com")&&Path("/x")&&Method("GET")"#).unwrap();
    let loose = parse("  Host(`a.com`)\n &&\tPath( \"/x\" ) &&  Method(`GET`)  ").unwrap();
    assert_eq!(tight.matchers.len(), 3);
    assert_eq!(tight.normalized(), loose.normalized());
    let req = Req {
        host: "A.COM",
        ..get("/x")
    };
    assert!(tight.matches(&req));
    assert!(!tight.matches(&Req {
        method: "POST",
        ..req
    }));
}

#[test]
fn normalized_form_escapes_what_double_quotes_cannot_hold() {
    let expr = parse("Header(`X`, `a\"b\\c\nd`)").unwrap();
    assert_eq!(expr.normalized(), r#"Header("X", "a\"b\\c\nd")"#);
    assert_eq!(
        parse(&expr.normalized()).unwrap().normalized(),
        expr.normalized()
    );
}

#[test]
fn normalized_form_ignores_matcher_order() {
    assert_eq!(
        parse(r#"Method("GET") && Path("/x")"#)
            .unwrap()
            .normalized(),
        parse(r#"Path("/x") && Method("GET")"#)
            .unwrap()
            .normalized()
    );
}

#[test]
fn regexes_are_unanchored_like_vulcand() {
    assert!(matches("PathRegexp(`/users`)", &get("/v1/users/42")));
    assert!(!matches("PathRegexp(`^/users$`)", &get("/users/42")));
    assert!(matches("PathRegexp(`^/users$`)", &get("/users")));
    assert!(matches("MethodRegexp(`GET|POST`)", &get("/")));
}

#[test]
fn host_regexp_ignores_case() {
    let req = Req {
        host: "API.Example.COM",
        ..get("/")
    };
    assert!(matches(r"HostRegexp(`^api\.example\.com$`)", &req));
}

#[test]
fn host_placeholders_match_one_label() {
    let req = Req {
        host: "acme.example.com",
        ..get("/")
    };
    assert!(matches("Host(`<tenant>.example.com`)", &req));
    assert!(!matches("Host(`<tenant>.example.org`)", &req));
}

#[test]
fn path_prefix_is_a_byte_prefix() {
    assert!(matches("PathPrefix(`/api`)", &get("/api")));
    assert!(matches("PathPrefix(`/api`)", &get("/api/v1")));
    assert!(matches("PathPrefix(`/api`)", &get("/apiary")));
    assert!(!matches("PathPrefix(`/api/`)", &get("/api")));
    assert!(matches("PathPrefix(`api`)", &get("/api/x")));
}

#[test]
fn an_empty_request_path_is_slash() {
    assert!(matches("Path(`/`)", &get("")));
}

#[test]
fn headers_compare_the_first_value_and_absent_is_empty_for_regexes() {
    let with = Req {
        headers: &[("X-Env", "prod")],
        ..get("/")
    };
    assert!(matches(r#"Header("x-env", "prod")"#, &with));
    assert!(!matches(r#"Header("x-env", "pro")"#, &with));
    assert!(!matches(r#"Header("x-env", "prod")"#, &get("/")));
    assert!(matches(r#"HeaderRegexp("X-Env", "^$")"#, &get("/")));
}

#[test]
fn errors_name_the_position_and_what_was_expected() {
    for (expr, position, want) in [
        ("", 0, "empty route expression"),
        ("   ", 3, "empty route expression"),
        ("Foo(`/`)", 0, "unknown matcher \"Foo\""),
        ("Path", 4, "expected \"(\" after Path"),
        (
            "Path(/x)",
            5,
            "expected a string in double quotes or backticks",
        ),
        ("Path(`/x`", 9, "expected \",\" or \")\""),
        ("Path(`/x)", 5, "unterminated string"),
        (r#"Path("/x)"#, 5, "unterminated string"),
        ("Path(`/x`) Method(`GET`)", 11, "expected \"&&\" or the end"),
        ("Path(`/x`) &&", 13, "expected a matcher"),
        ("Path(`/x`) & Method(`GET`)", 11, "expected \"&&\""),
        ("Path(`/x`) || Method(`GET`)", 11, "expected \"&&\""),
        ("Header(`X`)", 0, "Header takes 2 arguments, got 1"),
        ("Path(`/a`, `/b`)", 0, "Path takes 1 argument, got 2"),
        ("Path()", 0, "Path takes 1 argument, got 0"),
        ("PathRegexp(`(`)", 11, "bad regular expression"),
        ("Path(`/v<n>`)", 5, "whole segment"),
        ("Path(`/<int:>`)", 5, "one name"),
        ("Method(``)", 7, "empty argument"),
        ("Host(`<path:x>.a`)", 5, "not allowed"),
    ] {
        let err = error(expr);
        assert_eq!(err.position, position, "{expr:?}: {err}");
        assert!(err.message.contains(want), "{expr:?}: {err}");
        assert!(err
            .to_string()
            .starts_with(&format!("at byte {position}: ")));
    }
}

#[test]
fn vulcand_sample_routes_parse() {
    for route in [
        "PathRegexp(`/users/.*`)",
        r#"Host("localhost") && PathRegexp("/.*")"#,
        "Path(`/v1/users/<user>/mail/<int:id>`)",
        r#"Host("<subdomain>.localhost") && Method("POST") && Path("/upload")"#,
        "HostRegexp(`.*`) && MethodRegexp(`GET|POST`) && PathRegexp(`/.*`)",
        r#"Header("Content-Type", "application/json")"#,
    ] {
        parse(route).unwrap_or_else(|e| panic!("{route}: {e}"));
    }
}
