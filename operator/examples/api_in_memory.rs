//! The Sparkwing API with the in-memory run backend, for benches that drive the real CLI against
//! it without a cluster (runs are recorded in memory; nothing executes them).
//!
//! ```sh
//! cargo run -p sparkwing-operator --release --example api_in_memory -- --data-dir /tmp/api
//! # prints one line: <url> <admin token>; serves until stdin is closed
//! ```

use std::io::Read as _;
use std::sync::Arc;

use sparkwing_operator::api::{self, ApiConfig, ApiState, MemoryRuns};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data_dir = args
        .iter()
        .position(|a| a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .ok_or_else(|| anyhow::anyhow!("usage: api_in_memory --data-dir DIR"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let state = rt.block_on(ApiState::open(
        std::path::Path::new(data_dir),
        Arc::new(MemoryRuns::new()),
        ApiConfig::default(),
    ))?;
    let (token, _) = rt.block_on(state.store.create_token(
        "bench",
        vec!["admin".to_string()],
        None,
    ))?;
    let addr = api::spawn_serving(&rt, state, "127.0.0.1:0")?;
    println!("http://{addr} {token}");
    // Serve until whoever started us closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
