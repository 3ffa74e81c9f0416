//! `completions/` and `man/` are generated from the clap definition. This test fails when
//! the committed files are stale; `QFORGE_BLESS=1 cargo test --test cli generated_docs`
//! regenerates them.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "qforge.bash"),
        (Shell::Zsh, "_qforge"),
        (Shell::Fish, "qforge.fish"),
    ] {
        let mut cmd = qforge::cli::Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "qforge", &mut buf);
        files.push((PathBuf::from("completions").join(name), buf));
    }
    let mut cmd = qforge::cli::Cli::command();
    cmd.build();
    man_pages(&cmd, "qforge", &mut files);
    files
}

fn man_pages(cmd: &clap::Command, name: &str, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    let page = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf).unwrap();
    files.push((PathBuf::from("man").join(format!("{name}.1")), buf));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), files);
    }
}

#[test]
fn completions_and_man_pages_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("QFORGE_BLESS").is_some();
    let mut stale = Vec::new();
    for (rel, bytes) in generated() {
        let path = root.join(&rel);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            stale.push(rel.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files {stale:?}: run QFORGE_BLESS=1 cargo test --test cli generated_docs"
    );
}

#[test]
fn every_subcommand_has_a_man_page() {
    let names: Vec<String> = generated()
        .into_iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    for page in [
        "man/qforge.1",
        "man/qforge-quantize.1",
        "man/qforge-export-native.1",
        "man/qforge-inspect.1",
        "man/qforge-kv-profile-build.1",
        "man/qforge-kv-profile-verify.1",
        "man/qforge-bench-gemm.1",
    ] {
        assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
    }
}
