//! Property tests over keyword query parsing (issue 10, item 8): random and mutated queries
//! through the whole keyword path (the limits, tantivy's parser, the search) never panic, never
//! answer anything but results or `InvalidQuery` (or, for a blank query, the request error), and finish in bounded time on a small stack.
//! Catalog line parsing has its own properties in `indexer/src/catalog.rs`, image decoding in
//! `model/tests/images.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vitrine_searcher::{SearchError, SearchQuery, Searcher};

use crate::service::demo_data;

/// Queries as shoppers and attackers write them: every operator of the grammar.
const CORPUS: &[&str] = &[
    "red mug",
    "title:\"vintage camera\" AND brand:acme",
    "(poster OR print) -framed",
    "price:[10 TO 20] category:lamps",
    "astronuat~2 +helmet",
    "attr.color:blue^3 NOT (green OR \"dark green\")",
    "description:wood* AND (chair OR (table AND (oak OR pine)))",
    "{a TO b] \\\"escaped\\\" ::: ~~ ^^ **",
];

/// The grammar's characters, so random strings hit its corners often.
const ALPHABET: &[char] = &[
    'a', 'b', 'm', 'u', 'g', ' ', ' ', '(', ')', '[', ']', '{', '}', '"', ':', '~', '^', '*', '-', '+', '!', '\\', '/', 'T', 'O',
    'N', 'D', 'R', '1', '0', '.', 'é', '中', '\u{0}',
];

fn searcher() -> Arc<Searcher> {
    static S: std::sync::OnceLock<Arc<Searcher>> = std::sync::OnceLock::new();
    S.get_or_init(|| Arc::new(Searcher::open(&demo_data(), 64).unwrap())).clone()
}

/// Run one keyword query on a thread with a 512 KiB stack (a quarter of actix's workers'): an
/// unbounded recursion would overflow it and abort the test binary.
fn check(q: String) {
    let s = searcher();
    let started = Instant::now();
    let shown = q.clone();
    let outcome = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(move || {
            let query = SearchQuery { text: Some(q), k: 10, ..Default::default() };
            s.search(&query).map(|r| r.hits.len())
        })
        .unwrap()
        .join()
        .unwrap_or_else(|_| panic!("the search panicked on {shown:?}"));
    match outcome {
        Ok(n) => assert!(n <= 10, "{shown:?}"),
        Err(SearchError::InvalidQuery(m)) => assert!(!m.is_empty()),
        Err(SearchError::BadRequest(m)) if shown.trim().is_empty() => assert!(m.contains("needs text"), "{m}"),
        Err(e) => panic!("{shown:?}: {e} (only results or invalid_query may come back)"),
    }
    // Generous: a hang or a blow-up, not a benchmark.
    assert!(started.elapsed() < Duration::from_secs(10), "{shown:?} took {:?}", started.elapsed());
}

fn random_query() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(ALPHABET), 0..300).prop_map(|cs| cs.into_iter().collect())
}

fn mutated_query() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(CORPUS),
        proptest::collection::vec((0usize..200, proptest::sample::select(ALPHABET), 0u8..4), 1..16),
    )
        .prop_map(|(base, edits)| {
            let mut cs: Vec<char> = base.chars().collect();
            for (at, c, op) in edits {
                let at = at % (cs.len() + 1);
                match op {
                    0 if at < cs.len() => cs[at] = c,
                    1 => cs.insert(at, c),
                    2 if at < cs.len() => {
                        cs.remove(at);
                    }
                    // Repeat a slice: nesting and operator runs grow this way.
                    _ => {
                        let tail: Vec<char> = cs[at..].iter().take(8).copied().collect();
                        for _ in 0..(at % 7 + 1) {
                            cs.splice(at..at, tail.iter().copied());
                        }
                    }
                }
            }
            cs.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_keyword_queries_answer_results_or_invalid_query(q in random_query()) {
        check(q);
    }

    #[test]
    fn mutated_keyword_queries_answer_results_or_invalid_query(q in mutated_query()) {
        check(q);
    }
}

/// The inputs of issue 10's table, and their neighbours at the limits.
#[test]
fn queries_at_and_past_the_limits() {
    let limit = vitrine_searcher::MAX_QUERY_NESTING;
    for q in [
        format!("{}a{}", "(".repeat(limit), ")".repeat(limit)),
        format!("{}a", "(".repeat(800)),
        format!("{}a", "NOT ".repeat(limit)),
        format!("{}a", "NOT ".repeat(300)),
        format!("{}a", "[".repeat(5_000)),
        "a ".repeat(vitrine_searcher::MAX_QUERY_CHARS / 2),
        "a".repeat(vitrine_searcher::MAX_QUERY_CHARS + 1),
        format!("\"{}\"", "(".repeat(900)),
        "id:* ord:1 version:2 doc:3 title_raw:x".into(),
        // An exists query on a field that is not a fast field, or on no field at all: were 500s.
        "title:* mug".into(),
        "/:* ".into(),
        "O: * nosuchfield:*".into(),
    ] {
        check(q);
    }
}
