//! Where a job runs on a cluster (`docs/authoring.md#placement`), set with
//! [`JobBuilder::placement`](crate::JobBuilder::placement).

use crate::json::Value;

/// A job's placement on a cluster: its own runner pod, made like a RunnerPool's or the run's, with cpu,
/// memory and node labels. Every method chains; the engine checks the values at plan time.
/// A local run ignores placement (and says so once).
///
/// ```
/// # use sparkwing::prelude::*;
/// fn plan(p: &mut Plan, _: &Args) -> Result<()> {
///     p.job("train", |job| job.bash("./train.sh")).placement(
///         Placement::pool("gpu")
///             .cpu("4")
///             .memory("8Gi")
///             .node_selector("disk", "ssd"),
///     );
///     p.job("lint", |job| job.bash("cargo clippy"))
///         .placement(Placement::new().cpu("500m"));
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pool: Option<String>,
    cpu: Option<String>,
    memory: Option<String>,
    node_selector: Vec<(String, String)>,
}

impl Placement {
    /// A placement in a fresh runner pod made like the run's runner pod, without a pool.
    pub fn new() -> Placement {
        Placement::default()
    }

    /// A placement in a fresh runner pod made like a warm runner of RunnerPool `name` (its
    /// image, resources, node selector, tolerations, environment and volumes).
    pub fn pool(name: impl Into<String>) -> Placement {
        Placement {
            pool: Some(name.into()),
            ..Placement::default()
        }
    }

    /// The pod's cpu, a Kubernetes quantity (`"500m"`, `"4"`): its request and limit.
    pub fn cpu(mut self, quantity: impl Into<String>) -> Placement {
        self.cpu = Some(quantity.into());
        self
    }

    /// The pod's memory, a Kubernetes quantity (`"512Mi"`, `"8Gi"`): its request and limit.
    pub fn memory(mut self, quantity: impl Into<String>) -> Placement {
        self.memory = Some(quantity.into());
        self
    }

    /// A label the pod's node must carry; a repeated key replaces the earlier value.
    pub fn node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Placement {
        let (key, value) = (key.into(), value.into());
        match self.node_selector.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.node_selector.push((key, value)),
        }
        self
    }

    /// The job's `"placement"` object (`docs/protocol.md`).
    pub(crate) fn to_json(&self) -> Value {
        Value::object([
            ("pool", Value::from(self.pool.as_deref())),
            ("cpu", Value::from(self.cpu.as_deref())),
            ("memory", Value::from(self.memory.as_deref())),
            (
                "node_selector",
                Value::object(
                    self.node_selector
                        .iter()
                        .map(|(k, v)| (k.as_str(), Value::from(v.as_str()))),
                ),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::args::Args;
    use crate::plan::{Pipeline, Plan};
    use crate::Placement;

    #[test]
    fn placed_jobs_carry_it_and_others_do_not() {
        let p = Pipeline::new("P", |p: &mut Plan, _: &Args| {
            p.job("train", |_| Ok(())).placement(
                Placement::pool("gpu")
                    .cpu("4")
                    .memory("8Gi")
                    .node_selector("disk", "hdd")
                    .node_selector("zone", "a")
                    .node_selector("disk", "ssd"),
            );
            p.job("small", |_| Ok(()))
                .placement(Placement::pool("x"))
                .placement(Placement::new().cpu("500m"));
            p.job("plain", |_| Ok(()));
            Ok(())
        });
        let json = match p.build(&Args::default()) {
            Ok(plan) => plan.to_json().to_string(),
            Err(e) => panic!("{e}"),
        };
        assert!(
            json.contains(concat!(
                r#""placement":{"pool":"gpu","cpu":"4","memory":"8Gi","#,
                r#""node_selector":{"disk":"ssd","zone":"a"}}"#
            )),
            "{json}"
        );
        // A second call replaces the first.
        assert!(
            json.contains(
                r#""placement":{"pool":null,"cpu":"500m","memory":null,"node_selector":{}}"#
            ),
            "{json}"
        );
        assert_eq!(json.matches("placement").count(), 2, "{json}");
    }
}
