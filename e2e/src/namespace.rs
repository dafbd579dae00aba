//! [`TestNamespace`]: a namespace of one test, deleted when dropped.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::DeleteParams;
use kube::{Api, Client, Config};

/// A namespace created for one test by [`TestBed::namespace`](crate::TestBed::namespace).
/// Dropping it deletes it.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: Config,
}

impl TestNamespace {
    pub(crate) fn new(name: String, config: Config) -> Self {
        TestNamespace { name, config }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for TestNamespace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace {
    /// Deletes the namespace on a thread of its own (drop cannot await, and the test's runtime
    /// may be shutting down). Errors are reported, not raised: the bed goes away anyway.
    fn drop(&mut self) {
        let name = self.name.clone();
        let config = self.config.clone();
        let deleted = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let api = Api::<Namespace>::all(Client::try_from(config)?);
                api.delete(&name, &DeleteParams::background()).await?;
                Ok(())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("sparkwing-e2e: deleting namespace {}: {err:#}", self.name),
            Err(_) => eprintln!("sparkwing-e2e: deleting namespace {} panicked", self.name),
        }
    }
}
