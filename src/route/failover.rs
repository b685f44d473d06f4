//! A frontend's `FailoverPredicate` (vulcand's language: `IsNetworkError()`, `Attempts()`,
//! `RequestMethod()`, `ResponseCode()`), compiled once per table build and evaluated per
//! attempt without allocating.
//!
//! The predicate sees an attempt the way vulcand does: `Attempts()` is 1 after the first try,
//! `ResponseCode()` is the upstream's status, or ringway's own 502 (connect failure, reset,
//! broken response) or 504 (timeout) when there is no response, and `IsNetworkError()` is
//! `ResponseCode()` being 502 or 504, whoever produced it.

use super::predicate::{self, Facts, Language, Literal, PartialFacts, Pred, Value};
use super::ExprError;
use crate::http::request::Method;

/// vulcand's predicate for a frontend that sets none.
pub const VULCAND_DEFAULT: &str =
    "IsNetworkError() && RequestMethod() == \"GET\" && Attempts() < 20";

/// The functions of `FailoverPredicate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverFn {
    IsNetworkError,
    Attempts,
    ResponseCode,
    RequestMethod,
}

/// `FailoverPredicate`'s functions, bound for [`predicate::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverLanguage;

impl Language for FailoverLanguage {
    type Flag = FailoverFn;
    type Num = FailoverFn;
    type Str = FailoverFn;
    const FUNCTIONS: &'static str = "IsNetworkError, Attempts, RequestMethod, ResponseCode";

    fn call(
        name: &str,
        args: &[Literal],
    ) -> Result<Value<FailoverFn, FailoverFn, FailoverFn>, String> {
        let value = match name {
            "IsNetworkError" => Value::Flag(FailoverFn::IsNetworkError),
            "Attempts" => Value::Int(FailoverFn::Attempts),
            "ResponseCode" => Value::Int(FailoverFn::ResponseCode),
            "RequestMethod" => Value::Str(FailoverFn::RequestMethod),
            _ => {
                return Err(format!(
                    "unknown function {name:?}; FailoverPredicate has {}",
                    Self::FUNCTIONS
                ))
            }
        };
        if !args.is_empty() {
            return Err(format!("{name}() takes no arguments, got {}", args.len()));
        }
        Ok(value)
    }
}

/// One finished attempt, as the predicate sees it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// Attempts made so far, this one included (1 after the first try).
    pub attempts: u32,
    /// The upstream's status, or ringway's 502/504 when there was no response.
    pub code: u16,
    pub method: &'a [u8],
}

impl Facts<FailoverLanguage> for Attempt<'_> {
    fn flag(&self, _: FailoverFn) -> bool {
        self.code == 502 || self.code == 504
    }

    fn num(&self, n: FailoverFn) -> f64 {
        match n {
            FailoverFn::Attempts => f64::from(self.attempts),
            _ => f64::from(self.code),
        }
    }

    fn str(&self, _: FailoverFn) -> &[u8] {
        self.method
    }
}

/// What is known of a request before its first attempt: its method.
struct BeforeFirst<'a> {
    method: &'a [u8],
}

impl PartialFacts<FailoverLanguage> for BeforeFirst<'_> {
    fn flag(&self, _: FailoverFn) -> Option<bool> {
        None
    }

    fn num(&self, n: FailoverFn) -> Option<f64> {
        (n == FailoverFn::Attempts).then_some(1.0)
    }

    fn str(&self, _: FailoverFn) -> Option<&[u8]> {
        Some(self.method)
    }
}

/// An attempt's status alone, the rest unknown.
struct OnlyCode(u16);

impl PartialFacts<FailoverLanguage> for OnlyCode {
    fn flag(&self, _: FailoverFn) -> Option<bool> {
        Some(self.0 == 502 || self.0 == 504)
    }

    fn num(&self, n: FailoverFn) -> Option<f64> {
        (n == FailoverFn::ResponseCode).then_some(f64::from(self.0))
    }

    fn str(&self, _: FailoverFn) -> Option<&[u8]> {
        None
    }
}

/// Lowest and highest status the code table covers; anything else is looked at in full.
const FIRST_CODE: u16 = 100;
const CODES: usize = 500;

/// A frontend's failover rule, with what it can never retry worked out once, so the common
/// case (a method it never retries, a status it never retries) costs a bit test.
#[derive(Clone, Debug, PartialEq)]
pub struct Failover {
    pred: Pred<FailoverLanguage>,
    /// The frontend set a predicate of its own (empty: vulcand's default applies).
    explicit: bool,
    /// The predicate as written (empty for the default).
    text: Box<str>,
    /// Bit `m`: a request with named method `m` ([`Method`] order) may be retried.
    methods: u16,
    /// Bit `c - 100`: an attempt with status `c` may be retried (for some attempt count and
    /// method).
    codes: [u64; CODES.div_ceil(64)],
}

impl Default for Failover {
    fn default() -> Self {
        Failover::compile(
            predicate::parse(VULCAND_DEFAULT).expect("vulcand's default predicate parses"),
            false,
            "",
        )
    }
}

impl Failover {
    /// Parse a frontend's `FailoverPredicate`; empty or blank means vulcand's default.
    pub fn parse(text: &str) -> Result<Failover, ExprError> {
        if text.trim().is_empty() {
            return Ok(Failover::default());
        }
        Ok(Failover::compile(predicate::parse(text)?, true, text))
    }

    fn compile(pred: Pred<FailoverLanguage>, explicit: bool, text: &str) -> Failover {
        let mut f = Failover {
            pred,
            explicit,
            text: text.into(),
            methods: 0,
            codes: [0; CODES.div_ceil(64)],
        };
        for (i, m) in Method::NAMED.iter().enumerate() {
            let name = m.name().expect("named methods have names");
            if f.pred.eval_partial(&BeforeFirst { method: name }) != Some(false) {
                f.methods |= 1 << i;
            }
        }
        for i in 0..CODES {
            let code = FIRST_CODE + i as u16;
            if f.pred.eval_partial(&OnlyCode(code)) != Some(false) {
                f.codes[i / 64] |= 1 << (i % 64);
            }
        }
        f
    }

    /// Whether the frontend set its own predicate. Only then may a request the upstream may
    /// already have acted on be sent again when it is not idempotent.
    pub fn is_explicit(&self) -> bool {
        self.explicit
    }

    /// The predicate as written, or `None` for vulcand's default.
    pub fn text(&self) -> Option<&str> {
        self.explicit.then_some(&*self.text)
    }

    /// Whether the attempt's outcome asks for another attempt.
    #[inline]
    pub fn wants_retry(&self, attempt: &Attempt<'_>) -> bool {
        let i = usize::from(attempt.code.wrapping_sub(FIRST_CODE));
        if i < CODES && self.codes[i / 64] & (1 << (i % 64)) == 0 {
            return false;
        }
        self.pred.eval(attempt)
    }

    /// Whether a request with this method could ever be retried (false when the predicate
    /// rules it out whatever the response): decides whether its body is kept for a replay.
    #[inline]
    pub fn may_retry(&self, method: Method, token: &[u8]) -> bool {
        match Method::NAMED.iter().position(|&m| m == method) {
            Some(i) => self.methods & (1 << i) != 0,
            None => self.pred.eval_partial(&BeforeFirst { method: token }) != Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(attempts: u32, code: u16, method: &str) -> Attempt<'_> {
        Attempt {
            attempts,
            code,
            method: method.as_bytes(),
        }
    }

    #[test]
    fn scrolls_predicate_retries_network_errors_and_503_twice() {
        let f = Failover::parse("(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2")
            .unwrap();
        assert!(f.is_explicit());
        for code in [502, 503, 504] {
            assert!(f.wants_retry(&attempt(1, code, "POST")), "{code}");
            assert!(f.wants_retry(&attempt(2, code, "GET")), "{code}");
            assert!(!f.wants_retry(&attempt(3, code, "GET")), "{code}");
        }
        for code in [200, 404, 500] {
            assert!(!f.wants_retry(&attempt(1, code, "GET")), "{code}");
        }
        assert!(f.may_retry(Method::Post, b"POST"));
    }

    #[test]
    fn the_default_is_vulcands_get_only_rule() {
        let f = Failover::parse("  ").unwrap();
        assert!(!f.is_explicit());
        assert_eq!(f.text(), None);
        assert!(f.wants_retry(&attempt(1, 502, "GET")));
        assert!(f.wants_retry(&attempt(19, 504, "GET")));
        assert!(!f.wants_retry(&attempt(20, 502, "GET")));
        assert!(!f.wants_retry(&attempt(1, 503, "GET")));
        assert!(!f.wants_retry(&attempt(1, 502, "POST")));
        assert!(f.may_retry(Method::Get, b"GET"));
        assert!(
            !f.may_retry(Method::Post, b"POST"),
            "a POST is never retried by the default"
        );
        assert!(!f.may_retry(Method::Other, b"PURGE"));
    }

    #[test]
    fn may_retry_decides_only_what_the_method_and_first_attempt_decide() {
        let f = Failover::parse("RequestMethod() != \"POST\" && ResponseCode() == 503").unwrap();
        assert!(!f.may_retry(Method::Post, b"POST"));
        assert!(f.may_retry(Method::Put, b"PUT"));
        assert!(f.may_retry(Method::Other, b"PURGE"));
        let f = Failover::parse("Attempts() > 1 && IsNetworkError()").unwrap();
        assert!(
            !f.may_retry(Method::Get, b"GET"),
            "never true on the first attempt"
        );
        let f = Failover::parse("RequestMethod() == \"POST\" || IsNetworkError()").unwrap();
        assert!(f.may_retry(Method::Get, b"GET"));
        let f = Failover::parse("RequestMethod() == \"PURGE\" && IsNetworkError()").unwrap();
        assert!(f.may_retry(Method::Other, b"PURGE"));
        assert!(!f.may_retry(Method::Other, b"LINK"));
        assert!(!f.may_retry(Method::Get, b"GET"));
    }

    #[test]
    fn the_status_table_agrees_with_the_predicate() {
        for text in [
            SCROLL_LIKE,
            "ResponseCode() >= 500 && ResponseCode() != 501",
            "ResponseCode() < 200 || Attempts() > 3",
            VULCAND_DEFAULT,
        ] {
            let f = Failover::parse(text).unwrap();
            for code in 100..=599 {
                for attempts in 1..=4 {
                    for method in ["GET", "POST"] {
                        let a = attempt(attempts, code, method);
                        assert_eq!(f.wants_retry(&a), f.pred.eval(&a), "{text}: {a:?}");
                    }
                }
            }
        }
    }

    const SCROLL_LIKE: &str = "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2";

    #[test]
    fn bad_predicates_say_where() {
        let cases = [
            ("IsNetworkError(", 15),
            ("Attempts() <= 2.5", 11),
            ("RequestMethod() < \"GET\"", 16),
            ("Retries() < 2", 0),
            ("Attempts()", 0),
            ("IsNetworkError(1)", 0),
            ("ResponseCode() == \"503\"", 15),
            ("IsNetworkError() &&", 19),
        ];
        for (text, at) in cases {
            let err = Failover::parse(text).unwrap_err();
            assert_eq!(err.position, at, "{text}: {err}");
        }
    }
}
