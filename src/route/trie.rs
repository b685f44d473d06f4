//! The per-host path index: literal paths in a hash map, templated paths in a segment trie,
//! `PathPrefix` prefixes in a hash map probed by the distinct prefix lengths, and everything
//! else (`PathRegexp`, no path matcher) in one list. Lookup cost depends on the request path
//! and on the number of distinct prefix lengths, not on the number of frontends.
//!
//! Entries are frontend ranks (positions in precedence order), so every candidate list is
//! sorted best first and "better" is "smaller".

use crate::fast_hash::FastMap;

use super::template::{path_body, split_first, PathTemplate, Segment};

/// A segment-trie node for templated paths.
#[derive(Debug, Default)]
struct Node {
    literal: FastMap<Box<[u8]>, Node>,
    int: Option<Box<Node>>,
    string: Option<Box<Node>>,
    /// Ranks of templates whose `<path:x>` starts here.
    tail: Vec<u32>,
    /// Ranks of templates that end here.
    end: Vec<u32>,
}

impl Node {
    fn insert(&mut self, segments: &[Segment], rank: u32) {
        let Some((first, rest)) = segments.split_first() else {
            self.end.push(rank);
            return;
        };
        let child = match first {
            Segment::Literal(lit) => self.literal.entry(lit.clone()).or_default(),
            Segment::Int => self.int.get_or_insert_with(Box::default),
            Segment::Str => self.string.get_or_insert_with(Box::default),
            Segment::Tail => {
                self.tail.push(rank);
                return;
            }
        };
        child.insert(rest, rank);
    }

    /// Call `found` with every candidate list whose template matches. `rest` is what remains of
    /// the path after the `/` that ended the previous segment; `None` once it is all consumed.
    fn walk(&self, rest: Option<&[u8]>, found: &mut dyn FnMut(&[u32])) {
        let Some(rest) = rest else {
            if !self.end.is_empty() {
                found(&self.end);
            }
            return;
        };
        if !self.tail.is_empty() && !rest.is_empty() {
            found(&self.tail);
        }
        let (seg, next) = split_first(rest, b'/');
        if let Some(child) = self.literal.get(seg) {
            child.walk(next, found);
        }
        if seg.is_empty() {
            return;
        }
        if let Some(child) = &self.int {
            if seg.iter().all(u8::is_ascii_digit) {
                child.walk(next, found);
            }
        }
        if let Some(child) = &self.string {
            child.walk(next, found);
        }
    }
}

/// Where a frontend goes in a [`PathIndex`].
pub(crate) enum PathKey<'a> {
    Template(&'a PathTemplate),
    Prefix(&'a [u8]),
    Other,
}

/// The path index of one host (or of all hosts).
#[derive(Debug, Default)]
pub(crate) struct PathIndex {
    exact: FastMap<Box<[u8]>, Vec<u32>>,
    templates: Node,
    prefixes: FastMap<Box<[u8]>, Vec<u32>>,
    /// Distinct prefix lengths, longest first.
    prefix_lens: Vec<usize>,
    other: Vec<u32>,
    /// The best rank anywhere in this index, to skip it when something better is known.
    pub min_rank: u32,
}

impl PathIndex {
    pub fn new() -> PathIndex {
        PathIndex {
            min_rank: u32::MAX,
            ..PathIndex::default()
        }
    }

    /// Add a frontend. Must be called in rank order so candidate lists stay sorted.
    pub fn insert(&mut self, key: PathKey<'_>, rank: u32) {
        self.min_rank = self.min_rank.min(rank);
        match key {
            PathKey::Template(t) if t.is_literal() => {
                let path = t.normalized().into_bytes().into_boxed_slice();
                self.exact.entry(path).or_default().push(rank);
            }
            PathKey::Template(t) => self.templates.insert(&t.segments, rank),
            PathKey::Prefix(p) => {
                let list = self.prefixes.entry(p.into()).or_default();
                if list.is_empty() {
                    if let Err(at) = self.prefix_lens.binary_search_by(|l| p.len().cmp(l)) {
                        self.prefix_lens.insert(at, p.len());
                    }
                }
                list.push(rank);
            }
            PathKey::Other => self.other.push(rank),
        }
    }

    /// The best rank below `best` whose candidate `accepts` the request, or `best`.
    pub fn best(&self, path: &[u8], mut best: u32, accepts: &dyn Fn(u32) -> bool) -> u32 {
        if self.min_rank >= best {
            return best;
        }
        let mut consider = |list: &[u32]| {
            for &rank in list {
                if rank >= best {
                    break;
                }
                if accepts(rank) {
                    best = rank;
                    break;
                }
            }
        };
        if let Some(list) = self.exact.get(path) {
            consider(list);
        }
        if let Some(body) = path_body(path) {
            self.templates.walk(Some(body), &mut consider);
        }
        for &len in &self.prefix_lens {
            if len <= path.len() {
                if let Some(list) = self.prefixes.get(&path[..len]) {
                    consider(list);
                }
            }
        }
        consider(&self.other);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(t: &str) -> PathTemplate {
        PathTemplate::parse(t).unwrap()
    }

    fn index(entries: &[(&str, u32)]) -> PathIndex {
        let templates: Vec<(PathTemplate, u32)> =
            entries.iter().map(|&(t, r)| (template(t), r)).collect();
        let mut index = PathIndex::new();
        for (t, rank) in &templates {
            index.insert(PathKey::Template(t), *rank);
        }
        index
    }

    #[test]
    fn the_best_matching_template_wins() {
        let index = index(&[
            ("/users/me", 0),
            ("/users/<int:id>", 1),
            ("/users/<name>", 2),
            ("/users/<path:rest>", 3),
        ]);
        let all = |_| true;
        assert_eq!(index.best(b"/users/me", u32::MAX, &all), 0);
        assert_eq!(index.best(b"/users/42", u32::MAX, &all), 1);
        assert_eq!(index.best(b"/users/bob", u32::MAX, &all), 2);
        assert_eq!(index.best(b"/users/bob/x", u32::MAX, &all), 3);
        assert_eq!(index.best(b"/users", u32::MAX, &all), u32::MAX);
        assert_eq!(index.best(b"/users/", u32::MAX, &all), u32::MAX);
    }

    #[test]
    fn rejected_candidates_fall_through_to_the_next() {
        let index = index(&[("/a/<x>", 0), ("/a/<y>", 1), ("/<z>/b", 2)]);
        assert_eq!(index.best(b"/a/b", u32::MAX, &|r| r != 0), 1);
        assert_eq!(index.best(b"/a/b", u32::MAX, &|r| r == 2), 2);
        assert_eq!(index.best(b"/a/b", 1, &|r| r == 2), 1);
    }

    #[test]
    fn prefixes_are_tried_longest_first() {
        let mut index = PathIndex::new();
        index.insert(PathKey::Prefix(b"/api/v1"), 0);
        index.insert(PathKey::Prefix(b"/api"), 1);
        index.insert(PathKey::Prefix(b"/"), 2);
        index.insert(PathKey::Other, 3);
        let all = |_| true;
        assert_eq!(index.best(b"/api/v1/x", u32::MAX, &all), 0);
        assert_eq!(index.best(b"/api/v2", u32::MAX, &all), 1);
        assert_eq!(index.best(b"/apiary", u32::MAX, &all), 1);
        assert_eq!(index.best(b"/x", u32::MAX, &all), 2);
        assert_eq!(index.best(b"/x", u32::MAX, &|r| r == 3), 3);
    }
}
