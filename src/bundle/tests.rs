//! Bundle packing and hostile-archive refusal.

use std::io::Write;
use std::path::Path;

use super::*;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn policy_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "global.rego", "package intentgate\n");
    write(d.path(), "data/limits.json", "{\"x\": 1}");
    write(d.path(), "README.md", "not policy");
    write(d.path(), "..data/hidden.rego", "package hidden\n");
    write(d.path(), "namespaces/support/intents.yaml", "intents: {}\n");
    write(
        d.path(),
        "namespaces/other/loose.rego",
        "package intentgate.namespace\n",
    );
    d
}

/// A raw tar entry, so tests can write what `tar::Builder` refuses (`..`, absolute paths).
fn entry(out: &mut Vec<u8>, path: &str, kind: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(kind);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn gz(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

/// An archive of `files` with a correct manifest for `ns` (so only the tested flaw is wrong).
fn archive(ns: &str, files: &[(&str, &str)]) -> Vec<u8> {
    archive_with(ns, files, files)
}

/// An archive of `files` whose manifest describes `claimed`.
fn archive_with(ns: &str, claimed: &[(&str, &str)], files: &[(&str, &str)]) -> Vec<u8> {
    let list: Vec<BundleFile> = claimed
        .iter()
        .map(|(p, t)| BundleFile {
            path: p.to_string(),
            text: t.to_string(),
        })
        .collect();
    let b = Bundle::new(ns, list);
    let m = serde_json::json!({"namespace": ns, "revision": b.revision, "files": files.len()});
    let mut t = Vec::new();
    entry(
        &mut t,
        MANIFEST,
        tar::EntryType::Regular,
        m.to_string().as_bytes(),
    );
    for (p, text) in files {
        entry(&mut t, p, tar::EntryType::Regular, text.as_bytes());
    }
    t.extend_from_slice(&[0; 1024]);
    gz(&t)
}

#[test]
fn a_namespace_gets_the_global_files_and_only_its_own_folder() {
    let d = policy_dir();
    let b = Bundle::from_dir(d.path(), "support").unwrap();
    let paths: Vec<&str> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "data/limits.json",
            "global.rego",
            "namespaces/support/intents.yaml"
        ]
    );
    // A namespace without a folder gets the global files.
    let g = Bundle::from_dir(d.path(), "billing").unwrap();
    assert_eq!(g.files.len(), 2);
    assert_ne!(g.revision, b.revision);
    assert!(Bundle::from_dir(d.path(), "../etc").is_err());
    assert!(Bundle::from_dir(d.path(), "Upper").is_err());
}

#[test]
fn packing_is_deterministic_and_round_trips() {
    let d = policy_dir();
    let b = Bundle::from_dir(d.path(), "support").unwrap();
    let one = b.to_tar_gz().unwrap();
    assert_eq!(one, b.to_tar_gz().unwrap());
    let back = Bundle::from_tar_gz(&one, "support").unwrap();
    assert_eq!(back, b);
    assert_eq!(b.etag(), format!("\"{}\"", b.revision));
    assert_eq!(b.revision.len(), 64);
    // A change anywhere changes the revision.
    write(
        d.path(),
        "namespaces/support/intents.yaml",
        "intents: {a: {}}\n",
    );
    assert_ne!(
        Bundle::from_dir(d.path(), "support").unwrap().revision,
        b.revision
    );
}

#[test]
fn another_namespaces_bundle_is_refused() {
    let d = policy_dir();
    let other = Bundle::from_dir(d.path(), "other")
        .unwrap()
        .to_tar_gz()
        .unwrap();
    let e = Bundle::from_tar_gz(&other, "support").unwrap_err();
    assert!(
        matches!(&e, BundleError::Namespace { got, want } if got == "other" && want == "support"),
        "{e}"
    );
    // A manifest that claims the right namespace but carries another's folder.
    let sneaky = archive(
        "support",
        &[(
            "namespaces/other/loose.rego",
            "package intentgate.namespace\n",
        )],
    );
    let e = Bundle::from_tar_gz(&sneaky, "support").unwrap_err();
    assert!(e.to_string().contains("another namespace"), "{e}");
}

#[test]
fn hostile_archives_are_refused() {
    let ok = archive("support", &[("a.rego", "package intentgate\n")]);
    Bundle::from_tar_gz(&ok, "support").unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Each expected text is the refusal's own wording, not the entry name echoed back.
        (
            "'..' path components",
            archive("support", &[("../a.rego", "x")]),
        ),
        (
            "absolute paths",
            archive("support", &[("/etc/a.rego", "x")]),
        ),
        ("hidden files", archive("support", &[(".x/a.rego", "x")])),
        ("only .rego", archive("support", &[("run.sh", "x")])),
        (
            "appears twice",
            archive("support", &[("a.rego", "x"), ("a.rego", "y")]),
        ),
        ("corrupt archive", b"plain bytes".to_vec()),
        ("no .manifest", {
            let mut t = Vec::new();
            entry(&mut t, "a.rego", tar::EntryType::Regular, b"x");
            t.extend_from_slice(&[0; 1024]);
            gz(&t)
        }),
        ("only regular files", {
            let mut t = Vec::new();
            entry(&mut t, "a.rego", tar::EntryType::Symlink, b"");
            gz(&t)
        }),
        (
            "revision",
            archive_with(
                "support",
                &[("a.rego", "package intentgate\n")],
                &[("a.rego", "package evil\n")],
            ),
        ),
    ];
    for (what, bytes) in cases {
        let e = Bundle::from_tar_gz(&bytes, "support")
            .unwrap_err()
            .to_string();
        assert!(e.contains(what), "{what}: {e}");
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_size_limit() {
    // 40 MiB of zeros compresses to ~40 KiB.
    let big = vec![b' '; 40 * 1024 * 1024];
    let mut t = Vec::new();
    entry(&mut t, "big.json", tar::EntryType::Regular, &big);
    let bytes = gz(&t);
    assert!(bytes.len() < 1024 * 1024);
    let e = Bundle::from_tar_gz(&bytes, "support")
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than"), "{e}");
}

#[test]
fn a_configmap_volume_layout_is_read_through_its_symlinks() {
    // What the kubelet writes for a projected ConfigMap volume: the files in a timestamped
    // folder, `..data` pointing at it, and top-level symlinks through `..data`.
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("..2026_11_29_00_00_00.1");
    write(&real, "global.rego", "package intentgate\n");
    write(&real, "namespaces/support/intents.yaml", "intents: {}\n");
    std::os::unix::fs::symlink(&real, d.path().join("..data")).unwrap();
    for top in ["global.rego", "namespaces"] {
        std::os::unix::fs::symlink(format!("..data/{top}"), d.path().join(top)).unwrap();
    }
    let b = Bundle::from_dir(d.path(), "support").unwrap();
    let paths: Vec<&str> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["global.rego", "namespaces/support/intents.yaml"]);
}
