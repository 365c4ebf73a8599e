//! A small, fast HTTP/1.1 origin server for the proxy bench (`benches/proxy_bench.sh`).
//!
//! ```text
//! cargo run --release --example bench_upstream -- [PORT] [THREADS]
//! ```
//!
//! Listens on `127.0.0.1:PORT` (default 0: any free port), prints the port it got on the
//! first line of standard output, and answers every request `200` with the body
//! `ok N\n`, where N is the number of request-body bytes it read: it reads every request
//! body to its end (so an upload is really received) and keeps none of it. `THREADS`
//! (default 1) is the number of runtime worker threads: one keeps the origin from taking
//! CPU from the proxy being measured on a small machine.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next().map(|a| a.parse()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(_)) => return Err(usage()),
    };
    let threads: usize = match args.next().map(|a| a.parse()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => return Err(usage()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(serve(SocketAddr::from(([127, 0, 0, 1], port))))
}

fn usage() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "usage: bench_upstream [PORT] [THREADS]",
    )
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("{}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

/// Reads the whole body, counting it, then answers `ok N`.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = req.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
            // The client went away mid-body: nothing to answer.
            Err(_) => break,
        }
    }
    Ok(Response::new(Full::new(Bytes::from(format!(
        "ok {received}\n"
    )))))
}
