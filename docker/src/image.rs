//! The runner image, built here from our own binaries: no registry is needed (or reachable).
//!
//! The root filesystem is a tar made in memory: busybox (static) for the shell tools, `/bin/bash`
//! (jobs run `bash`), this `sparkwing` executable, the shared libraries of both (found with
//! `ldd`) and the dynamic loader, `/etc/passwd` and `/etc/group`, and `/tmp`. It is imported with
//! Docker's import API (`docker import`). A key over what goes in (each source file's path, size
//! and modification time, and the small generated files) is a label of the image, so a rebuild
//! with nothing changed only compares that label.

use super::client::Client;
use super::{
    api, io, DockerError, LABEL_MANAGED_BY, LABEL_ROOTFS, LABEL_VERSION, MANAGED_BY, RUNNER_EXE,
};
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What goes into the image, path in the image -> contents.
enum Entry {
    Dir(u32),
    /// Copied from a host file when the tar is written.
    Copy {
        src: PathBuf,
        mode: u32,
    },
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The shared libraries (and loader) a dynamic executable needs, as absolute paths.
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, DockerError> {
    let out = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .map_err(io(format!("run ldd {}", exe.display())))?;
    // A static executable: ldd says so and exits non-zero.
    if !out.status.success() {
        return Ok(Vec::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
            let target = l.split("=>").last()?.trim();
            let path = target.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn add_file(
    entries: &mut BTreeMap<String, Entry>,
    dest: &str,
    src: &Path,
    mode: u32,
) -> Result<(), DockerError> {
    // Canonical: the image gets the library itself under the name asked for, not a symlink.
    let src = std::fs::canonicalize(src).map_err(io(format!("find {}", src.display())))?;
    add_parents(entries, dest);
    entries.insert(
        dest.trim_start_matches('/').to_string(),
        Entry::Copy { src, mode },
    );
    Ok(())
}

fn add_parents(entries: &mut BTreeMap<String, Entry>, dest: &str) {
    let mut p = Path::new(dest.trim_start_matches('/')).parent();
    while let Some(dir) = p {
        if dir.as_os_str().is_empty() {
            break;
        }
        entries
            .entry(dir.to_string_lossy().into_owned())
            .or_insert(Entry::Dir(0o755));
        p = dir.parent();
    }
}

/// What the root filesystem holds, sorted by path.
fn contents() -> Result<BTreeMap<String, Entry>, DockerError> {
    let missing = |what: &str, pkg: &str| {
        DockerError::Other(format!(
            "{what} is needed to build the runner image and was not found on PATH; install it (apt-get install {pkg})"
        ))
    };
    let busybox = which("busybox").ok_or_else(|| missing("busybox", "busybox-static"))?;
    let bash = which("bash").ok_or_else(|| missing("bash", "bash"))?;
    let exe = std::env::current_exe().map_err(io("find the sparkwing executable"))?;
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for d in [
        "bin",
        "usr/bin",
        "usr/local/bin",
        "etc",
        "root",
        "home",
        "proc",
        "sys",
        "dev",
        "workspace",
    ] {
        entries.insert(d.to_string(), Entry::Dir(0o755));
    }
    entries.insert("tmp".to_string(), Entry::Dir(0o1777));
    add_file(&mut entries, "/bin/busybox", &busybox, 0o755)?;
    add_file(&mut entries, "/bin/bash", &bash, 0o755)?;
    add_file(&mut entries, RUNNER_EXE, &exe, 0o755)?;
    for bin in [&busybox, &bash, &exe] {
        for lib in shared_libraries(bin)? {
            add_file(&mut entries, &lib.to_string_lossy(), &lib, 0o755)?;
        }
    }
    let list = std::process::Command::new(&busybox)
        .arg("--list")
        .output()
        .map_err(io(format!("run {} --list", busybox.display())))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        let path = format!("bin/{applet}");
        if applet.is_empty() || applet.contains('/') || entries.contains_key(&path) {
            continue;
        }
        entries.insert(path, Entry::Symlink("busybox".to_string()));
    }
    // `#!/usr/bin/env bash` scripts.
    entries.insert(
        "usr/bin/env".to_string(),
        Entry::Symlink("/bin/busybox".to_string()),
    );
    let mut passwd = "root:x:0:0:root:/root:/bin/sh\n".to_string();
    let mut group = "root:x:0:\n".to_string();
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    if !uid.is_root() {
        // Runners run as the host user; give it a name and a home.
        passwd.push_str(&format!("sparkwing:x:{uid}:{gid}:sparkwing:/tmp:/bin/sh\n"));
        group.push_str(&format!("sparkwing:x:{gid}:\n"));
    }
    entries.insert(
        "etc/passwd".into(),
        Entry::File {
            data: passwd.into_bytes(),
            mode: 0o644,
        },
    );
    entries.insert(
        "etc/group".into(),
        Entry::File {
            data: group.into_bytes(),
            mode: 0o644,
        },
    );
    Ok(entries)
}

/// The key of an image's contents: changes when any file that goes in changes.
fn key(entries: &BTreeMap<String, Entry>) -> Result<String, DockerError> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    for (path, entry) in entries {
        h.update(path.as_bytes());
        match entry {
            Entry::Dir(mode) => h.update(format!("d{mode:o}")),
            Entry::Symlink(t) => h.update(format!("l{t}")),
            Entry::File { data, mode } => {
                h.update(format!("f{mode:o}"));
                h.update(data);
            }
            Entry::Copy { src, mode } => {
                let m = std::fs::metadata(src).map_err(io(format!("stat {}", src.display())))?;
                h.update(format!(
                    "c{mode:o}:{}:{}:{}.{}",
                    src.display(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ));
            }
        }
        h.update([0u8]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Write the root filesystem tar (deterministic: fixed times and owners, sorted entries).
fn write_tar(entries: &BTreeMap<String, Entry>) -> Result<Vec<u8>, DockerError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        let res = match entry {
            Entry::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                builder.append_data(&mut h, format!("{path}/"), std::io::empty())
            }
            Entry::Copy { src, mode } => {
                let data = std::fs::read(src).map_err(io(format!("read {}", src.display())))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder.append_data(&mut h, path, data.as_slice())
            }
            Entry::File { data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder.append_data(&mut h, path, data.as_slice())
            }
            Entry::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                builder.append_link(&mut h, path, target)
            }
        };
        res.map_err(io(format!("add {path} to the image")))?;
    }
    builder.into_inner().map_err(io("finish the image tar"))
}

pub enum Built {
    Imported { bytes: usize },
    UpToDate,
}

/// Build and import the image as `tag`, unless an image with the same root filesystem is there.
pub async fn build(client: &Client, tag: &str) -> Result<Built, DockerError> {
    let entries = contents()?;
    let sha = key(&entries)?;
    if let Ok(img) = client.docker.inspect_image(tag).await {
        let labels = img.config.and_then(|c| c.labels).unwrap_or_default();
        if labels.get(LABEL_ROOTFS) == Some(&sha) {
            return Ok(Built::UpToDate);
        }
    }
    let tar = write_tar(&entries)?;
    let (repo, tag_part) = match tag.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (tag, "latest"),
    };
    let changes = vec![
        "ENV PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        "ENV HOME=/tmp".to_string(),
        format!("CMD [\"{RUNNER_EXE}\", \"version\"]"),
        format!(
            "LABEL {LABEL_MANAGED_BY}={MANAGED_BY} {LABEL_VERSION}={} {LABEL_ROOTFS}={sha}",
            env!("CARGO_PKG_VERSION")
        ),
    ];
    let opts = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag_part)
        .changes(changes)
        .build();
    let bytes = tar.len();
    let mut stream =
        client
            .docker
            .create_image(Some(opts), Some(bollard::body_full(tar.into())), None);
    while let Some(item) = stream.next().await {
        item.map_err(api(format!("import image {tag}")))?;
    }
    Ok(Built::Imported { bytes })
}
