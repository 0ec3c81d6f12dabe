//! The layering of the broker's modules is code: `shardlog::LAYERS` lists the imports each
//! top-level module may make. This test reads every source file under `src/` and fails on a
//! `crate::` path that crosses a layer it may not, on a table with a cycle, and on the broker
//! naming its tools crate (only the binary, `src/main.rs`, links both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names through `crate::` (also inside `use crate::{a, b::c}`).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
        rest = after;
    }
    names
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn every_import_between_modules_is_an_allowed_arrow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = shardlog::LAYERS
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut crossings = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).expect("read source");
        if module == "main" {
            continue; // the binary links everything
        }
        assert!(
            !text.contains("shardlog_tools"),
            "{} names the tools crate: only src/main.rs may",
            file.display()
        );
        if module == "lib" {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            panic!(
                "module `{module}` ({}) is not in shardlog::LAYERS: add it with its arrows",
                file.display()
            );
        };
        for used in crate_paths(&text) {
            if used == module || used == "error_code" || may.contains(used.as_str()) {
                continue;
            }
            crossings.push(format!("{}: {module} → {used}", file.display()));
        }
    }
    assert!(
        crossings.is_empty(),
        "imports that cross a layer they may not (change the code, or LAYERS if the arrow is right):\n{}",
        crossings.join("\n")
    );
}

#[test]
fn the_layers_have_no_cycle() {
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = shardlog::LAYERS
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    while !remaining.is_empty() {
        let leaf = remaining
            .iter()
            .find(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(m, _)| *m);
        match leaf {
            Some(m) => {
                remaining.remove(m);
            }
            None => panic!("the layers have a cycle among {:?}", remaining.keys()),
        }
    }
}

#[test]
fn the_tools_never_import_the_broker() {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/src");
    let mut files = Vec::new();
    rust_files(&tools, &mut files);
    assert!(!files.is_empty(), "no tools sources found");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        assert!(
            !text.contains("shardlog::"),
            "{} imports the broker crate: tools talk to brokers over the wire only",
            file.display()
        );
    }
}

#[test]
fn crate_paths_reads_single_and_grouped_imports() {
    let text = "use crate::storage::X;\nuse crate::{meta, shard::Y};\n// crate::server in a comment\nlet a = crate::io::f();";
    let got: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(got, ["io", "meta", "shard", "storage"]);
}
