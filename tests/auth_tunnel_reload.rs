//! A user a reload removes loses the intercepted tunnels it has open (session 22, from
//! session 21's review): requests inside a tunnel inherit the CONNECT's user without
//! authenticating themselves, and they kept doing so after a reload removed that user
//! from `policy.auth`, as long as the browser kept the tunnel busy. Each such request is
//! now checked against its own config snapshot: a user it no longer knows gets the 407
//! challenge, and the upstream nothing.

mod ops_support;
mod support;
#[path = "support/tls.rs"]
mod tls_support;

use std::net::IpAddr;
use std::sync::Arc;

use egress_dlp::config::{self, Overrides};
use egress_dlp::proxy;
use egress_dlp::tls::Interceptor;
use tls_support::{TestCa, TlsUpstream, connect_from, tls_via};

#[tokio::test]
async fn a_user_removed_by_a_reload_is_refused_inside_its_open_tunnel() {
    let ca = TestCa::new();
    let upstream = TlsUpstream::start(
        ca.issue(&["upstream.test", "127.0.0.1"], false),
        &["http/1.1"],
    )
    .await;
    let port = upstream.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    let write = |client_map: &str| {
        std::fs::write(
            &config_path,
            format!(
                "rules: {}\ndata_dir: {}\nreload: {{ watch_interval: 0s }}\n\
                 tls:\n  upstream_roots: ['{}']\naccess:\n  connect_ports: [{port}]\n\
                 policy:\n  auth:\n    clients: {{ {client_map} }}\n",
                support::fixture_rules().display(),
                dir.path().display(),
                ca.pem_path.display()
            ),
        )
        .unwrap()
    };
    write("'127.0.0.1/32': alice");
    let config = config::load(Some(&config_path), &Overrides::default()).unwrap();
    egress_dlp::cli::prepare_ca(&config.tls, &mut Vec::new()).unwrap();
    let tls = Arc::new(Interceptor::new(&config.tls).unwrap());
    let roots = [tls.ca().cert().clone()];
    let options = proxy::RunOptions {
        tls: Some(tls.clone()),
        ..proxy::RunOptions::default()
    };
    let running = support::serve_reloadable(&config_path, config, options).await;
    let (addr, handle) = (running.addr, &running.handle);

    // alice (by the client map) opens an intercepted tunnel and uses it.
    let target = upstream.addr.to_string();
    let mut tunnel = tls_via(addr, &target, "upstream.test", &roots, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(
        support::get_keepalive(&mut tunnel, "upstream.test", "/before").await,
        200
    );

    // The reload maps this address to nobody: alice is gone.
    write("'127.0.0.2/32': bob");
    handle.reload().await.expect("a good reload");
    // The baseline: a new CONNECT from here is challenged.
    let (status, _) = connect_from(IpAddr::from([127, 0, 0, 1]), addr, &target).await;
    assert_eq!(status, 407, "new config not applied");
    // The open tunnel's next request too.
    let status = support::get_keepalive(&mut tunnel, "upstream.test", "/after").await;
    assert_eq!(status, 407, "a removed user was served in its open tunnel");
    let paths: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(paths, ["/before"]);
}
