//! [`ApiGateRelay`]: how a run in a runner pod learns of the decisions on its approval gates.
//! Nobody can write the pod's own run store, so people decide through the API
//! (`POST .../gates/{gate}`, `sparkwing runs approve|reject --profile`); while a gate waits the
//! engine asks this relay (`GET .../gates/{gate}` with the run's token) and records the answer
//! in its store. A gate's timeout is recorded through the API too (`"timedOut": true`), so the
//! API's record shows it; a person's decision recorded there first stands.

use sparkwing_api::wire::GateDecisionRequest;
use sparkwing_api::ApiClient;
use sparkwing_core::gate::Decided;
use sparkwing_engine::gates::GateRelay;

/// The API as the relay of one run's gate decisions, with the run's own client (its token and
/// attempt).
#[derive(Debug)]
pub struct ApiGateRelay {
    client: ApiClient,
    namespace: String,
    name: String,
}

impl ApiGateRelay {
    pub fn new(client: ApiClient, namespace: &str, name: &str) -> ApiGateRelay {
        ApiGateRelay {
            client,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl GateRelay for ApiGateRelay {
    fn decision(&self, gate: &str) -> Result<Option<Decided>, String> {
        self.client
            .gate_decision(&self.namespace, &self.name, gate)
            .map(|a| a.decided.map(|d| d.decided()))
            .map_err(|e| e.to_string())
    }

    fn record_timeout(&self, gate: &str, timeout: &Decided) -> Result<Decided, String> {
        let req = GateDecisionRequest {
            decision: timeout.decision,
            comment: timeout.comment.clone(),
            timed_out: true,
        };
        match self
            .client
            .decide_gate(&self.namespace, &self.name, gate, &req)
        {
            Ok(answer) => answer
                .decided
                .map(|d| d.decided())
                .ok_or_else(|| "the API recorded the timeout but answered no decision".into()),
            // Decided there first: that decision stands.
            Err(e) if e.status() == Some(409) => match self.decision(gate)? {
                Some(standing) => Ok(standing),
                None => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        }
    }
}
