//! What the API benches share: a request on a fresh connection, quantiles, the process's peak
//! RSS, an upload to trigger from. Included by each bench with `#[path = "common/http.rs"] mod http;`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One request on a fresh connection: (status, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let status = String::from_utf8_lossy(&out[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, out[end + 4..].to_vec())
}

/// The `q` quantile of `v` (sorted here); zero for none.
pub fn quantile(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// This process's peak resident set (VmHWM), KiB.
pub fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A one-file upload (`main.rs`) stored through the API at `addr` with `token`: the id to
/// trigger runs from.
pub fn upload_one_file(addr: SocketAddr, token: &str) -> String {
    let content = b"fn main() {}\n";
    let sha = sparkwing_operator::api::manifest::sha256_hex(content);
    let manifest = serde_json::json!({"files": [{"path": "main.rs", "mode": 420,
        "size": content.len(), "sha256": sha}]});
    let (s, body) = request(
        addr,
        "POST",
        "/api/v1/uploads",
        token,
        manifest.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(content).unwrap();
    let (s, _) = request(
        addr,
        "PUT",
        &format!("/api/v1/blobs/{sha}"),
        token,
        &gz.finish().unwrap(),
    );
    assert!(s == 201 || s == 200, "blob: {s}");
    id
}
