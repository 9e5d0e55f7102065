// Package synth writes random-weight checkpoints in the exact Hugging Face layout of a
// family, for tests, benchmarks and the built-in model.
//
// A checkpoint is what a user would download: config.json with the family's full key
// set, generation_config.json, tokenizer.json and tokenizer_config.json (with the chat
// template), and every tensor of the model under its real name and shape in sharded
// safetensors files with a model.safetensors.index.json. Loaders are therefore exercised
// on the same layout as real checkpoints (models.md §1–2, §5, §6), only with MB-sized
// dimensions.
//
// The tokenizers are real ones cut down to the preset's vocab_size: the byte-level
// alphabet and the first merges of Qwen3's or DeepSeek-V3's tokenizer (a prefix of a
// merge list is a valid BPE), or for Mixtral a SentencePiece-style byte_fallback model
// whose pieces are Qwen's merges read as text, each with the family's real special
// tokens, and the real chat template where the repository has it. The bases are
// embedded (tokdata/, made by `make synth-tokenizers`), so no network is needed. Special
// token ids come from the same table as config.json's and generation_config.json's ids,
// and the tokenizer covers exactly vocab_size ids.
//
// Weights are drawn from a seeded generator per tensor (seed and tensor name), so the same
// Options give byte-identical files, and a bf16 checkpoint holds exactly the bf16
// rounding of the f32 one with the same seed. Linear weights are near-normal with
// variance 1/fan_in so activations stay O(1) through the layers; norm weights are ~1.
//
// Write refuses to overwrite anything but an empty directory or a previous synth
// checkpoint (recognised by MarkerFile), and builds the new checkpoint beside the target
// before renaming it into place.
//
// Imports model, model/safetensors and the standard library only (tests also use
// model/tokenizer and model/chat to load what Write made).
package synth
