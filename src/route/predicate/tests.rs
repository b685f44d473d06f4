//! The shared grammar: every operator, precedence, literals, and errors with positions, on a
//! small test language.

use super::*;

/// `Up()` (a flag), `N()` (an integer), `R()` (a float), `S()` (a string), `F(x)` (an
/// integer of one numeric argument).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Test;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Up,
    N,
    R,
    S,
    F,
}

impl Language for Test {
    type Flag = Var;
    type Num = Var;
    type Str = Var;
    const FUNCTIONS: &'static str = "Up, N, R, S, F";

    fn call(name: &str, args: &[Literal]) -> Result<Value<Var, Var, Var>, String> {
        let (value, arity) = match name {
            "Up" => (Value::Flag(Var::Up), 0),
            "N" => (Value::Int(Var::N), 0),
            "R" => (Value::Float(Var::R), 0),
            "S" => (Value::Str(Var::S), 0),
            "F" => (Value::Int(Var::F), 1),
            _ => return Err(format!("unknown function {name:?}")),
        };
        if args.len() != arity {
            return Err(format!("{name} takes {arity} arguments"));
        }
        if name == "F" && args[0].number().is_none() {
            return Err("F takes a number".into());
        }
        Ok(value)
    }
}

struct World {
    up: bool,
    n: f64,
    r: f64,
    s: &'static str,
}

impl Facts<Test> for World {
    fn flag(&self, _: Var) -> bool {
        self.up
    }
    fn num(&self, v: Var) -> f64 {
        match v {
            Var::R => self.r,
            _ => self.n,
        }
    }
    fn str(&self, _: Var) -> &[u8] {
        self.s.as_bytes()
    }
}

const W: World = World {
    up: true,
    n: 3.0,
    r: 0.5,
    s: "GET",
};

fn eval(text: &str) -> bool {
    parse::<Test>(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .eval(&W)
}

#[test]
fn every_comparison_operator_holds_as_in_go() {
    let cases = [
        ("N() == 3", true),
        ("N() != 3", false),
        ("N() < 3", false),
        ("N() <= 3", true),
        ("N() > 2", true),
        ("N() >= 4", false),
        ("R() > 0.25", true),
        ("R() > 0", true),
        ("R() < 1", true),
        ("R() == .5", true),
        ("R() <= 5e-1", true),
        ("S() == \"GET\"", true),
        ("S() != `GET`", false),
        ("S() == \"G\\tT\"", false),
    ];
    for (text, want) in cases {
        assert_eq!(eval(text), want, "{text}");
    }
}

#[test]
fn and_binds_tighter_than_or_and_parentheses_group() {
    assert!(eval("Up() || N() == 0 && N() == 1"), "a || (b && c)");
    assert!(!eval("(Up() || N() == 0) && N() == 1"));
    assert!(eval("N() == 0 && N() == 1 || Up()"), "(a && b) || c");
    assert!(eval("((Up()))"));
    assert!(eval("  Up()\t&&\nN() == 3 "));
    assert!(!eval("Up() && (N() == 0 || S() != \"GET\")"));
}

#[test]
fn partial_evaluation_is_decided_only_by_known_facts() {
    struct OnlyMethod;
    impl PartialFacts<Test> for OnlyMethod {
        fn flag(&self, _: Var) -> Option<bool> {
            None
        }
        fn num(&self, _: Var) -> Option<f64> {
            None
        }
        fn str(&self, _: Var) -> Option<&[u8]> {
            Some(b"POST")
        }
    }
    let p = |t: &str| parse::<Test>(t).unwrap().eval_partial(&OnlyMethod);
    assert_eq!(p("S() == \"GET\" && Up()"), Some(false));
    assert_eq!(p("S() == \"POST\" || Up()"), Some(true));
    assert_eq!(p("S() == \"POST\" && Up()"), None);
    assert_eq!(p("Up() || N() > 1"), None);
}

#[test]
fn errors_name_the_byte_where_they_are() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "empty"),
        ("Up() &&", 7, "end of the predicate"),
        ("Up() & N() == 1", 5, "expected"),
        ("Up() || (N() == 1", 17, "close"),
        ("Nope()", 0, "unknown function"),
        ("N()", 0, "not a condition"),
        ("3", 0, "not a condition"),
        ("N() == 1 == 1", 9, "do not chain"),
        ("1 == N()", 0, "left side"),
        ("N() == R()", 7, "right side"),
        ("Up() == 1", 5, "condition"),
        ("N() == 1.5", 4, "integer"),
        ("N() == \"1\"", 4, "integer"),
        ("R() > \"x\"", 4, "number"),
        ("S() < \"a\"", 4, "only with == and !="),
        ("S() == 1", 4, "string"),
        ("!Up()", 0, "not supported"),
        ("Up", 2, "only function calls"),
        ("F(N())", 2, "literals"),
        ("F(\"x\")", 0, "a number"),
        ("N() == 0x10", 8, "decimal"),
        ("N() == 99999999999999999999", 7, "out of range"),
        ("S() == \"abc", 7, "unterminated"),
        ("S() == \"a\\qb\"", 9, "unknown escape"),
        ("N() == 1e", 7, "exponent"),
        ("Up() Up()", 5, "expected"),
        ("F(1 2)", 4, "expected \",\" or \")\""),
    ];
    let deep = format!("{}Up(){}", "(".repeat(10_000), ")".repeat(10_000));
    let err = parse::<Test>(&deep).unwrap_err();
    assert!(err.message.contains("nested"), "{err}");
    for (text, at, needle) in cases {
        let err = parse::<Test>(text).unwrap_err();
        assert_eq!(err.position, *at, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn literals_follow_go() {
    assert!(eval("S() == `GET`"));
    assert!(!eval("S() == `G\\ET`"), "backticks are raw");
    assert!(parse::<Test>("F(1.5) > 1").is_ok());
    assert!(parse::<Test>("F(2) > 1").is_ok());
    assert!(eval("R() >= 5e-1 && R() <= 0.5"));
    assert!(eval("N() == 003"));
}
