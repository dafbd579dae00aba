//! downwardAPI volumes: the files the kubelet writes for a pod's `fieldRef` items (its labels,
//! annotations, name, namespace), in the kubelet's format, rewritten when the pod changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// A Go `%q` string literal, as the kubelet quotes downwardAPI values (`fieldpath.FormatMap`).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A map in the kubelet's downwardAPI format: `key="value"` lines sorted by key, no final
/// newline.
fn format_downward_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Write the items of a downwardAPI volume into `dir`, each atomically (a temporary file renamed
/// into place inside `dir`, which a container bind-mounting `dir` sees) and only when its content
/// changed. `Err`: an item the emulator does not support.
pub(super) fn write_downward_files(
    dir: &std::path::Path,
    pod: &Pod,
    namespace: &str,
    volume: &k8s_openapi::api::core::v1::DownwardAPIVolumeSource,
) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = &pod.metadata;
    for item in volume.items.iter().flatten() {
        let Some(field) = &item.field_ref else {
            return Err(format!(
                "item {:?}: only fieldRef items are supported by the e2e node emulator",
                item.path
            ));
        };
        let content = match field.field_path.as_str() {
            "metadata.annotations" => format_downward_map(meta.annotations.as_ref()),
            "metadata.labels" => format_downward_map(meta.labels.as_ref()),
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => namespace.to_string(),
            other => {
                return Err(format!(
                    "item {:?}: fieldRef {other:?} is not supported by the e2e node emulator",
                    item.path
                ))
            }
        };
        let rel = std::path::Path::new(&item.path);
        if item.path.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("item path {:?} is not a relative path", item.path));
        }
        let path = dir.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let tmp = parent.join(format!(
            "..{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("item")
        ));
        let mode = item.mode.or(volume.default_mode).unwrap_or(0o644) as u32;
        std::fs::write(&tmp, &content).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o777))
            .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| format!("renaming into {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_maps_are_quoted_as_the_kubelet_does() {
        let m = BTreeMap::from([
            (
                "b".to_string(),
                "say \"hi\"\n\tback\\slash \u{1} caf\u{e9}".to_string(),
            ),
            ("a".to_string(), String::new()),
        ]);
        // Go: fmt.Sprintf("%v=%q\n", k, v) per sorted key, the last newline trimmed.
        assert_eq!(
            format_downward_map(Some(&m)),
            "a=\"\"\nb=\"say \\\"hi\\\"\\n\\tback\\\\slash \\x01 caf\u{e9}\""
        );
        assert_eq!(format_downward_map(None), "");
    }
}
