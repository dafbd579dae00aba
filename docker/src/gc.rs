//! Orphaned runner containers: found by label, removed when nothing owns them any more.
//!
//! A run's container is an orphan once its run is finished in the store or the `sparkwing run`
//! that drove it is gone (its `run.lock` is free: the kernel dropped the lock of the dead
//! process). A pool's warm container is an orphan once its pool process is gone.

use super::client::{summary_label, summary_name, Client};
use super::pool::{lock_held, PoolDir};
use super::{DockerError, LABEL_POOL, LABEL_RUN};
use sparkwing_engine::home::Home;
use sparkwing_engine::store::Store;

/// A container removed, and why.
pub struct Removed {
    pub name: String,
    pub why: String,
}

pub async fn collect(client: &Client, home: &Home) -> Result<Vec<Removed>, DockerError> {
    let containers = client.list_managed(&home.root, &[]).await?;
    if containers.is_empty() {
        return Ok(Vec::new());
    }
    let store = Store::open(&home.root)?;
    let mut removed = Vec::new();
    for c in &containers {
        let name = summary_name(c);
        let run = summary_label(c, LABEL_RUN);
        let pool = summary_label(c, LABEL_POOL);
        let why = if !run.is_empty() {
            let rec = store.get_run(run)?;
            let alive = lock_held(&Home::run_lock(&home.run_dir(run)));
            match rec {
                None => Some(format!("run {run} is not in the store")),
                Some(r) if r.status.is_terminal() && !alive => {
                    Some(format!("run {run} is {}", r.status))
                }
                Some(_) if !alive => Some(format!("the sparkwing process of run {run} is gone")),
                _ => None,
            }
        } else if !pool.is_empty() {
            (!PoolDir::new(home, pool).is_alive()).then(|| format!("pool {pool} is not running"))
        } else {
            Some("it belongs to no run and no pool".to_string())
        };
        if let Some(why) = why {
            client.remove(&name).await?;
            removed.push(Removed { name, why });
        }
    }
    Ok(removed)
}
