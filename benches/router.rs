//! Router lookup benchmark: 10,000 routes over mixed exact hosts, wildcard
//! hosts and any-host, with prefixes, templates, catch-alls, exact paths and
//! a few regexes. Prints median / p90 / p99 lookup time and fails (exit 1)
//! when the median is not under 1 µs.
//!
//!     cargo bench --bench router

use std::time::Instant;

use http::{HeaderMap, Method};
use portcullis::routing::{
    Conditions, HostPattern, Lookup, PathPattern, RouteInput, RouteSpec, Router,
};

const ROUTES: usize = 10_000;

/// A tiny deterministic generator so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn main() {
    let mut specs = Vec::with_capacity(ROUTES);
    // (host, path) samples that should hit each route, for the request mix.
    let mut samples: Vec<(String, String)> = Vec::with_capacity(ROUTES);
    for i in 0..ROUTES {
        let (hosts, host) = match i % 10 {
            0..=5 => {
                let h = format!("svc{}.example.com", i % 200);
                (vec![HostPattern::parse(&h).expect("host")], h)
            }
            6 | 7 => (
                vec![HostPattern::parse(&format!("*.tenant{}.example.net", i % 50)).expect("host")],
                format!("app.tenant{}.example.net", i % 50),
            ),
            _ => (Vec::new(), "any.example.org".to_string()),
        };
        let (pattern, path) = match i % 8 {
            0..=2 => (
                format!("/api/v{}/res{i}", i % 4),
                format!("/api/v{}/res{i}/sub/7", i % 4),
            ),
            3 | 4 => (
                format!("/users{i}/{{id}}/orders/{{order}}"),
                format!("/users{i}/42/orders/9"),
            ),
            5 => (format!("=/health{i}"), format!("/health{i}")),
            6 => (
                format!("/files{i}/{{*rest}}"),
                format!("/files{i}/a/b/c.txt"),
            ),
            _ if i % 1000 == 7 => (format!("~^/re{i}/[0-9]+$"), format!("/re{i}/123")),
            _ => (format!("/static{i}"), format!("/static{i}/app.js")),
        };
        specs.push(RouteSpec {
            route: i as u32,
            priority: 0,
            hosts,
            paths: vec![PathPattern::parse(&pattern).expect("pattern")],
            conditions: Conditions {
                methods: (i % 3 == 0).then(|| vec![Method::GET, Method::POST]),
                ..Conditions::default()
            },
        });
        samples.push((host, path));
    }
    let t = Instant::now();
    let router = Router::new(specs);
    let build = t.elapsed();

    let headers = HeaderMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut requests: Vec<(String, String, Option<u32>)> = Vec::new();
    for _ in 0..20_000 {
        let i = rng.below(ROUTES);
        let (h, p) = &samples[i];
        requests.push((h.clone(), p.clone(), Some(i as u32)));
    }
    for k in 0..2_000 {
        requests.push((
            format!("svc{}.example.com", k % 200),
            format!("/missing/{k}"),
            None,
        ));
    }

    // Correctness first: every sample reaches its own route.
    for (h, p, want) in &requests {
        let input = RouteInput {
            host: h,
            path: p,
            method: &Method::GET,
            headers: &headers,
            query: None,
        };
        let got = match router.lookup(&input) {
            Lookup::Found(m) => Some(m.route),
            _ => None,
        };
        assert_eq!(got, *want, "{h}{p}");
    }

    let mut times = Vec::with_capacity(requests.len() * 5);
    for _round in 0..5 {
        for (h, p, _) in &requests {
            let input = RouteInput {
                host: h,
                path: p,
                method: &Method::GET,
                headers: &headers,
                query: None,
            };
            let t = Instant::now();
            let r = router.lookup(&input);
            let d = t.elapsed();
            std::hint::black_box(r);
            times.push(d.as_nanos() as u64);
        }
    }
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let (p50, p90, p99) = (pct(0.50), pct(0.90), pct(0.99));
    println!(
        "router: {ROUTES} routes built in {:.1} ms; {} lookups: median {p50} ns, p90 {p90} ns, p99 {p99} ns (each includes ~20-30 ns of timer overhead)",
        build.as_secs_f64() * 1e3,
        times.len()
    );
    if p50 >= 1_000 {
        eprintln!("router: median lookup {p50} ns is not under the 1 µs target");
        std::process::exit(1);
    }
}
