//! Runs a fuzz target under `cargo test`: every seed once, then mutated seeds.
//!
//! Not part of the fuzz crate (which has no proptest): the workspace harnesses
//! (`crates/hl7-proto/tests/fuzz_targets.rs`, `tests/it/fuzz_app.rs`) include it with
//! `#[path]`. The seeds are the ones `fuzz/seed-corpus.sh` gives libFuzzer, so a crash input
//! committed to `fuzz/seeds/<target>/` becomes a regression test here.
//!
//! Mutations come from proptest, which also shrinks a failure to a small input. The run is
//! deterministic (the same inputs on every `cargo test`); `HL7D_FUZZ_SEED=<n>` explores other
//! inputs and `HL7D_FUZZ_CASES=<n>` runs more (default 512) — the way to fuzz for longer
//! where cargo-fuzz cannot run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

/// Largest fixture used as a seed, as in `fuzz/seed-corpus.sh`: big inputs slow every run.
const MAX_FIXTURE: usize = 16 * 1024;
/// Mutated inputs per target unless `HL7D_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 512;

/// Replays every seed of `target`, then runs it on mutated seeds (and some random bytes),
/// `tokens` being byte strings worth inserting. `root` is the repository root.
pub fn run(root: &Path, target: &str, check: fn(&[u8]), tokens: &'static [&'static [u8]]) {
    let seeds = seeds(root, target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for (name, input) in &seeds {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            panic!("{target}: seed {name} fails (see the panic above)");
        }
    }
    let cases = env_number("HL7D_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    let seed = env_number("HL7D_FUZZ_SEED").unwrap_or(0);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let inputs = inputs(seeds.into_iter().map(|(_, input)| input).collect(), tokens);
    match runner.run(&inputs, |input| {
        check(&input);
        Ok(())
    }) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => panic!(
            "{target} fails (HL7D_FUZZ_SEED={seed}): {reason}\nminimal input ({} bytes): \"{}\"\n\
             save it under fuzz/seeds/{target}/ so that it stays a regression test",
            input.len(),
            input.escape_ascii()
        ),
        Err(error) => panic!("{target}: {error}"),
    }
}

/// The seeds of one target: `fuzz/seeds/<target>/*`, plus the protocol fixtures for the
/// message-level targets (framed behind the production selector for `mllp_decoder`) and
/// the TOML examples of docs/configuration.md for `config`.
pub fn seeds(root: &Path, target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = files(&root.join("fuzz/seeds").join(target));
    let fixtures = files(&root.join("crates/hl7-proto/tests/fixtures"));
    let fixtures = fixtures.into_iter().filter(|(_, bytes)| bytes.len() <= MAX_FIXTURE);
    match target {
        "message" | "batch" | "charset" | "sender_ack" | "extract" => out.extend(fixtures),
        "mllp_decoder" => out.extend(fixtures.map(|(name, bytes)| {
            let mut framed = vec![0x00, 0x11, 0x0B];
            framed.extend_from_slice(&bytes);
            framed.extend_from_slice(&[0x1C, 0x0D]);
            (name, framed)
        })),
        "config" => {
            let docs =
                std::fs::read_to_string(root.join("docs/configuration.md")).expect("docs/configuration.md");
            let mut block: Option<String> = None;
            for line in docs.lines() {
                match (&mut block, line.starts_with("```")) {
                    (None, true) if line.starts_with("```toml") => block = Some(String::new()),
                    (Some(_), true) => {
                        let text = block.take().expect("inside a block");
                        out.push((format!("docs block {}", out.len()), text.into_bytes()));
                    }
                    (Some(text), false) => {
                        text.push_str(line);
                        text.push('\n');
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    out
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .map(|path| (path.display().to_string(), std::fs::read(&path).expect("seed file")))
        .collect();
    out.sort();
    out
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

/// One edit of a seed; positions are proptest `Index`es, scaled to the current length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, u8),
    Token(Index, Index),
    Remove(Index, u8),
    Truncate(Index),
    Duplicate(Index, Index, u8),
}

/// Seeds with one to eight edits each (four in five inputs), or random bytes.
fn inputs(seeds: Vec<Vec<u8>>, tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let seeds = Arc::new(seeds);
    let edit = prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(at, mask)| Edit::Flip(at, mask)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        (any::<Index>(), any::<Index>()).prop_map(|(at, token)| Edit::Token(at, token)),
        (any::<Index>(), 1u8..=32).prop_map(|(at, len)| Edit::Remove(at, len)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), any::<Index>(), 1u8..=64).prop_map(|(from, to, len)| Edit::Duplicate(from, to, len)),
    ];
    let mutated = (any::<Index>(), prop::collection::vec(edit, 1..8))
        .prop_map(move |(seed, edits)| apply(&seeds[seed.index(seeds.len())], &edits, tokens));
    prop_oneof![4 => mutated, 1 => prop::collection::vec(any::<u8>(), 0..512)]
}

fn apply(seed: &[u8], edits: &[Edit], tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for edit in edits {
        // Insertion points range over 0..=len, existing bytes over 0..len.
        let at = |index: &Index, len: usize| index.index(len + 1);
        match edit {
            Edit::Flip(index, mask) if !out.is_empty() => {
                let i = index.index(out.len());
                out[i] ^= mask;
            }
            Edit::Insert(index, byte) => out.insert(at(index, out.len()), *byte),
            Edit::Token(index, token) if !tokens.is_empty() => {
                let i = at(index, out.len());
                out.splice(i..i, tokens[token.index(tokens.len())].iter().copied());
            }
            Edit::Remove(index, len) if !out.is_empty() => {
                let i = index.index(out.len());
                let end = (i + usize::from(*len)).min(out.len());
                out.drain(i..end);
            }
            Edit::Truncate(index) => out.truncate(at(index, out.len())),
            Edit::Duplicate(from, to, len) if !out.is_empty() => {
                let i = from.index(out.len());
                let end = (i + usize::from(*len)).min(out.len());
                let piece = out[i..end].to_vec();
                let j = at(to, out.len());
                out.splice(j..j, piece);
            }
            _ => {}
        }
    }
    out
}
