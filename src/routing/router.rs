//! The compiled router: host tables, each with a segment trie for prefix and
//! template paths, a map for exact paths and a list of regexes.
//!
//! Selection: among routes whose host and path match, the one with the
//! highest rank whose method, header and query conditions hold wins. Rank, in
//! order: explicit `priority`; host specificity (exact host, then longer
//! wildcard suffix, then any host); path specificity (exact, template, prefix
//! by length, regex); number of other conditions; earlier declaration.
//! Conditions are only evaluated for candidates that would beat the current
//! best, so a lookup touches few routes even among thousands.

use std::collections::HashMap;

use http::{HeaderMap, Method};

use super::conditions::Conditions;
use super::pattern::{specificity, HostPattern, PathPattern, Segment};

/// What the router needs to know about one route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Index of the route in the snapshot's route list; returned on a match.
    pub route: u32,
    /// Explicit priority; higher wins.
    pub priority: i32,
    /// Host patterns; empty means any host.
    pub hosts: Vec<HostPattern>,
    /// Path patterns; empty means any path.
    pub paths: Vec<PathPattern>,
    /// Method, header and query conditions.
    pub conditions: Conditions,
}

/// The request facts routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RouteInput<'a> {
    /// Lowercase host without port.
    pub host: &'a str,
    /// Normalized path, starting with `/`.
    pub path: &'a str,
    /// Request method.
    pub method: &'a Method,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw query string, if any.
    pub query: Option<&'a str>,
}

/// A successful lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the matched route in the snapshot.
    pub route: u32,
    /// Which of the route's path patterns matched (`None` when the route has no paths).
    pub path: Option<u16>,
}

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A route matched.
    Found(RouteMatch),
    /// Some route matched everything but the method; these methods would be allowed.
    MethodNotAllowed(Vec<Method>),
    /// Nothing matched.
    NotFound,
}

#[derive(Debug, Clone, Copy)]
struct Cand {
    spec: u32,
    path: Option<u16>,
    rank: u128,
}

#[derive(Debug, Default)]
struct TrieNode {
    literal: HashMap<Box<str>, TrieNode>,
    param: Option<Box<TrieNode>>,
    prefix_end: Vec<u32>,
    exact_end: Vec<u32>,
    catch_all: Vec<u32>,
}

#[derive(Debug, Default)]
struct Table {
    trie: TrieNode,
    exact: HashMap<Box<str>, Vec<u32>>,
    regex: Vec<u32>,
}

/// A router compiled once per snapshot.
#[derive(Debug, Default)]
pub struct Router {
    specs: Vec<RouteSpec>,
    cands: Vec<Cand>,
    exact_hosts: HashMap<Box<str>, Table>,
    suffix_hosts: HashMap<Box<str>, Table>,
    any_host: Table,
}

impl Router {
    /// Builds the router; `specs` are in declaration order.
    pub fn new(specs: Vec<RouteSpec>) -> Router {
        let mut r = Router::default();
        let n = specs.len() as u128;
        for (i, spec) in specs.iter().enumerate() {
            let base_prio = ((spec.priority as i64 - i32::MIN as i64) as u128) << 96;
            let conds = spec.conditions.count() as u128;
            let order = (n - i as u128) & 0xFF_FFFF;
            let hosts: Vec<Option<&HostPattern>> = if spec.hosts.is_empty() {
                vec![None]
            } else {
                spec.hosts.iter().map(Some).collect()
            };
            for host in hosts {
                let host_spec: u128 = match host {
                    None => 0,
                    Some(HostPattern::Suffix(s)) => 1 + s.len() as u128,
                    Some(HostPattern::Exact(_)) => 1 << 20,
                };
                let paths: Vec<Option<(u16, &PathPattern)>> = if spec.paths.is_empty() {
                    vec![None]
                } else {
                    spec.paths
                        .iter()
                        .enumerate()
                        .map(|(j, p)| Some((j as u16, p)))
                        .collect()
                };
                for path in paths {
                    let path_spec = path.map_or(1_000_000, |(_, p)| specificity(p)) as u128;
                    let cand = r.cands.len() as u32;
                    r.cands.push(Cand {
                        spec: i as u32,
                        path: path.map(|(j, _)| j),
                        rank: base_prio | host_spec << 64 | path_spec << 32 | conds << 24 | order,
                    });
                    let table = match host {
                        None => &mut r.any_host,
                        Some(HostPattern::Exact(h)) => r.exact_hosts.entry(h.clone()).or_default(),
                        Some(HostPattern::Suffix(s)) => {
                            r.suffix_hosts.entry(s.clone()).or_default()
                        }
                    };
                    table.insert(path.map(|(_, p)| p), cand);
                }
            }
        }
        r.specs = specs;
        r
    }

    /// Finds the route for a request.
    pub fn lookup(&self, input: &RouteInput<'_>) -> Lookup {
        let mut best: Option<Cand> = None;
        let mut method_miss = false;
        let mut visit = |c: u32| {
            let cand = self.cands[c as usize];
            if best.is_some_and(|b| b.rank >= cand.rank) {
                return;
            }
            let conds = &self.specs[cand.spec as usize].conditions;
            if !conds.matches_fields(input.headers, input.query) {
                return;
            }
            if !conds.matches_method(input.method) {
                method_miss = true;
                return;
            }
            best = Some(cand);
        };
        self.for_each_candidate(input.host, input.path, &mut visit);
        match best {
            Some(c) => Lookup::Found(RouteMatch {
                route: self.specs[c.spec as usize].route,
                path: c.path,
            }),
            None if method_miss => Lookup::MethodNotAllowed(self.allowed_methods(input)),
            None => Lookup::NotFound,
        }
    }

    /// Calls `visit` with every candidate whose host and path match.
    fn for_each_candidate(&self, host: &str, path: &str, visit: &mut impl FnMut(u32)) {
        if let Some(t) = self.exact_hosts.get(host) {
            t.collect(path, &self.specs, &self.cands, visit);
        }
        if !self.suffix_hosts.is_empty() {
            for (i, b) in host.bytes().enumerate() {
                if b == b'.' {
                    if let Some(t) = self.suffix_hosts.get(&host[i..]) {
                        t.collect(path, &self.specs, &self.cands, visit);
                    }
                }
            }
        }
        self.any_host.collect(path, &self.specs, &self.cands, visit);
    }

    /// Methods accepted by the routes whose host, path and other conditions
    /// match (for the `Allow` header of a 405). Only runs on the error path.
    fn allowed_methods(&self, input: &RouteInput<'_>) -> Vec<Method> {
        let mut out: Vec<Method> = Vec::new();
        self.for_each_candidate(input.host, input.path, &mut |c| {
            let conds = &self.specs[self.cands[c as usize].spec as usize].conditions;
            if conds.matches_fields(input.headers, input.query) {
                conds.allowed_methods(&mut out);
            }
        });
        out
    }
}

impl Table {
    fn insert(&mut self, path: Option<&PathPattern>, cand: u32) {
        match path {
            None => self.trie.prefix_end.push(cand),
            Some(PathPattern::Exact(p)) => self.exact.entry(p.clone()).or_default().push(cand),
            Some(PathPattern::Regex(_)) => self.regex.push(cand),
            Some(PathPattern::Prefix(segs)) => {
                let mut node = &mut self.trie;
                for s in segs {
                    node = node.literal.entry(s.clone()).or_default();
                }
                node.prefix_end.push(cand);
            }
            Some(PathPattern::Template(segs)) => {
                let mut node = &mut self.trie;
                for s in segs {
                    match s {
                        Segment::Literal(l) => node = node.literal.entry(l.clone()).or_default(),
                        Segment::Param(_) => node = node.param.get_or_insert_with(Default::default),
                        Segment::CatchAll(_) => {
                            node.catch_all.push(cand);
                            return;
                        }
                    }
                }
                node.exact_end.push(cand);
            }
        }
    }

    fn collect(
        &self,
        path: &str,
        specs: &[RouteSpec],
        cands: &[Cand],
        visit: &mut impl FnMut(u32),
    ) {
        if let Some(list) = self.exact.get(path) {
            list.iter().for_each(|&c| visit(c));
        }
        walk(
            &self.trie,
            Some(path.strip_prefix('/').unwrap_or(path)),
            visit,
        );
        for &c in &self.regex {
            let cand = cands[c as usize];
            let spec = &specs[cand.spec as usize];
            if let Some(PathPattern::Regex(re)) = cand.path.map(|p| &spec.paths[p as usize]) {
                if re.is_match(path) {
                    visit(c);
                }
            }
        }
    }
}

/// Depth-first walk. `rest` is what follows the `/` after the segments
/// consumed so far, or `None` when the path ends here. `/` is one empty segment
/// and a trailing `/` adds one: no literal or param matches an empty segment, but
/// it is "more path" for catch-alls, so `/files/` matches `/files/{*rest}`.
fn walk<F: FnMut(u32)>(node: &TrieNode, rest: Option<&str>, visit: &mut F) {
    node.prefix_end.iter().for_each(|&c| visit(c));
    let Some(rest) = rest else {
        node.exact_end.iter().for_each(|&c| visit(c));
        return;
    };
    node.catch_all.iter().for_each(|&c| visit(c));
    let (seg, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if let Some(child) = node.literal.get(seg) {
        walk(child, tail, visit);
    }
    if !seg.is_empty() {
        if let Some(child) = &node.param {
            walk(child, tail, visit);
        }
    }
}
