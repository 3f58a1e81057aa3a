//! deploy/Dockerfile and .dockerignore, statically (no container engine here): digest-pinned
//! bases, a distroless sidecar image separate from the init image that carries iptables, a
//! dependency layer that builds before the sources arrive (its stub step run here against the
//! files it copies), a context that leaves target/ out, the stripped `dist` profile, and the
//! rustc wrapper that compiles optimized builds with the committed PGO profile.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::repo;

/// One stage: its FROM line's words and its instructions (continuation lines joined).
struct Stage {
    from: Vec<String>,
    lines: Vec<String>,
}

impl Stage {
    fn name(&self) -> &str {
        self.from.last().unwrap()
    }
    fn starting(&self, instr: &str) -> Vec<&str> {
        let p = format!("{instr} ");
        self.lines
            .iter()
            .filter(|l| l.starts_with(&p))
            .map(String::as_str)
            .collect()
    }
}

fn stages() -> Vec<Stage> {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let mut joined = Vec::new();
    let mut cur = String::new();
    for l in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        match l.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(l);
                if !cur.trim().is_empty() {
                    joined.push(cur.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                cur.clear();
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for l in joined {
        if l.starts_with("FROM ") {
            stages.push(Stage {
                from: l.split(' ').map(String::from).collect(),
                lines: vec![],
            });
        } else {
            stages.last_mut().expect("FROM first").lines.push(l);
        }
    }
    stages
}

/// `*` and `?` within one path segment.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], name)
                || (!name.is_empty() && name[0] != b'/' && glob(pattern, &name[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&pattern[1..], &name[1..]),
        (Some(p), Some(c)) if p == c => glob(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Is `path` (relative to the context) left out by .dockerignore? The last pattern that matches
/// the path or one of its parent directories decides (`!` re-includes), as Docker does.
fn ignored(patterns: &[String], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut out = false;
    for p in patterns {
        let (neg, pat) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let pat = pat.trim_end_matches('/');
        if (1..=parts.len()).any(|n| glob(pat.as_bytes(), parts[..n].join("/").as_bytes())) {
            out = !neg;
        }
    }
    out
}

fn dockerignore() -> Vec<String> {
    std::fs::read_to_string(repo().join(".dockerignore"))
        .expect(".dockerignore at the repository root")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[test]
fn dockerfile_builds_a_distroless_sidecar_and_an_iptables_init_image_from_pinned_bases() {
    let stages = stages();
    let names: Vec<&str> = stages.iter().map(Stage::name).collect();
    assert_eq!(
        names,
        ["build", "init", "sidecar"],
        "the sidecar is the default (last) target"
    );
    for s in &stages {
        let image = &s.from[1];
        let (_, digest) = image
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("{image} is pinned by digest"));
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{image}"
        );
        assert_eq!(s.from[2], "AS");
    }
    let [build, init, sidecar] = &stages[..] else {
        unreachable!()
    };
    assert!(build.from[1].starts_with("rust:"));
    // The sidecar: distroless, nothing run in it (it has no shell), the stripped binary, non-root.
    assert!(
        sidecar.from[1].starts_with("gcr.io/distroless/"),
        "{}",
        sidecar.from[1]
    );
    assert!(sidecar.starting("RUN").is_empty());
    assert_eq!(sidecar.starting("USER"), ["USER 15700:15700"]);
    assert_eq!(
        sidecar.starting("ENTRYPOINT"),
        ["ENTRYPOINT [\"/usr/local/bin/intentgate\"]"]
    );
    let binary = "COPY --from=build /src/target/dist/intentgate /usr/local/bin/intentgate";
    assert_eq!(sidecar.starting("COPY"), [binary]);
    // The init image: iptables and the binary.
    let runs = init.starting("RUN").join(" ");
    assert!(
        runs.contains("apt-get install") && runs.contains(" iptables"),
        "{runs}"
    );
    assert_eq!(init.starting("COPY"), [binary]);
    assert_eq!(
        init.starting("ENTRYPOINT"),
        ["ENTRYPOINT [\"/usr/local/bin/intentgate\"]"]
    );
    // The build: dependencies in a layer before the sources, both with the dist profile.
    let pos = |pred: &dyn Fn(&str) -> bool| build.lines.iter().position(|l| pred(l)).unwrap();
    let manifest = pos(&|l| l.starts_with("COPY Cargo.toml Cargo.lock"));
    let deps = pos(&|l| l.starts_with("RUN ") && l.contains("cargo build"));
    let sources = pos(&|l| l == "COPY src ./src");
    assert!(manifest < deps && deps < sources, "{:?}", build.lines);
    let builds: Vec<_> = build
        .lines
        .iter()
        .filter(|l| l.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 2);
    assert!(
        builds.iter().all(|l| l.contains("--profile dist --locked")),
        "{builds:?}"
    );

    // The context: target/ and .git stay out; everything the COPY lines name is in, and exists.
    let patterns = dockerignore();
    for out in [
        "target",
        "target/release/intentgate",
        ".git/HEAD",
        "fuzz/Cargo.toml",
        "bench/load.sh",
    ] {
        assert!(
            ignored(&patterns, out),
            "{out} is left out of the build context"
        );
    }
    for l in build.starting("COPY") {
        let words: Vec<&str> = l.split(' ').collect();
        for src in &words[1..words.len() - 1] {
            assert!(repo().join(src).exists(), "COPY source {src} exists");
            assert!(
                !ignored(&patterns, src),
                "COPY source {src} is in the context"
            );
        }
    }
    for kept in [
        "src/main.rs",
        "layout/link.order",
        "config/default.yaml",
        ".cargo/config.toml",
    ] {
        assert!(!ignored(&patterns, kept), "{kept}");
    }
}

/// The dependency layer's RUN, run here with `cargo metadata` in place of `cargo build`, in a
/// directory holding only what the COPY lines before it bring: cargo accepts the stub crate
/// against Cargo.lock (a missing bench file or a stale lock would break the image build).
#[test]
fn dockerfile_dependency_layer_stub_is_a_valid_crate() {
    let stages = stages();
    let build = &stages[0];
    let ctx = tempfile::tempdir().unwrap();
    let mut run = None;
    for l in &build.lines {
        if let Some(copy) = l.strip_prefix("COPY ") {
            let words: Vec<&str> = copy.split(' ').collect();
            for src in &words[..words.len() - 1] {
                copy_tree(&repo().join(src), &ctx.path().join(src));
            }
        } else if l.starts_with("RUN ") && l.contains("cargo build") {
            run = Some(l.clone());
            break;
        }
    }
    let run = run.expect("a RUN with cargo build");
    let build_cmd = "cargo build --profile dist --locked --bin intentgate";
    assert!(run.contains(build_cmd), "{run}");
    // Offline, and only the host's packages: the ones a build here has fetched. Without the
    // filter cargo wants every platform's packages (android_system_properties, …), which only a
    // warm crate cache holds: the test failed on a fresh machine.
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().unwrap().stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let script = run.trim_start_matches("RUN ").replace(
        build_cmd,
        &format!(
            "cargo metadata --locked --offline --filter-platform {host} --format-version 1 >metadata.json"
        ),
    );
    let out = Command::new("bash")
        .args(["-ec", &script])
        .current_dir(ctx.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ctx.path().join("metadata.json")).unwrap())
            .unwrap();
    let root = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "intentgate")
        .unwrap();
    assert!(
        root["targets"]
            .to_string()
            .contains("\"name\":\"intentgate\"")
    );
    assert!(
        !ctx.path().join("src").exists(),
        "the stubs are removed before the sources arrive"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The shipped binary is stripped: the `dist` profile (the Dockerfile's) inherits release and
/// strips symbols and debug info; `release` keeps them for perf and bench/order.sh.
#[test]
fn cargo_dist_profile_strips_the_release_build() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))['profile']))",
        ])
        .arg(repo().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let profiles: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dist = &profiles["dist"];
    assert_eq!(dist["inherits"], "release");
    assert_eq!(dist["strip"], true);
    assert_eq!(dist["debug"], false);
    assert_ne!(
        profiles["release"]["strip"], true,
        "release keeps its symbols"
    );
}

/// layout/rustc-pgo (Cargo's rustc wrapper, .cargo/config.toml) adds the committed profile to
/// optimized x86_64 Linux builds only, and the profile is an indexed LLVM profile (not a stub or
/// a Git LFS pointer). Run with a stand-in rustc that prints its arguments.
#[test]
fn rustc_wrapper_adds_the_profile_to_optimized_host_builds_only() {
    let config = std::fs::read_to_string(repo().join(".cargo/config.toml")).unwrap();
    assert!(
        config.contains("rustc-wrapper = \"layout/rustc-pgo\""),
        "{config}"
    );
    let profile = repo().join("layout/pgo.profdata");
    let magic = std::fs::read(&profile).unwrap();
    assert_eq!(
        magic.get(..8),
        Some(&0x8169_666f_7270_6cff_u64.to_le_bytes()[..]),
        "an indexed LLVM profile"
    );
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("rustc");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let args_seen = |args: &[&str], no_pgo: bool| {
        let mut cmd = Command::new(repo().join("layout/rustc-pgo"));
        cmd.arg(&fake).args(args).env_remove("INTENTGATE_NO_PGO");
        if no_pgo {
            cmd.env("INTENTGATE_NO_PGO", "1");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let host = std::env::consts::OS == "linux" && std::env::consts::ARCH == "x86_64";
    // The profile, and LLVM told not to warn about functions it no longer matches (stale counts).
    let used = format!(
        "-Cprofile-use={}\n-Cllvm-args=-no-pgo-warn-mismatch",
        profile.canonicalize().unwrap().display()
    );
    let release = ["--crate-name", "hyper", "-C", "opt-level=3", "-C", "lto"];
    let seen = args_seen(&release, false);
    let mut expected = release.join("\n") + "\n";
    if host {
        expected += &format!("{used}\n");
    }
    assert_eq!(seen, expected, "an optimized build");
    let x86 = ["--target", "x86_64-unknown-linux-gnu", "-C", "opt-level=3"];
    assert_eq!(args_seen(&x86, false).contains(&used), host);
    // Passed through unchanged: a debug build, cargo's questions, the instrumented build, a
    // cross build, and any build with INTENTGATE_NO_PGO set.
    for args in [
        &["--crate-name", "intentgate", "-C", "opt-level=0"][..],
        &["--crate-name", "hyper", "-C", "opt-level=1"],
        &["-vV"],
        &["-Cprofile-generate=target/pgo-gen/raw", "-C", "opt-level=3"],
        &["--target", "aarch64-unknown-linux-gnu", "-C", "opt-level=3"],
        &["--target=aarch64-unknown-linux-gnu", "-C", "opt-level=3"],
    ] {
        assert_eq!(args_seen(args, false), args.join("\n") + "\n", "{args:?}");
    }
    assert_eq!(args_seen(&release, true), release.join("\n") + "\n");
}
