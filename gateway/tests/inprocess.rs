//! The gateway started in-process through the library (`streamgate::start`), on port 0: no
//! binary, no fixed ports. What the binary does is covered by interop.rs and hostile.rs; these
//! check the library seam itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use streamgate::{Cli, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(extra: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("sg-inprocess-{}-{}", std::process::id(), extra.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!("[server]\nhttp = \"127.0.0.1:0\"\nrtmp = \"127.0.0.1:0\"\nwebrtc_udp = \"127.0.0.1:0\"\n{extra}"),
    )
    .unwrap();
    Config::load(&Cli::parse_from(["streamgate", "--config", path.to_str().unwrap()])).unwrap()
}

async fn exchange(addr: std::net::SocketAddr, request: String) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn two_gateways_in_one_process_on_port_zero() {
    let a = streamgate::start(config("")).await.unwrap();
    let b = streamgate::start(config("[webrtc]\nmax_pending_per_address = 1\n")).await.unwrap();
    assert_ne!(a.http.port(), 0);
    assert_ne!(a.http, b.http, "each binds its own ports");
    let list = exchange(
        a.http,
        "GET /api/v1/streams HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    assert!(list.contains("{\"streams\":[]}"), "{list}");
    let bad = "v=0 garbage";
    let post = format!(
        "POST /whip/live/x HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{bad}",
        bad.len()
    );
    let answer = exchange(b.http, post).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("malformed SDP offer: line 1: expected `v=0`"), "{answer}");
    // RTMP answers a handshake (S0 = version 3).
    let mut r = TcpStream::connect(a.rtmp).await.unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    r.write_all(&c0c1).await.unwrap();
    let mut s0 = [0u8; 1];
    r.read_exact(&mut s0).await.unwrap();
    assert_eq!(s0[0], 3);
    // Shutdown ends the listeners: new connections are refused.
    let (http_a, http_b) = (a.http, b.http);
    tokio::time::timeout(Duration::from_secs(6), a.shutdown()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(6), b.shutdown()).await.unwrap();
    for addr in [http_a, http_b] {
        assert!(TcpStream::connect(addr).await.is_err(), "{addr} still accepts after shutdown");
    }
}
