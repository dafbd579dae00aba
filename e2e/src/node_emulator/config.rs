//! A pod's container as the kubelet would build it, for Docker: its environment (`env` values,
//! `secretKeyRef`s, `fieldRef`s, `envFrom` Secrets and ConfigMaps), its volumes (`emptyDir`,
//! `hostPath`, `downwardAPI`) as binds and tmpfs mounts, its user, working directory and memory
//! limit. A configuration that cannot be built yet (a Secret that does not exist, an unsupported
//! source) is the message the kubelet's `CreateContainerConfigError` would carry.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVarSource, Pod, Volume};

use super::downward::write_downward_files;
use super::{Ctx, EMULATED_POD_LABEL, EMULATED_POD_UID_LABEL, EMULATOR_LABEL, POD_IP};

/// Whether `name` can be an environment variable set from `envFrom` (the kubelet's check: no
/// `=`, not empty, printable ASCII, not starting with a digit).
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

/// What a container is created with besides its image, command and user.
pub(super) struct ContainerConfig {
    /// `NAME=value`, in the pod's order.
    env: Vec<String>,
    /// Docker binds, `host:container:ro|rw`: hostPath and emptyDir volumes.
    binds: Vec<String>,
    /// `emptyDir` volumes with `medium: Memory`: container path -> tmpfs options.
    tmpfs: HashMap<String, String>,
}

/// `metadata.labels['key']` (or annotations) of a fieldRef path, when `path` is one.
fn field_of_map(
    path: &str,
    prefix: &str,
    map: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    let key = path
        .strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")?;
    Some(map.and_then(|m| m.get(key).cloned()).unwrap_or_default())
}

/// The pod whose container is built, and where its volumes live on the host.
pub(super) struct PodConfig<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) pod: &'a Pod,
    pub(super) name: &'a str,
    pub(super) uid: &'a str,
    pub(super) volumes_dir: PathBuf,
}

impl PodConfig<'_> {
    /// The container's environment and mounts; `Err(message)` when they cannot be built yet (a
    /// Secret or key that does not exist, an unsupported source).
    pub(super) async fn container_config(
        &self,
        container: &Container,
    ) -> Result<std::result::Result<ContainerConfig, String>> {
        // `envFrom` first, each source over the ones before it; then `env`, over all of them.
        let mut vars: Vec<(String, String)> = Vec::new();
        let set = |vars: &mut Vec<(String, String)>, name: String, value: String| match vars
            .iter_mut()
            .find(|(n, _)| *n == name)
        {
            Some(v) => v.1 = value,
            None => vars.push((name, value)),
        };
        for source in container.env_from.iter().flatten() {
            match self.env_from_source(source).await? {
                Ok(pairs) => {
                    for (name, value) in pairs {
                        set(&mut vars, name, value);
                    }
                }
                Err(message) => return Ok(Err(message)),
            }
        }
        for e in container.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (_, Some(from)) => match self.env_from(&e.name, from).await? {
                    Ok(Some(v)) => v,
                    // An optional Secret or key that does not exist: the variable is unset.
                    Ok(None) => continue,
                    Err(message) => return Ok(Err(message)),
                },
                (value, None) => value.clone().unwrap_or_default(),
            };
            set(&mut vars, e.name.clone(), value);
        }
        let env = vars
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let mut config = ContainerConfig {
            env,
            binds: Vec::new(),
            tmpfs: HashMap::new(),
        };
        let volumes = pod_volumes(self.pod);
        for mount in container.volume_mounts.iter().flatten() {
            let Some(volume) = volumes.iter().find(|v| v.name == mount.name) else {
                return Ok(Err(format!(
                    "volumeMount {:?} names no volume of the pod",
                    mount.name
                )));
            };
            let read_only = mount.read_only == Some(true);
            let sub_path = mount.sub_path.as_deref().filter(|p| !p.is_empty());
            let source = if let Some(dir) = &volume.empty_dir {
                if dir.medium.as_deref() == Some("Memory") && sub_path.is_none() {
                    let mode = if read_only {
                        "ro,mode=1777"
                    } else {
                        "rw,mode=1777"
                    };
                    config
                        .tmpfs
                        .insert(mount.mount_path.clone(), mode.to_string());
                    continue;
                }
                let dir = self.empty_dir(&volume.name)?;
                dir.to_string_lossy().into_owned()
            } else if let Some(host) = &volume.host_path {
                if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
                    std::fs::create_dir_all(&host.path)
                        .with_context(|| format!("creating hostPath {}", host.path))?;
                }
                host.path.clone()
            } else if let Some(downward) = &volume.downward_api {
                // Read-only, as the kubelet mounts it; rewritten when the pod changes.
                let dir = self.empty_dir(&volume.name)?;
                if let Err(message) =
                    write_downward_files(&dir, self.pod, &self.ctx.namespace, downward)
                {
                    return Ok(Err(format!("volume {:?}: {message}", volume.name)));
                }
                config
                    .binds
                    .push(format!("{}:{}:ro", dir.to_string_lossy(), mount.mount_path));
                continue;
            } else if volume.projected.is_some() {
                // The service account token the admission plugin adds to every pod: not mounted
                // (runners reach the API server with their own credentials in tests).
                continue;
            } else {
                return Ok(Err(format!(
                    "volume {:?}: the e2e node emulator mounts only emptyDir, hostPath and downwardAPI volumes",
                    volume.name
                )));
            };
            let source = match sub_path {
                Some(sub) => format!("{}/{sub}", source.trim_end_matches('/')),
                None => source,
            };
            let mode = if read_only { "ro" } else { "rw" };
            config
                .binds
                .push(format!("{source}:{}:{mode}", mount.mount_path));
        }
        Ok(Ok(config))
    }

    /// The variables of one `envFrom` source (a Secret's or ConfigMap's keys, with its prefix):
    /// empty for an optional one that does not exist, `Err(message)` for a required one that
    /// does not (the kubelet's `CreateContainerConfigError`). Keys that are not variable names
    /// are skipped, as the kubelet does.
    async fn env_from_source(
        &self,
        source: &EnvFromSource,
    ) -> Result<std::result::Result<Vec<(String, String)>, String>> {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (kind, name, optional, data): (&str, &str, bool, Option<BTreeMap<String, String>>) =
            if let Some(r) = &source.secret_ref {
                let secret = self
                    .ctx
                    .secrets
                    .get_opt(&r.name)
                    .await
                    .with_context(|| format!("reading Secret {}", r.name))?;
                let data = secret.map(|s| {
                    let mut d: BTreeMap<String, String> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    d.extend(s.string_data.unwrap_or_default());
                    d
                });
                ("secret", &r.name, r.optional == Some(true), data)
            } else if let Some(r) = &source.config_map_ref {
                let map = self
                    .ctx
                    .config_maps
                    .get_opt(&r.name)
                    .await
                    .with_context(|| format!("reading ConfigMap {}", r.name))?;
                let data = map.map(|m| m.data.unwrap_or_default());
                ("configmap", &r.name, r.optional == Some(true), data)
            } else {
                return Ok(Err(
                    "envFrom: a source needs secretRef or configMapRef".to_string()
                ));
            };
        Ok(match data {
            None if optional => Ok(Vec::new()),
            None => Err(format!("{kind} \"{name}\" not found")),
            Some(data) => Ok(data
                .into_iter()
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .filter(|(k, _)| is_env_name(k))
                .collect()),
        })
    }

    /// The value of an environment variable with `valueFrom`: `Ok(None)` for an optional Secret
    /// or key that does not exist, `Err(message)` when the variable cannot be set (yet).
    async fn env_from(
        &self,
        name: &str,
        from: &EnvVarSource,
    ) -> Result<std::result::Result<Option<String>, String>> {
        if let Some(sel) = &from.secret_key_ref {
            let optional = sel.optional == Some(true);
            let secret = match self.ctx.secrets.get_opt(&sel.name).await {
                Ok(s) => s,
                Err(err) => {
                    return Err(err).context(format!("reading Secret {}", sel.name));
                }
            };
            let Some(secret) = secret else {
                return Ok(if optional {
                    Ok(None)
                } else {
                    Err(format!("secret \"{}\" not found", sel.name))
                });
            };
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&sel.key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(&sel.key).cloned())
                });
            return Ok(match value {
                Some(v) => Ok(Some(v)),
                None if optional => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in Secret {}/{}",
                    sel.key, self.ctx.namespace, sel.name
                )),
            });
        }
        if let Some(field) = &from.field_ref {
            let meta = &self.pod.metadata;
            let value = match field.field_path.as_str() {
                "metadata.name" => Some(self.name.to_string()),
                "metadata.namespace" => Some(self.ctx.namespace.clone()),
                "metadata.uid" => Some(self.uid.to_string()),
                "spec.nodeName" => Some(
                    self.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| self.ctx.options.node_name.clone()),
                ),
                "spec.serviceAccountName" => Some(
                    self.pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_default(),
                ),
                "status.podIP" | "status.hostIP" => Some(POD_IP.to_string()),
                path => field_of_map(path, "metadata.labels", meta.labels.as_ref()).or_else(|| {
                    field_of_map(path, "metadata.annotations", meta.annotations.as_ref())
                }),
            };
            return Ok(match value {
                Some(v) => Ok(Some(v)),
                None => Err(format!(
                    "env {name}: fieldRef {:?} is not supported by the e2e node emulator",
                    field.field_path
                )),
            });
        }
        Ok(Err(format!(
            "env {name}: only secretKeyRef and fieldRef sources are supported by the e2e node \
             emulator"
        )))
    }

    /// The host directory of the pod's `emptyDir` volume `volume`: created empty on first use,
    /// writable by every user (as the kubelet makes it), removed with the pod's worker.
    fn empty_dir(&self, volume: &str) -> Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.volumes_dir.join(volume);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating emptyDir {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .with_context(|| format!("chmod emptyDir {}", dir.display()))?;
        Ok(dir)
    }

    /// What Docker creates the container with.
    pub(super) fn container_body(
        &self,
        container: &Container,
        config: ContainerConfig,
    ) -> ContainerCreateBody {
        let spec = self.pod.spec.as_ref();
        let ContainerConfig { env, binds, tmpfs } = config;
        let pod_security = spec.and_then(|s| s.security_context.as_ref());
        let security = container.security_context.as_ref();
        let run_as_user = security
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_security.and_then(|s| s.run_as_user));
        let run_as_group = security
            .and_then(|s| s.run_as_group)
            .or_else(|| pod_security.and_then(|s| s.run_as_group));
        let user = run_as_user.map(|u| match run_as_group {
            Some(g) => format!("{u}:{g}"),
            None => u.to_string(),
        });
        let memory = self
            .ctx
            .options
            .memory_limits
            .then(|| {
                container
                    .resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get("memory")
                    .and_then(|q| parse_memory(&q.0))
            })
            .flatten();
        let labels = HashMap::from([
            (
                EMULATED_POD_LABEL.to_string(),
                format!("{}/{}", self.ctx.namespace, self.name),
            ),
            (EMULATED_POD_UID_LABEL.to_string(), self.uid.to_string()),
            (EMULATOR_LABEL.to_string(), self.ctx.id.clone()),
        ]);
        ContainerCreateBody {
            image: container.image.clone(),
            // Kubernetes' command replaces the image's entrypoint (and then its cmd too), args
            // its cmd: Docker does the same with Entrypoint and Cmd.
            entrypoint: container.command.clone().filter(|c| !c.is_empty()),
            cmd: container.args.clone().filter(|a| !a.is_empty()),
            env: Some(env),
            working_dir: container.working_dir.clone(),
            user,
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some("host".to_string()),
                memory,
                binds: (!binds.is_empty()).then_some(binds),
                tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }
}

/// The volumes of `pod`'s spec.
pub(super) fn pod_volumes(pod: &Pod) -> Vec<Volume> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
}

/// A memory quantity in bytes (`64Mi`, `1G`, `1048576`); `None` for forms it does not know.
fn parse_memory(quantity: &str) -> Option<i64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number.parse::<f64>().ok()? * factor;
    (bytes >= 1.0).then_some(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("1048576"), Some(1_048_576));
        assert_eq!(parse_memory("0.5Gi"), Some(512 * 1024 * 1024));
        assert_eq!(parse_memory("1e3"), None);
    }
}
