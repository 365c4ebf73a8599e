//! Replays the fuzz targets' committed inputs under `cargo test`: the seeds each target
//! starts from (`fuzz/seeds/<target>/`) and every crash input a fuzzing run found
//! (`fuzz/regressions/<target>/`, each with a line in `fuzz/regressions/README.md` saying
//! what broke). The targets themselves live in `fuzz/` (cargo-fuzz, its own workspace).

#[path = "../fuzz/fuzz_targets/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{target}: {} panics", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn multipart_inputs_replay() {
    assert!(replay("multipart", harness::multipart) > 0);
}

#[test]
fn json_inputs_replay() {
    assert!(replay("json", harness::json) > 0);
}

#[test]
fn base64_inputs_replay() {
    assert!(replay("base64", harness::base64) > 0);
}

#[test]
fn form_inputs_replay() {
    assert!(replay("form", harness::form) > 0);
}
