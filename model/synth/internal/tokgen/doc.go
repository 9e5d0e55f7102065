// Package tokgen derives the small tokenizer bases that model/synth embeds
// (model/synth/tokdata/*.json.gz) from the real Qwen3 and DeepSeek-V3
// tokenizers committed in model/tokenizer/testdata. It is driven by its tests
// (flags are for cmd/ only): `make synth-tokenizers` runs
//
//	go test ./model/synth/internal/tokgen -run '^TestCommittedUpToDate$' -args -update
//
// and without -update the same test fails when tokdata is stale. The output is
// deterministic, so a rerun on unchanged inputs changes nothing.
// TestWriteFamilies with -families DIR writes the tokenizer files synth makes for
// every family and preset, which tools/goldens/gen.mjs tokenises for
// model/synth's goldens.
//
// A base is a byte-level alphabet plus merge results in merge-rank order: any
// prefix of the merge list is itself a valid BPE, so synth cuts a base to a
// preset's vocabulary at write time. The SentencePiece-style base (Mixtral)
// reinterprets Qwen's merges as text: byte-level strings become UTF-8 with
// space written as ▁, and merges whose parts or result are not valid printable
// UTF-8 are dropped (SentencePiece's byte_fallback covers the rest).
//
// Imports model/synth (for -families) and the standard library only.
package tokgen
