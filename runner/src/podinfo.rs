//! A warm runner's view of its own pod: the files of a `downwardAPI` volume
//! (`$SPARKWING_PODINFO_DIR/annotations`, `labels`) that the kubelet rewrites when the pod
//! changes. Reading a file needs no Kubernetes credentials, so warm runners get no RBAC.
//!
//! The kubelet's format (`fieldpath.FormatMap`): one `key="value"` line per entry, sorted by
//! key, the value quoted as Go's `%q` does (`\"`, `\\`, `\n`, `\t`, `\xHH`, `\u`...), no
//! trailing newline.

use std::collections::BTreeMap;
use std::path::Path;

/// The claim annotations the operator writes (`docs/operator.md`, "The claim contract").
pub use sparkwing_api::names::{ANNOTATION_ATTEMPT, ANNOTATION_RUN};

/// The file of the pod's annotations in the podinfo directory.
pub use sparkwing_api::names::PODINFO_ANNOTATIONS as ANNOTATIONS_FILE;

/// Parse the kubelet's `key="value"` lines. `Err` names the first line that is not one.
pub fn parse_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (key, quoted) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: no `=` in {line:?}", i + 1))?;
        let value = unquote(quoted).map_err(|e| format!("line {}: {e} in {line:?}", i + 1))?;
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

fn hex_digits(chars: &mut std::str::Chars<'_>, n: usize) -> Result<u32, String> {
    let digits: String = chars.take(n).collect();
    if digits.len() != n {
        return Err("a truncated escape".into());
    }
    u32::from_str_radix(&digits, 16).map_err(|_| format!("a bad hex escape {digits:?}"))
}

/// A Go double-quoted string literal, as `strconv.Unquote` reads it.
pub fn unquote(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or("a value that is not a quoted string")?;
    let mut bytes: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = chars.next().ok_or("a trailing backslash")?;
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            '\'' => Some(b'\''),
            _ => None,
        };
        if let Some(b) = simple {
            bytes.push(b);
            continue;
        }
        match e {
            'x' => bytes.push(hex_digits(&mut chars, 2)? as u8),
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let cp = hex_digits(&mut chars, n)?;
                let c = char::from_u32(cp).ok_or(format!("an invalid code point {cp:#x}"))?;
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let digits = format!("{e}{rest}");
                let v = u32::from_str_radix(&digits, 8)
                    .ok()
                    .filter(|v| digits.len() == 3 && *v <= 255)
                    .ok_or(format!("a bad octal escape \\{digits}"))?;
                bytes.push(v as u8);
            }
            other => return Err(format!("an unknown escape \\{other}")),
        }
    }
    String::from_utf8(bytes).map_err(|_| "a value that is not UTF-8".to_string())
}

/// The run and attempt the pod was claimed for, from `<dir>/annotations`: `Ok(None)` while the
/// pod is idle (or the kubelet has not written the file yet).
pub fn read_claim(dir: &Path) -> Result<Option<(String, u32)>, String> {
    let path = dir.join(ANNOTATIONS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let map = parse_map(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match (map.get(ANNOTATION_RUN), map.get(ANNOTATION_ATTEMPT)) {
        (Some(run), Some(attempt)) => {
            let attempt = attempt.parse::<u32>().map_err(|_| {
                format!(
                    "{}: {ANNOTATION_ATTEMPT} is {attempt:?}, not a number",
                    path.display()
                )
            })?;
            Ok(Some((run.clone(), attempt)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelets_format() {
        // As Go's fmt.Sprintf("%v=%q\n", ...) writes them, the last newline trimmed.
        let text = "kubectl.kubernetes.io/last-applied=\"{\\\"a\\\":1}\\n\"\n\
                    note=\"tab\\there \\x01 \\u00e9 caf\u{e9} \\\\ end\"\n\
                    sparkwing.dev/attempt=\"2\"\n\
                    sparkwing.dev/pool=\"warm\"\n\
                    sparkwing.dev/run=\"build-1a2b\"";
        let m = parse_map(text).unwrap();
        assert_eq!(m["kubectl.kubernetes.io/last-applied"], "{\"a\":1}\n");
        assert_eq!(m["note"], "tab\there \u{1} \u{e9} caf\u{e9} \\ end");
        assert_eq!(m["sparkwing.dev/run"], "build-1a2b");
        assert_eq!(m.len(), 5);
        assert_eq!(parse_map("").unwrap().len(), 0);
        assert_eq!(unquote("\"\\101\\U0001F600\"").unwrap(), "A\u{1F600}");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse_map("novalue").unwrap_err().contains("line 1"));
        assert!(parse_map("k=unquoted").is_err());
        assert!(parse_map("k=\"bad \\q\"").unwrap_err().contains("\\q"));
        assert!(parse_map("k=\"trunc \\x4\"").is_err());
    }

    #[test]
    fn claim_appears_when_both_annotations_do() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_claim(dir.path()).unwrap(), None);
        let file = dir.path().join("annotations");
        std::fs::write(&file, "sparkwing.dev/pool=\"warm\"").unwrap();
        assert_eq!(read_claim(dir.path()).unwrap(), None);
        std::fs::write(
            &file,
            "sparkwing.dev/attempt=\"1\"\nsparkwing.dev/pool=\"warm\"\nsparkwing.dev/run=\"r1\"",
        )
        .unwrap();
        assert_eq!(read_claim(dir.path()).unwrap(), Some(("r1".into(), 1)));
        std::fs::write(
            &file,
            "sparkwing.dev/attempt=\"x\"\nsparkwing.dev/run=\"r1\"",
        )
        .unwrap();
        assert!(read_claim(dir.path()).unwrap_err().contains("not a number"));
    }
}
