//! `sparkwing profile`: where the file lives, mode 0600, and that no command prints a token.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sparkwing");
const TOKEN: &str = "tok-5f3a9c2e-never-print-me";

fn sw(config_home: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("SPARKWING_PROFILES")
        .env("XDG_CONFIG_HOME", config_home)
        .env("PROD_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn profiles_live_under_xdg_config_home_are_0600_and_never_show_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let set = sw(
        dir.path(),
        &[
            "profile",
            "set",
            "dev",
            "--controller",
            "http://127.0.0.1:9",
            "--token-stdin",
            "--default",
        ],
        Some(TOKEN),
    );
    assert!(set.status.success(), "{}", text(&set));
    let set = sw(
        dir.path(),
        &[
            "profile",
            "set",
            "prod",
            "--controller",
            "https://ci.example.test",
            "--token-env",
            "PROD_TOKEN",
        ],
        None,
    );
    assert!(set.status.success(), "{}", text(&set));
    let file = dir.path().join("sparkwing/profiles.yaml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        std::fs::read_to_string(&file).unwrap().contains(TOKEN),
        "the stored token is in the file"
    );

    for args in [
        vec!["profile", "list"],
        vec!["profile", "list", "-o", "json"],
        vec!["profile", "show"],
        vec!["profile", "show", "--profile", "prod", "-o", "json"],
    ] {
        let out = sw(dir.path(), &args, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            !text(&out).contains(TOKEN),
            "{args:?} printed the token: {}",
            text(&out)
        );
    }
    let show = text(&sw(
        dir.path(),
        &["profile", "show", "--profile", "prod"],
        None,
    ));
    assert!(show.contains("from $PROD_TOKEN (set)"), "{show}");
    let list = text(&sw(dir.path(), &["profile", "list"], None));
    assert!(list.contains("* dev"), "{list}");
}

#[test]
fn bad_profiles_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = sw(dir.path(), &["profile", "show", "--profile", "nope"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("sparkwing profile set nope"),
        "{}",
        text(&missing)
    );
    let no_default = sw(dir.path(), &["profile", "show"], None);
    assert_eq!(no_default.status.code(), Some(2));
    let bad_url = sw(
        dir.path(),
        &["profile", "set", "x", "--controller", "ftp://x"],
        None,
    );
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(
        text(&bad_url).contains("http:// or https://"),
        "{}",
        text(&bad_url)
    );
    let file = dir.path().join("sparkwing/profiles.yaml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "profiles:\n  prod:\n    controler: https://x\n").unwrap();
    let typo = sw(dir.path(), &["profile", "list"], None);
    assert_eq!(typo.status.code(), Some(3));
    assert!(text(&typo).contains("profiles.yaml:3:"), "{}", text(&typo));
    assert!(text(&typo).contains("controler"), "{}", text(&typo));
}
