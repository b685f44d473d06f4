//! The cbreaker middleware's `Condition`: vulcand's predicate language with the functions of
//! oxy's circuit breaker, evaluated over the breaker's 10 s window of outcomes.
//!
//! - `NetworkErrorRatio()`: answers that were 502 or 504 (ringway's own or the upstream's)
//!   over all answers.
//! - `ResponseCodeRatio(from, to, divFrom, divTo)`: answers with a status in `[from, to)` over
//!   answers with a status in `[divFrom, divTo)`; 0 when there are none of the latter.
//! - `LatencyAtQuantileMS(q)`: the q-th percentile of response times, in whole milliseconds.
//! - `RequestThreshold()`: answers in the window.
//!
//! Ratios compare with floats or integers (`NetworkErrorRatio() > 0` is accepted, where
//! vulcand demands `> 0.0`); the others with integers.

use crate::route::predicate::{self, Facts, Language, Literal, Pred, Value, ValueOf};
use crate::route::ExprError;

use super::window::Totals;

/// A function of the condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BreakerFn {
    NetworkErrorRatio,
    /// Statuses in `[num.0, num.1)` over statuses in `[den.0, den.1)`.
    CodeRatio {
        num: (u16, u16),
        den: (u16, u16),
    },
    /// The quantile, in percent (0 to 100).
    LatencyAtQuantile(f64),
    RequestThreshold,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerLanguage;

fn status(arg: &Literal) -> Result<u16, String> {
    match arg {
        Literal::Int(i) if (0..=1000).contains(i) => Ok(*i as u16),
        _ => Err(format!("ResponseCodeRatio takes status codes, got {arg:?}")),
    }
}

impl Language for BreakerLanguage {
    type Flag = BreakerFn;
    type Num = BreakerFn;
    type Str = BreakerFn;
    const FUNCTIONS: &'static str =
        "NetworkErrorRatio, ResponseCodeRatio, LatencyAtQuantileMS, RequestThreshold";

    fn call(name: &str, args: &[Literal]) -> Result<ValueOf<Self>, String> {
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("{name} takes {n} argument(s), got {}", args.len()))
            }
        };
        match name {
            "NetworkErrorRatio" => {
                arity(0)?;
                Ok(Value::Float(BreakerFn::NetworkErrorRatio))
            }
            "ResponseCodeRatio" => {
                arity(4)?;
                let num = (status(&args[0])?, status(&args[1])?);
                let den = (status(&args[2])?, status(&args[3])?);
                Ok(Value::Float(BreakerFn::CodeRatio { num, den }))
            }
            "LatencyAtQuantileMS" => {
                arity(1)?;
                match args[0].number() {
                    Some(q) if (0.0..=100.0).contains(&q) => {
                        Ok(Value::Int(BreakerFn::LatencyAtQuantile(q)))
                    }
                    _ => Err(format!(
                        "LatencyAtQuantileMS takes a percentile from 0 to 100, got {:?}",
                        args[0]
                    )),
                }
            }
            "RequestThreshold" => {
                arity(0)?;
                Ok(Value::Int(BreakerFn::RequestThreshold))
            }
            _ => Err(format!(
                "unknown function {name:?}; a cbreaker Condition has {}",
                Self::FUNCTIONS
            )),
        }
    }
}

/// A parsed `Condition`, with the status ranges its ratios count (the window keeps one counter
/// per distinct range) and whether it needs response times.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pred: Pred<BreakerLanguage>,
    pub ranges: Vec<(u16, u16)>,
    pub needs_latency: bool,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ExprError> {
        let pred = predicate::parse::<BreakerLanguage>(text)?;
        let mut c = Condition {
            pred,
            ranges: Vec::new(),
            needs_latency: false,
        };
        let mut leaves = Vec::new();
        collect(&c.pred, &mut leaves);
        for f in leaves {
            match f {
                BreakerFn::CodeRatio { num, den } => {
                    for r in [num, den] {
                        if !c.ranges.contains(&r) {
                            c.ranges.push(r);
                        }
                    }
                }
                BreakerFn::LatencyAtQuantile(_) => c.needs_latency = true,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Whether the window's outcomes trip the breaker.
    pub fn holds(&self, totals: &Totals) -> bool {
        self.pred.eval(&WindowFacts {
            totals,
            ranges: &self.ranges,
        })
    }
}

fn collect(p: &Pred<BreakerLanguage>, out: &mut Vec<BreakerFn>) {
    match p {
        Pred::And(a, b) | Pred::Or(a, b) => {
            collect(a, out);
            collect(b, out);
        }
        Pred::Flag(f) | Pred::Num(f, _, _) | Pred::Str(f, _, _) => out.push(*f),
    }
}

struct WindowFacts<'a> {
    totals: &'a Totals,
    ranges: &'a [(u16, u16)],
}

impl WindowFacts<'_> {
    fn count(&self, range: (u16, u16)) -> u64 {
        self.ranges
            .iter()
            .position(|&r| r == range)
            .map_or(0, |i| self.totals.ranges[i])
    }
}

impl Facts<BreakerLanguage> for WindowFacts<'_> {
    fn flag(&self, _: BreakerFn) -> bool {
        false
    }

    fn num(&self, f: BreakerFn) -> f64 {
        let t = self.totals;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        match f {
            BreakerFn::NetworkErrorRatio => ratio(t.network_errors, t.requests),
            BreakerFn::CodeRatio { num, den } => ratio(self.count(num), self.count(den)),
            BreakerFn::LatencyAtQuantile(q) => (t.latency_at(q) / 1000) as f64,
            BreakerFn::RequestThreshold => t.requests as f64,
        }
    }

    fn str(&self, _: BreakerFn) -> &[u8] {
        b""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::breaker::window::Counts;

    fn totals(c: &Condition, outcomes: &[(u16, u64)]) -> Totals {
        let mut counts = Counts::new(c.ranges.len(), c.needs_latency);
        for &(status, latency_us) in outcomes {
            counts.record(status, latency_us, &c.ranges);
        }
        let mut t = Totals::new(c.ranges.len(), c.needs_latency);
        t.add(&counts);
        t
    }

    #[test]
    fn vulcands_conditions_parse_and_hold_on_the_window() {
        let c = Condition::parse("NetworkErrorRatio() > 0.5").unwrap();
        assert!(c.holds(&totals(&c, &[(502, 1), (504, 1), (200, 1)])));
        assert!(!c.holds(&totals(&c, &[(502, 1), (200, 1)])));
        assert!(!c.holds(&totals(&c, &[])), "no requests, no ratio");
        let c = Condition::parse("ResponseCodeRatio(500, 600, 0, 600) > 0.3").unwrap();
        assert_eq!(c.ranges, [(500, 600), (0, 600)]);
        assert!(c.holds(&totals(&c, &[(500, 1), (200, 1)])));
        assert!(!c.holds(&totals(&c, &[(500, 1), (200, 1), (200, 1), (404, 1)])));
        let c = Condition::parse("LatencyAtQuantileMS(50.0) > 50").unwrap();
        assert!(c.needs_latency);
        assert!(c.holds(&totals(&c, &[(200, 80_000), (200, 90_000), (200, 1_000)])));
        assert!(!c.holds(&totals(&c, &[(200, 10_000), (200, 20_000), (200, 90_000)])));
        let c = Condition::parse("RequestThreshold() >= 3 && NetworkErrorRatio() > 0").unwrap();
        assert!(!c.holds(&totals(&c, &[(502, 1), (502, 1)])));
        assert!(c.holds(&totals(&c, &[(502, 1), (502, 1), (200, 1)])));
        // Integers where vulcand insists on floats.
        assert!(Condition::parse("NetworkErrorRatio() > 0").is_ok());
        assert!(Condition::parse("LatencyAtQuantileMS(99) > 100").is_ok());
    }

    #[test]
    fn bad_conditions_are_refused_with_their_position() {
        for (text, at) in [
            ("NetworkErrorRatio() >", 21),
            ("ResponseCodeRatio(500, 600) > 0.5", 0),
            ("LatencyAtQuantileMS(50) > 1.5", 24),
            ("LatencyAtQuantileMS(150) > 1", 0),
            ("Attempts() > 1", 0),
            ("NetworkErrorRatio() > \"x\"", 20),
        ] {
            let err = Condition::parse(text).unwrap_err();
            assert_eq!(err.position, at, "{text}: {err}");
        }
    }
}
