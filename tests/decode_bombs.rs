//! Decompression bombs through the proxy: stopped at the limit with the documented answer
//! (403, `not_inspected`, the limit as the reason), nothing sent upstream, and the proxy's
//! memory bounded — the process's peak resident size grows by far less than the bombs
//! would expand to. One test, so that no other test's memory blurs the measurement.

mod support;

use support::bodies::*;
use support::{Proxy, Upstream, request};

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn reason(
    proxy: &Proxy,
    upstream: &Upstream,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut h = headers.to_vec();
    h.push(("Accept", "application/json"));
    let reply = request(proxy.addr, "POST", &upstream.url("/up"), &h, body).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let page: serde_json::Value = serde_json::from_str(&reply.text()).unwrap();
    assert_eq!(page["error"], "not_inspected");
    page["reason"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_stop_at_the_limit_with_bounded_memory() {
    // Built before measuring: a 10 GiB gzip bomb of about 10 KB, a 1 GiB zip bomb.
    let gzip_bomb = gzip_bomb_10g();
    assert!(
        gzip_bomb.len() < 64 << 10,
        "bomb is {} bytes",
        gzip_bomb.len()
    );
    let zip_bomb = zip_bomb(1 << 30);
    let many: Vec<(String, Vec<u8>)> = (0..5000).map(|i| (format!("{i}"), Vec::new())).collect();
    let refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_slice()))
        .collect();
    let entry_bomb = zip(&refs, ZipMethod::Stored);

    let upstream = Upstream::start().await;
    let proxy = Proxy::start("").await;
    // Ratio off: the total decoded bytes limit stops it instead.
    let no_ratio =
        Proxy::start("decode:\n  max_ratio: 100000000\n  max_decoded_bytes: 32MiB\n").await;
    let before = peak_rss();

    let gz = [("Content-Encoding", "gzip")];
    assert_eq!(
        reason(&proxy, &upstream, &gz, &gzip_bomb).await,
        "expansion_ratio"
    );
    assert_eq!(
        reason(&no_ratio, &upstream, &gz, &gzip_bomb).await,
        "decoded_bytes_limit"
    );
    // Not declared as an encoding: found by its first bytes all the same.
    assert_eq!(
        reason(&proxy, &upstream, &[], &gzip_bomb).await,
        "expansion_ratio"
    );
    let zip_type = [("Content-Type", "application/zip")];
    assert_eq!(
        reason(&proxy, &upstream, &zip_type, &zip_bomb).await,
        "expansion_ratio"
    );
    assert_eq!(
        reason(&no_ratio, &upstream, &zip_type, &zip_bomb).await,
        "decoded_bytes_limit"
    );
    assert_eq!(
        reason(&proxy, &upstream, &zip_type, &entry_bomb).await,
        "archive_entries"
    );
    // In a multipart upload.
    let body = multipart(&[(
        "file",
        Some("a.zip"),
        Some("application/zip"),
        "",
        &zip_bomb,
    )]);
    let mp = [("Content-Type", multipart_type())];
    let mp: Vec<(&str, &str)> = mp.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        reason(&proxy, &upstream, &mp, &body).await,
        "expansion_ratio"
    );

    assert!(upstream.requests().is_empty());
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        let grown = after.saturating_sub(before);
        eprintln!(
            "gzip bomb {} bytes, zip bomb {} bytes; peak RSS grew by {} KiB",
            gzip_bomb.len(),
            zip_bomb.len(),
            grown >> 10
        );
        assert!(grown < 256 << 20, "peak RSS grew by {} MiB", grown >> 20);
    }
}
