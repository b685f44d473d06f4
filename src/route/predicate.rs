//! The predicate language vulcand uses for `FailoverPredicate` and for the `cbreaker`
//! middleware's `Condition` (vulcand/predicate: a subset of Go's expression syntax), parsed
//! once into a typed tree that evaluates without allocating. Each use binds its own functions
//! through [`Language`]; the grammar and its errors (with byte positions) are shared.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := compare ( "&&" compare )*
//! compare := operand [ ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) operand ]
//! operand := "(" expr ")" | Name "(" [ literal ( "," literal )* ] ")" | literal
//! literal := integer | float | "string" (Go escapes) | `raw string`
//! ```
//!
//! As in vulcand, a comparison has a function call on its left and a literal on its right,
//! strings compare only with `==` and `!=`, a function that yields a number must be compared,
//! and `!` is not part of the language.

use super::expr::Cursor;
use super::ExprError;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn holds<T: PartialOrd>(self, left: T, right: T) -> bool {
        match self {
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
        }
    }
}

/// A literal as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Str(String),
}

impl Literal {
    /// The literal as a number, when it is one (an integer stands for a float too).
    pub fn number(&self) -> Option<f64> {
        match self {
            Literal::Int(i) => Some(*i as f64),
            Literal::Float(f) => Some(*f),
            Literal::Str(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Literal::Int(i) => format!("the integer {i}"),
            Literal::Float(f) => format!("the float {f}"),
            Literal::Str(s) => format!("the string {s:?}"),
        }
    }
}

/// What a function call yields, in a language's own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<F, N, S> {
    /// A truth value: usable alone, as an operand of `&&` / `||`.
    Flag(F),
    /// A number compared with integer literals only (vulcand's `toInt`).
    Int(N),
    /// A number compared with float or integer literals (vulcand's `toFloat`).
    Float(N),
    /// A string compared with `==` / `!=` and a string literal.
    Str(S),
}

/// What a function of language `L` yields.
pub type ValueOf<L> = Value<<L as Language>::Flag, <L as Language>::Num, <L as Language>::Str>;

/// The functions of one predicate language.
pub trait Language {
    type Flag: Copy + std::fmt::Debug;
    type Num: Copy + std::fmt::Debug;
    type Str: Copy + std::fmt::Debug;
    /// Names of every function, for error messages.
    const FUNCTIONS: &'static str;
    /// What `name(args)` means, or why it means nothing.
    fn call(name: &str, args: &[Literal]) -> Result<ValueOf<Self>, String>;
}

/// The values a predicate is evaluated against.
pub trait Facts<L: Language> {
    fn flag(&self, f: L::Flag) -> bool;
    fn num(&self, n: L::Num) -> f64;
    fn str(&self, s: L::Str) -> &[u8];
}

/// Facts that may not all be known yet: `None` is "could be either".
pub trait PartialFacts<L: Language> {
    fn flag(&self, f: L::Flag) -> Option<bool>;
    fn num(&self, n: L::Num) -> Option<f64>;
    fn str(&self, s: L::Str) -> Option<&[u8]>;
}

/// A parsed, typed predicate.
#[derive(Clone, Debug, PartialEq)]
pub enum Pred<L: Language> {
    And(Box<Pred<L>>, Box<Pred<L>>),
    Or(Box<Pred<L>>, Box<Pred<L>>),
    Flag(L::Flag),
    Num(L::Num, CmpOp, f64),
    /// `true`: `==`, `false`: `!=`.
    Str(L::Str, bool, Box<str>),
}

impl<L: Language> Pred<L> {
    pub fn eval(&self, facts: &impl Facts<L>) -> bool {
        match self {
            Pred::And(a, b) => a.eval(facts) && b.eval(facts),
            Pred::Or(a, b) => a.eval(facts) || b.eval(facts),
            Pred::Flag(f) => facts.flag(*f),
            Pred::Num(n, op, value) => op.holds(facts.num(*n), *value),
            Pred::Str(s, eq, value) => (facts.str(*s) == value.as_bytes()) == *eq,
        }
    }

    /// Three-valued evaluation: `Some` when the known facts decide it whatever the unknown
    /// ones turn out to be.
    pub fn eval_partial(&self, facts: &impl PartialFacts<L>) -> Option<bool> {
        match self {
            Pred::And(a, b) => match (a.eval_partial(facts), b.eval_partial(facts)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Pred::Or(a, b) => match (a.eval_partial(facts), b.eval_partial(facts)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Pred::Flag(f) => facts.flag(*f),
            Pred::Num(n, op, value) => facts.num(*n).map(|v| op.holds(v, *value)),
            Pred::Str(s, eq, value) => facts.str(*s).map(|v| (v == value.as_bytes()) == *eq),
        }
    }
}

/// Parse `text` as a predicate of language `L`.
pub fn parse<L: Language>(text: &str) -> Result<Pred<L>, ExprError> {
    let mut p = Parser(Cursor {
        src: text,
        pos: 0,
        what: "predicate",
        depth: 0,
    });
    p.skip_ws();
    if p.rest().is_empty() {
        return p.err(
            p.pos,
            format!("empty predicate; expected a function ({})", L::FUNCTIONS),
        );
    }
    let syntax = p.or()?;
    p.skip_ws();
    if !p.rest().is_empty() {
        return p.err(
            p.pos,
            format!(
                "expected \"&&\", \"||\" or the end of the predicate, {}",
                p.found()
            ),
        );
    }
    bind::<L>(syntax)
}

/// The untyped tree the grammar yields.
#[derive(Debug)]
enum Syntax {
    Or(Box<Syntax>, Box<Syntax>),
    And(Box<Syntax>, Box<Syntax>),
    Compare {
        left: Box<Syntax>,
        op: CmpOp,
        right: Box<Syntax>,
        at: usize,
    },
    Call {
        name: String,
        args: Vec<Literal>,
        at: usize,
    },
    Literal(Literal, usize),
}

impl Syntax {
    fn at(&self) -> usize {
        match self {
            Syntax::Or(a, _) | Syntax::And(a, _) => a.at(),
            Syntax::Compare { left, .. } => left.at(),
            Syntax::Call { at, .. } | Syntax::Literal(_, at) => *at,
        }
    }
}

fn error<T>(position: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        position,
        message: message.into(),
    })
}

fn bind<L: Language>(s: Syntax) -> Result<Pred<L>, ExprError> {
    match s {
        Syntax::Or(a, b) => Ok(Pred::Or(Box::new(bind(*a)?), Box::new(bind(*b)?))),
        Syntax::And(a, b) => Ok(Pred::And(Box::new(bind(*a)?), Box::new(bind(*b)?))),
        Syntax::Call { name, args, at } => match L::call(&name, &args) {
            Ok(Value::Flag(f)) => Ok(Pred::Flag(f)),
            Ok(_) => error(
                at,
                format!("{name}() is a value, not a condition: compare it (such as {name}() > 1)"),
            ),
            Err(e) => error(at, e),
        },
        Syntax::Literal(lit, at) => error(
            at,
            format!(
                "{} is not a condition; expected a function call",
                lit.describe()
            ),
        ),
        Syntax::Compare {
            left,
            op,
            right,
            at,
        } => {
            let (name, args, fn_at) = match *left {
                Syntax::Call { name, args, at } => (name, args, at),
                other => return error(
                    other.at(),
                    "the left side of a comparison must be a function call (such as Attempts())",
                ),
            };
            let literal = match *right {
                Syntax::Literal(lit, _) => lit,
                other => {
                    return error(
                        other.at(),
                        format!("the right side of {} must be a literal", op.text()),
                    )
                }
            };
            let value = L::call(&name, &args).or_else(|e| error(fn_at, e))?;
            match (value, &literal) {
                (Value::Flag(_), _) => error(
                    at,
                    format!(
                        "{name}() is a condition and cannot be compared with {}",
                        op.text()
                    ),
                ),
                (Value::Int(n), Literal::Int(v)) => Ok(Pred::Num(n, op, *v as f64)),
                (Value::Int(_), _) => error(
                    at,
                    format!(
                        "{name}() compares with an integer, not {}",
                        literal.describe()
                    ),
                ),
                (Value::Float(n), lit) => match lit.number() {
                    Some(v) => Ok(Pred::Num(n, op, v)),
                    None => error(
                        at,
                        format!("{name}() compares with a number, not {}", lit.describe()),
                    ),
                },
                (Value::Str(s), Literal::Str(v)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                    Ok(Pred::Str(s, op == CmpOp::Eq, v.as_str().into()))
                }
                (Value::Str(_), Literal::Str(_)) => error(
                    at,
                    format!("strings compare only with == and !=, not {}", op.text()),
                ),
                (Value::Str(_), lit) => error(
                    at,
                    format!("{name}() compares with a string, not {}", lit.describe()),
                ),
            }
        }
    }
}

/// Deepest nesting of parentheses a predicate may have (the parser recurses per level).
const MAX_DEPTH: usize = 32;

super::expr::cursor_parser!(Parser);

impl Parser<'_> {
    fn err<T>(&self, position: usize, message: impl Into<String>) -> Result<T, ExprError> {
        error(position, message)
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Syntax, ExprError> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Syntax::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Syntax, ExprError> {
        let mut left = self.compare()?;
        while self.eat("&&") {
            let right = self.compare()?;
            left = Syntax::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn compare(&mut self) -> Result<Syntax, ExprError> {
        let left = self.operand()?;
        self.skip_ws();
        let at = self.pos;
        let Some(op) = self.operator() else {
            return Ok(left);
        };
        let right = self.operand()?;
        self.skip_ws();
        let second = self.pos;
        if self.operator().is_some() {
            return self.err(second, "comparisons do not chain; join them with && or ||");
        }
        Ok(Syntax::Compare {
            left: Box::new(left),
            op,
            right: Box::new(right),
            at,
        })
    }

    /// A comparison operator at the cursor, consumed.
    fn operator(&mut self) -> Option<CmpOp> {
        let rest = self.rest();
        let (op, len) = if rest.starts_with("==") {
            (CmpOp::Eq, 2)
        } else if rest.starts_with("!=") {
            (CmpOp::Ne, 2)
        } else if rest.starts_with("<=") {
            (CmpOp::Le, 2)
        } else if rest.starts_with(">=") {
            (CmpOp::Ge, 2)
        } else if rest.starts_with('<') {
            (CmpOp::Lt, 1)
        } else if rest.starts_with('>') {
            (CmpOp::Gt, 1)
        } else {
            return None;
        };
        self.pos += len;
        Some(op)
    }

    fn operand(&mut self) -> Result<Syntax, ExprError> {
        self.skip_ws();
        let at = self.pos;
        let Some(c) = self.rest().chars().next() else {
            return self.err(
                at,
                "unexpected end of the predicate; expected a function call or a literal",
            );
        };
        if c == '(' {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.err(at, format!("more than {MAX_DEPTH} nested parentheses"));
            }
            self.pos += 1;
            let inner = self.or()?;
            self.depth -= 1;
            if !self.eat(")") {
                self.skip_ws();
                return self.err(
                    self.pos,
                    format!(
                        "expected \")\" to close the \"(\" at byte {at}, {}",
                        self.found()
                    ),
                );
            }
            return Ok(inner);
        }
        if c == '!' && !self.rest().starts_with("!=") {
            return self.err(
                at,
                "\"!\" is not supported; write the comparison the other way (== / !=)",
            );
        }
        if c == '"' || c == '`' {
            return Ok(Syntax::Literal(Literal::Str(self.string()?), at));
        }
        if c.is_ascii_digit() || c == '.' {
            return Ok(Syntax::Literal(self.number()?, at));
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let len = self
                .rest()
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let name = self.src[at..at + len].to_string();
            self.pos += len;
            if !self.eat("(") {
                self.skip_ws();
                return self.err(
                    self.pos,
                    format!(
                        "expected \"(\" after {name}: only function calls are allowed, {}",
                        self.found()
                    ),
                );
            }
            let args = self.args()?;
            return Ok(Syntax::Call { name, args, at });
        }
        self.err(
            at,
            format!(
                "expected a function call, a literal or \"(\", {}",
                self.found()
            ),
        )
    }

    fn args(&mut self) -> Result<Vec<Literal>, ExprError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            self.skip_ws();
            match self.operand()? {
                Syntax::Literal(lit, _) => args.push(lit),
                other => {
                    return self.err(other.at(), "function arguments must be literals");
                }
            }
            if self.eat(",") {
                continue;
            }
            if self.eat(")") {
                return Ok(args);
            }
            self.skip_ws();
            return self.err(
                self.pos,
                format!("expected \",\" or \")\", {}", self.found()),
            );
        }
    }

    /// Decimal integer or float (`2`, `0.5`, `.5`, `1e3`), as Go scans them.
    fn number(&mut self) -> Result<Literal, ExprError> {
        let at = self.pos;
        let bytes = self.rest().as_bytes();
        let mut end = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut float = false;
        if bytes.get(end) == Some(&b'.') {
            float = true;
            end += 1;
            end += bytes[end..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            float = true;
            end += 1;
            if matches!(bytes.get(end), Some(b'+' | b'-')) {
                end += 1;
            }
            let digits = bytes[end..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                return self.err(at, "exponent has no digits");
            }
            end += digits;
        }
        if bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            return self.err(
                at + end,
                "invalid number: write integers and floats in decimal (such as 2 or 0.5)",
            );
        }
        let text = &self.src[at..at + end];
        self.pos += end;
        if float {
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() && text != "." => Ok(Literal::Float(v)),
                _ => self.err(at, format!("invalid number {text:?}")),
            }
        } else {
            text.parse::<i64>()
                .map(Literal::Int)
                .or_else(|_| self.err(at, format!("integer {text} is out of range")))
        }
    }

    /// A string in double quotes (Go escapes) or backticks (raw).
    fn string(&mut self) -> Result<String, ExprError> {
        let (text, end) = super::expr::quoted_string(self.src, self.pos)?;
        self.pos = end;
        Ok(text)
    }
}

#[cfg(test)]
mod tests;
