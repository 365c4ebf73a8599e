//! The per-request cost of proxy authentication when the credentials are cached: parsing
//! the `Proxy-Authorization` header, the keyed BLAKE2s cache key, the cache lookup — and,
//! for scale, one argon2id verification (what the cache saves).
//!
//! ```text
//! cargo bench --bench auth
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use egress_dlp::policy::identity::{
    AuthCounters, AuthLimits, Credentials, VerifyCache, hash_password, parse_basic,
};

fn auth(c: &mut Criterion) {
    let line = format!("alice:{}\n", hash_password(b"wonderland"));
    let credentials = Credentials::parse(&line).expect("a valid line");
    let stored = credentials.hash_of("alice").expect("alice").to_owned();
    let limits = AuthLimits::default();
    let counters = AuthCounters::default();
    let cache = VerifyCache::default();
    let now = Instant::now();
    cache.insert(
        cache.key("alice", "wonderland", &stored),
        &limits,
        &counters,
        now,
    );
    let header = b"Basic YWxpY2U6d29uZGVybGFuZA=="; // alice:wonderland

    let mut group = c.benchmark_group("auth");
    group.bench_function("cached_request", |b| {
        b.iter(|| {
            let creds = parse_basic(black_box(header)).expect("valid header");
            let stored = credentials.hash_of(&creds.user).expect("known user");
            let key = cache.key(&creds.user, &creds.password, stored);
            assert!(cache.hit(&key, limits.cache_ttl, now));
        })
    });
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("argon2id_verify", |b| {
        b.iter(|| assert!(credentials.verify("alice", black_box(b"wonderland"))))
    });
    group.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
