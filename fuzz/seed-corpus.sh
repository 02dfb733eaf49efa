#!/usr/bin/env bash
# Builds libFuzzer's working corpora, fuzz/corpus/<target>/ (not committed), from what is:
#   fuzz/seeds/<target>/*                      hand-picked seeds and minimised crash inputs
#   crates/hl7-proto/tests/fixtures/*          the sample messages (up to 16 KiB each),
#                                              for message, batch, charset, sender_ack and
#                                              extract
#                                              as they are and for mllp_decoder framed,
#                                              behind the selector bytes 0x00 0x11
#                                              (the production configuration)
#   docs/configuration.md                      every ```toml block, for config
# The in-test harnesses (crates/hl7-proto/tests/fuzz_targets.rs, tests/it/fuzz_app.rs)
# replay the same sources. Existing corpus files are kept, so re-running only adds.
set -euo pipefail
fuzz="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$fuzz")"
fixtures="$root/crates/hl7-proto/tests/fixtures"
max_seed=16384

for target in mllp_decoder message batch charset config sender_ack extract proxy_header; do
  mkdir -p "$fuzz/corpus/$target"
  cp "$fuzz/seeds/$target/"* "$fuzz/corpus/$target/"
done

for file in "$fixtures"/*; do
  name="$(basename "$file")"
  [ "$(stat -c %s "$file")" -le "$max_seed" ] || continue
  for target in message batch charset sender_ack extract; do
    cp "$file" "$fuzz/corpus/$target/fixture-$name"
  done
  { printf '\x00\x11\x0b'; cat "$file"; printf '\x1c\x0d'; } >"$fuzz/corpus/mllp_decoder/fixture-$name"
done

awk -v dir="$fuzz/corpus/config" '
  /^```toml/ { n++; out = sprintf("%s/docs-configuration-%02d.toml", dir, n); inside = 1; next }
  /^```/     { if (inside) close(out); inside = 0; next }
  inside     { print > out }
' "$root/docs/configuration.md"

for target in mllp_decoder message batch charset config sender_ack extract proxy_header; do
  echo "$target: $(ls "$fuzz/corpus/$target" | wc -l) inputs"
done
